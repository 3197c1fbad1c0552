"""The export stage: torch factory -> ONNX, checked against torch in ONNX Runtime, with its reference file."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from trtpipe import data, recipe
from trtpipe.errors import RecipeError, StageError
from trtpipe.models import cnn
from trtpipe.stages import Context

HERE = "tests.test_export"


# ---------------------------------------------------------------- factories the recipes below name


class Noisy(torch.nn.Module):
    def forward(self, image):
        return image + torch.rand_like(image)


class ScaledBySum(torch.nn.Module):
    """float() makes the tracer record the sum of the example input as a constant."""

    def forward(self, image):
        return image * float(image.sum())


class ReturnsDict(torch.nn.Module):
    def forward(self, image):
        return {"logits": image.mean()}


class Inverse(torch.nn.Module):
    def forward(self, image):
        return torch.linalg.inv(image)


def noisy():
    return Noisy()


def scaled_by_sum():
    return ScaledBySum()


def returns_dict():
    return ReturnsDict()


def inverse():
    return Inverse()


def raises(width=3):
    raise ValueError(f"width {width} is not supported")


def not_a_module():
    return "a string"


# ---------------------------------------------------------------- helpers


def make_recipe(tmp_path: Path, factory: str, shape="[batch, 3, 16, 16]", params="", kwargs="{}") -> recipe.Recipe:
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: t\n"
        f"model: {{factory: '{factory}', kwargs: {kwargs}}}\n"
        f"inputs:\n  image: {{shape: {shape}, dims: {{batch: {{min: 1, opt: 2, max: 3}}}}}}\n"
        f"stages:\n  export: {{uses: export{', ' + params if params else ''}}}\n"
    )
    return recipe.load(path)


def run_export(r: recipe.Recipe, tmp_path: Path):
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return r.stage("export").run(Context(name="export", recipe=r, inputs={}, workdir=workdir, cache_dir=tmp_path))


def ort_run(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


# ---------------------------------------------------------------- export of real models


def test_cnn_export_outputs_and_metrics(tmp_path):
    result = run_export(make_recipe(tmp_path, "trtpipe.models.cnn:build"), tmp_path)
    model = onnx.load(str(result.outputs["model"]))
    onnx.checker.check_model(model, full_check=True)
    m = result.metrics
    assert m["opset"] == 17 and m["exporter"] == "torchscript"
    assert m["ops"]["Conv"] == 3 and m["nodes"] == len(model.graph.node)
    assert set(m["diffs"]) == {"opt", "min", "max"} and m["max_abs"] < 1e-4
    assert [o.name for o in model.graph.output] == ["logits"]
    assert "/classifier/Gemm" in {n.name for n in model.graph.node}


def test_reference_holds_recipe_inputs_and_torch_outputs(tmp_path):
    r = make_recipe(tmp_path, "trtpipe.models.cnn:build", kwargs="{seed: 5}")
    result = run_export(r, tmp_path)
    inputs, outputs = data.load_reference(result.outputs["reference"])
    np.testing.assert_array_equal(inputs["image"], data.make_inputs(r)["image"])
    assert inputs["image"].shape == (2, 3, 16, 16)
    with torch.no_grad():
        want = cnn.build(seed=5)(torch.from_numpy(inputs["image"])).numpy()
    np.testing.assert_array_equal(outputs["logits"], want)


def test_named_dims_are_exported_dynamic(tmp_path):
    result = run_export(make_recipe(tmp_path, "trtpipe.models.cnn:build", shape="[batch, 3, 16, 16]"), tmp_path)
    model = onnx.load(str(result.outputs["model"]))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 16, 16]
    assert result.metrics["dynamic_axes"] == {"image": {0: "batch"}}
    (logits,) = ort_run(result.outputs["model"], {"image": np.random.rand(5, 3, 16, 16).astype(np.float32)})
    assert logits.shape == (5, 10)


def test_shapes_without_names_are_exported_static(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nmodel: {factory: 'trtpipe.models.cnn:build'}\n"
                    "inputs: {image: {shape: [1, 3, 16, 16]}}\nstages: {export: {uses: export}}\n")
    result = run_export(recipe.load(path), tmp_path)
    dims = onnx.load(str(result.outputs["model"])).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 16, 16]
    assert set(result.metrics["diffs"]) == {"opt"}


def test_dynamo_exporter_keeps_module_paths(tmp_path):
    r = make_recipe(tmp_path, "trtpipe.models.cnn:build", params="exporter: dynamo, opset: 18")
    result = run_export(r, tmp_path)
    model = onnx.load(str(result.outputs["model"]))
    names = [n.name for n in model.graph.node]
    assert result.metrics["opset"] == 18 and result.metrics["max_abs"] < 1e-4
    assert "/classifier/Gemm" in names and all(n.startswith("/features/") for n in names if "Conv" in n)
    assert len(set(names)) == len(names)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_dab_detr_tiny_exports_with_decomposed_layernorm(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nmodel: {factory: 'trtpipe.models.dab_detr:build', kwargs: {size: tiny}}\n"
                    "inputs: {pixel_values: {shape: [1, 3, 320, 320]}}\n"
                    "stages: {export: {uses: export, opset: 16}}\n")
    result = run_export(recipe.load(path), tmp_path)
    model = onnx.load(str(result.outputs["model"]))
    names = {n.name for n in model.graph.node}
    assert result.metrics["max_abs"] < 1e-4
    assert "LayerNormalization" not in result.metrics["ops"]
    assert "/model/encoder/layers.0/self_attn_layer_norm/ReduceMean" in names
    assert [o.name for o in model.graph.output] == ["logits", "boxes"]


def test_bert_exports_layernorm_softmax_and_gelu(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: t\nmodel: {factory: 'trtpipe.models.bert:build', kwargs: {size: tiny}}\n"
        "inputs:\n"
        "  input_ids: {shape: [batch, seq], dtype: int64, high: 1000, dims: {batch: {min: 1, opt: 2, max: 4},"
        " seq: {min: 8, opt: 16, max: 32}}}\n"
        "  attention_mask: {shape: [batch, seq], dtype: int64, low: 1, high: 2, dims: {batch: {min: 1, opt: 2, max: 4},"
        " seq: {min: 8, opt: 16, max: 32}}}\n"
        "stages: {export: {uses: export}}\n"
    )
    result = run_export(recipe.load(path), tmp_path)
    ops = result.metrics["ops"]
    assert ops["LayerNormalization"] == 5 and ops["Softmax"] == 2 and ops["Erf"] == 2
    assert set(result.metrics["diffs"]) == {"opt", "min", "max"} and result.metrics["max_abs"] < 1e-4


# ---------------------------------------------------------------- accuracy check


def test_random_ops_fail_the_tolerance_check(tmp_path):
    with pytest.raises(StageError, match=r"output 'output_0' differs from torch at the opt input shapes \[\[2, 3"):
        run_export(make_recipe(tmp_path, f"{HERE}:noisy"), tmp_path)


def test_tolerance_is_a_param(tmp_path):
    result = run_export(make_recipe(tmp_path, f"{HERE}:noisy", params="atol: 1.0"), tmp_path)
    assert 0.01 < result.metrics["max_abs"] < 1.0


def test_value_baked_by_the_trace_fails_at_other_shapes(tmp_path):
    with pytest.raises(StageError, match="at the min input shapes") as info:
        run_export(make_recipe(tmp_path, f"{HERE}:scaled_by_sum"), tmp_path)
    assert "Converting a tensor to a Python float" in info.value.hint


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "factory, message",
    [
        ("no_such_package.models:build", "cannot import no_such_package.models: ModuleNotFoundError"),
        (f"{HERE}:no_such_factory", "tests.test_export has no callable 'no_such_factory'"),
        (f"{HERE}:raises", "raised ValueError: width 3 is not supported"),
        (f"{HERE}:not_a_module", "returned a str, not a torch.nn.Module"),
        (f"{HERE}:returns_dict", "model output 0 is a dict, not a tensor"),
        ("trtpipe.models.dab_detr:build", r"forward\(pixel_values\) does not take the recipe inputs \(image\)"),
    ],
)
def test_bad_factory_is_one_clear_line(tmp_path, factory, message):
    with pytest.raises(StageError, match=message) as info:
        run_export(make_recipe(tmp_path, factory), tmp_path)
    assert "\n" not in info.value.message


def test_unsupported_op_fails_the_export(tmp_path):
    with pytest.raises(StageError, match=r"torch.onnx.export \(torchscript, opset 17\) failed: .*aten::linalg_inv"):
        run_export(make_recipe(tmp_path, f"{HERE}:inverse", shape="[batch, 3, 3]"), tmp_path)


def test_onnx_recipe_cannot_export(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nmodel: {onnx: m.onnx}\ninputs: {x: {shape: [1]}}\nstages: {export: {uses: export}}\n")
    with pytest.raises(StageError, match="export needs a torch factory"):
        run_export(recipe.load(path), tmp_path)


@pytest.mark.parametrize(
    "params, message",
    [("exporter: dynamo, opset: 16", "dynamo exporter emits opset >= 18"),
     ("opset: 21", "torchscript exporter goes up to opset 20")],
)
def test_exporter_and_opset_must_agree(tmp_path, params, message):
    with pytest.raises(RecipeError, match=message):
        make_recipe(tmp_path, "trtpipe.models.cnn:build", params=params)


def test_cache_key_covers_the_factory_source(tmp_path):
    stage = make_recipe(tmp_path, "trtpipe.models.cnn:build").stage("export")
    files = stage.key_files(make_recipe(tmp_path, "trtpipe.models.cnn:build"))
    assert files["factory"] == Path(cnn.__file__)
    assert "factory" not in stage.key_files(make_recipe(tmp_path, "no_such_package.models:build"))
    assert set(stage.env(None)) == {"torch", "transformers"}


def test_dynamo_exporter_needs_onnxscript(tmp_path):
    r = make_recipe(tmp_path, "trtpipe.models.cnn:build", params="exporter: dynamo, opset: 18")
    assert r.stage("export").needs(r) == {"torch": "torch", "onnxscript": "torch"}
    assert make_recipe(tmp_path, "trtpipe.models.cnn:build").stage("export").needs(r) == {"torch": "torch"}
