from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trtpipe.errors import StageError, did_you_mean
from trtpipe.stages.base import Context, Ref, Result, Stage, register


class TrtPlugin(BaseModel):
    """`{trt-plugin: NAME}`: replace each match with a node for the TensorRT plugin NAME (see fusions.PLUGINS)."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    trt_plugin: str = Field(alias="trt-plugin")


Replacement = Literal["onnx"] | TrtPlugin


def replacement_name(replacement: Replacement) -> str:
    return replacement if isinstance(replacement, str) else replacement.trt_plugin


def every_pattern() -> dict[str, Replacement]:
    """Every default pattern that has an ONNX replacement, replaced by it."""
    from trtpipe.fusions import ONNX, REGISTRY

    return {name: "onnx" for name, fusion in REGISTRY.items() if ONNX in fusion.replacements and fusion.default}


@register
class FusePlugins(Stage):
    """Replaces decomposed subgraphs (LayerNorm, GELU, ...) with one node each: an ONNX op or a TensorRT plugin.

    `patterns` maps a pattern name (trtpipe.fusions) to its replacement: `onnx`, or `{trt-plugin: NAME}` (default:
    every default pattern that has an ONNX replacement, replaced by it). Patterns not listed are left alone. With
    only `onnx` replacements, ONNX Runtime must give the same outputs before and after on the recipe inputs (max abs
    difference <= tolerance); plugin nodes cannot run there, so that check is skipped.
    """

    kind = "fuse-plugins"
    inputs = ("model",)
    outputs = ("model",)
    recipe_fields = ("inputs",)

    model: Ref | None = None
    patterns: dict[str, Replacement] = Field(default_factory=every_pattern, min_length=1)
    tolerance: float = Field(1e-4, gt=0)

    @field_validator("patterns", mode="before")
    @classmethod
    def replacement_spelling(cls, patterns):
        for name, replacement in patterns.items() if isinstance(patterns, dict) else ():
            if isinstance(replacement, str) and replacement != "onnx":
                raise ValueError(f"{name}: '{replacement}' is not a replacement; write onnx or {{trt-plugin: NAME}}")
        return patterns

    @field_validator("patterns")
    @classmethod
    def known_patterns(cls, patterns: dict[str, Replacement]) -> dict[str, Replacement]:
        from trtpipe.fusions import ONNX, PLUGINS, REGISTRY

        for name, replacement in patterns.items():
            fusion = REGISTRY.get(name)
            if fusion is None:
                known = ", ".join(REGISTRY)
                raise ValueError(f"unknown pattern '{name}'{did_you_mean(name, REGISTRY)}; patterns: {known}")
            choice = replacement_name(replacement)
            if choice not in fusion.replacements:
                plugins = [r for r in fusion.replacements if r in PLUGINS]
                missing = "ONNX replacement" if choice == ONNX else (
                    f"replacement trt-plugin '{choice}'{did_you_mean(choice, plugins)}")
                takes = ", ".join("onnx" if r == ONNX else f"{{trt-plugin: {r}}}" for r in fusion.replacements)
                raise ValueError(f"pattern '{name}' has no {missing}; it takes: {takes}")
        return patterns

    def run(self, ctx: Context) -> Result:
        from trtpipe import onnxio
        from trtpipe.fusions.rewrite import fuse

        source = onnxio.load(ctx.inputs["model"])
        choices = {name: replacement_name(r) for name, r in self.patterns.items()}
        ctx.report(f"fusing {', '.join(f'{k}: {v}' for k, v in choices.items())}")
        fused, report = fuse(source, choices)
        path = onnxio.save(fused, ctx.out("model.onnx"))
        metrics = {**onnxio.before_after(source, fused), "opset": onnxio.opset(fused), "patterns": report}
        plugins = sorted({v for k, v in choices.items() if v != "onnx" and report[k]["fused"]})
        if plugins:
            metrics["check"] = f"skipped: ONNX Runtime cannot run TensorRT plugin nodes ({', '.join(plugins)})"
        else:
            ctx.report("comparing ONNX Runtime outputs before and after")
            metrics["check"] = self.check(ctx, ctx.inputs["model"], path)
        return Result({"model": path}, metrics)

    def check(self, ctx: Context, before, after) -> dict:
        from trtpipe import data
        from trtpipe.backends import get_backend
        from trtpipe.metrics import error_stats

        feeds = data.make_inputs(ctx.recipe)
        backend = get_backend("onnxruntime")
        reference = backend.load(before, optimization="disabled")
        if missing := [n for n in reference.input_names if n not in feeds]:
            raise StageError(f"the model's inputs {missing} are not among the recipe's inputs {list(feeds)}",
                             hint="name the recipe's inputs after the model's")
        want = reference.run(feeds)
        got = backend.load(after, optimization="disabled").run(feeds)
        diffs = {name: error_stats(got[name], want[name])["max_abs"] for name in want}
        worst = max(diffs, key=diffs.get)
        if not diffs[worst] <= self.tolerance:
            raise StageError(
                f"fused model's output '{worst}' differs from the input model's by {diffs[worst]:.3g} "
                f"(tolerance {self.tolerance:g})",
                hint="drop the pattern from 'patterns' and report the graph: a pattern matched what it should not",
            )
        return {"max_abs": diffs, "tolerance": self.tolerance}
