"""FP32 ONNX graph + the nodes to keep FP32 -> a graph that runs every other node in float16 or bfloat16.

Each node gets a role: FP32 (asked for, or forced: an op ONNX does not define, no low-precision type in the op's
schema, a computation on shapes or constants only), low precision, or free (data movement: Reshape, Transpose, Gather,
...). Every float tensor takes the precision of the node producing it; consumers that need the other precision read it
through one Cast that they all share. The free nodes' precisions come from a minimum cut that counts one Cast per
tensor read in both precisions, which moves Casts across data movement wherever that removes some. With `merge_cost`
set, a cheap low-precision node may turn FP32, at that price in Casts, when that removes more Casts than it costs:
FP32 islands merge. Initializers read in both precisions are stored twice instead of being cast at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from trtpipe.errors import StageError
from trtpipe.precision import ops

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

CAST_COST = 1_000_000  # one Cast, in min-cut units
FREE_LEAN = 1  # a free node leans to low precision when that costs no Cast
SUFFIX = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass
class Role:
    kind: str  # "fp32" | "low" | "free"
    reason: str = ""
    ins: dict[int, bool] = field(default_factory=dict)  # FP32 input slot -> may it hold the low dtype
    outs: dict[int, bool] = field(default_factory=dict)  # FP32 output slot -> may it hold the low dtype
    heavy: bool = False  # worth low precision even at the price of Casts: never merged into an FP32 island


@dataclass(frozen=True)
class End:
    """One end of a float tensor: its producer or a consumer. `node` None is the graph's input or output."""

    node: str | None
    index: int
    low_ok: bool


@dataclass
class Conversion:
    model: onnx.ModelProto
    casts: int  # Cast nodes added
    fp32: dict[str, str] = field(default_factory=dict)  # computing node running FP32 -> why
    low: list[str] = field(default_factory=list)  # computing nodes running in low precision


def convert(
    model: onnx.ModelProto,
    fp32_nodes: Mapping[str, str] | Iterable[str] = (),
    dtype: str = "float16",
    keep_io_types: bool = True,
    merge_cost: float | None = None,
) -> Conversion:
    """`fp32_nodes`: node names (or name -> reason) to keep FP32. The result passes onnx.checker's full check."""
    import onnx
    import onnx_graphsurgeon as gs

    if dtype not in ops.LOW_DTYPES:
        raise StageError(f"dtype '{dtype}' is not one of {', '.join(ops.LOW_DTYPES)}")
    fp32_nodes = dict(fp32_nodes) if isinstance(fp32_nodes, Mapping) else dict.fromkeys(fp32_nodes, "requested")
    graph = prepare(model)
    nodes = {n.name: n for n in graph.nodes}
    if unknown := sorted(set(fp32_nodes) - set(nodes)):
        raise StageError(f"no node named {', '.join(map(repr, unknown[:5]))} in the model", hint="check node names")
    roles = assign_roles(graph, fp32_nodes, dtype)
    ends = tensor_ends(graph, roles)
    io_low = not keep_io_types
    low = choose_low(roles, ends, io_low, merge_cost)
    casts = rewrite(graph, ends, low, io_low, np_dtype(dtype))
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as e:
        raise StageError(f"mixed-precision graph fails onnx.checker: {str(e).splitlines()[0][:300]}") from e
    computing = [name for name in nodes if name in roles and roles[name].kind != "free"]
    fp32 = {n: roles[n].reason if roles[n].kind == "fp32" else "merge-islands" for n in computing if n not in low}
    return Conversion(out, casts, fp32, [n for n in computing if n in low])


@dataclass
class Analysis:
    candidates: list[str]  # nodes that run in low precision when nothing is kept FP32, in graph order
    forced: dict[str, str]  # nodes that stay FP32 whatever is asked -> why
    free: list[str]  # data-movement nodes
    ops: dict[str, str]  # node -> op type


def analyze(model: onnx.ModelProto, dtype: str = "float16") -> Analysis:
    graph = prepare(model)
    roles = assign_roles(graph, {}, dtype)
    kinds = [(n.name, roles[n.name]) for n in graph.nodes if n.name in roles]
    return Analysis(
        candidates=[name for name, r in kinds if r.kind == "low"],
        forced={name: r.reason for name, r in kinds if r.kind == "fp32"},
        free=[name for name, r in kinds if r.kind == "free"],
        ops={n.name: n.op for n in graph.nodes},
    )


def np_dtype(dtype: str) -> np.dtype:
    from trtpipe.data import np_dtype as data_np_dtype

    return np.dtype(data_np_dtype(dtype))


# ---------------------------------------------------------------- preparing and classifying


def prepare(model: onnx.ModelProto) -> gs.Graph:
    """Shape-inferred gs graph with unique node names and float Constant nodes turned into initializers."""
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model, data_prop=True))
    if flow := [n.name or n.op for n in graph.nodes if n.op in ops.CONTROL_FLOW_OPS]:
        raise StageError(
            f"mixed precision does not handle control flow ({', '.join(flow[:3])})",
            hint="unroll or remove If/Loop/Scan before this stage (simplify, fold-constants)",
        )
    name_nodes(graph)
    outputs = {t.name for t in graph.outputs}
    for node in graph.nodes:
        if node.op == "Constant" and node.outputs[0].name not in outputs:
            value = constant_value(node)
            if value is not None and value.dtype == np.float32:
                tensor = node.outputs[0]
                node.outputs.clear()
                tensor.to_constant(value)
    graph.cleanup().toposort()
    return graph


def name_nodes(graph: gs.Graph) -> None:
    """Unnamed nodes become `<op>_<index>`, repeated names `<name>_<index>`: plans name nodes."""
    seen = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op}_{i}"
        seen.add(node.name)


def constant_value(node: gs.Node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        return np.asarray(attrs["value"].values)
    if "value_float" in attrs:
        return np.array(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], dtype=np.float32)
    return None


def is_fp32(tensor: gs.Tensor) -> bool:
    return tensor.dtype is not None and np.dtype(tensor.dtype) == np.float32


def float_slots(node: gs.Node) -> tuple[list[int], list[int]]:
    """Indices of the node's FP32 inputs that follow its precision, and of its FP32 outputs."""
    any_dtype = ops.ANY_DTYPE_INPUTS.get(node.op, ())
    ins = [i for i, t in enumerate(node.inputs) if is_fp32(t) and i not in any_dtype]
    return ins, [i for i, t in enumerate(node.outputs) if is_fp32(t)]


def assign_roles(graph: gs.Graph, fp32_nodes: Mapping[str, str], dtype: str) -> dict[str, Role]:
    """Role of every node that reads or writes FP32 tensors; nodes without any (int64 shape math) have none."""
    data = data_tensors(graph)
    roles = {}
    for node in graph.nodes:
        ins, outs = float_slots(node)
        if not ins and not outs:
            continue
        schema = ops.schema(node.op, node.domain, graph.opset)
        plugin = schema is None and ops.plugin_allows(node.op, node.domain, dtype)
        role = Role(
            "low",
            heavy=node.op in ops.HEAVY_OPS,
            ins={i: plugin or schema is not None and ops.allows(schema, i, False, dtype) for i in ins},
            outs={i: plugin or schema is not None and ops.allows(schema, i, True, dtype) for i in outs},
        )
        if node.name in fp32_nodes:
            role.kind, role.reason = "fp32", fp32_nodes[node.name]
        elif schema is None and not plugin:
            role.kind, role.reason = "fp32", "unknown-op"
        elif node.op in ops.DTYPE_ATTRIBUTE_OPS:
            role.kind, role.reason = "fp32", "dtype-attribute"
        elif outs and not any(role.outs.values()):
            role.kind, role.reason = "fp32", "type-constraint"
        elif node.op in ops.MOVE_OPS:
            role.kind = "free"
        elif outs and not any(t.name in data for t in node.outputs):
            role.kind, role.reason = "fp32", "shape-computation"
        roles[node.name] = role
    return roles


def data_tensors(graph: gs.Graph) -> set[str]:
    """Tensors whose values depend on the graph's inputs other than through their shapes."""
    data = {t.name for t in graph.inputs}
    for node in graph.nodes:
        if node.op not in ("Shape", "Size") and any(t.name in data for t in node.inputs):
            data.update(t.name for t in node.outputs)
    return data


def tensor_ends(graph: gs.Graph, roles: dict[str, Role]) -> dict[str, tuple[End | None, list[End]]]:
    """Every FP32 tensor -> (its producer, its consumers); initializers have no producer: they are stored as needed."""
    import onnx_graphsurgeon as gs

    ends = {t.name: (End(None, 0, True), []) for t in graph.inputs if is_fp32(t)}
    nodes = [n for n in graph.nodes if n.name in roles]
    for node in nodes:
        for i, ok in roles[node.name].outs.items():
            ends[node.outputs[i].name] = (End(node.name, i, ok), [])
    for node in nodes:
        for i, ok in roles[node.name].ins.items():
            t = node.inputs[i]
            producer = None if isinstance(t, gs.Constant) else End(None, 0, True)
            ends.setdefault(t.name, (producer, []))[1].append(End(node.name, i, ok))
    for t in graph.outputs:
        if t.name in ends:
            ends[t.name][1].append(End(None, 0, True))
    return ends


# ---------------------------------------------------------------- choosing precisions


def is_low(end: End, low: set[str], io_low: bool) -> bool:
    if end.node is None:
        return io_low
    return end.low_ok and end.node in low


def choose_low(
    roles: dict[str, Role], ends: dict[str, tuple[End | None, list[End]]], io_low: bool, merge_cost: float | None
) -> set[str]:
    """The nodes that run in low precision: every `low` node (but islands merged) and the free nodes the cut puts there.

    Minimum s-t cut, s = low precision, t = FP32. A tensor whose ends fall on both sides costs one Cast (hyperedge as a
    pair of auxiliary vertices joined by one finite edge); a variable node on the FP32 side pays its lean or merge cost.
    """
    import networkx as nx

    mergeable = merge_cost is not None
    fixed_low = {n for n, r in roles.items() if r.kind == "low" and (r.heavy or not mergeable)}
    cost = {n: FREE_LEAN for n, r in roles.items() if r.kind == "free"}
    if mergeable:
        cost |= {n: round(merge_cost * CAST_COST) for n, r in roles.items() if r.kind == "low" and not r.heavy}
    if not cost:
        return fixed_low

    def vertex(end: End) -> str:
        if end.node is None:
            return "s" if io_low else "t"
        if end.node in cost:
            return end.node if end.low_ok else "t"
        return "s" if end.low_ok and end.node in fixed_low else "t"

    g = nx.DiGraph()
    g.add_nodes_from(["s", "t"])
    for node, c in cost.items():
        g.add_edge("s", node, capacity=c)
    for name, (producer, consumers) in ends.items():
        members = {vertex(e) for e in ([producer] if producer else []) + consumers}
        if producer is None or len(members) < 2 or members == {"s", "t"}:
            continue
        g.add_edge(("in", name), ("out", name), capacity=CAST_COST)
        for m in members:
            g.add_edge(m, ("in", name))  # no capacity: infinite
            g.add_edge(("out", name), m)
    _, (low_side, _) = nx.minimum_cut(g, "s", "t")
    return fixed_low | {n for n in cost if n in low_side}


# ---------------------------------------------------------------- rewriting the graph


def rewrite(
    graph: gs.Graph,
    ends: dict[str, tuple[End | None, list[End]]],
    low: set[str],
    io_low: bool,
    low_dtype: np.dtype,
) -> int:
    """Set every FP32 tensor's dtype, add the Casts and low-precision initializer copies; return the Casts added."""
    import onnx_graphsurgeon as gs

    nodes = {n.name: n for n in graph.nodes}
    tensors = graph.tensors()
    names = Names(set(tensors) | set(nodes))
    dtype_of = {True: low_dtype, False: np.dtype(np.float32)}

    def reconnect(end: End, tensor: gs.Tensor) -> None:
        nodes[end.node].inputs[end.index] = tensor

    casts = 0
    for name, (producer, consumers) in ends.items():
        tensor = tensors[name]
        groups: dict[bool, list[End]] = {}
        for end in consumers:
            groups.setdefault(is_low(end, low, io_low), []).append(end)
        if producer is None:  # an initializer
            if True in groups:
                store_low(tensor, groups, low_dtype, names, reconnect)
            continue
        src = is_low(producer, low, io_low)
        tensor.dtype = dtype_of[src]
        if not groups.get(not src):
            continue
        casts += 1
        if any(e.node is None for e in groups[not src]):  # a graph output: its name moves to the Cast's output
            inner = gs.Variable(names.new(f"{name}_{SUFFIX[tensor.dtype.name]}"), tensor.dtype, tensor.shape)
            nodes[producer.node].outputs[producer.index] = inner
            for end in groups.get(src, []):
                reconnect(end, inner)
            tensor.dtype = dtype_of[not src]
            add_cast(graph, names, nodes, cast_source(inner), tensor)
        else:
            out = gs.Variable(names.new(f"{name}_{SUFFIX[dtype_of[not src].name]}"), dtype_of[not src], tensor.shape)
            add_cast(graph, names, nodes, cast_source(tensor), out)
            for end in groups[not src]:
                reconnect(end, out)
    for name in low:
        set_output_dtype(nodes[name], low_dtype)
    return casts


def store_low(tensor, groups, low_dtype, names, reconnect) -> None:
    """Initializer read in low precision: converted in place, or copied when FP32 nodes read it too."""
    import onnx_graphsurgeon as gs

    values = to_low(tensor.values, low_dtype)
    if False not in groups:
        tensor.values = values
        return
    copy = gs.Constant(names.new(f"{tensor.name}_{SUFFIX[low_dtype.name]}"), values)
    for end in groups[True]:
        reconnect(end, copy)


def to_low(values: np.ndarray, low_dtype: np.dtype) -> np.ndarray:
    """Out-of-range values saturate to the largest finite value instead of becoming inf."""
    import ml_dtypes

    limit = float(ml_dtypes.finfo(low_dtype).max)
    return np.asarray(np.clip(values, -limit, limit), dtype=low_dtype)


def cast_source(tensor: gs.Variable) -> gs.Tensor:
    """A Cast of the output of a Cast from a non-float type reads that Cast's input instead: no Cast chains."""
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Cast" and not is_fp32(producer.inputs[0]):
        return producer.inputs[0]
    return tensor


def add_cast(graph: gs.Graph, names: Names, nodes: dict, source: gs.Tensor, out: gs.Variable) -> None:
    import onnx_graphsurgeon as gs
    from onnx import helper

    name = names.new(f"{out.name}/Cast")
    to = helper.np_dtype_to_tensor_dtype(np.dtype(out.dtype))
    node = gs.Node("Cast", name, {"to": to}, inputs=[source], outputs=[out])
    graph.nodes.append(node)
    nodes[name] = node


def set_output_dtype(node: gs.Node, low_dtype: np.dtype) -> None:
    """Ops whose output dtype is an attribute: Cast's `to`, ConstantOfShape's `value`."""
    import onnx_graphsurgeon as gs
    from onnx import helper

    if node.op == "Cast" and node.attrs["to"] == helper.np_dtype_to_tensor_dtype(np.dtype(np.float32)):
        node.attrs["to"] = helper.np_dtype_to_tensor_dtype(low_dtype)
    elif node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        values = np.zeros(1, np.float32) if value is None else value.values
        node.attrs["value"] = gs.Constant("value", to_low(values, low_dtype))


class Names:
    """Fresh names: `base`, else `base_1`, `base_2`, ..."""

    def __init__(self, taken: set[str]):
        self.taken = taken

    def new(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def node_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """Node -> the precision it runs in: the dtype of its float outputs, else of its float inputs; "cast" for Casts
    between float types, "none" without float tensors. This is what a weakly typed TensorRT build pins per layer."""
    from onnx import helper

    from trtpipe.precision.capture import FLOAT_TYPES, tensor_types

    types = tensor_types(model)
    init = {t.name: t.data_type for t in model.graph.initializer}
    precisions = {}
    for node in model.graph.node:
        outs = [types[t] for t in node.output if types.get(t) in FLOAT_TYPES]
        any_dtype = ops.ANY_DTYPE_INPUTS.get(node.op_type, ())
        ins = [types.get(t, init.get(t)) for i, t in enumerate(node.input) if i not in any_dtype]
        floats = outs or [t for t in ins if t in FLOAT_TYPES]
        if node.op_type == "Cast" and outs and types.get(node.input[0], init.get(node.input[0])) in FLOAT_TYPES:
            precisions[node.name] = "cast"
        else:
            precisions[node.name] = helper.tensor_dtype_to_np_dtype(floats[0]).name if floats else "none"
    return precisions
