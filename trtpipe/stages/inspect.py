from trtpipe.stages.base import Context, Ref, Result, Stage, register


@register
class Inspect(Stage):
    """Graph statistics of a model: node count, op histogram, opset, parameter count."""

    kind = "inspect"
    inputs = ("model",)
    model: Ref | None = None

    def run(self, ctx: Context) -> Result:
        from trtpipe import onnxio

        return Result({}, onnxio.stats(onnxio.load(ctx.inputs["model"])))
