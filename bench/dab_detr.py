"""DAB-DETR side by side on one GPU (issue 7): PyTorch eager FP32 (TF32 off), eager autocast FP16, torch.compile
reduce-overhead with autocast FP16, TensorRT FP32, TensorRT naive FP16 and trtpipe's engine. Latency at batch 1
(median; CUDA graphs for TensorRT and torch.compile), throughput at batch 8 (8 images over the mean time of a batch),
and logits/boxes errors against the FP32 reference: the export stage's torch FP32 outputs, whose input every row
runs.

Two pythons. The TensorRT rows are runs of the recipe (recipes/dab_detr.yaml; dab_detr_tiny.yaml for --size tiny)
under this python, which needs TensorRT but no torch. The export stage and the torch rows (bench/dab_detr_torch.py)
run under --torch-python, a python with torch (on the GPU machine a wrapper around the image's python3 that
bench/gpu_session.sh writes). The export's result reaches the TensorRT runs through the lock file.

Steps can run one command each, so that a GPU call runs them within its 10 minutes (consecutive TensorRT rows run in one
trtpipe process, sharing TensorRT's timing cache): the recipe's cache and lock file,
and the torch rows' JSON in build/<recipe>/, carry results from one to the next (run from the repository root). A
step stopped part way keeps what it finished (stages, the search's candidates, torch rows): run it again. After each
step the results so far go to bench/results/<recipe>_<gpu>_<date>.json; the table and the issue's targets are
printed at the end.

usage: python bench/dab_detr.py [--size r50|tiny] [--step STEP ...] [--skip-torch] [--torch-python PY]
                                [--cache-dir DIR] [--target tensorrt|onnxruntime] [--set KEY=VALUE ...]
                                [--iterations N] [--warmup N] [--results-dir DIR]
steps, in this order by default: export torch trt_fp32 trt_fp16_naive trtpipe report b8
(b8: the batch-8 recipe, recipes/dab_detr_b8.yaml for r50, whose export the export step runs)
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"r50": ROOT / "recipes/dab_detr.yaml", "tiny": ROOT / "recipes/dab_detr_tiny.yaml"}
# A second recipe for batch 8 where the first is static at batch 1: its rows' stages carry the rows' names.
RECIPES_B8 = {"r50": ROOT / "recipes/dab_detr_b8.yaml"}
STEPS = ("export", "torch", "trt_fp32", "trt_fp16_naive", "trtpipe", "report", "b8")
ERRORS = ("logits_mean_abs", "logits_max_abs", "boxes_mean_abs", "boxes_max_abs")
FIELDS = ("latency_ms", "throughput_b8", "latency_b8_ms", *ERRORS, "timing")


@dataclass(frozen=True)
class TrtRow:
    """The recipe's stages behind one TensorRT row."""

    build: str
    profile: str  # batch 1
    profile_b8: str  # in the same recipe, else `profile` of the batch-8 recipe
    compare: str

    @property
    def stages(self) -> set[str]:
        return {self.build, self.profile, self.profile_b8, self.compare}


TORCH_ROWS = {
    "torch_eager_fp32": ("eager_fp32", "PyTorch eager FP32"),
    "torch_autocast_fp16": ("autocast_fp16", "PyTorch eager autocast FP16"),
    "torch_compile_fp16": ("compile_fp16", "torch.compile reduce-overhead FP16"),
}
TRT_ROWS = {
    "trt_fp32": TrtRow("build-fp32", "profile-fp32", "profile-fp32-b8", "compare-fp32"),
    "trt_fp16_naive": TrtRow("build-fp16", "profile-fp16", "profile-fp16-b8", "compare-fp16"),
    "trtpipe": TrtRow("build", "profile", "profile-b8", "compare"),
}
LABELS = {key: label for key, (_, label) in TORCH_ROWS.items()} | {
    "trt_fp32": "TensorRT FP32",
    "trt_fp16_naive": "TensorRT naive FP16 (LayerNorm plugin)",
    "trtpipe": "trtpipe",
}
BUDGET = {"logits_mean_abs": 1.0e-3, "logits_max_abs": 3.0e-3, "boxes_mean_abs": 2.0e-4}  # issue 7's, for trtpipe


# ---------------------------------------------------------------- assembling results (pure)


def assemble(
    lock: dict[str, dict],
    torch_result: dict | None,
    rerun: dict | None,
    lock_b8: dict[str, dict] | None = None,
    plan: dict | None = None,
) -> dict:
    """Rows, precision-search facts and the issue's targets from the recipe's lock file (its `stages` mapping),
    the torch rows' JSON, the timed re-run, the batch-8 recipe's lock file and the search's plan (its candidates);
    what has not been measured yet is None."""
    rows = {key: torch_row(torch_result, name) for key, (name, _) in TORCH_ROWS.items()}
    rows |= {key: trt_row(lock, row, lock_b8 or {}) for key, row in TRT_ROWS.items()}
    search = search_facts(lock) | {"candidates": (plan or {}).get("candidates")}
    search_b8 = search_facts(lock_b8 or {})
    return {
        **rows,
        "precision_search": search,
        **({"precision_search_b8": search_b8} if search_b8 else {}),
        "rerun": rerun,
        "targets": targets(rows, search, rerun, search_b8),
        "env": environment(lock, torch_result),
    }


def torch_row(result: dict | None, name: str) -> dict:
    measured = (result or {}).get("rows", {}).get(name, {})
    return {f: measured.get(f) for f in FIELDS} | {k: measured[k] for k in ("compile_s",) if k in measured}


def trt_row(lock: dict[str, dict], row: TrtRow, lock_b8: dict[str, dict]) -> dict:
    """A TensorRT row from the lock file's metrics, taking a profile or compare only when it measured the engine
    that the build stage holds now; batch 8 from the same lock file, else from the batch-8 recipe's, with the errors
    of that engine on its own batch."""
    engine = built(lock, row.build)
    profile, profile_b8, compare = (current(lock, name, engine) for name in (row.profile, row.profile_b8, row.compare))
    latency = profile.get("latency", {})
    found = {
        "latency_ms": profile.get("latency_ms"),
        "throughput_b8": profile_b8.get("throughput_per_s"),
        "latency_b8_ms": profile_b8.get("latency_ms"),
        **{f: compare.get(f) for f in ERRORS},
        "timing": ("cuda_graph" if "cuda_graph" in latency else next(iter(latency), None)),
    }
    if profile_b8 or not lock_b8:
        return found
    engine_b8 = built(lock_b8, row.build)
    profile_b8, compare_b8 = (current(lock_b8, name, engine_b8) for name in (row.profile, row.compare))
    return found | {
        "throughput_b8": profile_b8.get("throughput_per_s"),
        "latency_b8_ms": profile_b8.get("latency_ms"),
        "errors_b8": {f: compare_b8.get(f) for f in ERRORS},
    }


def built(lock: dict[str, dict], stage: str) -> str | None:
    return lock.get(stage, {}).get("outputs", {}).get("engine", {}).get("digest")


def current(lock: dict[str, dict], stage: str, engine: str | None) -> dict:
    """The metrics of `stage` when its `engine` input is that digest, else {}."""
    entry = lock.get(stage, {})
    if engine is None or entry.get("inputs", {}).get("engine") != engine:
        return {}
    return entry.get("metrics", {})


def search_facts(lock: dict[str, dict]) -> dict:
    """Seconds of the ranking (when a sensitivity stage made one) and of the search, their sum when the search ran in
    one go (a resumed search ran its first part in an earlier process, whose time the lock file does not keep), and
    what the search found."""
    found = lock.get("precision-search")
    if found is None:
        return {}
    ranking = lock.get("sensitivity", {}).get("seconds", 0.0)
    metrics = found["metrics"]
    one_go = metrics.get("evaluations_run") == metrics.get("evaluations")
    return {
        "sensitivity_s": ranking,
        "search_s": found["seconds"],
        "total_s": ranking + found["seconds"] if one_go else None,
        **{k: metrics.get(k) for k in ("evaluations", "evaluations_run", "fp32_nodes", "casts", "budget_met")},
        "candidate_optimization_level": found.get("params", {}).get("builder", {}).get("optimization_level"),
    }


def targets(rows: dict[str, dict], search: dict, rerun: dict | None, search_b8: dict | None = None) -> list[dict]:
    """Issue 7's targets, each with its measured value; `met` is None while a value is missing. The batch-8 recipe's
    own search, where it has one, is held to the same time limit."""
    mine = rows["trtpipe"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    if "errors_b8" in mine:  # the batch-8 recipe's own engine
        errors_b8 = mine["errors_b8"]
    else:  # one engine, with a batch-8 profile, serves both batches; or batch 8 was not measured
        errors_b8 = mine if mine["throughput_b8"] is not None else {}
    found = [(f"trtpipe {k}", mine[k], "<=", limit) for k, limit in BUDGET.items()]
    found += [(f"trtpipe batch-8 {k}", errors_b8.get(k), "<=", limit) for k, limit in BUDGET.items()]
    found += [
        ("latency / TensorRT naive FP16", ratio(mine["latency_ms"], rows["trt_fp16_naive"]["latency_ms"]), "<=", 1.05),
        ("latency / torch.compile FP16", ratio(mine["latency_ms"], rows["torch_compile_fp16"]["latency_ms"]), "<=",
         0.95),
        ("speedup over PyTorch eager FP32", ratio(rows["torch_eager_fp32"]["latency_ms"], mine["latency_ms"]), ">=",
         6.0),
        ("batch-8 throughput / TensorRT FP32", ratio(mine["throughput_b8"], rows["trt_fp32"]["throughput_b8"]), ">=",
         1.5),
        ("ranking + search seconds", search.get("total_s"), "<=", 900.0),
        *([("batch-8 ranking + search seconds", search_b8.get("total_s"), "<=", 900.0)] if search_b8 else []),
        ("unchanged re-run seconds", (rerun or {}).get("seconds"), "<", 1.0),
    ]
    compare = {"<=": lambda v, t: v <= t, ">=": lambda v, t: v >= t, "<": lambda v, t: v < t}
    return [
        {"target": name, "value": value, "limit": f"{op} {limit:g}",
         "met": None if value is None else compare[op](value, limit)}
        for name, value, op, limit in found
    ]


def environment(lock: dict[str, dict], torch_result: dict | None) -> dict:
    """The TensorRT rows' environment (TensorRT, GPU; ONNX Runtime on a CPU), the export's and the torch rows'."""
    found = next((e["env"] for name in ("build-fp32", "build") if (e := lock.get(name)) and e.get("env")), {})
    found |= {f"export_{k}": v for k, v in lock.get("export", {}).get("env", {}).items()}
    if torch_result:
        found |= {f"torch_rows_{k}": torch_result[k] for k in ("device", "torch")}
        if "gpu" not in found and torch_result["device_type"] == "cuda":
            found["gpu"] = torch_result["device"]
    return found


def device_slug(env: dict) -> str:
    return re.sub(r"[^a-z0-9]+", "-", env.get("gpu", "cpu").lower()).strip("-")


def step_stages(stages: dict, *keys: str) -> list[str]:
    """The stages of TensorRT rows' steps in run order: the rows' and what they need, export aside (its result comes
    from the lock file). Stages of no row (mixed-precision, the report) run in the report step."""
    from trtpipe import dag

    rows = set().union(*(TRT_ROWS[key].stages for key in keys))
    chosen = dag.ancestors(stages, rows & set(stages)) - {"export"}
    return [s for s in dag.order(stages) if s in chosen]


def groups(steps: list[str]) -> list[tuple[str, ...]]:
    """Steps as they run: consecutive TensorRT rows in one process, where their builds share TensorRT's timing cache
    (TensorRT 8.6 refused a cache file with Myelin timings that another process wrote: trtpipe.trt.builder)."""
    out: list[tuple[str, ...]] = []
    for step in steps:
        if out and step in TRT_ROWS and out[-1][0] in TRT_ROWS:
            out[-1] += (step,)
        else:
            out.append((step,))
    return out


# ---------------------------------------------------------------- printing


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("", "latency b1 ms", "b8 images/s", "logits mean", "logits max", "boxes mean", "boxes max", "timing",
                  title="DAB-DETR: errors against torch FP32 (TF32 off) on the same input")
    for key, label in LABELS.items():
        row = results[key]
        table.add_row(label, number(row["latency_ms"], ".3f"), number(row["throughput_b8"], ".1f"),
                      *(number(row[f], ".2e") for f in ERRORS), row["timing"] or "-")
    console = Console(width=140)
    console.print(table)
    goals = Table("target", "value", "limit", "met", title="issue 7 targets (same GPU, same run)")
    for t in results["targets"]:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[t["met"]]
        goals.add_row(t["target"], number(t["value"], ".3g"), t["limit"], met)
    console.print(goals)


def number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# ---------------------------------------------------------------- steps


class Bench:
    """The steps, run from the directory whose build/ holds the recipe's outputs (the repository root on the GPU)."""

    def __init__(self, args: argparse.Namespace):
        from trtpipe import recipe

        self.args = args
        self.path = args.recipe or RECIPES[args.size]
        self.path_b8 = None if args.recipe else RECIPES_B8.get(args.size)
        self.overrides = {path: self.counts(path) + args.set for path in (self.path, self.path_b8) if path}
        self.recipe = recipe.load(self.path, self.overrides[self.path], args.target)
        self.recipe_b8 = recipe.load(self.path_b8, self.overrides[self.path_b8], args.target) if self.path_b8 else None
        self.state = Path("build") / self.recipe.name  # beside the recipe's build outputs
        self.torch_json = self.state / "bench_torch.json"
        self.rerun_json = self.state / "bench_rerun.json"

    def counts(self, path: Path) -> list[str]:
        """--iterations and --warmup as overrides of every profile stage of the recipe at `path`."""
        from trtpipe import recipe

        profiles = [name for name, spec in recipe.load(path).stages.items() if spec.kind == "profile"]
        args = self.args
        counts = {k: v for k, v in (("iterations", args.iterations), ("warmup", args.warmup)) if v is not None}
        return [f"stages.{stage}.{k}={v}" for stage in profiles for k, v in counts.items()]

    def trtpipe(self, python: list[str], *selection: str, path: Path | None = None, sets: list[str] = ()) -> int:
        path = path or self.path
        flags = [f"--set={o}" for o in [*self.overrides[path], *sets]]
        flags += ["--cache-dir", str(self.args.cache_dir)] if self.args.cache_dir else []
        flags += ["--target", self.args.target] if self.args.target else []
        return run([*python, "-m", "trtpipe", "run", str(path), *selection, *flags])

    def export(self) -> int:
        """The recipe's export, and the batch-8 recipe's where there is one."""
        code = self.trtpipe(self.args.torch_python, "--until", "export")
        if code == 0 and self.path_b8:
            code = self.trtpipe(self.args.torch_python, "--until", "export", path=self.path_b8)
        return code

    def b8(self) -> int:
        """Every stage of the batch-8 recipe but its export (run by the export step): its own search, at batch 8."""
        if not self.path_b8:
            print(f"no batch-8 recipe for --size {self.args.size}: its recipe has batch-8 profiles", flush=True)
            return 0
        return self.trtpipe([sys.executable], "--only", *(s for s in self.recipe_b8.stages if s != "export"),
                            path=self.path_b8)

    def torch(self) -> int:
        reference = self.lock().get("export", {}).get("outputs", {}).get("reference", {}).get("path")
        if reference is None:
            print("no export in the lock file: run the export step first", flush=True)
            return 1
        counts = [f"--{k}={v}" for k, v in (("iterations", self.args.iterations), ("warmup", self.args.warmup))
                  if v is not None]
        return run([*self.args.torch_python, str(ROOT / "bench/dab_detr_torch.py"), "--reference", reference,
                    "--out", str(self.torch_json), "--model-kwargs", json.dumps(self.recipe.model.kwargs),
                    "--device", self.args.torch_device, "--rows", *self.args.torch_rows, *counts])

    def trt(self, *keys: str) -> int:
        return self.trtpipe([sys.executable], "--only", *step_stages(self.recipe.stages, *keys))

    def report(self) -> int:
        """Every stage but export (the report, mixed-precision, anything not run yet), then the same again, timed:
        an unchanged re-run, in this process."""
        from trtpipe.runner import Runner, Selection

        everything = [s for s in self.recipe.stages if s != "export"]
        code = self.trtpipe([sys.executable], "--only", *everything)
        if code != 0:
            return code
        runner = Runner(self.recipe, cache_dir=self.args.cache_dir)
        start = time.perf_counter()
        runs = runner.run(Selection(only=everything))
        seconds = time.perf_counter() - start
        ran = [r.name for r in runs if r.status == "ran"]
        write_json(self.rerun_json, {"seconds": seconds, "stages": len(runs), "ran": ran,
                                     "what": "every stage but export (its python has torch), in-process"})
        print(f"unchanged re-run: {len(runs)} stages, {len(ran)} ran, {seconds:.3f} s", flush=True)
        return 0

    def lock(self, b8: bool = False) -> dict[str, dict]:
        from trtpipe import lockfile

        if b8 and not self.recipe_b8:
            return {}
        return lockfile.read(lockfile.lock_path(self.recipe_b8 if b8 else self.recipe))

    def plan(self) -> dict | None:
        """The batch-1 precision search's plan, where it has run."""
        path = self.lock().get("precision-search", {}).get("outputs", {}).get("plan", {}).get("path")
        return read_json(Path(path)) if path else None

    def write(self) -> tuple[Path, dict]:
        date = datetime.date.today().isoformat()
        measured = assemble(self.lock(), read_json(self.torch_json), read_json(self.rerun_json), self.lock(b8=True),
                            self.plan())
        results = {"recipe": self.recipe.name, "date": date, **measured}
        out = self.args.results_dir / f"{self.recipe.name}_{device_slug(results['env'])}_{date}.json"
        write_json(out, results)
        return out, results


def run(argv: list[str]) -> int:
    print(f"$ {shlex.join(argv)}", flush=True)
    return subprocess.run(argv).returncode


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(RECIPES), default="r50", help="which recipe: %(choices)s")
    p.add_argument("--recipe", type=Path, help="another recipe with the same stage names (default: by --size)")
    p.add_argument("--step", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run, in the given order")
    p.add_argument("--skip-torch", action="store_true", help="leave the torch rows out")
    p.add_argument("--torch-python", type=shlex.split, default=[sys.executable],
                   help="command of a python with torch, for the export and the torch rows (default: this python)")
    p.add_argument("--torch-device", default="cuda", help="device of the torch rows")
    p.add_argument("--torch-rows", nargs="+", choices=[name for name, _ in TORCH_ROWS.values()],
                   default=[name for name, _ in TORCH_ROWS.values()], help="torch rows to (re)measure")
    p.add_argument("--cache-dir", type=Path, help="trtpipe's store (default: .trtpipe/ beside the recipe)")
    p.add_argument("--target", choices=["tensorrt", "onnxruntime"], help="override the recipe's target")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value in every step, as trtpipe run --set does (repeatable)")
    p.add_argument("--iterations", type=int, help="timed iterations of every row (default: 200, or the recipe's)")
    p.add_argument("--warmup", type=int, help="warm-up iterations of every row (default: 20, or the recipe's)")
    p.add_argument("--results-dir", type=Path, default=ROOT / "bench/results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    steps = {"export": bench.export, "torch": bench.torch, "report": bench.report, "b8": bench.b8}
    failed = []
    for group in groups([s for s in args.step if not (s == "torch" and args.skip_torch)]):
        name = "+".join(group)
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        code = bench.trt(*group) if group[0] in TRT_ROWS else steps[name]()
        print(f"== {name}: {'ok' if code == 0 else f'failed ({code})'} in {time.perf_counter() - start:.0f} s",
              flush=True)
        failed += [name] if code != 0 else []
        bench.write()
    out, results = bench.write()
    print_results(results)
    print(f"wrote {out}" + (f"; failed steps: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
