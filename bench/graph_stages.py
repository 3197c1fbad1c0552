"""Node counts and wall time of the graph stages (export, simplify, fold-constants, fuse-plugins) on CPU.

Each recipe runs from an empty cache in a temporary directory, so every stage runs and the repository's lock files
stay untouched. Writes bench/results/graph_stages.json.

usage: python bench/graph_stages.py [RECIPE ...]      (default: recipes/dab_detr_tiny.yaml recipes/dab_detr.yaml)
"""

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from loguru import logger
from rich.console import Console
from rich.table import Table

from trtpipe import recipe as recipes
from trtpipe.runner import Runner, Selection

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("export", "simplify", "fold-constants", "fuse-plugins")


def run_recipe(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        r = recipes.load(copy)
        stages = [s for s in STAGES if s in r.stages]
        runner = Runner(r, cache_dir=Path(tmp) / "cache", build_dir=Path(tmp) / "build")
        start = time.perf_counter()
        runs = runner.run(Selection(until=stages[-1]))
        total = time.perf_counter() - start
    return {"recipe": r.name, "total_s": total, "stages": {run.name: summarize(run) for run in runs}}


def summarize(run) -> dict:
    m = run.metrics
    row = {"seconds": round(run.seconds, 2), "nodes": m.get("nodes_after", m.get("nodes")),
           "initializers": m.get("initializers_after", m.get("initializers"))}
    if "max_abs" in m and "export_s" in m:
        row |= {"export_s": m["export_s"], "ort_vs_torch_max_abs": m["max_abs"], "ort_vs_torch_max_rel": m["max_rel"]}
    if "new_names" in m:
        row["new_names"] = m["new_names"]
    if "patterns" in m:
        row["fused"] = {name: p.get("matches") for name, p in m["patterns"].items()}
    if "ops" in m:
        row["ReduceMean"] = m["ops"].get("ReduceMean", 0)
    return row


def notes(row: dict) -> str:
    if "ort_vs_torch_max_abs" in row:
        return f"torch.onnx.export {row['export_s']:.1f} s; ORT vs torch max abs {row['ort_vs_torch_max_abs']:.2g}"
    if "fused" in row:
        return "fused: " + ", ".join(f"{k} {v}" for k, v in row["fused"].items())
    return ""


def main(paths: list[str]) -> None:
    logger.remove()  # the stages' debug logs (onnxsim's output among them)
    results = [run_recipe(ROOT / p) for p in paths]
    table = Table("recipe", "stage", "seconds", "nodes", "initializers", "ReduceMean", "new names", "notes",
                  title=f"graph stages on CPU ({os.cpu_count()} cores)")
    for result in results:
        for stage, row in result["stages"].items():
            table.add_row(result["recipe"], stage, f"{row['seconds']:.2f}", str(row["nodes"]), str(row["initializers"]),
                          str(row.get("ReduceMean", "")), str(row.get("new_names", "")), notes(row))
    Console(width=150).print(table)
    out = ROOT / "bench/results/graph_stages.json"
    env = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
           **{p: version(p) for p in ("torch", "transformers", "onnx", "onnxruntime", "onnxsim", "polygraphy")}}
    out.write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["recipes/dab_detr_tiny.yaml", "recipes/dab_detr.yaml"])
