"""Error between an output and its reference, and accuracy budgets over those errors."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict


def error_stats(out: np.ndarray, ref: np.ndarray) -> dict[str, float | list[int]]:
    """abs/rel mean/max/median/p99, cosine similarity and where the max abs error is, all in float64."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shape {list(out.shape)} differs from reference shape {list(ref.shape)}")
    diff = np.abs(out - ref)
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    finite = bool(np.isfinite(out).all())
    denom = np.linalg.norm(out) * np.linalg.norm(ref)
    cosine = float(np.dot(out.ravel(), ref.ravel()) / denom) if denom > 0 else float(np.array_equal(out, ref))
    if diff.size == 0:
        return {"mean_abs": 0.0, "max_abs": 0.0, "finite": True}
    return {
        "mean_abs": float(diff.mean()),
        "max_abs": float(diff.max()),
        "median_abs": float(np.median(diff)),
        "p99_abs": float(np.percentile(diff, 99)),
        "mean_rel": float(rel.mean()),
        "max_rel": float(rel.max()),
        "cosine": cosine,
        "max_abs_at": [int(i) for i in np.unravel_index(np.nanargmax(np.nan_to_num(diff, nan=np.inf)), diff.shape)],
        "finite": finite,
    }


class Budget(BaseModel):
    """Largest errors an output may have; `cosine` is the smallest similarity allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean_abs: float | None = None
    max_abs: float | None = None
    mean_rel: float | None = None
    max_rel: float | None = None
    cosine: float | None = None

    def violations(self, stats: dict) -> list[str]:
        found = [] if stats.get("finite", True) else ["output has NaN or Inf"]
        for key, limit in self.model_dump(exclude_none=True).items():
            value = stats[key]
            bad = value < limit if key == "cosine" else not value <= limit
            if bad:
                found.append(f"{key} {value:.3g} {'<' if key == 'cosine' else '>'} {limit:.3g}")
        return found

    def excess(self, stats: dict) -> float:
        """The worst error over its limit: 1 at the budget, above 1 past it (cosine: 1 - value over 1 - limit)."""
        if not stats.get("finite", True):
            return float("inf")
        limits = self.model_dump(exclude_none=True).items()
        ratios = (ratio(1 - stats[k], 1 - v) if k == "cosine" else ratio(stats[k], v) for k, v in limits)
        return max(ratios, default=0.0)


def ratio(value: float, limit: float) -> float:
    if limit > 0:
        return value / limit
    return float("inf") if value > 0 else 0.0


def check_budgets(outputs: dict, refs: dict, budgets: dict[str, Budget]) -> tuple[dict, dict[str, list[str]]]:
    """Error stats per output, and the budget violations per output (empty when every budget is met)."""
    stats = {name: error_stats(outputs[name], refs[name]) for name in refs}
    violations = {name: b.violations(stats[name]) for name, b in budgets.items()}
    return stats, {k: v for k, v in violations.items() if v}
