from __future__ import annotations

from typing import Literal

from pydantic import Field

from trtpipe.errors import StageError
from trtpipe.stages.base import Context, Ref, Result, Stage, register

# Both rewrite Linear layers into Reshape-Gemm-Reshape nodes with generated names, losing the torch module paths;
# TensorRT fuses MatMul + bias Add by itself.
KEEP_MATMUL = ["fuse_matmul_add_bias_into_gemm", "fuse_matmul_add_bias_into_gemm_batched"]


@register
class Simplify(Stage):
    """onnxsim: constant folding, shape inference and onnx-optimizer passes.

    `check` runs the original and the simplified model in ONNX Runtime on the recipe inputs and fails when an output
    element differs by more than atol + rtol * |original|. `skip_optimizers` names onnx-optimizer passes not to run;
    the default keeps Linear layers as MatMul + Add under their module-path names. onnxsim runs in a child process,
    so a crash in its C++ core is an error like any other; `on_error: skip` passes the input model through instead
    and records why in the metrics.
    """

    kind = "simplify"
    inputs = ("model",)
    outputs = ("model",)
    recipe_fields = ("inputs",)

    model: Ref | None = None
    on_error: Literal["fail", "skip"] = "fail"
    check: bool = True
    atol: float = Field(1e-5, ge=0)
    rtol: float = Field(1e-4, ge=0)
    skip_optimizers: list[str] = KEEP_MATMUL

    def run(self, ctx: Context) -> Result:
        import json
        import shutil
        import sys

        import numpy as np

        from trtpipe import data, onnxio

        src = ctx.inputs["model"]
        source = onnxio.load(src)
        dst = ctx.out("model.onnx")
        options = {"check_n": int(self.check), "check_atol": self.atol, "check_rtol": self.rtol,
                   "skipped_optimizers": self.skip_optimizers, "certify": False}
        if self.check:
            graph_inputs = {i.name for i in source.graph.input}
            feeds = {k: v for k, v in data.make_inputs(ctx.recipe).items() if k in graph_inputs}
            np.savez(ctx.out("check_inputs.npz"), **feeds)
            options["input_npz"] = str(ctx.out("check_inputs.npz"))
        ctx.report("running onnxsim")
        child = [sys.executable, "-c", "from trtpipe.stages.simplify import main; main()", str(src), str(dst),
                 json.dumps(options)]
        try:
            run_child(child, "onnxsim")
        except StageError as e:
            if self.on_error == "fail":
                raise StageError(e.message, hint="set 'on_error: skip' to pass the model through unsimplified") from e
            shutil.copyfile(src, dst)
            return Result({"model": dst}, {**onnxio.before_after(source, source), "skipped": e.message})
        simplified = onnxio.load(dst)
        metrics = {**onnxio.before_after(source, simplified), **onnxio.new_names(source, simplified)}
        return Result({"model": dst}, metrics)


def run_child(argv: list[str], what: str) -> None:
    """Runs argv; a non-zero exit or a signal becomes a StageError with the child's last line of stderr."""
    import signal
    import subprocess

    from loguru import logger

    proc = subprocess.run(argv, capture_output=True, text=True)
    logger.debug(f"{what} output:\n{proc.stdout}{proc.stderr}")
    if proc.returncode == 0:
        return
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    last = f": {lines[-1][:300]}" if lines else ""
    if proc.returncode < 0:
        sig = -proc.returncode
        raise StageError(f"{what} crashed with signal {sig} ({signal.strsignal(sig) or 'unknown'}){last}")
    raise StageError(f"{what} failed{last or f' with exit status {proc.returncode}'}")


def main() -> None:
    """Child process: `SRC DST OPTIONS_JSON` -> the simplified model at DST; exits non-zero when onnxsim fails."""
    import json
    import sys

    sys.modules["torch"] = None  # onnxsim imports torch if it can (3 s) for features this stage does not use
    import numpy as np
    import onnx
    import onnxsim

    src, dst, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if npz := options.pop("input_npz", None):
        with np.load(npz) as arrays:
            options["input_data"] = dict(arrays)
    model, ok = onnxsim.simplify(onnx.load(src), **options)
    if not ok:
        raise SystemExit("check failed: the simplified model's outputs differ from the original's")
    onnx.save(model, dst)
