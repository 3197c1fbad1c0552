"""bench/dab_detr.py: the results it assembles from a lock file and the torch rows, and its steps on the tiny recipe
with ONNX Runtime (the TensorRT rows' stages run there too: builds are ONNX Runtime-optimized models)."""

import json
import sys

import pytest
import yaml

from tests import bench_scripts
from tests.bench_scripts import ROOT

bench = bench_scripts.load("dab_detr")

# Entries as a TensorRT run writes them (metrics abridged to what the bench reads).
ENV = {"tensorrt": "8.6.1", "gpu": "NVIDIA H200", "compute_capability": "9.0"}


def build(digest: str) -> dict:
    return {"env": ENV, "outputs": {"engine": {"digest": digest}, "layers": {"digest": digest + "l"}}}


def profile(engine: str, latency_ms: float, batch: int, graph: bool = True) -> dict:
    modes = {"enqueue": {"median_ms": latency_ms * 1.2}} | ({"cuda_graph": {"median_ms": latency_ms}} if graph else {})
    return {"inputs": {"engine": engine},
            "metrics": {"latency_ms": latency_ms, "throughput_per_s": batch * 1000 / latency_ms, "latency": modes}}


def compare(engine: str, logits: float, boxes: float) -> dict:
    return {"inputs": {"engine": engine, "reference": "ref"},
            "metrics": {"logits_mean_abs": logits, "logits_max_abs": 3 * logits, "boxes_mean_abs": boxes,
                        "boxes_max_abs": 3 * boxes}}


def recorded_lock() -> dict:
    lock = {
        "export": {"env": {"torch": "2.11.0", "transformers": "5.17.0"}},
        "build-fp32": build("e32"), "profile-fp32": profile("e32", 3.6, 1), "profile-fp32-b8": profile("e32", 20.0, 8),
        "compare-fp32": compare("e32", 2e-6, 1e-6),
        "build-fp16": build("e16"), "profile-fp16": profile("e16", 3.0, 1), "profile-fp16-b8": profile("e16", 12.0, 8),
        "compare-fp16": compare("e16", 0.33, 0.01),
        "build": build("mix"), "profile": profile("mix", 3.1, 1), "profile-b8": profile("mix", 12.5, 8),
        "compare": compare("mix", 4e-4, 1.9e-4),
        "sensitivity": {"seconds": 60.0},
        "precision-search": {"seconds": 120.0, "params": {"builder": {"optimization_level": 1}},
                             "metrics": {"evaluations": 2, "evaluations_run": 2, "fp32_nodes": 80, "casts": 15,
                                         "budget_met": True}},
    }  # fmt: skip
    return lock


TORCH = {
    "device": "NVIDIA H200", "device_type": "cuda", "torch": "2.11.0+cu130",
    "rows": {
        "eager_fp32": {"latency_ms": 18.0, "throughput_b8": 60.0, "latency_b8_ms": 130.0, "logits_mean_abs": 1e-6,
                       "logits_max_abs": 5e-6, "boxes_mean_abs": 1e-7, "boxes_max_abs": 1e-6, "timing": "eager"},
        "compile_fp16": {"latency_ms": 3.2, "throughput_b8": 450.0, "latency_b8_ms": 17.0, "logits_mean_abs": 1.1e-3,
                         "logits_max_abs": 4e-3, "boxes_mean_abs": 2e-4, "boxes_max_abs": 9e-4,
                         "timing": "cuda_graph", "compile_s": {"b1": 60.0, "b8": 40.0}},
    },
}  # fmt: skip


def by_name(results: dict) -> dict:
    return {t["target"]: t for t in results["targets"]}


def test_rows_and_targets_from_a_recorded_run():
    results = bench.assemble(recorded_lock(), TORCH, {"seconds": 0.4})
    mine = results["trtpipe"]
    assert mine["latency_ms"] == 3.1 and mine["latency_b8_ms"] == 12.5 and mine["timing"] == "cuda_graph"
    assert mine["throughput_b8"] == pytest.approx(640.0) and mine["boxes_mean_abs"] == 1.9e-4
    assert results["trt_fp16_naive"]["logits_mean_abs"] == 0.33
    assert results["torch_compile_fp16"]["compile_s"] == {"b1": 60.0, "b8": 40.0}
    assert results["torch_autocast_fp16"] == dict.fromkeys(bench.FIELDS), "a row not measured is all None"
    assert set(results) >= {*bench.TORCH_ROWS, *bench.TRT_ROWS, "precision_search", "targets", "env"}

    targets = by_name(results)
    assert targets["latency / TensorRT naive FP16"]["value"] == pytest.approx(3.1 / 3.0)
    assert targets["latency / TensorRT naive FP16"]["met"] is True
    assert targets["latency / torch.compile FP16"]["value"] == pytest.approx(3.1 / 3.2)
    assert targets["latency / torch.compile FP16"]["met"] is False  # 0.97 > 0.95
    assert targets["speedup over PyTorch eager FP32"]["value"] == pytest.approx(18.0 / 3.1)
    assert targets["speedup over PyTorch eager FP32"]["met"] is False  # 5.8 < 6
    assert targets["batch-8 throughput / TensorRT FP32"]["value"] == pytest.approx(20.0 / 12.5)
    assert targets["trtpipe batch-8 boxes_mean_abs"]["value"] == 1.9e-4, "one engine for both batches"
    assert targets["trtpipe boxes_mean_abs"]["met"] is True
    assert targets["ranking + search seconds"]["value"] == 180.0
    assert "batch-8 ranking + search seconds" not in targets, "no batch-8 recipe, no second search"
    assert targets["unchanged re-run seconds"]["met"] is True

    assert results["precision_search"]["candidate_optimization_level"] == 1
    assert results["env"]["gpu"] == "NVIDIA H200" and results["env"]["export_torch"] == "2.11.0"
    assert bench.device_slug(results["env"]) == "nvidia-h200"


def test_a_profile_of_an_older_engine_is_not_taken():
    lock = recorded_lock()
    lock["build"] = build("rebuilt")  # the engine changed; profile and compare measured the one before
    lock["profile-b8"] = profile("rebuilt", 12.0, 8)
    results = bench.assemble(lock, None, None)
    assert results["trtpipe"]["latency_ms"] is None and results["trtpipe"]["logits_mean_abs"] is None
    assert results["trtpipe"]["latency_b8_ms"] == 12.0
    assert by_name(results)["latency / TensorRT naive FP16"]["met"] is None


def test_batch_8_from_the_batch_8_recipe():
    lock = {k: v for k, v in recorded_lock().items() if not k.endswith("-b8")}
    lock_b8 = {"build-fp32": build("b32"), "profile-fp32": profile("b32", 25.0, 8),
               "compare-fp32": compare("b32", 2e-6, 1e-6), "build": build("bmix"), "profile": profile("bmix", 10.0, 8),
               "compare": compare("bmix", 5e-4, 1e-4),
               "profile-fp16": profile("e16", 9.0, 8),
               "precision-search": {"seconds": 950.0, "metrics": {"evaluations": 3, "evaluations_run": 3}}}  # fmt: skip
    results = bench.assemble(lock, None, None, lock_b8)
    assert results["trtpipe"]["throughput_b8"] == pytest.approx(800.0) and results["trtpipe"]["latency_b8_ms"] == 10.0
    assert results["trtpipe"]["errors_b8"]["boxes_mean_abs"] == 1e-4
    assert results["trt_fp32"]["throughput_b8"] == pytest.approx(320.0)
    assert results["trt_fp16_naive"]["throughput_b8"] is None, "a profile of an engine the recipe did not build"
    targets = by_name(results)
    assert targets["batch-8 throughput / TensorRT FP32"]["value"] == pytest.approx(2.5)
    assert targets["trtpipe batch-8 boxes_mean_abs"]["value"] == 1e-4
    assert targets["trtpipe batch-8 logits_max_abs"]["met"] is True  # 1.5e-3
    assert results["precision_search_b8"]["search_s"] == 950.0
    assert targets["batch-8 ranking + search seconds"]["met"] is False, "its own search, no sensitivity stage"
    assert targets["ranking + search seconds"]["value"] == 180.0, "the batch-1 search's"
    assert bench.assemble(recorded_lock(), None, None, lock_b8)["trtpipe"]["latency_b8_ms"] == 12.5, "own lock first"


def test_a_batch_8_engine_without_errors_leaves_its_accuracy_open():
    lock = {k: v for k, v in recorded_lock().items() if not k.endswith("-b8")}
    lock_b8 = {"build-fp32": build("b32"), "profile-fp32": profile("b32", 25.0, 8), "build": build("bmix"),
               "profile": profile("bmix", 10.0, 8)}  # its compare failed: the lock file has none
    targets = by_name(bench.assemble(lock, None, None, lock_b8))
    assert targets["batch-8 throughput / TensorRT FP32"]["met"] is True
    assert targets["trtpipe batch-8 boxes_mean_abs"]["value"] is None, "not the batch-1 engine's errors"
    assert targets["trtpipe batch-8 boxes_mean_abs"]["met"] is None


def test_missing_pieces_leave_targets_open():
    lock = recorded_lock()
    lock["profile-fp16"] = profile("e16", 3.0, 1, graph=False)  # CUDA graph capture failed: plain enqueue
    lock["precision-search"]["metrics"]["evaluations_run"] = 1  # resumed: its first part ran in another process
    results = bench.assemble(lock, None, None)
    assert results["trt_fp16_naive"]["timing"] == "enqueue"
    assert results["precision_search"]["total_s"] is None
    targets = by_name(results)
    assert targets["ranking + search seconds"]["met"] is None
    assert targets["speedup over PyTorch eager FP32"]["met"] is None  # no torch rows
    assert targets["unchanged re-run seconds"]["met"] is None
    no_b8 = by_name(bench.assemble({k: v for k, v in lock.items() if not k.endswith("-b8")}, None, None))
    assert no_b8["trtpipe batch-8 boxes_mean_abs"]["value"] is None, "no batch 8: not the batch-1 errors"
    assert bench.assemble({}, None, None)["env"] == {} and bench.device_slug({}) == "cpu"


def test_each_trt_step_runs_its_rows_stages_and_what_they_need():
    from trtpipe import recipe

    tiny = recipe.load(ROOT / "recipes/dab_detr_tiny.yaml")
    assert tiny.stage("profile-b8").shape == "max" and tiny.inputs["pixel_values"].resolve("max")[0] == 8
    shared = ["simplify", "fold-constants"]
    assert bench.step_stages(tiny.stages, "trt_fp32") == [
        *shared, "build-fp32", "profile-fp32", "profile-fp32-b8", "compare-fp32"]
    assert bench.step_stages(tiny.stages, "trt_fp16_naive") == [
        *shared, "build-fp16", "profile-fp16", "profile-fp16-b8", "compare-fp16"]
    assert bench.step_stages(tiny.stages, "trtpipe") == [
        *shared, "fuse-plugins", "sensitivity", "precision-search", "build", "profile", "profile-b8", "compare"]
    r50 = recipe.load(ROOT / "recipes/dab_detr.yaml")  # batch 1 only; ranked on the graph without plugin nodes
    assert bench.step_stages(r50.stages, "trtpipe") == [
        *shared, "fuse-plugins", "fuse-onnx", "sensitivity", "precision-search", "build", "profile", "compare"]
    assert bench.step_stages(r50.stages, "trtpipe", "trt_fp16_naive") == [
        *shared, "fuse-plugins", "fuse-layernorm", "fuse-onnx", "build-fp16", "sensitivity", "precision-search",
        "build", "profile-fp16", "profile", "compare-fp16", "compare"]  # naive FP16: the LayerNorm plugin alone
    assert bench.groups(["export", "trtpipe", "trt_fp16_naive", "report", "trt_fp32"]) == [
        ("export",), ("trtpipe", "trt_fp16_naive"), ("report",), ("trt_fp32",)]
    r50_b8 = recipe.load(bench.RECIPES_B8["r50"])  # where the r50 rows find batch 8, under the rows' stage names
    assert r50_b8.inputs["pixel_values"].resolve("opt")[0] == 8
    assert {bench.TRT_ROWS[k].profile for k in ("trt_fp32", "trtpipe")} <= set(r50_b8.stages)


def test_batch_8_is_searched_against_the_batch_1_budget():
    from trtpipe import recipe

    b1, b8 = (recipe.load(path).stage("precision-search") for path in (bench.RECIPES["r50"], bench.RECIPES_B8["r50"]))
    assert b8.budget == b1.budget and b8.budget
    assert b8.output_tails == b1.output_tails and b8.fp32_nodes == b1.fp32_nodes
    assert recipe.load(bench.RECIPES_B8["r50"]).stage("build").after == ["precision-search"]


@pytest.mark.slow
def test_steps_on_the_tiny_recipe(tmp_path, monkeypatch, capsys):
    """Every step, the torch rows on the CPU (compile aside, for time), the TensorRT rows' stages on ONNX Runtime,
    with the issue's budget, which FP16 everywhere meets on this model: a search of one or two candidates."""
    pytest.importorskip("torch")
    text = (ROOT / "recipes/dab_detr_tiny.yaml").read_text()
    data = yaml.safe_load(text)
    data["stages"]["precision-search"]["budget"] = {"logits": {"mean_abs": 1e-3, "max_abs": 3e-3},
                                                    "boxes": {"mean_abs": 2e-4}}
    data["stages"]["sensitivity"] = {"uses": "sensitivity", "after": ["fuse-plugins"], "reference": "export.reference"}
    recipe = tmp_path / "dab_detr_tiny.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    argv = ["--recipe", str(recipe), "--size", "tiny", "--torch-device", "cpu", "--torch-rows", "eager_fp32",
            "autocast_fp16", "--iterations", "2", "--warmup", "1", "--cache-dir", str(tmp_path / "cache"),
            "--results-dir", str(tmp_path / "results"), "--torch-python", sys.executable]
    assert bench.main([*argv, "--step", "export", "torch", "trt_fp32", "trt_fp16_naive"]) == 0
    assert bench.main([*argv, "--step", "trtpipe", "report"]) == 0

    (out,) = (tmp_path / "results").glob("dab_detr_tiny_cpu_*.json")
    results = json.loads(out.read_text())
    for key in ("torch_eager_fp32", "torch_autocast_fp16", "trt_fp32", "trt_fp16_naive", "trtpipe"):
        row = results[key]
        assert row["latency_ms"] > 0 and row["throughput_b8"] > 0 and row["logits_max_abs"] is not None, key
    assert results["torch_eager_fp32"]["logits_max_abs"] < 1e-4  # the reference's own model and input, on a CPU
    assert results["trt_fp32"]["timing"] == "onnxruntime" and results["trt_fp32"]["logits_max_abs"] < 1e-4
    assert 0 < results["trtpipe"]["boxes_mean_abs"] <= 2e-4
    assert results["torch_compile_fp16"]["latency_ms"] is None
    assert results["precision_search"]["evaluations"] <= 2
    assert len(results["precision_search"]["candidates"]) == results["precision_search"]["evaluations"]
    assert results["rerun"]["ran"] == [] and results["rerun"]["stages"] == len(data["stages"])
    lock = yaml.safe_load((tmp_path / "dab_detr_tiny.lock.yaml").read_text())["stages"]
    assert lock["report"]["outputs"]["report"]["bytes"] > 0
    assert "TensorRT naive FP16" in capsys.readouterr().out
