"""Mixed precision side by side on DAB-DETR tiny, a small BERT encoder and a small CNN (random weights): trtpipe
(rules only; search), onnxconverter-common float16 (its default op block list) and NVIDIA ModelOpt AutoCast.

Per model and tool: Casts added, FP32 compute nodes (data movement and Casts not counted), output error against the
torch FP32 reference on ONNX Runtime (as ONNX Runtime's CPU runs the graph, and with float16 storage emulated, see
trtpipe.precision.emulate), ONNX Runtime CPU latency (median). Each model goes through trtpipe's graph stages in a
temporary directory and every tool converts that same fuse-plugins graph. trtpipe's search budget: the recipe's for
DAB-DETR, else half the mean abs error of the all-float16 graph per output. ModelOpt runs in its own virtualenv
(MODELOPT_PYTHON, default /tmp/modelopt-venv/bin/python) so that it cannot disturb .venv.

usage: python bench/precision.py          writes bench/results/precision.json
"""

import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from loguru import logger
from rich.console import Console
from rich.table import Table

from trtpipe import recipe as recipes
from trtpipe.data import load_reference
from trtpipe.precision import baselines, ops
from trtpipe.precision.convert import convert, node_precisions
from trtpipe.precision.emulate import emulate
from trtpipe.runner import Runner, Selection

ROOT = Path(__file__).resolve().parent.parent
MODELOPT_PYTHON = os.environ.get("MODELOPT_PYTHON", "/tmp/modelopt-venv/bin/python")
GRAPH_STAGES = {
    "export": {"uses": "export", "opset": 17},
    "simplify": {"uses": "simplify", "after": ["export"]},
    "fold-constants": {"uses": "fold-constants", "after": ["simplify"]},
    "fuse-plugins": {"uses": "fuse-plugins", "after": ["fold-constants"]},
}
PRECISION_STAGES = {
    "mixed-precision": {"uses": "mixed-precision", "after": ["fuse-plugins"]},
    "sensitivity": {
        "uses": "sensitivity", "after": ["fuse-plugins"], "reference": "export.reference", "method": "output",
        "block_size": 4,
    },
    "precision-search": {
        "uses": "precision-search", "after": ["fuse-plugins"], "ranking": "sensitivity.ranking",
        "reference": "export.reference",
    },
}  # fmt: skip
OTHER_MODELS = {
    "bert_tiny": {
        "model": {"factory": "trtpipe.models.bert:build", "kwargs": {"size": "tiny"}},
        "inputs": {
            "input_ids": {"shape": [1, 128], "dtype": "int64", "low": 0, "high": 1000},
            "attention_mask": {"shape": [1, 128], "dtype": "int64", "low": 1, "high": 2},
        },
    },
    "cnn_small": {
        "model": {"factory": "trtpipe.models.cnn:build", "kwargs": {"width": 32}},
        "inputs": {"image": {"shape": [1, 3, 64, 64], "low": -2.0, "high": 2.0}},
    },
}
MODELOPT = (
    "import sys, onnx\n"
    "from modelopt.onnx.autocast import convert_to_mixed_precision\n"
    "m = convert_to_mixed_precision(sys.argv[1], keep_io_types=True, calibration_data=sys.argv[3])\n"
    "onnx.save(m, sys.argv[2])\n"
)


def recipe_texts() -> dict[str, dict]:
    detr = yaml.safe_load((ROOT / "recipes/dab_detr_tiny.yaml").read_text())
    detr["stages"] = {k: v for k, v in detr["stages"].items() if k in {*GRAPH_STAGES, *PRECISION_STAGES}}
    texts = {"dab_detr_tiny": detr}
    for name, spec in OTHER_MODELS.items():
        texts[name] = {"name": name, **spec, "target": "onnxruntime", "stages": GRAPH_STAGES}
    return texts


def run_stages(data: dict, tmp: Path, until: str) -> tuple[Runner, dict]:
    path = tmp / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    runner = Runner(recipes.load(path), cache_dir=tmp / "cache", build_dir=tmp / "build")
    runs = {run.name: run for run in runner.run(Selection(until=until))}
    return runner, runs


def output_path(runner: Runner, runs: dict, stage: str, output: str) -> Path:
    return runner.build_dir / stage / runs[stage].outputs[output]["file"]


def half_fp16_error(model: onnx.ModelProto, feeds: dict, refs: dict) -> dict:
    outputs = run(emulate(convert(model).model), feeds)
    return {k: {"mean_abs": float(np.abs(outputs[k] - refs[k]).mean()) / 2} for k in refs}


def run(model: onnx.ModelProto, feeds: dict) -> dict:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def latency_ms(model: onnx.ModelProto, feeds: dict, iterations: int = 20) -> float:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def fp32_compute_nodes(model: onnx.ModelProto) -> int:
    op_types = {n.name: n.op_type for n in model.graph.node}
    return sum(p == "float32" and op_types[n] not in ops.MOVE_OPS for n, p in node_precisions(model).items())


def measure(model: onnx.ModelProto, base: onnx.ModelProto, feeds: dict, refs: dict) -> dict:
    row = {"casts": baselines.count_casts(model) - baselines.count_casts(base), "fp32_nodes": fp32_compute_nodes(model)}
    if problem := baselines.problem(model):
        return row | {"valid": False, "problem": problem}
    plain, stored = run(model, feeds), run(emulate(model), feeds)
    with np.errstate(invalid="ignore", over="ignore"):
        row["errors"] = {
            k: {
                "mean_abs_ort": float(np.abs(plain[k].astype(np.float32) - ref).mean()),
                "mean_abs_fp16": float(np.abs(stored[k].astype(np.float32) - ref).mean()),
                "max_abs_fp16": float(np.abs(stored[k].astype(np.float32) - ref).max()),
            }
            for k, ref in refs.items()
        }
    return row | {"valid": True, "latency_ms": latency_ms(model, feeds)}


def modelopt(path: Path, feeds: dict, tmp: Path) -> tuple[onnx.ModelProto | None, str]:
    if not Path(MODELOPT_PYTHON).is_file():
        return None, f"no ModelOpt virtualenv at {MODELOPT_PYTHON}"
    np.savez(tmp / "calibration.npz", **feeds)
    out = tmp / "modelopt.onnx"
    done = subprocess.run(
        [MODELOPT_PYTHON, "-c", MODELOPT, str(path), str(out), str(tmp / "calibration.npz")],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1][:300]
    version_line = subprocess.run(
        [MODELOPT_PYTHON, "-c", "import modelopt; print(modelopt.__version__)"], capture_output=True, text=True
    )
    return onnx.load(str(out)), f"nvidia-modelopt {version_line.stdout.strip()}"


def bench_model(data: dict, tmp: Path) -> dict:
    name = data["name"]
    tmp = tmp / name
    tmp.mkdir()
    runner, runs = run_stages(data, tmp, "fuse-plugins")
    base_path = output_path(runner, runs, "fuse-plugins", "model")
    base = onnx.load(str(base_path))
    feeds, refs = load_reference(output_path(runner, runs, "export", "reference"))
    if "precision-search" not in data["stages"]:
        data["stages"] = {**data["stages"], **PRECISION_STAGES}
        data["stages"]["precision-search"] = {**PRECISION_STAGES["precision-search"]}
        data["stages"]["precision-search"]["budget"] = half_fp16_error(base, feeds, refs)
    start = time.perf_counter()
    runner, runs = run_stages(data, tmp, "precision-search")
    search_s = time.perf_counter() - start
    search, searched = runs["precision-search"].metrics, output_path(runner, runs, "precision-search", "model")
    runner, runs = run_stages(data, tmp, "mixed-precision")
    rules = output_path(runner, runs, "mixed-precision", "model")
    rows = {
        "fp32": measure(base, base, feeds, refs),
        "trtpipe rules": measure(onnx.load(str(rules)), base, feeds, refs),
        "trtpipe search": measure(onnx.load(str(searched)), base, feeds, refs),
        "onnxconverter-common": measure(baselines.onnxconverter_common(base), base, feeds, refs),
    }
    theirs, note = modelopt(base_path, feeds, tmp)
    rows["modelopt autocast"] = measure(theirs, base, feeds, refs) if theirs else {"valid": False, "problem": note}
    rows["modelopt autocast"]["tool"] = note
    rows["trtpipe search"] |= {
        "budget": data["stages"]["precision-search"]["budget"],
        "budget_met": search["budget_met"],
        "evaluations": search["evaluations"],
        "search_s": round(search_s, 1),
        "casts_onnxconverter_common_same_fp32_set": search["casts_onnxconverter_common"],
    }
    return {"nodes": len(base.graph.node), "rows": rows}


def fmt(value, spec=".2e") -> str:
    return "" if value is None else format(value, spec)


def main() -> None:
    logger.remove()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for data in recipe_texts().values():
            results[data["name"]] = bench_model(data, Path(tmp))
    table = Table("model", "tool", "casts", "FP32 nodes", "output", "mean abs (ORT)", "mean abs (fp16)",
                  "max abs (fp16)", "CPU ms", "notes", title="mixed precision on ONNX Runtime CPU")  # fmt: skip
    for model, result in results.items():
        for tool, row in result["rows"].items():
            first = next(iter(row.get("errors", {}).items()), (None, {}))
            notes = row.get("problem", "")
            if "budget_met" in row:
                notes = (
                    f"budget met: {row['budget_met']}, {row['evaluations']} evaluations, {row['search_s']} s; "
                    f"onnxconverter-common, same FP32 set: {row['casts_onnxconverter_common_same_fp32_set']} casts"
                )
            table.add_row(model, tool, str(row.get("casts", "")), str(row.get("fp32_nodes", "")), first[0] or "",
                          fmt(first[1].get("mean_abs_ort")), fmt(first[1].get("mean_abs_fp16")),
                          fmt(first[1].get("max_abs_fp16")), fmt(row.get("latency_ms"), ".1f"), notes)  # fmt: skip
    Console(width=200).print(table)
    env = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
           **{p: version(p) for p in ("torch", "onnx", "onnxruntime", "onnxconverter-common")}}  # fmt: skip
    out = ROOT / "bench/results/precision.json"
    out.write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
