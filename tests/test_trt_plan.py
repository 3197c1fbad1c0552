"""The precision plan read from an ONNX graph, FP32 pins, and how engine layers map back to ONNX nodes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtpipe.errors import StageError
from trtpipe.trt import layers, precision


def mixed_model() -> onnx.ModelProto:
    """x fp32 -> Cast fp16 -> MatMul (fp16 weights) -> Relu -> Cast fp32 -> Softmax (fp32) -> y; shape ops too."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float16), "w")
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], name="/in/Cast", to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["x16", "w"], ["h"], name="/fc/MatMul"),
        helper.make_node("Relu", ["h"], ["r"], name="/act/Relu"),
        helper.make_node("Cast", ["r"], ["r32"], name="/out/Cast", to=TensorProto.FLOAT),
        helper.make_node("Softmax", ["r32"], ["y"], name="/head/Softmax", axis=-1),
        helper.make_node("Shape", ["r32"], ["s"], name="/head/Shape"),
        helper.make_node("Relu", ["y"], ["z"]),  # unnamed: onnx-tensorrt calls it node_of_z
    ]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["z"], {"x": x})[0]


def test_compute_type_rule():
    assert precision.compute_type(["fp16", "fp16", None]) == "fp16"
    assert precision.compute_type(["fp16", "fp32"]) == "fp32"
    assert precision.compute_type(["bf16", "fp16"]) == "fp32"
    assert precision.compute_type(["int64", None]) is None


def test_plan_reads_each_node_type_from_the_graph():
    assert precision.plan(mixed_model()) == {
        "/fc/MatMul": "fp16",
        "/act/Relu": "fp16",
        "/head/Softmax": "fp32",
        "node_of_z": "fp32",
    }


def test_pins_move_nodes_to_fp32_with_casts_at_their_edges():
    model = mixed_model()
    pinned, changed = precision.pin_fp32(model, ["/fc/.*"])
    onnx.checker.check_model(pinned)
    assert changed == ["/fc/MatMul"]
    plan = precision.plan(pinned)
    assert plan["/fc/MatMul"] == "fp32" and plan["/act/Relu"] == "fp16"
    casts = [n for n in pinned.graph.node if n.op_type == "Cast"]
    assert len(casts) == 5  # the graph's two, and one for each of MatMul's low inputs and its output
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    np.testing.assert_allclose(run(pinned, x), run(model, x), atol=2e-3)


def test_consecutive_pins_pass_fp32_between_them():
    pinned, changed = precision.pin_fp32(mixed_model(), ["/fc/MatMul", "/act/Relu"])
    assert changed == ["/fc/MatMul", "/act/Relu"]
    relu = next(n for n in pinned.graph.node if n.name == "/act/Relu")
    matmul = next(n for n in pinned.graph.node if n.name == "/fc/MatMul")
    assert relu.input[0] == matmul.output[0]  # no FP16 round trip
    assert len([n for n in pinned.graph.node if n.op_type == "Cast"]) == 5  # 2 + x16 and w widened + r narrowed


def test_pins_that_match_nothing_are_an_error():
    with pytest.raises(StageError, match="'/nothing/.*' matches no ONNX node"):
        precision.pin_fp32(mixed_model(), ["/nothing/.*"])


def test_pinning_an_fp32_node_changes_nothing():
    pinned, changed = precision.pin_fp32(mixed_model(), ["/head/Softmax"])
    assert changed == [] and precision.plan(pinned) == precision.plan(mixed_model())


KNOWN = {"/fc/MatMul", "/act/Relu", "/head/Add", "/head/Add_1", "node_of_z", "reshape_after_z"}


@pytest.mark.parametrize(
    ("name", "metadata", "nodes"),
    [
        ("/fc/MatMul", "", ["/fc/MatMul"]),
        ("/fc/MatMul_3", "", ["/fc/MatMul"]),  # a second layer the node made
        ("/head/Add_1", "", ["/head/Add_1"]),  # a node whose own name ends in _1
        ("/fc/MatMul + /act/Relu", "", ["/fc/MatMul", "/act/Relu"]),
        ("PWN(PWN(/head/Add, /act/Relu_7), node_of_z)", "", ["/head/Add", "/act/Relu", "node_of_z"]),
        ("{ForeignNode[/fc/MatMul.../head/Add_1]}", "", ["/fc/MatMul", "/head/Add_1"]),
        ("Reformatting CopyNode for Input Tensor 0 to /fc/MatMul", "", []),
        ("reshape_after_/fc/MatMul", "", ["/fc/MatMul"]),  # TensorRT 8.6's MatMul-to-convolution transform
        ("reshape_before_/fc/MatMul + /act/Relu", "", ["/fc/MatMul", "/act/Relu"]),
        ("reshape_after_z", "", ["reshape_after_z"]),  # a node of that name
        ("fused", "[ONNX Layer: /fc/MatMul]\x1f[ONNX Layer: /act/Relu | fn (Local)]", ["/fc/MatMul", "/act/Relu"]),
    ],
)
def test_layer_names_map_to_onnx_nodes(name, metadata, nodes):
    assert layers.onnx_nodes(name, metadata, KNOWN) == nodes


@pytest.mark.parametrize(
    ("tensor", "kind"),
    [
        ({"Format/Datatype": "Row major linear FP32 format"}, "fp32"),
        ({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}, "fp16"),
        ({"Format/Datatype": "Row major linear Int32"}, "int32"),
        ({"Format/Datatype": "Half"}, "fp16"),
        ({"DataType": "BFloat16", "Format": "Row major linear (kLINEAR)"}, "bf16"),
        ({"Name": "x"}, None),
    ],
)
def test_inspector_tensor_types(tensor, kind):
    assert layers.tensor_type(tensor) == kind


INSPECTOR = {
    "Layers": [
        {"Name": "/fc/MatMul", "LayerType": "CaskGemm", "Metadata": "[ONNX Layer: /fc/MatMul]",
         "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}],
         "Outputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "Reformatting CopyNode for Input Tensor 0 to /head/Softmax", "LayerType": "Reformat",
         "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}],
         "Outputs": [{"Format/Datatype": "Row major linear FP32 format"}]},
        {"Name": "/head/Softmax", "LayerType": "Softmax", "Metadata": "[ONNX Layer: /head/Softmax]",
         "Inputs": [{"Format/Datatype": "Row major linear FP16 format"}],
         "Outputs": [{"Format/Datatype": "Row major linear FP16 format"}]},
    ],
    "Bindings": ["x", "z"],
}


def test_layer_table_counts_and_plan_mismatches():
    rows = layers.table(INSPECTOR, {"/fc/MatMul": 0.25})
    assert [r["precision"] for r in rows] == ["fp16", "fp32", "fp16"]
    assert rows[0]["time_ms"] == 0.25 and rows[2]["time_ms"] == 0.0
    assert layers.counts(rows) == {"engine_layers": 3, "reformat_layers": 1, "layers_per_precision": {"fp16": 2}}
    mismatches = layers.plan_mismatches(rows, precision.plan(mixed_model()))
    assert mismatches == [{"layer": "/head/Softmax", "node": "/head/Softmax", "plan": "fp32", "engine": "fp16"}]


def test_build_errors_name_the_onnx_nodes():
    message = ("10: [optimizer.cpp::computeCosts::3869] Error Code 10: Internal Error (Could not find any "
               "implementation for node {ForeignNode[/fc/MatMul.../head/Add_1]}.)")
    text = layers.reason(message)
    assert text == "Could not find any implementation for node {ForeignNode[/fc/MatMul.../head/Add_1]}."
    assert layers.mentioned_nodes(text, KNOWN) == ["/fc/MatMul", "/head/Add_1"]
    assert layers.mentioned_nodes("Error in layer /act/Relu_2: no kernel", KNOWN) == ["/act/Relu"]
    # TensorRT 8.6 with OBEY constraints, FP16 everywhere (H200, 2026-11-22): a Gemm by constants, made a convolution
    message = ("2: [optimizer.cpp::getFormatRequirements::3158] Error Code 2: Internal Error (Assertion "
               "!n->candidateRequirements.empty() failed. No supported formats for reshape_after_/fc/MatMul)")
    assert layers.mentioned_nodes(layers.reason(message), KNOWN) == ["/fc/MatMul"]


def test_a_failed_myelin_region_spans_its_first_to_its_last_node():
    order = ["/in/Conv", "/fc/MatMul", "/act/Relu", "/head/Add_1", "/out/Sigmoid"]
    region = "Could not find any implementation for node {ForeignNode[/fc/MatMul.../head/Add_1]}."
    assert layers.failed_nodes(region, order) == ["/fc/MatMul", "/act/Relu", "/head/Add_1"]
    one_end = "Could not find any implementation for node {ForeignNode[onnx::MatMul_85 + (Unnamed Layer* 4)...]}"
    assert layers.failed_nodes(one_end, order) == []
    assert layers.failed_nodes("Error in layer /act/Relu_2: no kernel", order) == ["/act/Relu"]
