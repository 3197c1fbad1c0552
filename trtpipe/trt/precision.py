"""The precision plan of an ONNX graph: the float type each node computes in, read from the graph's types.

A node computes in FP32 when any of its float tensors is FP32, else in the one low type its float tensors have;
Casts, Constants and shape queries compute nothing. The weakly typed build constrains each TensorRT layer to its
node's type in this plan (builder.constrain_layers), and a strongly typed network derives the same thing from the
same types, so both give every node the same precision. `pin_fp32` moves named nodes to FP32 in the graph
itself, so a pin means the same in both worlds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

FLOAT_TYPES = {1: "fp32", 10: "fp16", 16: "bf16"}  # onnx.TensorProto.FLOAT, FLOAT16, BFLOAT16
NO_COMPUTE = {"Cast", "CastLike", "Constant", "Shape", "Size"}


def compute_type(types: Iterable[str | None]) -> str | None:
    """fp32 if any float type is fp32 (or low types are mixed), else the low type; None without float tensors."""
    floats = {t for t in types if t in ("fp32", "fp16", "bf16")}
    if not floats:
        return None
    return floats.pop() if len(floats) == 1 else "fp32"


def tensor_types(model: onnx.ModelProto) -> dict[str, str]:
    """Float type per tensor name, from declared and inferred types."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {t.name: t.data_type for t in graph.initializer}
    types |= {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types[node.output[0]] = node.attribute[0].t.data_type
    return {name: FLOAT_TYPES[t] for name, t in types.items() if t in FLOAT_TYPES}


def plan(model: onnx.ModelProto, types: dict[str, str] | None = None) -> dict[str, str]:
    """ONNX node name -> the float type it computes in, for the nodes that compute on floats."""
    types = tensor_types(model) if types is None else types
    found = {}
    for node in model.graph.node:
        if node.op_type not in NO_COMPUTE:
            if kind := compute_type(types.get(t) for t in [*node.input, *node.output]):
                found[node_name(node)] = kind
    return found


def node_name(node) -> str:
    """The name onnx-tensorrt gives the node's layers: its own, or `node_of_<first output>` when it has none."""
    return node.name or f"node_of_{node.output[0]}"


def pin_fp32(model: onnx.ModelProto, patterns: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """Runs the nodes whose names fully match a pattern in FP32: their low-precision inputs are cast to FP32 (one Cast
    per tensor) and their outputs cast back, for the nodes that are not pinned too (the graph is in topological order,
    as ONNX requires). Returns the new model and the nodes that changed."""
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    from trtpipe.onnxio import matching_nodes

    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    chosen = set(matching_nodes((n.name for n in graph.nodes), patterns))
    widened: dict[str, gs.Tensor] = {}

    def wide(tensor):
        if tensor.name not in widened:
            cast = gs.Variable(f"{tensor.name}/fp32", dtype=np.float32, shape=tensor.shape)
            to_fp32 = {"to": onnx.TensorProto.FLOAT}
            graph.nodes.append(gs.Node("Cast", f"{tensor.name}/to_fp32", to_fp32, [tensor], [cast]))
            widened[tensor.name] = cast
        return widened[tensor.name]

    pinned = []
    for node in list(graph.nodes):
        if node.op in NO_COMPUTE or node.name not in chosen:
            continue
        low_in = [i for i, t in enumerate(node.inputs) if is_low(t)]
        low_out = [i for i, t in enumerate(node.outputs) if is_low(t)]
        for i in low_in:
            node.inputs[i] = wide(node.inputs[i])
        for i in low_out:
            narrow = node.outputs[i]
            fp32 = gs.Variable(f"{narrow.name}/fp32", dtype=np.float32, shape=narrow.shape)
            node.outputs[i] = fp32
            back = gs.Node("Cast", f"{narrow.name}/from_fp32", {"to": onnx_type(narrow.dtype)}, [fp32], [narrow])
            graph.nodes.append(back)
            widened[narrow.name] = fp32  # a pinned reader takes it unrounded
        if low_in or low_out:
            pinned.append(node.name)
    graph.cleanup().toposort()
    return gs.export_onnx(graph), pinned


def onnx_type(dtype) -> int | None:
    """ONNX element type of an onnx-graphsurgeon dtype (a numpy dtype, or the ONNX type when numpy has none)."""
    import numpy as np
    from onnx import helper

    if dtype is None or isinstance(dtype, int):
        return dtype
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def is_low(tensor) -> bool:
    return FLOAT_TYPES.get(onnx_type(tensor.dtype)) in ("fp16", "bf16")
