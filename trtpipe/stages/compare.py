from __future__ import annotations

import json
from pathlib import Path

from trtpipe.errors import StageError
from trtpipe.metrics import Budget
from trtpipe.stages.base import Context, Ref, Result, Stage, register
from trtpipe.stages.build import engine_plugins, open_engine


@register
class Compare(Stage):
    """Runs `engine` and `reference` on the same inputs and measures each output's error (trtpipe.metrics).

    The reference is another stage's output, by kind: a saved reference (.npz from export: its inputs are used and
    its outputs compared against), an ONNX model (run in FP32 on ONNX Runtime), or another engine (.engine, or an
    ONNX Runtime-optimized model). Without a saved reference the inputs are the recipe's, at the opt shape.
    Fails when an output exceeds its `tolerances` entry. Output `errors`: stats and abs-error histograms per output.
    """

    kind = "compare"
    inputs = ("engine", "reference")
    outputs = ("errors",)
    recipe_fields = ("inputs", "target")

    engine: Ref
    reference: Ref
    tolerances: dict[str, Budget] = {}

    def key_files(self, recipe) -> dict[str, Path]:
        plugins = engine_plugins(recipe, self.engine) + engine_plugins(recipe, self.reference)
        return super().key_files(recipe) | {f"plugin:{p}": p for p in plugins}

    def run(self, ctx: Context) -> Result:
        from trtpipe import data
        from trtpipe.metrics import check_budgets

        ref_path = ctx.inputs["reference"]
        if ref_path.suffix == ".npz":
            feeds, expected = data.load_reference(ref_path)
        else:
            feeds = data.make_inputs(ctx.recipe)
            expected = open_engine(ref_path, engine_plugins(ctx.recipe, self.reference)).run(feeds)
        outputs = open_engine(ctx.inputs["engine"], engine_plugins(ctx.recipe, self.engine)).run(feeds)
        if unknown := [n for n in self.tolerances if n not in expected]:
            raise StageError(f"tolerances: the reference has no output '{unknown[0]}' (it has: {', '.join(expected)})")
        if missing := [n for n in expected if n not in outputs]:
            raise StageError(f"the engine has no output '{missing[0]}' (it has: {', '.join(outputs)})")
        stats, violations = check_budgets(outputs, expected, self.tolerances)
        path = ctx.out("errors.json")
        path.write_text(json.dumps({
            "reference": ref_path.name,
            "stats": stats,
            "tolerances": {k: v.model_dump(exclude_none=True) for k, v in self.tolerances.items()},
            "violations": violations,
            "histograms": {n: abs_error_histogram(outputs[n], expected[n]) for n in expected},
        }, indent=1))
        flat = {f"{n}_{k}": s[k] for n, s in stats.items() for k in ("mean_abs", "max_abs") if k in s}
        if violations:
            detail = "; ".join(f"{name}: {', '.join(found)}" for name, found in violations.items())
            measured = ", ".join(f"{k} {v:.3g}" for k, v in flat.items())
            raise StageError(f"outputs exceed their tolerances: {detail} (measured: {measured})",
                             hint="keep more nodes in FP32 (mixed-precision, precision-search) or widen the tolerances")
        return Result({"errors": path}, {**flat, "outputs": stats})


def abs_error_histogram(out, ref, bins: int = 40) -> dict:
    """Counts of |out - ref| over log-spaced bins from 1e-9 to 10 (or the power of ten above a larger error);
    errors below 1e-9 count in the first bin, NaN/Inf are counted apart."""
    import numpy as np

    diff = np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64)).ravel()
    finite = diff[np.isfinite(diff)]
    top = max(1, int(np.ceil(np.log10(finite.max())))) if finite.size and finite.max() > 0 else 1
    edges = np.logspace(-9, top, bins + 1)
    counts, _ = np.histogram(np.clip(finite, edges[0], edges[-1]), edges)
    return {"edges": edges.tolist(), "counts": counts.tolist(), "non_finite": int(diff.size - finite.size)}
