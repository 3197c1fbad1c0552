"""The report stage and `trtpipe report`: real ONNX Runtime runs of a small model through precision-search, build,
profile and compare; TensorRT-shaped profiles (made with trtpipe.trt.layers) for the per-layer sections."""

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import yaml
from PIL import Image

from tests.precision_graphs import planted_overflow
from trtpipe import report
from trtpipe.cli import main
from trtpipe.recipe import load
from trtpipe.stages.profile import latency_stats
from trtpipe.trt import layers

RECIPE = """name: t
model: {onnx: m.onnx}
inputs:
  x: {shape: [4, 16], low: -1.0, high: 1.0}
stages:
  search: {uses: precision-search, budget: {y: {mean_rel: 1.0e-2}, z: {mean_abs: 1.0e-2}}}
  build: {uses: build, after: [search]}
  profile: {uses: profile, engine: build.engine, warmup: 1, iterations: 5}
  compare: {uses: compare, engine: build.engine, reference: source.model, tolerances: {z: {mean_abs: 1.0e-2}}}
"""
REPORT = """  report:
    uses: report
    plan: search.plan
    compare: [compare.errors]
    profile: profile.profile
    layers: build.layers
"""
SECTIONS = ("timeline", "graph", "plan", "accuracy", "latency", "engine")


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    """Writes the recipe (with `body` added) beside the model; runs happen in tmp_path."""
    onnx.save(planted_overflow(), str(tmp_path / "m.onnx"))
    monkeypatch.chdir(tmp_path)

    def write(body: str = "") -> Path:
        path = tmp_path / "r.yaml"
        path.write_text(RECIPE + body)
        return path

    return write


def lock(path: Path) -> dict:
    return yaml.safe_load(path.with_name("t.lock.yaml").read_text())["stages"]


def page(path: Path) -> str:
    return Path(lock(path)["report"]["outputs"]["report"]["path"]).read_text(encoding="utf-8")


def sections(html: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', html)


def pngs(html: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    return images


def external_refs(html: str) -> list[str]:
    """src/href/url() targets that are neither embedded data nor anchors in the page, and any http(s) address."""
    refs = re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"url\(([^)]*)\)", html)
    text = re.sub(r'src="data:[^"]*"', "", html)
    return [r for r in refs if not r.startswith(("data:", "#"))] + re.findall(r"https?://\S+", text)


def test_report_stage_shows_each_section(recipe):
    path = recipe(REPORT)
    assert main(["run", str(path)]) == 0
    html = page(path)
    assert sections(html) == list(SECTIONS), "no per-layer times on ONNX Runtime: no slowest-layers section"
    assert external_refs(html) == []
    images = pngs(html)
    assert [im.format for im in images] == ["PNG"] * 3  # timeline, error histograms, latency
    assert all(im.width >= 600 and im.height >= 100 for im in images)
    plan = json.loads(Path(lock(path)["search"]["outputs"]["plan"]["path"]).read_text())
    for node in plan["fp32_nodes"]:
        assert node["node"].replace("/", "/<wbr>") in html and node["chosen_by"] in html
    assert "<td>y</td>" in html and "<td>z</td>" in html  # errors per output
    candidates = html.split("Candidates, in the order")[1].split("</table>")[0]
    assert candidates.count("<tr>") == 1 + len(plan["candidates"]) and "missed" in candidates
    timeline = html.split('<section id="timeline">')[1].split("</section>")[0]
    assert timeline.count("<td>ran</td>") == 5 and "<td>report</td>" not in timeline  # source, search, ..., compare


def test_report_is_cached_with_its_inputs_and_redrawn_when_they_change(recipe):
    path = recipe(REPORT)
    assert main(["run", str(path)]) == 0
    first = lock(path)["report"]["outputs"]["report"]["digest"]
    assert main(["run", str(path)]) == 0
    entries = lock(path)
    assert all(e["cached"] for e in entries.values()) and entries["report"]["outputs"]["report"]["digest"] == first

    assert main(["run", str(path), "--set", "stages.profile.iterations=6"]) == 0
    entries = lock(path)
    assert not entries["report"]["cached"] and entries["report"]["outputs"]["report"]["digest"] != first
    timeline = page(path).split('<section id="timeline">')[1]
    assert re.search(r"<td>search</td><td>precision-search</td><td>cached</td>", timeline)
    assert re.search(r"<td>profile</td><td>profile</td><td>ran</td>", timeline)

    searched = entries["search"]["seconds"]
    assert main(["run", str(path), "--only", "report", "--force"]) == 0  # the others come from the cache, unselected
    assert lock(path)["search"]["seconds"] == searched > 0 and lock(path)["search"]["cached"]


def test_report_is_written_whatever_the_locale(recipe):
    """The page holds non-ASCII text; a C locale without UTF-8 mode (seen on the GPU machine) must not matter."""
    path = recipe(REPORT)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    command = [sys.executable, "-X", "utf8=0", "-m", "trtpipe", "run", str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, errors="replace")
    assert done.returncode == 0, done.stderr
    assert "·" in page(path)


def test_cli_report_without_a_report_stage(recipe, capsys):
    path = recipe()
    assert main(["run", str(path)]) == 0
    out = path.parent / "out" / "report.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    html = out.read_text()
    assert sections(html) == list(SECTIONS) and external_refs(html) == []
    assert len(pngs(html)) == 3 and "No results" not in html
    assert f"report: {out}" in capsys.readouterr().err


def test_cli_report_before_anything_ran(recipe, capsys):
    assert main(["report", str(recipe(REPORT))]) == 2
    err = capsys.readouterr().err
    assert "nothing has run yet" in err and "hint: trtpipe run" in err


def test_cli_report_names_the_stages_without_results(recipe):
    path = recipe(REPORT)
    assert main(["run", str(path), "--until", "build"]) == 0
    assert main(["report", str(path)]) == 0
    html = (path.parent / "build" / "t" / "report.html").read_text()
    assert "No results (not run, or not in the cache): compare, profile" in html
    assert sections(html) == ["timeline", "graph", "plan", "engine"]


def test_a_reference_to_the_wrong_kind_of_output_fails_clearly(recipe, capsys):
    path = recipe("  report: {uses: report, profile: compare.errors}\n")
    assert main(["run", str(path)]) == 1
    assert "profile: compare.errors is not the 'profile' output of a profile stage" in capsys.readouterr().err


def tensorrt_profile(tmp_path: Path, name: str, scale: float) -> Path:
    """profile.json as the profile stage writes it for a TensorRT engine: four layers, one of them a reformat."""
    info = {"Layers": [
        {"Name": "/fc1/MatMul", "LayerType": "MatMul", "Inputs": [{"Format/Datatype": "Half"}],
         "Metadata": "[ONNX Layer: /fc1/MatMul]"},
        {"Name": "PWN(/act/Relu)", "LayerType": "PointWise", "Outputs": [{"Format/Datatype": "Half"}]},
        {"Name": "Reformatting CopyNode for Input Tensor 0 to /big/MatMul", "LayerType": "Reformat"},
        {"Name": "/big/MatMul", "LayerType": "MatMul", "Inputs": [{"Format/Datatype": "Float"}],
         "Metadata": "[ONNX Layer: /big/MatMul]"},
    ]}  # fmt: skip
    times = {"/fc1/MatMul": 0.02, "PWN(/act/Relu)": 0.005, "/big/MatMul": 0.03}
    rows = layers.table(info, {k: v * scale for k, v in times.items()}, known={"/fc1/MatMul", "/act/Relu"})
    latency = {mode: latency_stats([scale * t for t in (0.1, 0.11, 0.12)], 1) for mode in ("enqueue", "cuda_graph")}
    profile = {"latency": latency, "cuda_graph_fallback": None, "layers": rows, **layers.counts(rows)}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(profile))
    return path


def test_tensorrt_profiles_show_slowest_layers_and_compare_latency(recipe, tmp_path):
    layers_json = tmp_path / "layers.json"
    mismatch = {"layer": "/big/MatMul", "node": "/big/MatMul", "plan": "fp32", "engine": "fp16"}
    layers_json.write_text(json.dumps({"layers": [], "plan_mismatches": [mismatch]}))
    profiles = {f"{name}.profile": tensorrt_profile(tmp_path, name, k) for name, k in [("fp32", 2.0), ("trt", 1.0)]}
    files = {"profile": profiles, "layers": {"build.layers": layers_json}}
    html = report.render(load(recipe()), {}, report.load(files), top_layers=2)
    assert sections(html) == ["timeline", "latency", "layers", "engine"]
    latency = html.split('<section id="latency">')[1].split("</section>")[0]
    assert latency.count("· cuda_graph") == 2 and "2.00×" in latency and "1.00×" in latency
    slowest = html.split('<section id="layers">')[1].split("</section>")[0]
    assert "<h2>Slowest 2 layers</h2>" in slowest and slowest.count("<tr>") == 2 * 3  # 2 tables: head + 2 rows
    first_row = slowest.split("<tbody><tr>")[1].split("</tr>")[0]
    assert "/<wbr>big/<wbr>MatMul" in first_row and "<td>fp32</td>" in first_row and "<td>MatMul</td>" in first_row
    assert "reformat layers: 1" in slowest and "fp16 2" in slowest  # layers per precision, reformats apart
    assert "another precision than the plan" in html and '<span class="bad">fp16</span>' in html
    assert all(im.format == "PNG" for im in pngs(html)) and len(pngs(html)) == 1
