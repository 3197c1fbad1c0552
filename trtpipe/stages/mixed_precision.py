from __future__ import annotations

from typing import Literal

from pydantic import Field

from trtpipe.precision.rules import Rules
from trtpipe.stages.base import Context, Ref, Result, Stage, register


@register
class MixedPrecision(Stage, Rules):
    """FP32 ONNX -> a float16/bfloat16 graph; nodes chosen by the rules (trtpipe.precision.rules) or pinned stay FP32.

    Casts only where precision regions meet: one per tensor and precision, moved across data movement, FP32 islands
    merged where a cheap node in FP32 removes Casts (`merge_cost`: what one such node costs, in Casts; null: never).
    The activation rule runs the recipe's inputs through ONNX Runtime, `chunk` tensors at a time. The result passes
    onnx.checker, runs in ONNX Runtime and stays finite with float16 storage emulated (bfloat16: checker only, ONNX
    Runtime has no bfloat16 CPU kernels).
    """

    kind = "mixed-precision"
    inputs = ("model",)
    outputs = ("model",)
    recipe_fields = ("inputs",)

    model: Ref | None = None
    dtype: Literal["float16", "bfloat16"] = "float16"
    keep_io_types: bool = True
    fp32_nodes: list[str] = []  # ONNX node names or regular expressions (full match)
    merge_cost: float | None = Field(0.5, ge=0)
    chunk: int = Field(64, ge=1)

    def run(self, ctx: Context) -> Result:
        from trtpipe import onnxio
        from trtpipe.data import make_inputs
        from trtpipe.errors import StageError
        from trtpipe.precision.convert import convert
        from trtpipe.precision.rules import choose_fp32

        model = onnxio.load(ctx.inputs["model"])
        if (plugins := plugin_ops(model)) and self.activation_max is not None:
            raise StageError(
                f"the activation rule runs the model in ONNX Runtime, which cannot run its TensorRT plugin nodes "
                f"({', '.join(plugins)})",
                hint="set activation_max: null, or choose the FP32 nodes on the graph before fuse-plugins",
            )
        feeds = make_inputs(ctx.recipe)
        rules = Rules(**self.model_dump(include=set(Rules.model_fields)))
        ctx.report("choosing FP32 nodes")
        pins = onnxio.matching_nodes((n.name for n in model.graph.node), self.fp32_nodes)
        chosen = dict.fromkeys(pins, "pin") | choose_fp32(model, rules, self.dtype, feeds, self.chunk)
        conversion = convert(model, chosen, self.dtype, self.keep_io_types, self.merge_cost)
        ctx.report(f"{len(conversion.fp32)} FP32 nodes, {conversion.casts} casts; running in ONNX Runtime")
        onnx_runtime = check_runs(conversion.model, feeds, self.dtype)
        out = onnxio.save(conversion.model, ctx.out("model.onnx"))
        return Result({"model": out}, metrics(conversion) | {"onnxruntime_check": onnx_runtime})


def metrics(conversion) -> dict:
    from collections import Counter

    from trtpipe.precision.convert import node_precisions

    return {
        "nodes": dict(Counter(node_precisions(conversion.model).values())),
        "casts": conversion.casts,
        "fp32_count": len(conversion.fp32),
        "fp32_nodes": conversion.fp32,
    }


def plugin_ops(model) -> list[str]:
    from trtpipe.fusions.registry import PLUGIN_DOMAIN

    return sorted({n.op_type for n in model.graph.node if n.domain == PLUGIN_DOMAIN})


def check_runs(model, feeds: dict, dtype: str) -> str:
    """Load and run the mixed model in ONNX Runtime, then check its outputs stay finite with float16 storage emulated
    (trtpipe.precision.emulate). Returns "passed", or why it was skipped."""
    import numpy as np
    import onnxruntime as ort

    from trtpipe.errors import StageError
    from trtpipe.precision.emulate import emulate
    from trtpipe.precision.search import input_dtypes

    if dtype == "bfloat16":
        return "skipped: ONNX Runtime has no bfloat16 CPU kernels"
    if plugins := plugin_ops(model):
        return f"skipped: ONNX Runtime cannot run TensorRT plugin nodes ({', '.join(plugins)})"
    feeds = input_dtypes(model, feeds)
    for graph in (model, emulate(model)):
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    if bad := [name for name, value in outputs.items() if not np.isfinite(np.asarray(value, np.float32)).all()]:
        raise StageError(
            f"the mixed-precision model gives NaN/Inf in {', '.join(bad)} on the recipe inputs",
            hint="keep more nodes FP32 (lower activation_max, add block_ops), or use the precision-search stage",
        )
    return "passed"
