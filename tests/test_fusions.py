"""fuse-plugins: each pattern variant on tiny hand-built graphs (matched, and near-misses that must not match), the
replacements (ONNX ops, TensorRT plugin nodes), opset handling, the stage's checks, and a real torch export."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtpipe.errors import RecipeError, StageError
from trtpipe.fusions.rewrite import fuse

ALL = {"layernorm": "onnx", "layernorm-nchw": "onnx", "gelu": "onnx"}


class Builder:
    """Appends nodes named like the torchscript exporter's (/<module>/<Op>_<n>); op() returns the output name."""

    def __init__(self, opset: int = 16, module: str = "/block/norm"):
        self.opset, self.module = opset, module
        self.nodes, self.inits, self.inputs = [], [], []

    def input(self, name, shape, dtype=TensorProto.FLOAT):
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, value, dtype=np.float32, as_node=False):
        name = f"c{len(self.nodes)}_{len(self.inits)}"
        array = np.asarray(value, dtype=dtype)
        if as_node:
            return self.op("Constant", value=numpy_helper.from_array(array))
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op, *inputs, outputs=1, **attrs):
        """The output's name, or a list of `outputs` names."""
        outs = [f"t{len(self.nodes)}" + (f"_{i}" if outputs > 1 else "") for i in range(outputs)]
        name = f"{self.module}/{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs if outputs > 1 else outs[0]

    def mean(self, x, axes, keepdims=1):
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.const(axes, np.int64), keepdims=keepdims)
        return self.op("ReduceMean", x, axes=list(axes), keepdims=keepdims)

    def model(self, *outputs):
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "g", self.inputs, outs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def layernorm(b, x, *, axes=(-1,), eps=1e-5, eps_node=False, square="pow", exponent=2.0, divide="div",
              two_subs=False, numerator_of=None, gamma=None, beta=None, var_axes=None, keepdims=1, swap=False):
    """The decomposition exporters emit; each keyword steers one variant or one near-miss."""
    mu = b.mean(x, axes, keepdims)
    d = b.op("Sub", x, mu)
    exponent = b.const(exponent, np.int64 if isinstance(exponent, int) else np.float32)
    sq = b.op("Pow", d, exponent) if square == "pow" else b.op("Mul", d, d)
    var = b.mean(sq, var_axes or axes, keepdims)
    e = eps if isinstance(eps, str) else b.const(eps, as_node=eps_node)
    std = b.op("Sqrt", b.op("Add", *((e, var) if swap else (var, e))))
    n = b.op("Sub", numerator_of or x, mu) if two_subs or numerator_of else d
    if divide == "div":
        y = b.op("Div", n, std)
    elif divide == "div-swapped":
        y = b.op("Div", std, n)
    else:
        r = b.op("Reciprocal", std)
        y = b.op("Mul", *((r, n) if swap else (n, r)))
    if gamma is not None:
        y = b.op("Mul", *((b.const(gamma), y) if swap else (y, b.const(gamma))))
    if beta is not None:
        y = b.op("Add", y, b.const(beta))
    return y


def gelu(b, x, *, scale="div", half="after", sqrt2=1.4142135381698608, one=1.0):
    s = b.op("Div", x, b.const(sqrt2)) if scale == "div" else b.op("Mul", b.const(1 / sqrt2), x)
    a = b.op("Add", b.op("Erf", s), b.const(one))
    if half == "after":
        return b.op("Mul", b.op("Mul", x, a), b.const(0.5))
    if half == "on-x":
        return b.op("Mul", b.op("Mul", x, b.const(0.5)), a)
    return b.op("Mul", x, b.op("Mul", a, b.const(0.5)))


def ort_outputs(model, feeds):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def feeds_for(model, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return {name: rng.normal(1.0, 2.0, shape).astype(np.float32) for name, shape in shapes.items()}


def fused(model, choices=ALL, pattern=None, count=1):
    """Fuses, checks that `count` matches of `pattern` were fused, the node count fell and ORT agrees within 1e-5."""
    out, report = fuse(model, choices)
    onnx.checker.check_model(out, full_check=True)
    if pattern:
        assert len(report[pattern]["fused"]) == count, json.dumps(report, indent=1)
        assert len(out.graph.node) < len(model.graph.node)
    feeds = feeds_for(model)
    for a, b in zip(ort_outputs(model, feeds), ort_outputs(out, feeds)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    return out, report


def ops(model):
    return [n.op_type for n in model.graph.node]


def not_fused(model, choices=ALL):
    out, report = fuse(model, choices)
    assert not any(entry["fused"] for entry in report.values()), json.dumps(report, indent=1)
    assert sorted(ops(out)) == sorted(ops(model))
    return report


# ---------------------------------------------------------------- LayerNorm over the last axes

LAYERNORM_VARIANTS = {
    "basic": {},
    "affine": {"gamma": np.linspace(0.5, 2, 8), "beta": np.linspace(-1, 1, 8)},
    "gamma-only": {"gamma": np.linspace(0.5, 2, 8)},
    "beta-only": {"beta": np.linspace(-1, 1, 8)},
    "gamma-rank3": {"gamma": np.linspace(0.5, 2, 8).reshape(1, 1, 8)},
    "gamma-scalar": {"gamma": [3.0]},
    "reciprocal": {"divide": "reciprocal"},
    "sub-twice": {"two_subs": True, "gamma": np.ones(8)},
    "square-by-mul": {"square": "mul"},
    "eps-constant-node": {"eps_node": True},
    "commuted-inputs": {"swap": True, "divide": "reciprocal", "gamma": np.linspace(0.5, 2, 8)},
    "pow-integer-exponent": {"exponent": 2},
    "two-trailing-axes": {"axes": (-2, -1)},
    "positive-axes": {"axes": (2,)},
}


@pytest.mark.parametrize("opset", [16, 18])
@pytest.mark.parametrize("variant", LAYERNORM_VARIANTS)
def test_layernorm_variants_fuse(variant, opset):
    kwargs = LAYERNORM_VARIANTS[variant]
    b = Builder(opset)
    x = b.input("x", [2, 3, 8])
    y = layernorm(b, b.op("Relu", x), **kwargs)
    out, report = fused(b.model(y), pattern="layernorm")
    assert ops(out) == ["Relu", "LayerNormalization"]
    node = out.graph.node[1]
    assert node.name == "/block/norm/LayerNormalization"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["axis"] == -len(kwargs.get("axes", (-1,)))
    assert attrs["epsilon"] == pytest.approx(1e-5)
    assert report["layernorm"]["fused"][0]["nodes"][0] == "/block/norm/ReduceMean_1"
    assert onnx_opset(out) == max(opset, 17)


def onnx_opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_layernorm_keeps_the_gamma_initializer_name():
    b = Builder()
    y = layernorm(b, b.input("x", [2, 3, 8]), gamma=np.linspace(0.5, 2, 8), beta=np.zeros(8))
    out, _ = fused(b.model(y), pattern="layernorm")
    assert out.graph.node[0].input[1:] == [b.inits[-2].name, b.inits[-1].name]


def test_consecutive_layernorms_fuse_each():
    b = Builder()
    x = b.input("x", [2, 3, 8])
    y = layernorm(b, layernorm(b, x, gamma=np.full(8, 2.0)), beta=np.ones(8))
    out, _ = fused(b.model(y), pattern="layernorm", count=2)
    assert ops(out) == ["LayerNormalization"] * 2


LAYERNORM_NEAR_MISSES = {
    "leading-axis": {"axes": (0,)},
    "middle-axis-without-nchw": {"axes": (1,), "choices": {"layernorm": "onnx"}},
    "axes-differ": {"var_axes": (-2,)},
    "non-constant-eps": {"eps": "eps"},
    "pow-3": {"exponent": 3.0},
    "sub-of-other-tensor": {"numerator_of": "z"},
    "keepdims-0": {"keepdims": 0, "shape": [8, 8]},  # the mean broadcasts along the wrong axis
    "divide-swapped": {"divide": "div-swapped"},
}


@pytest.mark.parametrize("variant", LAYERNORM_NEAR_MISSES)
def test_layernorm_near_misses_do_not_match(variant):
    kwargs = dict(LAYERNORM_NEAR_MISSES[variant])
    choices = kwargs.pop("choices", ALL)
    b = Builder()
    x = b.input("x", kwargs.pop("shape", [2, 3, 8]))
    if kwargs.get("eps") == "eps":
        b.input("eps", [1])
    if kwargs.get("numerator_of"):
        b.input("z", [2, 3, 8])
    model = b.model(layernorm(b, x, **kwargs))
    not_fused(model, choices)
    fused(model, choices)  # and the untouched graph still runs the same


def test_dynamic_hidden_size_is_read_from_gamma():
    """A flatten before the norm can leave every dim unknown; gamma tells the hidden size, without it no match."""
    with_gamma, without = Builder(), Builder()
    model = with_gamma.model(layernorm(with_gamma, with_gamma.input("x", ["n", "t", "c"]), gamma=np.full(8, 2.0)))
    out, _ = fuse(model, ALL)
    assert ops(out) == ["LayerNormalization"]
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)}
    np.testing.assert_allclose(ort_outputs(out, feeds)[0], ort_outputs(model, feeds)[0], atol=1e-5, rtol=0)
    not_fused(without.model(layernorm(without, without.input("x", ["n", "t", "c"]))))


def test_layernorm_not_matched_when_an_intermediate_is_used_elsewhere():
    b = Builder()
    x = b.input("x", [2, 3, 8])
    y = layernorm(b, x)
    mean = b.nodes[0].output[0]
    not_fused(b.model(y, mean))


def test_gamma_along_a_normalized_and_a_batch_axis_is_left_outside():
    """gamma of shape (3, 8) varies along axis 1, not normalized: the core fuses, the Mul stays."""
    b = Builder()
    y = layernorm(b, b.input("x", [2, 3, 8]), gamma=np.linspace(0.5, 2, 24).reshape(3, 8))
    out, report = fused(b.model(y), pattern="layernorm")
    assert ops(out) == ["LayerNormalization", "Mul"]
    assert not any("Mul" in name for name in report["layernorm"]["fused"][0]["nodes"])


# ---------------------------------------------------------------- LayerNorm over the channel axis (NCHW)


@pytest.mark.parametrize("shape,gamma", [([2, 4, 3, 5], (4, 1, 1)), ([2, 4, 6], (4, 1)), ([2, 4, 3, 5], None)])
def test_channel_layernorm_fuses_between_transposes(shape, gamma):
    b = Builder(module="/stem/norm")
    x = b.input("x", shape)
    affine = {} if gamma is None else {"gamma": np.linspace(0.5, 2, 4).reshape(gamma), "beta": np.full(gamma, 0.1)}
    out, _ = fused(b.model(layernorm(b, x, axes=(1,), two_subs=True, **affine)), pattern="layernorm-nchw")
    assert ops(out) == ["Transpose", "LayerNormalization", "Transpose"]
    assert [n.name for n in out.graph.node] == [
        "/stem/norm/ToChannelsLast", "/stem/norm/LayerNormalization", "/stem/norm/ToChannelsFirst"]
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert inits[out.graph.node[1].input[1]].shape == (4,)


def test_channel_layernorm_with_gamma_along_width_is_left_outside():
    b = Builder()
    y = layernorm(b, b.input("x", [2, 4, 3, 5]), axes=(1,), gamma=np.linspace(0.5, 2, 5))
    out, _ = fused(b.model(y), pattern="layernorm-nchw")
    assert ops(out) == ["Transpose", "LayerNormalization", "Transpose", "Mul"]


def test_channel_axis_of_a_matrix_is_the_last_axis_pattern():
    b = Builder()
    y = layernorm(b, b.input("x", [4, 8]), axes=(1,))
    _, report = fused(b.model(y), pattern="layernorm")
    assert report["layernorm-nchw"]["matches"] == 0


# ---------------------------------------------------------------- GELU

GELU_VARIANTS = {
    "div-half-after": {},
    "mul-half-on-x": {"scale": "mul", "half": "on-x"},
    "div-half-on-erf": {"half": "on-erf"},
    "short-sqrt2": {"sqrt2": 1.41421},
}


@pytest.mark.parametrize("variant", GELU_VARIANTS)
def test_gelu_variants_fuse_at_opset_20(variant):
    b = Builder(20, module="/mlp/act")
    y = gelu(b, b.op("Relu", b.input("x", [2, 8])), **GELU_VARIANTS[variant])
    out, _ = fused(b.model(y), pattern="gelu")
    assert ops(out) == ["Relu", "Gelu"]
    assert out.graph.node[1].name == "/mlp/act/Gelu"


def test_gelu_below_opset_20_is_reported_and_kept():
    b = Builder(17)
    model = b.model(gelu(b, b.input("x", [2, 8])))
    out, report = fuse(model, {"gelu": "onnx"})
    assert ops(out) == ops(model) and onnx_opset(out) == 17
    assert report["gelu"]["matches"] == 1 and "needs opset 20" in report["gelu"]["kept"][0]["reason"]


@pytest.mark.parametrize("kwargs", [{"sqrt2": 2.0}, {"one": 2.0}, {"sqrt2": 1.414}], ids=str)
def test_gelu_near_misses_do_not_match(kwargs):
    b = Builder(20)
    not_fused(b.model(gelu(b, b.input("x", [2, 8]), **kwargs)))


def test_gelu_of_another_tensor_does_not_match():
    b = Builder(20)
    x, z = b.input("x", [2, 8]), b.input("z", [2, 8])
    s = b.op("Div", x, b.const(np.sqrt(2)))
    a = b.op("Add", b.op("Erf", s), b.const(1.0))
    not_fused(b.model(b.op("Mul", b.op("Mul", z, a), b.const(0.5))))


# ---------------------------------------------------------------- TensorRT plugin replacements


def attributes(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_tensorrt_layernorm_plugin_node():
    b = Builder()
    gamma, beta = np.linspace(0.5, 2, 40), np.linspace(-1, 1, 40)
    model = b.model(layernorm(b, b.input("x", [2, 3, 40]), eps=1e-6, gamma=gamma, beta=beta))
    out, report = fuse(model, {"layernorm": "LayerNorm"})
    onnx.checker.check_model(out, full_check=True)
    (node,) = out.graph.node
    assert (node.op_type, node.domain, node.name) == ("LayerNorm", "trt.plugins", "/block/norm/LayerNorm")
    attrs = attributes(node)
    assert attrs == {"epsilon": pytest.approx(1e-6), "axis": -1, "plugin_version": b"1", "plugin_namespace": b""}
    assert {a.name: a.type for a in node.attribute}["epsilon"] == onnx.AttributeProto.FLOAT
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert node.input[0] == "x"
    np.testing.assert_array_equal(inits[node.input[1]], gamma.astype(np.float32))
    np.testing.assert_array_equal(inits[node.input[2]], beta.astype(np.float32))
    assert onnx_opset(out) == 16, "a plugin node needs no opset raise"
    assert "8.5" in report["layernorm"]["plugin"]


def test_trtpipe_layernorm_plugin_node_without_affine_gets_ones_and_zeros():
    b = Builder()
    model = b.model(layernorm(b, b.input("x", [2, 4, 3, 5]), axes=(1,)))
    out, _ = fuse(model, {"layernorm-nchw": "trtpipe_layernorm"})
    onnx.checker.check_model(out, full_check=True)
    assert ops(out) == ["Transpose", "TrtpipeLayerNorm", "Transpose"]
    node = out.graph.node[1]
    assert node.domain == "trt.plugins"
    assert attributes(node) == {"epsilon": pytest.approx(1e-5), "plugin_version": b"1", "plugin_namespace": b""}
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    np.testing.assert_array_equal(inits[node.input[1]], np.ones(4, np.float32))
    np.testing.assert_array_equal(inits[node.input[2]], np.zeros(4, np.float32))


def test_tensorrt_layernorm_plugin_is_not_used_for_rows_of_32_or_fewer_values():
    b = Builder()
    model = b.model(layernorm(b, b.input("x", [2, 4, 8]), axes=(-2, -1)))
    out, report = fuse(model, {"layernorm": "LayerNorm"})
    assert ops(out) == ops(model)
    assert "epsilon * n**2" in report["layernorm"]["kept"][0]["reason"]
    assert "have 32" in report["layernorm"]["kept"][0]["reason"]


def test_trtpipe_layernorm_over_two_axes_is_kept_with_the_reason():
    b = Builder()
    model = b.model(layernorm(b, b.input("x", [2, 3, 8]), axes=(-2, -1)))
    out, report = fuse(model, {"layernorm": "trtpipe_layernorm"})
    assert ops(out) == ops(model)
    assert "last axis only" in report["layernorm"]["kept"][0]["reason"]


# ---------------------------------------------------------------- DETR sine embeddings (TensorRT plugin only)

SINE = {"sine-embedding": "trtpipe_sine_embedding"}


def sine_embedding(b, pos, *, coords=4, dim=8, order=(1, 0, 2, 3), scale=None, step=2, sin_on_even=True,
                   shape="dynamic", squeeze=False, temperatures=(10000,) * 4):
    """transformers' encode_sinusoidal_position_embedding as the torchscript exporter writes it (opset >= 13) and
    onnxsim leaves it; each keyword steers one variant or near-miss. `scale`: a tensor name instead of 2*pi."""
    last = b.const([-1], np.int64)
    scale = scale or b.const(2 * np.pi)
    embeddings = []
    for k, c in enumerate(b.op("Split", pos, b.const([1] * coords, np.int64), axis=-1, outputs=coords)):
        if squeeze:
            c = b.op("Unsqueeze", b.op("Squeeze", c, last), last)
        dim_t = temperatures[k] ** (2 * (np.arange(dim) // 2) / dim)
        u = b.op("Div", b.op("Mul", c, scale), b.const(dim_t))
        halves = [b.op("Slice", u, b.const([start], np.int64), b.const([2**63 - 1], np.int64), last,
                       b.const([step], np.int64)) for start in (0, 1)]
        waves = ("Sin", "Cos") if sin_on_even else ("Cos", "Sin")
        stacked = b.op("Concat", *(b.op("Unsqueeze", b.op(w, h), last) for w, h in zip(waves, halves)), axis=-1)
        embeddings.append(b.op("Reshape", stacked, flat_shape(b, stacked, shape)))
    return b.op("Concat", *(embeddings[k] for k in order), axis=-1)


def flat_shape(b, stacked, shape):
    """flatten(-2)'s target shape: computed from stacked's shape as exported, or a constant."""
    if shape != "dynamic":
        return b.const(shape, np.int64)
    lead = b.op("Slice", b.op("Shape", stacked), *(b.const([v], np.int64) for v in (0, -2, 0)))
    return b.op("Concat", lead, b.const([-1], np.int64), axis=0)


def sine_plugin_reference(pos, attrs):
    """TrtpipeSineEmbedding from its node's attributes: sin/cos of the float32 products pos * factors."""
    factors = np.asarray(attrs["factors"], np.float32)
    angles = (pos[..., attrs["order"], None] * factors).astype(np.float64)
    waves = np.where(np.arange(factors.size) % 2 == 0, np.sin(angles), np.cos(angles))
    return waves.reshape(*pos.shape[:-1], -1)


def boxes(shape, seed=0):
    """Normalized anchor boxes, as DETR decoders embed them."""
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


SINE_VARIANTS = {
    "dab-detr": {},
    "conditional-detr-points": {"coords": 2, "order": (1, 0)},
    "constant-shape": {"shape": [0, 0, -1]},
    "static-shape": {"shape": [2, 5, 8]},
    "before-onnxsim": {"squeeze": True},
    "any-order": {"order": (3, 1, 0, 2), "dim": 2},
}


@pytest.mark.parametrize("variant", SINE_VARIANTS)
def test_sine_embedding_variants_fuse_to_the_plugin(variant):
    kwargs = SINE_VARIANTS[variant]
    b = Builder(module="/model/decoder")
    model = b.model(sine_embedding(b, b.input("pos", [2, 5, kwargs.get("coords", 4)]), **kwargs))
    out, report = fuse(model, SINE)
    onnx.checker.check_model(out, full_check=True)
    (node,) = out.graph.node
    assert (node.op_type, node.domain) == ("TrtpipeSineEmbedding", "trt.plugins")
    assert node.name == "/model/decoder/TrtpipeSineEmbedding"
    assert (node.input, node.output) == (["pos"], [model.graph.output[0].name])
    attrs = attributes(node)
    assert attrs["order"] == list(kwargs.get("order", (1, 0, 2, 3))) and len(attrs["factors"]) == kwargs.get("dim", 8)
    assert (attrs["plugin_version"], attrs["plugin_namespace"]) == (b"1", b"")
    assert len(report["sine-embedding"]["fused"][0]["nodes"]) == len(model.graph.node)
    pos = boxes((2, 5, kwargs.get("coords", 4)))
    want = ort_outputs(model, {"pos": pos})[0]
    np.testing.assert_allclose(sine_plugin_reference(pos, attrs), want, atol=1e-6, rtol=0)


def test_every_decoder_layers_sine_embedding_fuses():
    b = Builder(module="/model/decoder")
    outputs = [sine_embedding(b, b.input(name, [2, 5, 4])) for name in ("pos0", "pos1")]
    model = b.model(*outputs)
    out, report = fuse(model, SINE)
    assert ops(out) == ["TrtpipeSineEmbedding"] * 2
    assert [n.name for n in out.graph.node] == ["/model/decoder/TrtpipeSineEmbedding",
                                                "/model/decoder/TrtpipeSineEmbedding_1"]
    assert report["sine-embedding"]["matches"] == 2


SINE_NEAR_MISSES = {
    "slice-step-3": {"step": 3, "dim": 12},
    "non-constant-scale": {"scale": "input"},
    "scale-per-channel": {"scale": np.linspace(1, 2, 8)},
    "cos-on-even": {"sin_on_even": False},
    "dim-t-per-coordinate": {"temperatures": (10000, 10000, 20, 10000)},
    "reshape-to-other-rank": {"shape": [2, 40]},
}


@pytest.mark.parametrize("variant", SINE_NEAR_MISSES)
def test_sine_embedding_near_misses_do_not_match(variant):
    kwargs = dict(SINE_NEAR_MISSES[variant])
    b = Builder()
    pos = b.input("pos", [2, 5, 4])
    if "scale" in kwargs:
        kwargs["scale"] = b.input("scale", []) if isinstance(kwargs["scale"], str) else b.const(kwargs["scale"])
    not_fused(b.model(sine_embedding(b, pos, **kwargs)), SINE)


@pytest.mark.parametrize("op", ["Div", "Concat"])
def test_sine_embedding_with_an_intermediate_used_elsewhere_does_not_match(op):
    """The angles, or the stacked sines and cosines (whose Shape is read too) of the first coordinate."""
    b = Builder()
    y = sine_embedding(b, b.input("pos", [2, 5, 4]))
    intermediate = next(n.output[0] for n in b.nodes if n.op_type == op)
    not_fused(b.model(y, intermediate), SINE)


def test_sine_embedding_beyond_the_plugins_limits_is_kept_with_the_reason():
    b = Builder()
    model = b.model(sine_embedding(b, b.input("pos", [2, 5, 4]), dim=520))
    out, report = fuse(model, SINE)
    assert sorted(ops(out)) == sorted(ops(model))
    (kept,) = report["sine-embedding"]["kept"]
    assert "up to 8 coordinates of up to 512 values; this embedding has 4 of 520" in kept["reason"]


def test_sine_embedding_has_no_onnx_replacement_and_is_no_default_pattern():
    from trtpipe.stages.fuse_plugins import every_pattern

    assert set(every_pattern()) == {"layernorm", "layernorm-nchw", "gelu"}  # scatter-slice only when asked for


def test_precision_conversion_treats_the_sine_plugin_like_the_layernorm_plugin():
    """Low precision in and out in an FP16 plan, as TrtpipeLayerNorm (so the boxes reach it as FP16); FP32 in and
    out, with a Cast after it, where pinned; FP32 in a BF16 plan, which it does not take."""
    from trtpipe.precision.convert import convert, node_precisions

    b = Builder(module="/model/decoder")
    model, _ = fuse(b.model(b.op("MatMul", sine_embedding(b, b.input("pos", [2, 5, 4])), b.const(np.ones((32, 3))))),
                    SINE)
    name = "/model/decoder/TrtpipeSineEmbedding"
    low = convert(model, [], "float16").model
    assert node_precisions(low)[name] == "float16"
    assert ops(low) == ["Cast", "TrtpipeSineEmbedding", "MatMul", "Cast"]
    pinned = convert(model, [name], "float16").model
    assert node_precisions(pinned)[name] == "float32"
    assert ops(pinned) == ["TrtpipeSineEmbedding", "Cast", "MatMul", "Cast"]
    assert convert(model, [], "bfloat16").fp32 == {name: "unknown-op"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the torchscript exporter is deprecated
@pytest.mark.parametrize("simplify", [False, True], ids=["as-exported", "onnxsim"])
def test_transformers_sine_embedding_export_fuses(tmp_path, simplify):
    """DAB-DETR's own function (transformers), exported with dynamic batch and queries, raw and through onnxsim."""
    torch = pytest.importorskip("torch")
    dab_detr = pytest.importorskip("transformers.models.dab_detr.modeling_dab_detr")

    class Embed(torch.nn.Module):
        def forward(self, anchors):
            return dab_detr.encode_sinusoidal_position_embedding(anchors, 16)

    anchors = torch.from_numpy(boxes((2, 7, 4)))
    path = tmp_path / "embed.onnx"
    torch.onnx.export(Embed(), (anchors,), str(path), dynamo=False, opset_version=16, input_names=["anchors"],
                      dynamic_axes={"anchors": {0: "batch", 1: "queries"}})
    model = onnx.load(str(path))
    if simplify:
        import onnxsim

        model, ok = onnxsim.simplify(model)
        assert ok
    out, report = fuse(model, SINE)
    onnx.checker.check_model(out, full_check=True)
    assert "Sin" not in ops(out) and report["sine-embedding"]["matches"] == 1
    node = next(n for n in out.graph.node if n.op_type == "TrtpipeSineEmbedding")
    y = sine_plugin_reference(anchors.numpy(), attributes(node))
    np.testing.assert_allclose(y, ort_outputs(model, {"anchors": anchors.numpy()})[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(y, Embed()(anchors).numpy(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- in-place slice assignment (ScatterND)

SCATTER = {"scatter-slice": "onnx"}


def scatter(indices, shape=(2, 6, 8), updates_shape=None, **attrs):
    """ScatterND(x, indices, u) on x of `shape`, u a second input of the indices' leading shape."""
    b = Builder(16, "/dec")
    x = b.input("x", list(shape))
    indices = np.asarray(indices, np.int64)
    u = b.input("u", list(updates_shape or indices.shape[:-1]))
    return b.model(b.op("ScatterND", x, b.const(indices, np.int64), u, **attrs))


def block_indices(shape, axis, start, stop):
    extent = [stop - start if a == axis else n for a, n in enumerate(shape)]
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in extent), indexing="ij"), axis=-1)
    grid[..., axis] += start
    return grid


def assert_scatter_rewritten(model):
    out, report = fuse(model, SCATTER)
    onnx.checker.check_model(out, full_check=True)
    assert len(report["scatter-slice"]["fused"]) == 1 and "ScatterND" not in ops(out)
    assert sum(i.ByteSize() for i in out.graph.initializer) < sum(i.ByteSize() for i in model.graph.initializer)
    feeds = feeds_for(model)
    np.testing.assert_array_equal(ort_outputs(out, feeds)[0], ort_outputs(model, feeds)[0])
    return out


@pytest.mark.parametrize(("axis", "start", "stop"), [(2, 2, 5), (2, 0, 3), (2, 5, 8), (1, 1, 4), (2, 0, 8)])
def test_scatter_of_a_block_becomes_a_concat_of_slices(axis, start, stop):
    out = assert_scatter_rewritten(scatter(block_indices((2, 6, 8), axis, start, stop)))
    concat = next(n for n in out.graph.node if n.op_type == "Concat")
    assert concat.name == "/dec/ScatterND_0/Concat" and attributes(concat)["axis"] == axis
    assert ops(out).count("Slice") == (start > 0) + (stop < (6, 8)[axis - 1])


def test_negative_scatter_indices_count_from_the_end():
    indices = block_indices((2, 6, 8), 2, 5, 8)
    indices[..., 2] -= 8
    assert_scatter_rewritten(scatter(indices))


@pytest.mark.parametrize("case", ["two-partial-axes", "not-row-major", "gap", "reduction"])
def test_scatter_near_misses_are_kept(case):
    indices = block_indices((2, 6, 8), 2, 2, 5)
    attrs = {}
    if case == "two-partial-axes":
        indices = block_indices((2, 6, 8), 2, 2, 5)[:, 1:3]
    elif case == "not-row-major":
        indices = indices[:, :, ::-1].copy()
    elif case == "gap":
        indices[..., 2] *= 2
    else:
        attrs = {"reduction": "add"}
    not_fused(scatter(indices, **attrs), SCATTER)


REPEATED = {"repeated-scatter": "onnx"}


def scatter_pair(second_updates="same", **attrs):
    """ScatterND(ScatterND(x, i, u), i, u') with u' = u, or another input."""
    b = Builder(16, "/dec")
    x, u = b.input("x", [2, 6, 8]), b.input("u", [2, 6, 3])
    indices = b.const(block_indices((2, 6, 8), 2, 2, 5), np.int64)
    inner = b.op("ScatterND", x, indices, u, **attrs)
    other = u if second_updates == "same" else b.input("v", [2, 6, 3])
    again = b.const(block_indices((2, 6, 8), 2, 2 if second_updates != "other-indices" else 3, 5 + (
        second_updates == "other-indices")), np.int64)
    return b.model(b.op("Relu", b.op("ScatterND", inner, again, other, **attrs)))


def test_a_repeated_scatter_is_dropped():
    model = scatter_pair()
    out, report = fuse(model, REPEATED)
    onnx.checker.check_model(out, full_check=True)
    assert ops(out) == ["ScatterND", "Relu"] and report["repeated-scatter"]["fused"][0]["node"] == "/dec/ScatterND_0"
    feeds = feeds_for(model)
    np.testing.assert_array_equal(ort_outputs(out, feeds)[0], ort_outputs(model, feeds)[0])


@pytest.mark.parametrize("case", ["other-updates", "other-indices", "reduction"])
def test_scatters_that_differ_are_kept(case):
    model = scatter_pair(case, reduction="add") if case == "reduction" else scatter_pair(case)
    not_fused(model, REPEATED)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the torchscript exporter is deprecated
def test_torch_in_place_slice_updates_export_as_scatters_that_become_concats(tmp_path):
    """DAB-DETR's modulation: `q[..., :h] *= w` and the like, exported at opset 16; each `*=` on a view is the
    same scatter written twice, once after repeated-scatter."""
    torch = pytest.importorskip("torch")
    onnxsim = pytest.importorskip("onnxsim")

    class Modulate(torch.nn.Module):
        def forward(self, q, w):
            q = q * 1.0
            q[..., :4] *= w[..., :1]
            q[..., 4:] *= w[..., 1:]
            return q

    q, w = torch.randn(1, 5, 8), torch.rand(1, 5, 2)
    path = tmp_path / "modulate.onnx"
    torch.onnx.export(Modulate(), (q, w), str(path), dynamo=False, opset_version=16, input_names=["q", "w"])
    model, ok = onnxsim.simplify(onnx.load(str(path)))  # as the simplify stage: constant indices
    assert ok and ops(model).count("ScatterND") == 4
    feeds = {"q": q.numpy(), "w": w.numpy()}
    for choices, scatters, concats in [(SCATTER, 0, 4), (REPEATED, 2, 0), (REPEATED | SCATTER, 0, 2)]:
        out, _ = fuse(model, choices)
        assert (ops(out).count("ScatterND"), ops(out).count("Concat")) == (scatters, concats), choices
        np.testing.assert_array_equal(ort_outputs(out, feeds)[0], ort_outputs(model, feeds)[0])
    np.testing.assert_allclose(ort_outputs(out, feeds)[0], Modulate()(q, w).numpy(), atol=1e-7, rtol=0)


# ---------------------------------------------------------------- scalar Gathers put back by Unsqueeze

GATHER = {"gather-slice": "onnx"}


def gather_ratio(op="Div", axis=2, extra_reader=False):
    """Mul(q, Unsqueeze(Div(Gather(a, 0), Gather(b, 2)), [axis])), as DAB-DETR's box-size ratios (axis -1 or 2)."""
    b = Builder(16, "/dec")
    q, a, c = b.input("q", [1, 5, 4]), b.input("a", [1, 5, 2]), b.input("b", [1, 5, 4])
    ga = b.op("Gather", a, b.const(np.array(0), np.int64), axis=2)
    ratio = b.op(op, ga, b.op("Gather", c, b.const(np.array(2), np.int64), axis=2))
    out = b.op("Mul", q, b.op("Unsqueeze", ratio, b.const([axis], np.int64)))
    return b.model(out, ga) if extra_reader else b.model(out)


@pytest.mark.parametrize(("op", "axis"), [("Div", 2), ("Div", -1), ("Sub", 2)])
def test_gathers_put_back_by_unsqueeze_become_slices(op, axis):
    model = gather_ratio(op, axis)
    out, report = fuse(model, GATHER)
    onnx.checker.check_model(out, full_check=True)
    assert sorted(ops(out)) == sorted([op, "Mul", "Slice", "Slice"])
    assert report["gather-slice"]["fused"][0]["node"] == f"/dec/{op}_2"  # the op keeps its name
    feeds = feeds_for(model)
    np.testing.assert_array_equal(ort_outputs(out, feeds)[0], ort_outputs(model, feeds)[0])


@pytest.mark.parametrize("case", ["other-axis", "gather-read-elsewhere"])
def test_gather_near_misses_are_kept(case):
    not_fused(gather_ratio(axis=1) if case == "other-axis" else gather_ratio(extra_reader=True), GATHER)


# ---------------------------------------------------------------- opset


def test_opset_raise_refused_when_an_op_changed_meaning():
    """Squeeze took axes as an attribute before opset 13: raising 12 -> 17 would break it."""
    b = Builder(12)
    x = b.op("Squeeze", b.input("x", [2, 1, 40]), axes=[1])
    model = b.model(layernorm(b, x))
    with pytest.raises(StageError, match="Squeeze"):
        fuse(model, ALL)
    out, _ = fuse(model, {"layernorm": "LayerNorm"})
    assert onnx_opset(out) == 12


# ---------------------------------------------------------------- the stage


RECIPE = """name: fuse
model: {{onnx: model.onnx}}
inputs:
  x: {{shape: [2, 3, 8], low: -2, high: 2}}
stages:
  fuse-plugins: {{uses: fuse-plugins{params}}}
"""


def stage_run(tmp_path, model, params=""):
    from trtpipe import recipe as recipes
    from trtpipe.stages import Context

    onnx.save(model, str(tmp_path / "model.onnx"))
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(params=params))
    recipe = recipes.load(path)
    workdir = tmp_path / "out"
    workdir.mkdir()
    ctx = Context("fuse-plugins", recipe, {"model": tmp_path / "model.onnx"}, workdir, tmp_path / "cache")
    return recipe.stage("fuse-plugins").run(ctx)


def ln_model(cols: int = 8, **kwargs):
    b = Builder()
    return b.model(layernorm(b, b.input("x", [2, 3, cols]), gamma=np.linspace(0.5, 2, cols), **kwargs))


def test_stage_fuses_and_checks_onnx_runtime(tmp_path):
    result = stage_run(tmp_path, ln_model())
    m = result.metrics
    assert (m["nodes_before"], m["nodes_after"], m["opset"]) == (8, 1, 17)
    assert m["patterns"]["layernorm"]["fused"][0]["node"] == "/block/norm/LayerNormalization"
    assert m["check"]["max_abs"]["t7"] <= 1e-4 and m["check"]["tolerance"] == 1e-4
    assert ops(onnx.load(str(result.outputs["model"]))) == ["LayerNormalization"]


def test_stage_skips_the_runtime_check_for_plugins(tmp_path):
    result = stage_run(tmp_path, ln_model(cols=40), ", patterns: {layernorm: {trt-plugin: LayerNorm}}")
    assert result.metrics["check"].startswith("skipped: ONNX Runtime cannot run TensorRT plugin nodes (LayerNorm)")


def test_stage_fails_when_outputs_move_beyond_tolerance(tmp_path):
    with pytest.raises(StageError, match="differs from the input model's"):
        stage_run(tmp_path, ln_model(divide="reciprocal"), ", tolerance: 1.0e-30")


@pytest.mark.parametrize("params,message", [
    (", patterns: {layernrm: onnx}", "unknown pattern 'layernrm' (did you mean 'layernorm'?)"),
    (", patterns: {gelu: {trt-plugin: LayerNorm}}", "pattern 'gelu' has no replacement trt-plugin 'LayerNorm'"),
    (", patterns: {layernorm: {trt-plugin: LayerNrm}}", "(did you mean 'LayerNorm'?)"),
    (", patterns: {layernorm: tensorrt}", "'tensorrt' is not a replacement; write onnx or {trt-plugin: NAME}"),
    (", patterns: {sine-embedding: onnx}",
     "pattern 'sine-embedding' has no ONNX replacement; it takes: {trt-plugin: trtpipe_sine_embedding}"),
])
def test_bad_patterns_are_recipe_errors(tmp_path, params, message):
    with pytest.raises(RecipeError) as e:
        stage_run(tmp_path, ln_model(), params)
    assert message in str(e.value)


# ---------------------------------------------------------------- a real export


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the torchscript exporter is deprecated
def test_torch_export_at_opset_16_fuses_every_layernorm(tmp_path):
    torch = pytest.importorskip("torch")

    class ChannelNorm(torch.nn.Module):
        """ConvNeXt-style LayerNorm over the channels of NCHW."""

        def __init__(self, c):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.linspace(0.5, 2, c))
            self.bias = torch.nn.Parameter(torch.linspace(-1, 1, c))

        def forward(self, x):
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            x = (x - u) / torch.sqrt(s + 1e-6)
            return self.weight[:, None, None] * x + self.bias[:, None, None]

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.stem_norm = ChannelNorm(16)
            self.norm1 = torch.nn.LayerNorm(16)
            self.fc = torch.nn.Linear(16, 32)
            self.act = torch.nn.GELU()
            self.norm2 = torch.nn.LayerNorm(32, elementwise_affine=False)

        def forward(self, x):
            x = self.stem_norm(self.conv(x)).flatten(2).transpose(1, 2)
            return self.norm2(self.act(self.fc(self.norm1(x))))

    torch.manual_seed(0)
    module = Block().eval()
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "block.onnx"
    torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=16, input_names=["x"])
    model = onnx.load(str(path))
    out, report = fuse(model, ALL)
    onnx.checker.check_model(out, full_check=True)
    assert "ReduceMean" not in ops(out)
    assert ops(out).count("LayerNormalization") == 3
    names = {n.name for n in out.graph.node}
    assert {"/norm1/LayerNormalization", "/norm2/LayerNormalization", "/stem_norm/LayerNormalization"} <= names
    assert report["gelu"]["matches"] == 1 and not report["gelu"]["fused"]
    feeds = {"x": x.numpy()}
    np.testing.assert_allclose(ort_outputs(out, feeds)[0], ort_outputs(model, feeds)[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ort_outputs(out, feeds)[0], module(x).detach().numpy(), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- on TensorRT (pytest -m gpu)


@pytest.mark.gpu
def test_fused_layernorm_runs_the_same_in_tensorrt(tmp_path):
    from trtpipe.backends import get_backend

    b = Builder()
    model = b.model(layernorm(b, b.input("x", [2, 3, 8]), gamma=np.linspace(0.5, 2, 8), beta=np.linspace(-1, 1, 8)))
    out, _ = fuse(model, {"layernorm": "onnx"})
    onnx.save(out, str(tmp_path / "fused.onnx"))
    feeds = feeds_for(model)
    got = get_backend("tensorrt").load(tmp_path / "fused.onnx").run(feeds)
    np.testing.assert_allclose(got[out.graph.output[0].name], ort_outputs(model, feeds)[0], atol=1e-4, rtol=0)


@pytest.mark.gpu
def test_tensorrt_8_ships_the_layernorm_plugin_we_write():
    """What PLUGINS['LayerNorm'] writes: the creator exists in TensorRT 8.x with the fields we pass."""
    import tensorrt as trt

    trt.init_libnvinfer_plugins(trt.Logger(trt.Logger.ERROR), "")
    if int(trt.__version__.split(".")[0]) != 8:
        pytest.skip("the LayerNorm plugin's presence was checked on TensorRT 8 only")
    creator = trt.get_plugin_registry().get_plugin_creator("LayerNorm", "1", "")
    assert creator is not None
    assert {f.name for f in creator.field_names} == {"epsilon", "axis"}
