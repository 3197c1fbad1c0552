"""onnx-graphsurgeon helpers the fusion patterns share: constants, producers/consumers, axes, names."""

from __future__ import annotations

import os

import numpy as np
import onnx_graphsurgeon as gs


def value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor (an initializer or a Constant node's output); None for anything else."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is None or node.op != "Constant" or len(node.attrs) != 1:
        return None
    (kind, attr), = node.attrs.items()
    if kind == "value":
        return np.asarray(attr.values)
    if kind in ("value_float", "value_floats"):
        return np.asarray(attr, dtype=np.float32)
    if kind in ("value_int", "value_ints"):
        return np.asarray(attr, dtype=np.int64)
    return None


def ints(tensor: gs.Tensor) -> list[int] | None:
    """The values of a constant integer tensor, flattened; None for anything else."""
    v = value(tensor)
    return v.reshape(-1).tolist() if v is not None and v.dtype.kind in "iu" else None


def is_initializer(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant)


def scalar(tensor: gs.Tensor) -> float | None:
    v = value(tensor)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 and v.dtype.kind in "fiu" else None


def is_scalar(tensor: gs.Tensor, expected: float, rtol: float = 1e-5) -> bool:
    v = scalar(tensor)
    return v is not None and bool(np.isclose(v, expected, rtol=rtol, atol=0.0))


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def out(node: gs.Node) -> gs.Tensor:
    return node.outputs[0]


def sole_consumer(tensor: gs.Tensor, graph: gs.Graph, op: str) -> gs.Node | None:
    """The one node reading `tensor` when its op is `op` and `tensor` is not a graph output; else None."""
    if len(tensor.outputs) != 1 or is_graph_output(tensor, graph):
        return None
    node = tensor.outputs[0]
    return node if node.op == op else None


def redirect(old: gs.Tensor, new: gs.Tensor) -> None:
    """Every node that reads `old` reads `new` instead."""
    for reader in list(old.outputs):
        for i, tensor in enumerate(reader.inputs):
            if tensor is old:
                reader.inputs[i] = new


def is_graph_output(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    return any(t is tensor for t in graph.outputs)


def other_input(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor | None:
    """For a binary node with `tensor` as one input, the other input."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    return b if a is tensor else a if b is tensor else None


def rank(tensor: gs.Tensor) -> int | None:
    return len(tensor.shape) if tensor.shape is not None else None


def reduce_axes(node: gs.Node, rank: int) -> list[int] | None:
    """Sorted non-negative axes of a keepdims Reduce* node, from its attribute (opset < 18) or its constant input."""
    if node.attrs.get("keepdims", 1) != 1:
        return None
    if "axes" in node.attrs:
        axes = node.attrs["axes"]
    elif len(node.inputs) > 1 and (v := value(node.inputs[1])) is not None and v.dtype.kind == "i":
        axes = v.reshape(-1).tolist()
    else:
        return None
    if not axes or any(not -rank <= a < rank for a in axes):
        return None
    return sorted({a % rank for a in axes})


def internal(nodes: list[gs.Node], result: gs.Tensor, graph: gs.Graph) -> bool:
    """True when every tensor the nodes produce, but `result`, is read only by those nodes and is no graph output."""
    ids = {id(n) for n in nodes}
    for node in nodes:
        for t in node.outputs:
            if t is result:
                continue
            if is_graph_output(t, graph) or any(id(c) not in ids for c in t.outputs):
                return False
    return True


def module_path(nodes: list[gs.Node]) -> str:
    """The torch module path the nodes share, from exporter names like /encoder/layers.0/norm1/ReduceMean."""
    paths = [n.name.split("/")[:-1] for n in nodes if n.name]
    prefix = "/".join(os.path.commonprefix(paths)) if paths else ""
    return prefix if prefix.strip("/") else ""


def node_name(graph: gs.Graph, path: str, op: str) -> str:
    return unique_name(graph, f"{path}/{op}" if path else op)


def unique_name(graph: gs.Graph, name: str) -> str:
    taken = {n.name for n in graph.nodes} | set(graph.tensors())
    candidate, i = name, 0
    while candidate in taken:
        i += 1
        candidate = f"{name}_{i}"
    return candidate


def add(graph: gs.Graph, op: str, name: str, inputs: list[gs.Tensor], outputs: list[gs.Tensor],
        attrs: dict | None = None, domain: str | None = None) -> gs.Node:
    node = gs.Node(op, name=name, attrs=attrs or {}, inputs=inputs, outputs=outputs, domain=domain)
    graph.nodes.append(node)
    return node


def replace(graph: gs.Graph, result: gs.Tensor, op: str, name: str, inputs: list[gs.Tensor],
            attrs: dict | None = None, domain: str | None = None) -> gs.Node:
    """A new node computing `result`; the old producer of `result` loses it, and cleanup() drops what is dead."""
    result.inputs.clear()
    return add(graph, op, name, inputs, [result], attrs, domain)


def variable(graph: gs.Graph, name: str, like: gs.Tensor) -> gs.Variable:
    return gs.Variable(unique_name(graph, name), dtype=like.dtype)


def constant(graph: gs.Graph, name: str, values: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(graph, name), np.ascontiguousarray(values))


def slice_along(graph: gs.Graph, data: gs.Tensor, axis: int, start: int, stop: int, name: str) -> gs.Variable:
    """data[..., start:stop, ...] along `axis`, as a new Slice node named `name` (made unique)."""
    bounds = [constant(graph, f"{name}/{what}", np.array([v], np.int64))
              for what, v in (("starts", start), ("ends", stop), ("axes", axis))]
    result = variable(graph, f"{name}_output", data)
    add(graph, "Slice", unique_name(graph, name), [data, *bounds], [result])
    return result
