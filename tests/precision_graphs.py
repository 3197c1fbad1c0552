"""Tiny ONNX graphs for the mixed-precision tests, built with onnx.helper, and checks on converted graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def make(
    nodes, inputs: dict, outputs: dict, inits: dict | None = None, opset: int = 17, domains: tuple[str, ...] = ()
) -> onnx.ModelProto:
    """inputs/outputs: name -> (elem type, shape); inits: name -> array; domains: of custom ops, at version 1."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (inits or {}).items()],
    )
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=imports, ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def node(op, inputs, outputs, name, **attrs):
    return helper.make_node(op, inputs, outputs, name=name, **attrs)


def weights(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def hygiene_graph() -> onnx.ModelProto:
    """Data movement around a Softmax, a tensor read by several nodes, a weight shared by two MatMuls, a bool mask
    cast to float, a shape computation in float, a Constant node, Range and Resize (ops with FP32-only inputs)."""
    nodes = [
        node("MatMul", ["x", "W"], ["a"], "/enc/fc/MatMul"),
        node("Reshape", ["a", "shape4"], ["r"], "/enc/Reshape"),
        node("Transpose", ["r"], ["t"], "/enc/Transpose", perm=[0, 2, 1, 3]),
        node("Softmax", ["t"], ["s"], "/enc/Softmax", axis=-1),
        node("Transpose", ["s"], ["t2"], "/enc/Transpose_1", perm=[0, 2, 1, 3]),
        node("Reshape", ["t2", "shape3"], ["r2"], "/enc/Reshape_1"),
        node("Add", ["r2", "a"], ["b"], "/enc/Add"),
        node("LayerNormalization", ["b", "gamma", "beta"], ["n"], "/enc/ln/LayerNormalization", axis=-1),
        node("Cast", ["m"], ["mf"], "/mask/Cast", to=F),
        node("Unsqueeze", ["mf", "axis2"], ["mu"], "/mask/Unsqueeze"),
        node("Mul", ["n", "mu"], ["nm"], "/mask/Mul"),
        node("Range", ["zero", "eight", "one"], ["pos"], "/pos/Range"),
        node("Unsqueeze", ["pos", "axis1"], ["pu"], "/pos/Unsqueeze"),
        node("Mul", ["pu", "tenth"], ["ps"], "/pos/Mul"),
        node("Add", ["nm", "ps"], ["np_"], "/pos/Add"),
        node("Constant", [], ["half"], "/head/Constant", value_float=0.5),
        node("Mul", ["np_", "half"], ["hs"], "/head/Mul"),
        node("MatMul", ["hs", "W"], ["h"], "/head/MatMul"),
        node("Relu", ["h"], ["y"], "/head/Relu"),
        node("Shape", ["x"], ["shp"], "/scale/Shape"),
        node("Gather", ["shp", "idx2"], ["d"], "/scale/Gather", axis=0),
        node("Cast", ["d"], ["df"], "/scale/Cast", to=F),
        node("Sqrt", ["df"], ["sq"], "/scale/Sqrt"),
        node("Div", ["h", "sq"], ["z"], "/scale/Div"),
        node("Resize", ["t", "", "scales"], ["u"], "/up/Resize", mode="nearest"),
    ]
    inits = {
        "W": weights(16, 16),
        "shape4": np.array([2, 8, 4, 4], np.int64),
        "shape3": np.array([2, 8, 16], np.int64),
        "gamma": 1 + weights(16),
        "beta": weights(16),
        "axis1": np.array([1], np.int64),
        "axis2": np.array([2], np.int64),
        "tenth": np.array(0.1, np.float32),
        "zero": np.array(0, np.float32),
        "eight": np.array(8, np.float32),
        "one": np.array(1, np.float32),
        "idx2": np.array(2, np.int64),
        "scales": np.array([1, 1, 2, 1], np.float32),
    }
    inputs = {"x": (F, [2, 8, 16]), "m": (TensorProto.BOOL, [2, 8])}
    outputs = {"y": (F, [2, 8, 16]), "z": (F, [2, 8, 16]), "u": (F, [2, 4, 16, 4])}
    return make(nodes, inputs, outputs, inits)


def hygiene_feeds(dtype=np.float32) -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((2, 8, 16)).astype(dtype), "m": RNG.random((2, 8)) > 0.3}


def run(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def casts(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Cast"]


def cast_problems(model: onnx.ModelProto) -> list[str]:
    """Cast hygiene: no Cast reading a Cast, no Cast whose output nobody reads, one Cast per tensor and target."""
    producer = {o: n for n in model.graph.node for o in n.output}
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    problems, seen = [], set()
    for cast in casts(model):
        source = producer.get(cast.input[0])
        if source is not None and source.op_type == "Cast":
            problems.append(f"{cast.name} reads Cast {source.name}")
        if cast.output[0] not in read:
            problems.append(f"{cast.name} is dangling")
        key = (cast.input[0], cast.attribute[0].i)
        if key in seen:
            problems.append(f"second Cast of {cast.input[0]} to {key[1]}")
        seen.add(key)
    return problems


def io_types(model: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def planted_overflow() -> onnx.ModelProto:
    """x -> MatMul -> Relu -> MatMul(large weights) -> y, whose values reach ~1e5 (past float16's 65504);
    x -> MatMul -> Sigmoid -> z. Only `/big/MatMul` needs FP32."""
    nodes = [
        node("MatMul", ["x", "W1"], ["a"], "/fc1/MatMul"),
        node("Relu", ["a"], ["r"], "/act/Relu"),
        node("MatMul", ["r", "Wbig"], ["y"], "/big/MatMul"),
        node("MatMul", ["x", "W2"], ["b"], "/fc2/MatMul"),
        node("Sigmoid", ["b"], ["z"], "/gate/Sigmoid"),
    ]
    inits = {"W1": weights(16, 16, scale=1.0), "Wbig": np.full((16, 16), 3e4, np.float32), "W2": weights(16, 16)}
    return make(nodes, {"x": (F, [4, 16])}, {"y": (F, [4, 16]), "z": (F, [4, 16])}, inits)


def box_refinement(layers: int = 6) -> onnx.ModelProto:
    """DAB-DETR's box path in small: anchor boxes sigmoid(anchors) (learned), refined in every layer by
    sigmoid(h Wd + inverse_sigmoid(boxes)) where h = relu(x Wh); logits = h Wc + b from the last layer."""
    rng = np.random.default_rng(3)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    nodes = [node("Sigmoid", ["anchors"], ["box0"], "/ref/Sigmoid")]
    inits = {"anchors": w(300, 4, scale=1.0), "one": np.array(1, np.float32), "Wc": w(32, 8), "b": w(8)}
    for i in range(layers):
        p, box, new = f"/layer{i}/", f"box{i}", f"box{i + 1}" if i < layers - 1 else "boxes"
        nodes += [
            node("MatMul", ["x", f"Wh{i}"], [f"a{i}"], p + "fc/MatMul"),
            node("Relu", [f"a{i}"], [f"h{i}"], p + "Relu"),
            node("MatMul", [f"h{i}", f"Wd{i}"], [f"d{i}"], p + "delta/MatMul"),
            node("Sub", ["one", box], [f"s{i}"], p + "Sub"),
            node("Div", [box, f"s{i}"], [f"q{i}"], p + "Div"),
            node("Log", [f"q{i}"], [f"l{i}"], p + "Log"),
            node("Add", [f"d{i}", f"l{i}"], [f"z{i}"], p + "Add"),
            node("Sigmoid", [f"z{i}"], [new], p + "Sigmoid"),
        ]
        inits |= {f"Wh{i}": w(32, 32), f"Wd{i}": w(32, 4, scale=0.01)}
    nodes += [node("MatMul", [f"h{layers - 1}", "Wc"], ["c"], "/cls/MatMul")]
    nodes += [node("Add", ["c", "b"], ["logits"], "/cls/Add")]
    return make(nodes, {"x": (F, [300, 32])}, {"logits": (F, [300, 8]), "boxes": (F, [300, 4])}, inits)
