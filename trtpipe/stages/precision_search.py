from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from trtpipe.metrics import Budget
from trtpipe.stages.base import Context, Ref, Result, Stage, register
from trtpipe.trt.config import BuildOptions


@register
class PrecisionSearch(Stage):
    """The smallest FP32 set that meets `budget` per output on the recipe's target (trtpipe.precision.search).

    Builds low precision everywhere but the pins first (when that does not build, once more with the nodes of the
    layer the backend failed on FP32, else the stage fails); when that misses the budget, tries the `seeds` (named node
    sets, by regular expressions of node names) in order, or else, from the `ranking` of a sensitivity stage (or a
    local sensitivity run here), adds nodes greedily; then removes what is not needed (delta debugging), then merges
    FP32 islands where that removes Casts and keeps the budget; with `max_evaluations` or `max_seconds`, the refining
    steps stop once that many candidates or seconds of them were spent.
    `fp32_nodes` and the tails of `output_tails` (trtpipe.precision.rules.output_tail) are pinned FP32. On ONNX
    Runtime, candidates run with low precision emulated (trtpipe.precision.emulate): its CPU float16 mostly computes
    and stores in FP32, which would hide overflow. Every evaluated candidate is kept in the stage's scratch directory,
    so an interrupted search resumes where it stopped. Outputs: `model` (the mixed graph) and `plan` (JSON: the FP32
    nodes with the rule or search step that chose each and their torch modules, the budget and the errors met, the
    backend).
    """

    kind = "precision-search"
    version = 6  # 2: candidates in the plan; 3: the fastest met candidate; 4: prefix growth by excess; 5: seeds;
    # 6: seeds before the ranking
    inputs = ("model", "ranking", "reference")
    outputs = ("model", "plan")
    recipe_fields = ("inputs", "target")

    model: Ref | None = None
    ranking: Ref | None = None
    reference: Ref | None = None
    budget: dict[str, Budget] = Field(min_length=1)
    dtype: Literal["float16", "bfloat16"] = "float16"
    keep_io_types: bool = True
    fp32_nodes: list[str] = []  # ONNX node names or regular expressions (full match)
    output_tails: list[str] = []
    merge_cost: float | None = Field(0.5, ge=0)
    chunk: int = Field(64, ge=1)
    max_evaluations: int | None = Field(None, ge=1)  # candidates evaluated at most (see trtpipe.precision.search)
    max_seconds: float | None = Field(None, gt=0)  # seconds of candidate evaluations at most, likewise
    seeds: dict[str, list[str]] = {}  # name -> regular expressions of node names (full match), tried before greedy
    builder: BuildOptions = BuildOptions()  # TensorRT target: options for the candidate builds (plugins as in build)

    @field_validator("seeds")
    @classmethod
    def regular_expressions(cls, seeds: dict[str, list[str]]) -> dict[str, list[str]]:
        import re

        for name, patterns in seeds.items():
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"seed '{name}': '{pattern}' is not a regular expression ({e})") from None
        return seeds

    def key_files(self, recipe) -> dict[str, Path]:
        return super().key_files(recipe) | self.builder.plugin_files(recipe.dir)

    def run(self, ctx: Context) -> Result:
        import json

        from trtpipe import onnxio
        from trtpipe.backends import get_backend
        from trtpipe.errors import StageError
        from trtpipe.precision import sensitivity
        from trtpipe.precision.convert import analyze, prepare
        from trtpipe.precision.reference import reference_data
        from trtpipe.precision.rules import tail_pins
        from trtpipe.precision.search import Evaluator, load_ranking, search

        model = onnxio.load(ctx.inputs["model"])
        feeds, refs, source = reference_data(ctx.recipe, ctx.inputs["model"], ctx.inputs.get("reference"))
        if unknown := [name for name in self.budget if name not in refs]:
            raise StageError(f"budget for unknown output {', '.join(unknown)}", hint=f"outputs: {', '.join(refs)}")
        analysis = analyze(model, self.dtype)

        def local_ranking() -> list[str]:
            ctx.report("no ranking given: local sensitivity")
            return sensitivity.rank(sensitivity.local(model, feeds, self.dtype, self.chunk), analysis.candidates)

        ranking = ctx.inputs.get("ranking")
        ranked = (lambda: load_ranking(ranking, analysis.candidates)) if ranking else local_ranking
        pins = dict.fromkeys(onnxio.matching_nodes((n.name for n in model.graph.node), self.fp32_nodes), "pin")
        if self.output_tails:
            candidates = set(analysis.candidates)
            pins |= {n: why for n, why in tail_pins(prepare(model), self.output_tails).items() if n in candidates}
        options = self.builder.model_dump(exclude_unset=True)
        if self.builder.plugins:
            options["plugins"] = list(self.builder.plugin_files(ctx.recipe.dir).values())
        backend = get_backend(ctx.target, ctx.recipe, ctx.cache_dir, **options)
        evaluate = Evaluator(
            model, feeds, refs, self.budget, backend, ctx.scratch, self.dtype, self.keep_io_types, pins,
            emulate=ctx.target == "onnxruntime", report=ctx.report,
        )  # fmt: skip
        seeds = seed_nodes(self.seeds, analysis.candidates)
        result = search(evaluate, ranked, self.merge_cost, self.max_evaluations, self.max_seconds, seeds)
        out = onnxio.save(result.conversion.model, ctx.out("model.onnx"))
        plan = self.plan(result, analysis.ops, backend, source)
        ctx.out("plan.json").write_text(json.dumps(plan, indent=1))
        return Result({"model": out, "plan": ctx.out("plan.json")}, self.metrics(model, result))

    def plan(self, result, op_types: dict[str, str], backend, source: str) -> dict:
        from trtpipe.precision.ops import torch_module

        chosen = result.conversion.fp32 | result.fp32
        return {
            "dtype": self.dtype,
            "keep_io_types": self.keep_io_types,
            "fp32_nodes": [
                {"node": n, "op": op_types.get(n, ""), "module": torch_module(n), "chosen_by": why}
                for n, why in chosen.items()
            ],
            "budget": {k: b.model_dump(exclude_none=True) for k, b in self.budget.items()},
            "budget_met": result.evaluation.met,
            "errors": result.evaluation.errors,
            "casts": result.conversion.casts,
            "reference": source,
            "backend": {"name": backend.name, "env": backend.env()},
            "evaluations": result.evaluations,
            "candidates": [candidate(e) for e in result.candidates],
        }

    def metrics(self, model, result) -> dict:
        from trtpipe.precision.baselines import count_casts, onnxconverter_common

        fp32 = result.conversion.fp32
        theirs = onnxconverter_common(model, fp32, self.keep_io_types)
        return {
            "casts": result.conversion.casts,
            "fp32_nodes": len(fp32),
            "budget_met": result.evaluation.met,
            "errors": {
                name: {k: stats[k] for k in ("mean_abs", "max_abs", "cosine") if k in stats}
                for name, stats in result.evaluation.errors.items()
            },
            "evaluations": result.evaluations,
            "evaluations_run": result.ran,
            "casts_onnxconverter_common": count_casts(theirs) - count_casts(model),
        }


def seed_nodes(seeds: dict[str, list[str]], candidates: list[str]) -> dict[str, list[str]]:
    """Each seed's candidate nodes, by its patterns (full matches of node names); a seed that matches none fails."""
    from trtpipe import onnxio
    from trtpipe.errors import StageError

    found = {}
    for name, patterns in seeds.items():
        found[name] = onnxio.full_matches(candidates, patterns)
        if not found[name]:
            example = f", e.g. '{candidates[0]}'" if candidates else ""
            raise StageError(f"seed '{name}' matches no candidate node",
                             hint=f"patterns match whole ONNX node names{example}")
    return found


def candidate(e) -> dict:
    """One evaluated candidate as the plan lists it: size, errors (mean and max), latency where timed."""
    errors = {out: {k: stats[k] for k in ("mean_abs", "max_abs") if k in stats} for out, stats in e.errors.items()}
    return {"fp32_nodes": len(e.fp32), "casts": e.casts, "met": e.met, "errors": errors, "violations": e.violations,
            "latency_ms": e.latency_ms, "seconds": round(e.seconds, 1)}
