"""build, profile and compare with `target: onnxruntime`: every recipe runs to its end on a CPU-only machine."""

import importlib.util
import json
import shutil
from pathlib import Path

import onnx
import pytest
import yaml

from trtpipe.cli import main

STAGES = """stages:
  build: {uses: build}
  profile: {uses: profile, engine: build.engine, warmup: 1, iterations: 5}
  compare: {uses: compare, engine: build.engine, reference: source.model, tolerances: {y: {max_abs: 1.0e-6}}}
"""


@pytest.fixture
def workspace(workspace):
    """The core tests' workspace, its tiny.onnx rewritten at an IR version ONNX Runtime loads."""
    model = onnx.load(str(workspace.dir / "tiny.onnx"))
    model.ir_version = 10
    onnx.save(model, str(workspace.dir / "tiny.onnx"))
    return workspace


def lock(workspace) -> dict:
    return yaml.safe_load((workspace.dir / "tiny.lock.yaml").read_text())["stages"]


def test_build_profile_compare_on_onnxruntime(workspace, capsys):
    assert main(["run", str(workspace(STAGES))]) == 0
    stages = lock(workspace)
    engine = Path(stages["build"]["outputs"]["engine"]["path"])
    assert [n.op_type for n in onnx.load(str(engine)).graph.node]  # an ONNX Runtime model, not a TensorRT plan
    assert stages["build"]["env"]["onnxruntime"]
    latency = stages["profile"]["metrics"]["latency"]["onnxruntime"]
    assert latency["iterations"] == 5 and 0 < latency["min_ms"] <= latency["median_ms"] <= latency["p99_ms"]
    assert stages["compare"]["metrics"]["y_max_abs"] <= 1e-6
    errors = json.loads(Path(stages["compare"]["outputs"]["errors"]["path"]).read_text())
    assert sum(errors["histograms"]["y"]["counts"]) == 4
    assert "latency" in capsys.readouterr().out  # the profile table


def test_compare_fails_past_tolerance(workspace, capsys):
    body = STAGES.replace("reference: source.model", "reference: doubled.model")
    body += "  doubled: {uses: test-scale, factor: 2}\n"
    assert main(["run", str(workspace(body))]) == 1
    err = capsys.readouterr().err
    assert "outputs exceed their tolerances: y: max_abs" in err
    assert "(measured: y_mean_abs " in err and ", y_max_abs " in err  # every error, not only those over


def test_compare_names_a_tolerance_for_a_missing_output(workspace, capsys):
    body = STAGES.replace("tolerances: {y:", "tolerances: {logits:")
    assert main(["run", str(workspace(body))]) == 1
    assert "no output 'logits'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_onnxruntime_env_reads_the_version_the_module_reports():
    import onnxruntime

    from trtpipe.backends.onnxruntime import OnnxRuntime

    assert OnnxRuntime().env()["onnxruntime"] == onnxruntime.__version__


def test_tensorrt_target_without_tensorrt_fails_before_building(workspace, capsys):
    assert main(["run", str(workspace(STAGES)), "--target", "tensorrt"]) == 2
    assert "stage 'build' needs tensorrt: pip install 'trtpipe[trt]'" in capsys.readouterr().err
    assert not (workspace.dir / "tiny.lock.yaml").exists(), "nothing ran"


@pytest.mark.slow
def test_dab_detr_tiny_runs_to_the_end_on_cpu(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    recipe = tmp_path / "dab_detr_tiny.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "recipes" / "dab_detr_tiny.yaml", recipe)
    monkeypatch.chdir(tmp_path)
    overrides = ["stages.profile.iterations=3", "stages.profile.warmup=1"]
    assert main(["run", str(recipe), "--target", "onnxruntime", *(f"--set={o}" for o in overrides)]) == 0
    stages = yaml.safe_load((tmp_path / "dab_detr_tiny.lock.yaml").read_text())["stages"]
    assert {"build", "profile", "compare"} <= set(stages)
    assert stages["compare"]["metrics"]["logits_max_abs"] < 1e-2
