"""simplify (onnxsim in a child process) and fold-constants (polygraphy) on DAB-DETR tiny and hand-built graphs."""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtpipe import data, recipe
from trtpipe.errors import StageError
from trtpipe.stages import Context
from trtpipe.stages.simplify import run_child

IR_VERSION = 10  # what ONNX Runtime 1.31 loads; onnx 1.23 writes 14 by default

DAB_DETR = """
name: dab_detr_tiny
model: {factory: 'trtpipe.models.dab_detr:build', kwargs: {size: tiny}}
inputs: {pixel_values: {shape: [1, 3, 320, 320]}}
stages:
  export: {uses: export, opset: 16}
  simplify: {uses: simplify, after: [export] %s}
  fold-constants: {uses: fold-constants, after: [export]}
"""


def run_stage(r: recipe.Recipe, name: str, model: Path, workdir: Path):
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(name=name, recipe=r, inputs={"model": model}, workdir=workdir, cache_dir=workdir)
    return r.stage(name).run(ctx)


def load(tmp_path: Path, text: str) -> recipe.Recipe:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return recipe.load(path)


def ort_run(path: Path, feeds: dict) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """DAB-DETR tiny at opset 16: (model path, reference path)."""
    tmp = tmp_path_factory.mktemp("export")
    r = load(tmp, DAB_DETR % "")
    workdir = tmp / "export"
    workdir.mkdir()
    result = r.stage("export").run(Context(name="export", recipe=r, inputs={}, workdir=workdir, cache_dir=tmp))
    return result.outputs["model"], result.outputs["reference"]


def scoped(path: Path) -> bool:
    """Every node but Constants carries its torch module path."""
    return all(n.name.startswith("/") for n in onnx.load(str(path)).graph.node if n.op_type != "Constant")


# ---------------------------------------------------------------- simplify


def test_simplify_dab_detr_keeps_outputs_and_names(tmp_path, exported):
    model, reference = exported
    result = run_stage(load(tmp_path, DAB_DETR % ""), "simplify", model, tmp_path / "w")
    m = result.metrics
    assert m["nodes_after"] < m["nodes_before"] / 2
    assert m["initializers_before"] == len(onnx.load(str(model)).graph.initializer)
    assert m["new_names"] == 0 and "Gemm" not in m["ops"]
    assert m["ops"]["ReduceMean"] > 0  # LayerNorm stays decomposed for fuse-plugins
    assert scoped(result.outputs["model"])
    inputs, outputs = data.load_reference(reference)
    got = ort_run(result.outputs["model"], inputs)
    for name, want in outputs.items():
        np.testing.assert_allclose(got[name], want, atol=1e-4, rtol=1e-3)


def test_onnxsim_default_gemm_fusion_loses_module_paths(tmp_path, exported):
    """Why `skip_optimizers` defaults to the MatMul+Add -> Gemm passes."""
    model, _ = exported
    result = run_stage(load(tmp_path, DAB_DETR % ", skip_optimizers: []"), "simplify", model, tmp_path / "w")
    assert result.metrics["ops"]["Gemm"] > 0 and result.metrics["new_names"] > 0
    assert not scoped(result.outputs["model"])


def plugin_model(path: Path) -> Path:
    """x -> Relu -> TensorRT LayerNorm plugin node: onnxsim's check cannot run it in ONNX Runtime."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    weights = [numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
               numpy_helper.from_array(np.zeros(8, np.float32), "beta")]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="/block/Relu"),
             helper.make_node("LayerNorm", ["r", "gamma", "beta"], ["y"], name="/block/norm/LayerNorm",
                              domain="trt.plugins", epsilon=1e-5)]
    graph = helper.make_graph(nodes, "g", [x], [y], weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("trt.plugins", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION), str(path))
    return path


PLUGIN_RECIPE = """
name: plugin
model: {onnx: plugin.onnx}
inputs: {x: {shape: [1, 4, 8]}}
stages:
  simplify: {uses: simplify %s}
"""


def test_onnxsim_failure_is_one_clear_line(tmp_path):
    model = plugin_model(tmp_path / "plugin.onnx")
    with pytest.raises(StageError, match=r"^onnxsim failed: .*LayerNorm") as info:
        run_stage(load(tmp_path, PLUGIN_RECIPE % ""), "simplify", model, tmp_path / "w")
    assert "\n" not in info.value.message and "on_error: skip" in info.value.hint


def test_on_error_skip_passes_the_model_through(tmp_path):
    model = plugin_model(tmp_path / "plugin.onnx")
    result = run_stage(load(tmp_path, PLUGIN_RECIPE % ", on_error: skip"), "simplify", model, tmp_path / "w")
    assert result.outputs["model"].read_bytes() == model.read_bytes()
    assert result.metrics["skipped"].startswith("onnxsim failed: ")
    assert result.metrics["nodes_before"] == result.metrics["nodes_after"] == 2


def test_without_the_check_onnxsim_leaves_plugin_nodes_alone(tmp_path):
    model = plugin_model(tmp_path / "plugin.onnx")
    result = run_stage(load(tmp_path, PLUGIN_RECIPE % ", check: false"), "simplify", model, tmp_path / "w")
    assert result.metrics["ops"] == {"LayerNorm": 1, "Relu": 1} and "skipped" not in result.metrics


def test_a_crashing_child_becomes_a_stage_error():
    with pytest.raises(StageError, match=r"onnxsim crashed with signal 11 \(Segmentation fault"):
        run_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], "onnxsim")
    with pytest.raises(StageError, match="^onnxsim failed: no luck$"):
        run_child([sys.executable, "-c", "raise SystemExit('no luck')"], "onnxsim")


# ---------------------------------------------------------------- fold-constants


def foldable_model(path: Path) -> Path:
    """y = Reshape(x + a * b, Shape(x)) + Expand(k, [2, 4]): three constant subgraphs, the last one 32 bytes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    init = [numpy_helper.from_array(v, n) for n, v in {
        "a": np.arange(4, dtype=np.float32), "b": np.full(4, 0.5, np.float32),
        "k": np.array(2.0, np.float32), "yshape": np.array([2, 4], np.int64)}.items()]
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["ab"], name="/m/Mul"),
        helper.make_node("Add", ["x", "ab"], ["sum"], name="/m/Add"),
        helper.make_node("Shape", ["x"], ["shape"], name="/m/Shape"),
        helper.make_node("Reshape", ["sum", "shape"], ["r"], name="/m/Reshape"),
        helper.make_node("Expand", ["k", "yshape"], ["e"], name="/m/Expand"),
        helper.make_node("Add", ["r", "e"], ["y"], name="/m/Add_1"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.save(model, str(path))
    return path


FOLD_RECIPE = """
name: fold
model: {onnx: m.onnx}
inputs: {x: {shape: [2, 4]}}
stages:
  fold-constants: {uses: fold-constants %s}
"""


@pytest.mark.parametrize(
    "params, ops",
    [
        ("", {"Add": 2, "Reshape": 1}),
        (", fold_shapes: false", {"Add": 2, "Reshape": 1, "Shape": 1}),
        (", size_threshold: 16", {"Add": 2, "Reshape": 1, "Expand": 1}),
    ],
)
def test_fold_constants_params(tmp_path, params, ops):
    model = foldable_model(tmp_path / "m.onnx")
    result = run_stage(load(tmp_path, FOLD_RECIPE % params), "fold-constants", model, tmp_path / "w")
    m = result.metrics
    assert m["ops"] == ops and m["nodes_before"] == 6 and m["nodes_after"] == sum(ops.values())
    assert m["initializers_before"] == 4 and m["new_names"] == 0
    feeds = {"x": np.random.default_rng(0).random((2, 4), dtype=np.float32)}
    np.testing.assert_allclose(ort_run(result.outputs["model"], feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-6)


def test_fold_constants_on_dab_detr_keeps_names(tmp_path, exported):
    model, reference = exported
    result = run_stage(load(tmp_path, DAB_DETR % ""), "fold-constants", model, tmp_path / "w")
    m = result.metrics
    assert m["nodes_after"] < m["nodes_before"] / 2 and m["new_names"] == 0
    assert scoped(result.outputs["model"])
    inputs, outputs = data.load_reference(reference)
    got = ort_run(result.outputs["model"], inputs)
    for name, want in outputs.items():
        np.testing.assert_allclose(got[name], want, atol=1e-4, rtol=1e-3)
