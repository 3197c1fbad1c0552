"""Stage types used by the core tests: small real ONNX edits whose behaviour the tests can steer."""

import os
from pathlib import Path

from trtpipe.stages import Context, Ref, Result, Stage, register


@register
class Scale(Stage):
    """Appends Mul(factor) to the model's first output. TRTPIPE_TEST_ENV feeds its environment facts;
    TRTPIPE_TEST_INTERRUPT=<stage name> makes it stop with Ctrl-C after writing half its output."""

    kind = "test-scale"
    inputs = ("model",)
    outputs = ("model",)
    model: Ref | None = None
    factor: float = 2.0

    def env(self, recipe) -> dict:
        return {"test_env": os.environ.get("TRTPIPE_TEST_ENV", "")}

    def run(self, ctx: Context) -> Result:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper

        model = onnx.load(str(ctx.inputs["model"]))
        out = model.graph.output[0]
        scaled = f"{out.name}_x{len(model.graph.node)}"
        model.graph.initializer.append(numpy_helper.from_array(np.array(self.factor, np.float32), f"{scaled}_k"))
        for node in model.graph.node:
            node.output[:] = [scaled if o == out.name else o for o in node.output]
        model.graph.node.append(helper.make_node("Mul", [scaled, f"{scaled}_k"], [out.name], name=f"{ctx.name}/Mul"))
        path = ctx.out("model.onnx")
        if os.environ.get("TRTPIPE_TEST_INTERRUPT") == ctx.name:
            Path(path).write_bytes(model.SerializeToString()[:10])
            raise KeyboardInterrupt
        onnx.save(model, str(path))
        return Result({"model": path}, {"nodes": len(model.graph.node)})


@register
class NeedsMissing(Stage):
    kind = "test-needs-missing"
    requires = {"trtpipe_no_such_module": "trt"}


@register
class Broken(Stage):
    kind = "test-broken"
    outputs = ("model",)

    def run(self, ctx: Context) -> Result:
        raise ValueError("planted failure")
