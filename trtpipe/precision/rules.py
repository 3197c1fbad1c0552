"""Rules that choose the nodes to keep FP32, each node recorded with the rule that chose it (first rule wins).

Block lists and the fragile-op policy apply by op type and node name. The range rules look at the numbers: weights
beyond the low dtype's range or flushing to zero, sums over many terms, and activations whose magnitude on the
calibration inputs comes near the low dtype's largest value.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from trtpipe.precision import ops
from trtpipe.precision.convert import assign_roles, is_fp32, np_dtype, prepare

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

REDUCE_OPS = frozenset(
    {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMean", "ReduceProd", "ReduceSum",
     "ReduceSumSquare"}
)  # fmt: skip
FRAGILE_OPS = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization", "Softmax", "LogSoftmax",
    *sorted(REDUCE_OPS), "Pow", "Exp", "Log", "Sqrt", "Reciprocal",
)  # fmt: skip
# Where an output's tail begins: layers that mix many values with learned weights, or normalize them.
TAIL_STOPS = frozenset(
    {"Conv", "ConvTranspose", "Einsum", "Gemm", "MatMul", "LayerNormalization", "GroupNormalization",
     "InstanceNormalization", "BatchNormalization"}
)  # fmt: skip
ACTIVATION_HEADROOM = 8  # "auto" activation limit: the low dtype's largest value / 8


class Rules(BaseModel):
    """Which nodes stay FP32. Lists replace the defaults; `null` turns a threshold rule off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_ops: list[str] = []
    block_names: list[str] = []  # regular expressions searched in node names
    fragile_ops: list[str] = list(FRAGILE_OPS)
    norm_divisors: bool = True  # Div/Mul reading a Sqrt or Reciprocal (normalizations written out)
    initializer_range: bool = True  # weights beyond the low dtype's range, or flushing to zero
    underflow_fraction: float = 0.01  # ... when more than this fraction of a weight's nonzero values flush
    reduction_max: int | None = 8192  # sums over more terms (K of MatMul/Gemm, Cin x kernel of Conv, Reduce*)
    activation_max: float | Literal["auto"] | None = "auto"  # largest |activation| allowed in low precision
    output_tails: list[str] = []  # outputs whose tail (trtpipe.precision.rules.output_tail) stays FP32


def choose_fp32(
    model: onnx.ModelProto, rules: Rules, dtype: str, feeds: dict[str, np.ndarray] | None = None, chunk: int = 64
) -> dict[str, str]:
    """Node name -> the rule that keeps it FP32. The activation rule runs only when calibration `feeds` are given."""
    graph = prepare(model)
    roles = assign_roles(graph, {}, dtype)
    marked = [n for n in graph.nodes if n.name in roles]
    computing = [n for n in marked if roles[n.name].kind == "low"]
    chosen = {n: why for n, why in tail_pins(graph, rules.output_tails).items() if n in roles}
    for node in marked:
        if node.op in rules.block_ops:
            chosen.setdefault(node.name, f"block-op:{node.op}")
        if pattern := next((p for p in rules.block_names if re.search(p, node.name)), None):
            chosen.setdefault(node.name, f"block-name:{pattern}")
    for node in computing:
        if node.op in rules.fragile_ops:
            chosen.setdefault(node.name, f"policy:{node.op}")
        elif rules.norm_divisors and reads_norm_divisor(node):
            chosen.setdefault(node.name, "policy:norm-divisor")
    finfo = limits(dtype)
    if rules.initializer_range:
        for name, why in weight_range(computing, finfo, rules.underflow_fraction).items():
            chosen.setdefault(name, why)
    if rules.reduction_max is not None:
        for node in computing:
            depth = reduction_depth(node)
            if depth is not None and depth > rules.reduction_max:
                chosen.setdefault(node.name, f"reduction-depth:{depth}>{rules.reduction_max}")
    if rules.activation_max is not None and feeds is not None:
        limit = float(finfo.max) / ACTIVATION_HEADROOM if rules.activation_max == "auto" else rules.activation_max
        for name, why in large_activations(model, graph, computing, feeds, limit, chunk).items():
            chosen.setdefault(name, why)
    return chosen


def tail_pins(graph: gs.Graph, outputs: list[str]) -> dict[str, str]:
    """Node -> "output-tail:<output>" for the tails of `outputs`."""
    pins: dict[str, str] = {}
    for out in outputs:
        for name in output_tail(graph, out):
            pins.setdefault(name, f"output-tail:{out}")
    return pins


def output_tail(graph: gs.Graph, output: str) -> list[str]:
    """Nodes that reach `output` through no weighted or normalizing layer (TAIL_STOPS) and no plugin, in graph
    order. Their rounding reaches the output undamped and adds up along chains of additions: DAB-DETR's boxes are
    reference points refined by an addition in every decoder layer, whose float16 rounding alone costs about the
    whole of a 2e-4 error budget."""
    from trtpipe.errors import StageError, did_you_mean

    tensors = {t.name: t for t in graph.outputs}
    if output not in tensors:
        raise StageError(f"no graph output named {output!r}", hint=did_you_mean(output, list(tensors)))
    tail: set[str] = set()
    stack = [tensors[output]]
    while stack:
        for node in stack.pop().inputs:
            if node.name in tail or node.op in TAIL_STOPS or node.domain not in (None, "", "ai.onnx"):
                continue
            tail.add(node.name)
            stack.extend(node.inputs)
    return [n.name for n in graph.nodes if n.name in tail]


def limits(dtype: str):
    import ml_dtypes

    return ml_dtypes.finfo(np_dtype(dtype))


def producer_through_moves(tensor: gs.Tensor) -> gs.Node | None:
    """The node computing `tensor`'s values, looking through data-movement nodes."""
    while tensor.inputs:
        node = tensor.inputs[0]
        if node.op not in ops.MOVE_OPS or not node.inputs:
            return node
        tensor = node.inputs[0]
    return None


def reads_norm_divisor(node: gs.Node) -> bool:
    if node.op not in ("Div", "Mul"):
        return False
    inputs = node.inputs[1:] if node.op == "Div" else node.inputs
    producers = [producer_through_moves(t) for t in inputs]
    return any(p is not None and p.op in ("Sqrt", "Reciprocal") for p in producers)


def weight_range(computing: list[gs.Node], finfo, underflow_fraction: float) -> dict[str, str]:
    """Nodes reading an FP32 initializer with values beyond the low dtype's range or flushing to zero there."""
    import onnx_graphsurgeon as gs

    verdicts: dict[str, str | None] = {}
    chosen = {}
    for node in computing:
        for t in node.inputs:
            if not isinstance(t, gs.Constant) or t.values.dtype != np.float32:
                continue
            if t.name not in verdicts:
                verdicts[t.name] = weight_verdict(t.values, finfo, underflow_fraction)
            if verdicts[t.name]:
                chosen.setdefault(node.name, f"initializer:{t.name} {verdicts[t.name]}")
    return chosen


def weight_verdict(values: np.ndarray, finfo, underflow_fraction: float) -> str | None:
    magnitude = np.abs(values[values != 0])
    if magnitude.size == 0:
        return None
    if magnitude.max() > finfo.max:
        return f"max |w| {magnitude.max():.3g} > {float(finfo.max):.3g}"
    flushed = float((magnitude < float(finfo.smallest_subnormal) / 2).mean())
    if flushed > underflow_fraction:
        return f"{flushed:.0%} of nonzero values flush to zero"
    return None


def reduction_depth(node: gs.Node) -> int | None:
    """How many terms one output value sums, from static shapes; None when unknown or not a reduction."""

    def dims(tensor) -> list[int] | None:
        shape = tensor.shape
        return list(shape) if shape is not None and all(isinstance(d, int) for d in shape) else None

    x = dims(node.inputs[0]) if node.inputs else None
    if node.op == "MatMul" and x:
        return x[-1]
    if node.op == "Gemm" and x:
        return x[0] if node.attrs.get("transA", 0) else x[-1]
    if node.op == "Conv" and (w := dims(node.inputs[1])):
        return int(np.prod(w[1:]))
    if node.op in ("GlobalAveragePool", "GlobalLpPool") and x:
        return int(np.prod(x[2:]))
    if node.op in REDUCE_OPS and x:
        axes = reduce_axes(node)
        if axes is None:
            return None
        return int(np.prod([x[a] for a in axes] if axes else x))
    return None


def reduce_axes(node: gs.Node) -> list[int] | None:
    """The reduced axes ([] = all), or None when they are computed at run time."""
    import onnx_graphsurgeon as gs

    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(node.inputs) > 1 and node.inputs[1].name:
        axes = node.inputs[1]
        return [int(a) for a in axes.values.ravel()] if isinstance(axes, gs.Constant) else None
    return []


def large_activations(
    model: onnx.ModelProto, graph: gs.Graph, computing: list[gs.Node], feeds, limit: float, chunk: int
) -> dict[str, str]:
    """Nodes writing or reading a tensor whose magnitude on the calibration inputs exceeds `limit`."""
    from trtpipe.precision.capture import capture, max_abs

    names = {n.name for n in computing}
    watched = [t.name for n in graph.nodes for t in n.outputs if is_fp32(t)]
    tensors = graph.tensors()
    chosen = {}
    inputs = {t.name: feeds[t.name] for t in graph.inputs if is_fp32(t) and t.name in feeds}
    for values in [inputs, *capture(model, feeds, watched, chunk)]:
        for name, array in values.items():
            peak = max_abs(array)
            if peak <= limit:
                continue
            t = tensors[name]
            for node in [*t.inputs, *t.outputs]:
                if node.name in names:
                    chosen.setdefault(node.name, f"activation:{name} max|x| {peak:.3g} > {limit:.3g}")
    return chosen
