"""DAB-DETR-R50's FP32 node sets on TensorRT (bench/gpu/dab_fp32_sets.yaml, or --recipe: bench/gpu/dab_b8_sets.yaml),
one row per engine built: the set (its mixed-precision stage's fp32_nodes), constraints, latency (CUDA graph), errors
against torch FP32 and whether issue 7's budget is met. Reads the lock files that GPU leases left (bench/gpu_session.sh
poll packs them), one per lease, and the TensorRT FP32 and naive FP16 rows of recipes/dab_detr.yaml's lock file beside
each, where that lease built them.
Prints the table and writes bench/results/<recipe name>_<gpu>_<date>.json.

usage: python bench/fp32_sets.py LEASE=LOCKFILE [LEASE=LOCKFILE ...] [--recipe PATH] [--date DATE] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dab_detr import BUDGET, device_slug, number, write_json  # noqa: E402

RECIPE = ROOT / "bench/gpu/dab_fp32_sets.yaml"
BASELINES = {"trt_fp32": ("build-fp32", "profile-fp32", "compare-fp32"),
             "trt_fp16_naive": ("build-fp16", "profile-fp16", "compare-fp16")}
ERRORS = ("logits_mean_abs", "logits_max_abs", "boxes_mean_abs")


def rows(lease: str, lock: dict[str, dict], stages: dict) -> list[dict]:
    """One row per build stage of the sets recipe that the lock file holds, with its profile and compare."""
    found = []
    for name, spec in stages.items():
        if spec.kind != "build" or name not in lock or name == "build-fp32":
            continue
        mixed = lock.get(spec.after[0], {})
        row = row_of(lock, name, f"profile-{name[6:]}", f"compare-{name[6:]}")
        found.append({"lease": lease, "set": name[6:], "fp32_nodes": mixed.get("params", {}).get("fp32_nodes"),
                      "fp32_count": mixed.get("metrics", {}).get("fp32_count"),
                      "constrain": lock[name]["params"].get("constrain"), **row})
    return found


def row_of(lock: dict[str, dict], build: str, profile: str, compare: str) -> dict:
    timing = lock.get(profile, {}).get("metrics", {})
    errors = lock.get(compare, {}).get("metrics", {})
    values = {k: errors.get(k) for k in ERRORS}
    met = None if None in values.values() else all(values[k] <= limit for k, limit in BUDGET.items())
    return {"key": lock[build].get("key"), "latency_ms": timing.get("latency_ms"), **values, "met": met,
            "engine_layers": timing.get("layers_per_precision"),
            "plan_mismatches": lock[build].get("metrics", {}).get("plan_mismatches"),
            "build_seconds": lock[build].get("seconds"), "env": lock[build].get("env", {})}


def baselines(lease: str, path: Path) -> list[dict]:
    """recipes/dab_detr.yaml's TensorRT FP32 and naive FP16 rows from the lock file beside `path`, where built."""
    from trtpipe import lockfile

    lock = lockfile.read(path.with_name("dab_detr.lock.yaml"))
    return [{"lease": lease, "set": key, **row_of(lock, *stages)} for key, stages in BASELINES.items()
            if stages[0] in lock]


def print_rows(found: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="DAB-DETR-R50 FP32 sets on TensorRT (CUDA graph latency; errors against torch FP32)")
    for column in ("lease", "set", "FP32 nodes", "constrain", "latency ms", "logits mean", "logits max",
                   "boxes mean", "budget", "FP32 / FP16 layers"):
        table.add_column(column)
    for r in found:
        layers = r["engine_layers"] or {}
        table.add_row(r["lease"], r["set"], str(r.get("fp32_count") or "-"), r.get("constrain") or "-",
                      number(r["latency_ms"], ".2f"), *(number(r[k], ".2e") for k in ERRORS),
                      {True: "met", False: "missed", None: "-"}[r["met"]],
                      f"{layers.get('fp32', 0)} / {layers.get('fp16', 0)}")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    from trtpipe import lockfile, recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("locks", nargs="+", metavar="LEASE=LOCKFILE")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args(argv)
    sets = recipe.load(args.recipe)
    found = []
    for item in args.locks:
        lease, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"{item!r}: expected LEASE=LOCKFILE, an existing file")
        new = baselines(lease, Path(path)) + rows(lease, lockfile.read(Path(path)), sets.stages)
        seen = {(f["lease"], f["key"]) for f in found}  # one lease's locks share stages; another lease re-measures
        found += [r for r in new if (lease, r["key"]) not in seen]
    print_rows(found)
    env = next((r["env"] for r in found if r["env"]), {})
    out = args.results_dir / f"{sets.name}_{device_slug(env)}_{args.date}.json"
    write_json(out, {"recipe": str(args.recipe.resolve().relative_to(ROOT)), "date": args.date, "budget": BUDGET,
                     "rows": found})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
