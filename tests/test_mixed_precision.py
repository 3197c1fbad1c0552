"""The mixed-precision converter, the rules choosing FP32 nodes, and the mixed-precision stage, on real ONNX Runtime."""

import collections

import numpy as np
import onnx
import pytest

from tests.precision_graphs import (
    F,
    box_refinement,
    cast_problems,
    casts,
    hygiene_feeds,
    hygiene_graph,
    io_types,
    make,
    node,
    planted_overflow,
    run,
    weights,
)
from trtpipe.errors import StageError
from trtpipe.precision.baselines import onnxconverter_common, problem
from trtpipe.precision.convert import analyze, convert, node_precisions, prepare
from trtpipe.precision.rules import Rules, choose_fp32, output_tail

HYGIENE_SETS = [
    [],
    ["/enc/Softmax"],
    ["/enc/Softmax", "/enc/ln/LayerNormalization", "/mask/Mul"],
    ["/head/MatMul", "/enc/Add"],
]


@pytest.mark.parametrize("keep_io_types", [True, False])
@pytest.mark.parametrize("fp32", HYGIENE_SETS)
def test_cast_hygiene_and_io_types(fp32, keep_io_types):
    model = hygiene_graph()
    conversion = convert(model, fp32, keep_io_types=keep_io_types, merge_cost=0.5)
    out = conversion.model
    assert cast_problems(out) == []
    assert len(casts(out)) == len(casts(model)) + conversion.casts
    assert {n.name for n in model.graph.node if n.op_type != "Constant"} <= {n.name for n in out.graph.node}
    if keep_io_types:
        assert io_types(out) == io_types(model)
    else:
        assert {n: t for n, t in io_types(out).items() if n != "m"} == dict.fromkeys(["x", "y", "z", "u"], 10)
    feeds = hygiene_feeds(np.float32 if keep_io_types else np.float16)
    want = run(model, {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in feeds.items()})
    for name, value in run(out, feeds).items():
        np.testing.assert_allclose(value.astype(np.float32), want[name], rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("fp32", HYGIENE_SETS)
def test_graph_is_honest_about_precision(fp32):
    """A weakly typed TensorRT build reads each node's precision from its tensor types: they must say what we chose."""
    conversion = convert(hygiene_graph(), fp32)
    precisions = node_precisions(conversion.model)
    assert {precisions[n] for n in conversion.low} == {"float16"}
    assert {precisions[n] for n in conversion.fp32} == {"float32"}
    assert set(fp32) <= set(conversion.fp32)


def test_forced_fp32_nodes_and_their_reasons():
    analysis = analyze(hygiene_graph())
    assert analysis.forced == {
        "/pos/Range": "type-constraint",
        "/pos/Mul": "shape-computation",
        "/scale/Sqrt": "shape-computation",
    }
    assert {"/enc/Reshape", "/enc/Transpose", "/mask/Cast", "/mask/Unsqueeze"} <= set(analysis.free)


def test_fp32_only_inputs_and_constants_need_no_cast():
    out = convert(hygiene_graph()).model
    inits = {t.name: t.data_type for t in out.graph.initializer}
    assert inits["scales"] == F  # Resize scales are tensor(float) only
    assert inits["half"] == onnx.TensorProto.FLOAT16  # the Constant node became an fp16 initializer
    assert inits["tenth"] == F  # read by a shape computation only
    assert not any(n.op_type == "Constant" for n in out.graph.node)
    assert not any(c.input[0] in inits for c in casts(out))


def test_shared_weight_is_stored_in_both_precisions():
    out = convert(hygiene_graph(), ["/head/MatMul"]).model
    inits = {t.name: t.data_type for t in out.graph.initializer}
    assert inits["W"] == F and inits["W_fp16"] == onnx.TensorProto.FLOAT16
    readers = {n.name: list(n.input) for n in out.graph.node if n.op_type == "MatMul"}
    assert readers["/head/MatMul"][1] == "W" and readers["/enc/fc/MatMul"][1] == "W_fp16"


def test_weight_read_only_in_fp32_stays_fp32():
    out = convert(hygiene_graph(), ["/head/MatMul", "/enc/fc/MatMul"]).model
    assert {t.name: t.data_type for t in out.graph.initializer}["W"] == F
    assert "W_fp16" not in {t.name for t in out.graph.initializer}


def test_mask_cast_is_rewritten_not_chained():
    out = convert(hygiene_graph(), ["/mask/Mul"]).model
    mask_casts = {n.attribute[0].i for n in out.graph.node if n.input[0] == "m"}
    assert mask_casts <= {F, onnx.TensorProto.FLOAT16} and cast_problems(out) == []


def chain_through_data_movement():
    """Softmax(FP32) -> X, read by LayerNorm (FP32), by Reshape -> Transpose -> Softmax (FP32), and by a MatMul."""
    nodes = [
        node("Softmax", ["x"], ["X"], "/a/Softmax", axis=-1),
        node("LayerNormalization", ["X", "g", "b"], ["y1"], "/b/LayerNormalization", axis=-1),
        node("Reshape", ["X", "s"], ["r"], "/c/Reshape"),
        node("Transpose", ["r"], ["t"], "/c/Transpose", perm=[1, 0]),
        node("Softmax", ["t"], ["y2"], "/c/Softmax", axis=-1),
        node("MatMul", ["X", "W"], ["y3"], "/d/MatMul"),
    ]
    inits = {"g": np.ones(8, np.float32), "b": np.zeros(8, np.float32), "s": np.array([8, 4], np.int64)}
    inits["W"] = weights(8, 8)
    outputs = {"y1": (F, [4, 8]), "y2": (F, [4, 8]), "y3": (F, [4, 8])}
    return make(nodes, {"x": (F, [4, 8])}, outputs, inits)


def test_data_movement_takes_the_precision_that_needs_fewest_casts():
    """Moving one node at a time cannot find it: both Reshape and Transpose must go FP32 together."""
    conversion = convert(chain_through_data_movement(), ["/a/Softmax", "/b/LayerNormalization", "/c/Softmax"])
    assert conversion.casts == 2  # X -> fp16 for the MatMul, its output -> fp32
    precisions = node_precisions(conversion.model)
    assert precisions["/c/Reshape"] == precisions["/c/Transpose"] == "float32"


def islands():
    """MatMul -> Softmax(FP32) -> Add -> Mul -> LayerNorm(FP32) -> MatMul: two cheap nodes between FP32 islands."""
    nodes = [
        node("MatMul", ["x", "W"], ["a"], "/fc1/MatMul"),
        node("Softmax", ["a"], ["s"], "/Softmax", axis=-1),
        node("Add", ["s", "k"], ["p"], "/Add"),
        node("Mul", ["p", "k"], ["q"], "/Mul"),
        node("LayerNormalization", ["q", "g", "b"], ["n"], "/LayerNormalization", axis=-1),
        node("MatMul", ["n", "W"], ["y"], "/fc2/MatMul"),
    ]
    inits = {"W": weights(8, 8), "k": np.float32(0.5), "g": np.ones(8, np.float32), "b": np.zeros(8, np.float32)}
    return make(nodes, {"x": (F, [4, 8])}, {"y": (F, [4, 8])}, inits)


@pytest.mark.parametrize(
    ("merge_cost", "merged", "cast_count"), [(None, [], 6), (0.5, ["/Add", "/Mul"], 4), (1.5, [], 6)]
)
def test_fp32_islands_merge_when_that_removes_more_casts_than_it_costs(merge_cost, merged, cast_count):
    conversion = convert(islands(), ["/Softmax", "/LayerNormalization"], merge_cost=merge_cost)
    assert conversion.casts == cast_count
    assert [n for n, why in conversion.fp32.items() if why == "merge-islands"] == merged
    assert cast_problems(conversion.model) == []


def test_fewer_casts_than_onnxconverter_common_for_the_same_fp32_set():
    model = hygiene_graph()
    fp32 = convert(model, HYGIENE_SETS[2]).fp32
    theirs = onnxconverter_common(model, fp32)
    assert convert(model, fp32).casts < len(casts(theirs)) - len(casts(model))


def test_bfloat16_graph_passes_the_checker():
    conversion = convert(hygiene_graph(), ["/enc/Softmax"], dtype="bfloat16")
    types = collections.Counter(v.type.tensor_type.elem_type for v in conversion.model.graph.value_info)
    assert types[onnx.TensorProto.BFLOAT16] > 0 and cast_problems(conversion.model) == []


def test_unknown_node_name_is_an_error():
    with pytest.raises(StageError, match="no node named '/nope'"):
        convert(hygiene_graph(), ["/nope"])


# ---------------------------------------------------------------- other converters' bugs, fixed here


def test_mask_cast_regression_onnxconverter_common_invalid_ours_valid():
    """DAB-DETR's mask: onnxconverter-common leaves Cast(to=float) feeding an fp16 Mul, an invalid graph."""
    nodes = [node("Cast", ["m"], ["mf"], "/mask/Cast", to=F), node("Mul", ["x", "mf"], ["y"], "/mask/Mul")]
    model = make(nodes, {"x": (F, [2, 4]), "m": (onnx.TensorProto.BOOL, [2, 4])}, {"y": (F, [2, 4])})
    assert problem(onnxconverter_common(model)) is not None
    assert problem(convert(model).model) is None


def test_duplicate_cast_names_regression_onnxruntime_float16_invalid_ours_valid():
    """ONNX Runtime's float16 tool casts a tensor once per blocked reader, under one name: duplicate nodes."""
    from onnxruntime.transformers import float16

    nodes = [
        node("Relu", ["x"], ["a"], "/a/Relu"),
        node("Softmax", ["a"], ["b"], "/b/Softmax"),
        node("Exp", ["a"], ["c"], "/c/Exp"),
        node("Add", ["b", "c"], ["y"], "/y/Add"),
    ]
    model = make(nodes, {"x": (F, [2, 4])}, {"y": (F, [2, 4])})
    blocked = ["/b/Softmax", "/c/Exp"]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    theirs = float16.convert_float_to_float16(copy, keep_io_types=True, node_block_list=blocked)
    names = [n.name for n in theirs.graph.node]
    assert len(names) != len(set(names)) and problem(theirs) is not None
    ours = convert(model, blocked).model
    assert len({n.name for n in ours.graph.node}) == len(ours.graph.node) and problem(ours) is None


# ---------------------------------------------------------------- rules


def rule_graph():
    """Decomposed LayerNorm with eps 1e-12, a MatMul with K=64, a ReduceSum over 32, a huge weight, a big activation."""
    nodes = [
        node("ReduceMean", ["x"], ["mean"], "/ln/ReduceMean", axes=[-1]),
        node("Sub", ["x", "mean"], ["d"], "/ln/Sub"),
        node("Pow", ["d", "two"], ["d2"], "/ln/Pow"),
        node("ReduceMean", ["d2"], ["var"], "/ln/ReduceMean_1", axes=[-1]),
        node("Add", ["var", "eps"], ["ve"], "/ln/Add"),
        node("Sqrt", ["ve"], ["sd"], "/ln/Sqrt"),
        node("Div", ["d", "sd"], ["n"], "/ln/Div"),
        node("MatMul", ["n", "W"], ["h"], "/fc/MatMul"),
        node("ReduceSum", ["h", "axis0"], ["rs"], "/pool/ReduceSum", keepdims=1),
        node("Mul", ["rs", "huge"], ["big"], "/scale/Mul"),
        node("Tanh", ["big"], ["y"], "/out/Tanh"),
        node("Relu", ["h"], ["z"], "/side/Relu"),
    ]
    inits = {
        "two": np.float32(2),
        "eps": np.float32(1e-12),
        "W": weights(64, 64),
        "axis0": np.array([0], np.int64),
        "huge": np.full(64, 7e4, np.float32),
    }
    return make(nodes, {"x": (F, [32, 64])}, {"y": (F, [1, 64]), "z": (F, [32, 64])}, inits, opset=17)


def rule_feeds():
    return {"x": np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)}


def test_default_rules():
    chosen = choose_fp32(rule_graph(), Rules(), "float16", rule_feeds())
    assert chosen == {
        "/ln/ReduceMean": "policy:ReduceMean",
        "/ln/Pow": "policy:Pow",
        "/ln/ReduceMean_1": "policy:ReduceMean",
        "/ln/Sqrt": "policy:Sqrt",
        "/ln/Div": "policy:norm-divisor",
        "/pool/ReduceSum": "policy:ReduceSum",
        "/ln/Add": "initializer:eps 100% of nonzero values flush to zero",
        "/scale/Mul": "initializer:huge max |w| 7e+04 > 6.55e+04",
        "/out/Tanh": chosen["/out/Tanh"],
    }
    assert chosen["/out/Tanh"].startswith("activation:big max|x|")


def test_block_lists_by_op_and_name():
    rules = Rules(block_ops=["Relu"], block_names=[r"^/fc/"], fragile_ops=[], norm_divisors=False)
    chosen = choose_fp32(rule_graph(), rules.model_copy(update={"initializer_range": False}), "float16")
    assert chosen == {"/fc/MatMul": "block-name:^/fc/", "/side/Relu": "block-op:Relu"}


def test_reduction_depth():
    rules = Rules(fragile_ops=[], norm_divisors=False, initializer_range=False, reduction_max=40)
    over_64 = dict.fromkeys(["/ln/ReduceMean", "/ln/ReduceMean_1", "/fc/MatMul"], "reduction-depth:64>40")
    assert choose_fp32(rule_graph(), rules, "float16") == over_64
    rules = rules.model_copy(update={"reduction_max": 16})
    assert choose_fp32(rule_graph(), rules, "float16")["/pool/ReduceSum"] == "reduction-depth:32>16"


def test_activation_threshold_marks_writer_and_readers():
    rules = Rules(fragile_ops=[], norm_divisors=False, initializer_range=False, activation_max=1e3)
    chosen = choose_fp32(planted_overflow(), rules, "float16", {"x": np.ones((4, 16), np.float32)})
    assert set(chosen) == {"/big/MatMul"}
    assert chosen["/big/MatMul"].startswith("activation:y max|x|")
    assert choose_fp32(planted_overflow(), rules.model_copy(update={"activation_max": None}), "float16") == {}


def test_output_tail_rule():
    model = box_refinement(layers=2)
    rules = Rules(fragile_ops=[], norm_divisors=False, initializer_range=False, output_tails=["boxes"])
    chosen = choose_fp32(model, rules, "float16")
    assert chosen == dict.fromkeys(output_tail(prepare(model), "boxes"), "output-tail:boxes")


def test_bfloat16_range_rules_do_not_fire():
    chosen = choose_fp32(rule_graph(), Rules(fragile_ops=[], norm_divisors=False), "bfloat16", rule_feeds())
    assert chosen == {}


# ---------------------------------------------------------------- the stage


def run_mixed_precision_stage(tmp_path, model, inputs: str, params: str):
    from trtpipe.recipe import load
    from trtpipe.stages import Context

    onnx.save(model, str(tmp_path / "m.onnx"))
    (tmp_path / "r.yaml").write_text(
        f"name: t\nmodel: {{onnx: m.onnx}}\ninputs:\n  {inputs}\nstages:\n  mp: {{uses: mixed-precision, {params}}}\n"
    )
    recipe = load(tmp_path / "r.yaml")
    (tmp_path / "work").mkdir()
    ctx = Context("mp", recipe, {"model": tmp_path / "m.onnx"}, tmp_path / "work", tmp_path / "cache", "key")
    return recipe.stage("mp").run(ctx)


def test_mixed_precision_stage(tmp_path):
    inputs = "x: {shape: [32, 64], low: -1, high: 1}"
    result = run_mixed_precision_stage(tmp_path, rule_graph(), inputs, "fp32_nodes: [/side/Relu], block_ops: [Tanh]")
    metrics = result.metrics
    assert metrics["fp32_nodes"]["/side/Relu"] == "pin"
    assert metrics["fp32_nodes"]["/out/Tanh"] == "block-op:Tanh"
    assert metrics["fp32_nodes"]["/ln/Div"] == "policy:norm-divisor"
    assert metrics["fp32_nodes"]["/ln/Sub"] == "merge-islands"  # between ReduceMean, Pow and Div, all FP32
    assert metrics["casts"] == len(casts(onnx.load(str(result.outputs["model"]))))
    assert metrics["nodes"]["float16"] == 1 and metrics["onnxruntime_check"] == "passed"


NO_RULES = "fragile_ops: [], norm_divisors: false, initializer_range: false, reduction_max: null, activation_max: null"


def test_mixed_precision_stage_pins_by_regular_expression(tmp_path):
    inputs = "x: {shape: [32, 64], low: -1, high: 1}"
    result = run_mixed_precision_stage(tmp_path, rule_graph(), inputs, "fp32_nodes: ['/(side|out)/.*'], " + NO_RULES)
    pins = {n for n, why in result.metrics["fp32_nodes"].items() if why == "pin"}
    assert pins == {"/side/Relu", "/out/Tanh"}
    (tmp_path / "b").mkdir()
    with pytest.raises(StageError, match="'/nothing/.*' matches no ONNX node"):
        run_mixed_precision_stage(tmp_path / "b", rule_graph(), inputs, "fp32_nodes: [/nothing/.*]")


def test_mixed_precision_stage_rejects_an_overflowing_graph(tmp_path):
    """ONNX Runtime's CPU float16 would hide it; the emulated run does not."""
    with pytest.raises(StageError, match="NaN/Inf in y"):
        run_mixed_precision_stage(tmp_path, planted_overflow(), "x: {shape: [4, 16]}", "activation_max: null")


# ---------------------------------------------------------------- TensorRT plugin nodes


def plugin_graph() -> onnx.ModelProto:
    """MatMul -> trtpipe's LayerNorm plugin node (as fuse-plugins writes it) -> MatMul."""
    from trtpipe.fusions.registry import PLUGIN_DOMAIN, PLUGINS

    plugin = PLUGINS["trtpipe_layernorm"]
    nodes = [
        node("MatMul", ["x", "W1"], ["a"], "/fc1/MatMul"),
        onnx.helper.make_node(plugin.op, ["a", "gamma", "beta"], ["n"], name="/ln/LayerNorm", domain=PLUGIN_DOMAIN,
                              **plugin.attrs(epsilon=1e-5)),
        node("MatMul", ["n", "W2"], ["y"], "/fc2/MatMul"),
    ]
    inits = {"W1": weights(8, 8), "gamma": weights(8), "beta": weights(8), "W2": weights(8, 4)}
    model = make(nodes, {"x": (F, [2, 8])}, {"y": (F, [2, 4])}, inits, domains=(PLUGIN_DOMAIN,))
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("n", F, [2, 8]))  # as fuse-plugins types it
    return model


def test_a_plugin_that_takes_float16_runs_low_without_casts():
    conversion = convert(plugin_graph(), [], "float16")
    precisions = node_precisions(conversion.model)
    assert precisions["/ln/LayerNorm"] == "float16" and conversion.casts == 2  # the graph's input and output
    ln = next(n for n in conversion.model.graph.node if n.name == "/ln/LayerNorm")
    stored = {i.name: i.data_type for i in conversion.model.graph.initializer}
    assert stored[ln.input[1]] == stored[ln.input[2]] == onnx.TensorProto.FLOAT16, "the plugin's I/O alike"
    assert "/ln/LayerNorm" in analyze(plugin_graph(), "float16").candidates


def test_a_plugin_stays_fp32_in_a_dtype_it_does_not_take():
    conversion = convert(plugin_graph(), [], "bfloat16")
    assert node_precisions(conversion.model)["/ln/LayerNorm"] == "float32"
    assert conversion.fp32 == {"/ln/LayerNorm": "unknown-op"} and conversion.casts == 4


def test_mixed_precision_stage_on_a_graph_with_plugin_nodes(tmp_path):
    inputs = "x: {shape: [2, 8]}"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with pytest.raises(StageError, match=r"cannot run its TensorRT plugin nodes \(TrtpipeLayerNorm\)") as e:
        run_mixed_precision_stage(tmp_path / "a", plugin_graph(), inputs, "fragile_ops: []")
    assert "activation_max: null" in e.value.hint
    result = run_mixed_precision_stage(tmp_path / "b", plugin_graph(), inputs, "activation_max: null")
    skipped = "skipped: ONNX Runtime cannot run TensorRT plugin nodes (TrtpipeLayerNorm)"
    assert result.metrics["onnxruntime_check"] == skipped
    assert result.metrics["nodes"] == {"float16": 3, "cast": 2}
