from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from trtpipe.stages.base import Context, Ref, Result, Stage, register
from trtpipe.trt.config import BuildOptions


@register
class Sensitivity(Stage):
    """Ranks nodes by the error they add in low precision, against the FP32 reference (trtpipe.precision.sensitivity).

    `method: local` compares every float tensor of an FP32 and a low-precision run in ONNX Runtime (`chunk` tensors
    per run); `method: output` measures the model's outputs with one block of `block_size` consecutive nodes in low
    precision at a time, on the recipe's target (nodes within a block ordered by their local error). On ONNX Runtime,
    low precision is emulated (trtpipe.precision.emulate): its CPU float16 mostly computes and stores in FP32.
    Reference: `reference` (the export's saved torch outputs) or the FP32 model in ONNX Runtime. Output `ranking`:
    JSON, most sensitive first, each node with its op and torch module.
    """

    kind = "sensitivity"
    inputs = ("model", "reference")
    outputs = ("ranking",)
    recipe_fields = ("inputs", "target")

    model: Ref | None = None
    reference: Ref | None = None
    dtype: Literal["float16", "bfloat16"] = "float16"
    method: Literal["local", "output"] = "local"
    block_size: int = Field(1, ge=1)
    chunk: int = Field(64, ge=1)
    builder: BuildOptions = BuildOptions()  # TensorRT target: options for the candidate builds

    def env(self, recipe) -> dict:
        from trtpipe.backends import get_backend

        return get_backend(recipe.target if self.method == "output" else "onnxruntime").env()

    def run(self, ctx: Context) -> Result:
        import json

        from trtpipe import onnxio
        from trtpipe.backends import get_backend
        from trtpipe.precision import sensitivity
        from trtpipe.precision.convert import analyze
        from trtpipe.precision.ops import torch_module
        from trtpipe.precision.reference import reference_data

        model = onnxio.load(ctx.inputs["model"])
        feeds, refs, source = reference_data(ctx.recipe, ctx.inputs["model"], ctx.inputs.get("reference"))
        local = {}
        if self.method == "local" or self.block_size > 1:
            ctx.report("capturing FP32 and low-precision tensors")
            local = sensitivity.local(model, feeds, self.dtype, self.chunk)
        scores = local
        if self.method == "output":
            backend = get_backend(ctx.target, ctx.recipe, ctx.cache_dir, **self.builder.model_dump(exclude_unset=True))
            scores = sensitivity.output(
                model, feeds, refs, self.dtype, lambda path, f: backend.load(path).run(f), self.block_size,
                ctx.workdir, ctx.report, emulated=ctx.target == "onnxruntime",
            )  # fmt: skip
        analysis = analyze(model, self.dtype)
        ranking = sensitivity.rank(scores, analysis.candidates, local)
        nodes = [
            {"node": n, "op": analysis.ops[n], "module": torch_module(n), "score": finite_or_str(scores[n])}
            | ({"local": finite_or_str(local[n])} if local and local is not scores else {})
            for n in ranking
        ]
        plan = {"method": self.method, "dtype": self.dtype, "reference": source, "nodes": nodes}
        path = ctx.out("ranking.json")
        path.write_text(json.dumps(plan, indent=1))
        top = {entry["node"]: entry["score"] for entry in nodes[:5]}
        return Result({"ranking": path}, {"ranked": len(nodes), "reference": source, "top": top})


def finite_or_str(value: float) -> float | str:
    """JSON has no inf: an overflowing node scores "inf"."""
    return value if math.isfinite(value) else str(value)
