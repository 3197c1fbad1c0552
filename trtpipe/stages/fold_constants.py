from __future__ import annotations

from pydantic import Field

from trtpipe.errors import StageError, one_line
from trtpipe.stages.base import Context, Ref, Result, Stage, register


@register
class FoldConstants(Stage):
    """Polygraphy's constant folding: every subgraph that depends only on constants becomes an initializer.

    `passes`: folding passes to run (default: until one folds nothing). `size_threshold`: largest folded tensor in
    bytes, bigger ones stay computed at run time (default: no limit). `fold_shapes`: also fold Shape nodes whose
    input shape is static, after shape inference (onnx's: ONNX Runtime's writes a temporary file into the current
    directory when it cannot infer every shape).
    """

    kind = "fold-constants"
    inputs = ("model",)
    outputs = ("model",)

    model: Ref | None = None
    passes: int | None = Field(None, ge=1)
    size_threshold: int | None = Field(None, ge=0)
    fold_shapes: bool = True

    def run(self, ctx: Context) -> Result:
        from polygraphy.backend.onnx import fold_constants
        from polygraphy.logger import G_LOGGER

        from trtpipe import onnxio

        source = onnxio.load(ctx.inputs["model"])
        ctx.report("folding constants")
        try:
            with G_LOGGER.verbosity(G_LOGGER.ERROR):
                folded = fold_constants(source, num_passes=self.passes, fold_shapes=self.fold_shapes,
                                        size_threshold=self.size_threshold, error_ok=False, copy=True,
                                        allow_onnxruntime_shape_inference=False)
        except Exception as e:
            raise StageError(f"polygraphy constant folding failed: {one_line(e)}",
                             hint="run with -v for the traceback") from e
        path = onnxio.save(folded, ctx.out("model.onnx"))
        return Result({"model": path}, {**onnxio.before_after(source, folded), **onnxio.new_names(source, folded)})
