from pathlib import Path

from trtpipe.stages.base import Context, Result, Stage, register


@register
class Source(Stage):
    """The recipe's `model: {onnx: path}`: checked with onnx.checker and stored."""

    kind = "source"
    outputs = ("model",)
    recipe_fields = ("model",)

    def key_files(self, recipe) -> dict[str, Path]:
        return {"onnx": recipe.model_path}

    def run(self, ctx: Context) -> Result:
        from trtpipe import onnxio

        model = onnxio.load(ctx.recipe.model_path, check=True)
        out = onnxio.save(model, ctx.out("model.onnx"))
        return Result({"model": out}, onnxio.stats(model))
