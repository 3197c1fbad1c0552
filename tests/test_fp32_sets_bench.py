"""bench/fp32_sets.py: the rows it reads from the lock files of bench/gpu/dab_fp32_sets.yaml's GPU runs."""

import json

from tests import bench_scripts
from trtpipe import lockfile, recipe

fp32_sets = bench_scripts.load("fp32_sets")
ENV = {"tensorrt": "8.6.1", "gpu": "NVIDIA H200", "compute_capability": "9.0"}


def engine(name: str, key: str, latency: float, logits: float, boxes: float, nodes: int | None = None) -> dict:
    """Lock entries of one set as a TensorRT run writes them (abridged): its mixed-precision stage, build, profile
    and compare."""
    entries = {
        f"build-{name}": {"key": key, "env": ENV, "seconds": 55.0, "params": {"constrain": "fp32"},
                          "metrics": {"plan_mismatches": 3}},
        f"profile-{name}": {"metrics": {"latency_ms": latency, "layers_per_precision": {"fp32": 40, "fp16": 500}}},
        f"compare-{name}": {"metrics": {"logits_mean_abs": logits, "logits_max_abs": 5 * logits,
                                        "boxes_mean_abs": boxes}},
    }
    if nodes is not None:
        entries[name] = {"params": {"fp32_nodes": ["/a/.*"]}, "metrics": {"fp32_count": nodes}}
    return entries


def test_rows_per_built_set_with_the_budget_verdict():
    lock = engine("pins", "k1", 2.42, 3.4e-2, 1.8e-3, nodes=72) | engine("both", "k2", 2.82, 5.3e-4, 1.35e-4, nodes=177)
    stages = recipe.load(fp32_sets.RECIPE).stages
    rows = {r["set"]: r for r in fp32_sets.rows("lease1", lock, stages)}
    assert set(rows) == {"pins", "both"}  # what the lock holds of the recipe's builds
    assert rows["pins"]["met"] is False and rows["both"]["met"] is True
    both = rows["both"]
    assert (both["fp32_count"], both["fp32_nodes"], both["constrain"]) == (177, ["/a/.*"], "fp32")
    assert rows["both"]["latency_ms"] == 2.82 and rows["both"]["engine_layers"] == {"fp32": 40, "fp16": 500}


def test_two_locks_of_one_lease_give_each_engine_once_and_the_baselines_beside_them(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    sets = engine("pins", "k1", 2.42, 3.4e-2, 1.8e-3, nodes=72)
    lockfile.write(first / "dab_fp32_sets.lock.yaml", "dab_fp32_sets", sets)
    more = sets | engine("plugin", "k3", 2.26, 3.4e-2, 1.8e-3)
    lockfile.write(second / "dab_fp32_sets.lock.yaml", "dab_fp32_sets", more)
    naive = engine("fp16", "k4", 2.37, 3.4e-2, 1.7e-3)
    lockfile.write(second / "dab_detr.lock.yaml", "dab_detr", naive)
    out = tmp_path / "results"
    assert fp32_sets.main([f"l2={first / 'dab_fp32_sets.lock.yaml'}", f"l2={second / 'dab_fp32_sets.lock.yaml'}",
                           "--date", "2026-11-21", "--results-dir", str(out)]) == 0
    rows = json.loads((out / "dab_fp32_sets_nvidia-h200_2026-11-21.json").read_text())["rows"]
    assert [r["set"] for r in rows] == ["pins", "trt_fp16_naive", "plugin"]
    assert "2.37" in capsys.readouterr().out  # the naive FP16 row in the printed table


def test_an_engine_measured_in_two_leases_keeps_both_rows(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    lockfile.write(first / "dab_fp32_sets.lock.yaml", "dab_fp32_sets", engine("plugin", "k3", 2.26, 3.4e-2, 1.8e-3))
    lockfile.write(second / "dab_fp32_sets.lock.yaml", "dab_fp32_sets", engine("plugin", "k3", 2.41, 3.4e-2, 1.8e-3))
    out = tmp_path / "results"
    assert fp32_sets.main([f"l1={first / 'dab_fp32_sets.lock.yaml'}", f"l2={second / 'dab_fp32_sets.lock.yaml'}",
                           "--date", "2026-11-21", "--results-dir", str(out)]) == 0
    rows = json.loads((out / "dab_fp32_sets_nvidia-h200_2026-11-21.json").read_text())["rows"]
    assert [(r["lease"], r["latency_ms"]) for r in rows] == [("l1", 2.26), ("l2", 2.41)]


def test_the_batch_8_sets_recipe_names_its_results(tmp_path):
    path = tmp_path / "dab_b8_sets.lock.yaml"
    lockfile.write(path, "dab_b8_sets", engine("xattn-bbox-decoder", "k5", 9.75, 4.1e-4, 9.9e-5))
    out = tmp_path / "results"
    assert fp32_sets.main([f"l1={path}", "--recipe", str(fp32_sets.ROOT / "bench/gpu/dab_b8_sets.yaml"),
                           "--date", "2026-11-21", "--results-dir", str(out)]) == 0
    results = json.loads((out / "dab_b8_sets_nvidia-h200_2026-11-21.json").read_text())
    assert results["recipe"] == "bench/gpu/dab_b8_sets.yaml"
    assert [(r["set"], r["met"]) for r in results["rows"]] == [("xattn-bbox-decoder", True)]
