"""Decomposed LayerNorm over the trailing axes, as exporters emit it below opset 17:

    mean = ReduceMean(x, axes)                        axes as attribute (opset < 18) or constant input
    d    = Sub(x, mean)                               one Sub, or one per use
    var  = ReduceMean(Pow(d, 2) | Mul(d, d), axes)
    y    = Div(d, Sqrt(Add(var, eps)))  |  Mul(d, Reciprocal(Sqrt(Add(var, eps))))
    y    = Add(Mul(y, gamma), beta)                   each optional

eps must be a constant; gamma/beta are absorbed only when constant and varying along the normalized axes alone (else
they stay as Mul/Add after the fused node). `match_layernorm` is shared with the channel-axis pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trtpipe.fusions.registry import ONNX, PLUGIN_DOMAIN, PLUGINS, Fusion, Match, register

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

# TensorRT's LayerNorm plugin (8.5.3 source, 8.6.0 library) runs rows of at most this many values through a kernel
# that scales x by 1/n before squaring it: it normalizes with epsilon * n**2 instead of epsilon.
TRT_PLUGIN_SMALL_ROWS = 32


@dataclass
class LayerNormMatch(Match):
    x: gs.Tensor
    result: gs.Tensor
    rank: int
    axes: list[int]  # sorted, non-negative
    shape: list[int | None]  # the normalized dims, from x's shape or else from gamma/beta; None: unknown
    dtype: Any
    epsilon: float
    gamma: gs.Tensor | None = None
    beta: gs.Tensor | None = None


def match_layernorm(mean: gs.Node, graph: gs.Graph) -> LayerNormMatch | None:
    """The LayerNorm whose first ReduceMean is `mean`, over whatever axes it reduces."""
    from trtpipe.fusions import graph as g

    if mean.op != "ReduceMean":
        return None
    x = mean.inputs[0]
    rank = g.rank(x)
    axes = g.reduce_axes(mean, rank) if rank else None
    if axes is None:
        return None
    mu = g.out(mean)
    subs = [n for n in mu.outputs if n.op == "Sub" and n.inputs[0] is x and n.inputs[1] is mu]
    centered = [g.out(s) for s in subs]
    squares = {id(n): n for d in centered for n in d.outputs if is_square(n, d)}  # Mul(d, d) reads d twice
    if len(squares) != 1:
        return None
    (square,) = squares.values()
    var = g.sole_consumer(g.out(square), graph, "ReduceMean")
    if var is None or g.reduce_axes(var, rank) != axes:
        return None
    add = g.sole_consumer(g.out(var), graph, "Add")
    eps = g.other_input(add, g.out(var)) if add else None
    epsilon = g.scalar(eps) if eps is not None else None
    if epsilon is None or epsilon < 0:
        return None
    sqrt = g.sole_consumer(g.out(add), graph, "Sqrt")
    found = divide_by(g.out(sqrt), graph) if sqrt else None
    if found is None or not any(d is found[1] for d in centered):
        return None
    tail, numerator = found
    used = [s for s, d in zip(subs, centered) if d is square.inputs[0] or d is numerator]
    m = LayerNormMatch(
        nodes=[mean, *used, square, var, add, sqrt, *tail],
        x=x,
        result=g.out(tail[-1]),
        rank=rank,
        axes=axes,
        shape=[x.shape[a] if isinstance(x.shape[a], int) else None for a in axes],
        dtype=g.value(eps).dtype,
        epsilon=epsilon,
    )
    absorb_affine(m, graph)
    return m if None not in m.shape and g.internal(m.nodes, m.result, graph) else None


def is_square(node: gs.Node, d: gs.Tensor) -> bool:
    from trtpipe.fusions import graph as g

    if node.op == "Pow":
        return node.inputs[0] is d and g.is_scalar(node.inputs[1], 2.0, rtol=0.0)
    return node.op == "Mul" and node.inputs[0] is d and node.inputs[1] is d


def divide_by(std: gs.Tensor, graph: gs.Graph) -> tuple[list[gs.Node], gs.Tensor] | None:
    """The nodes dividing by `std` (Div, or Reciprocal then Mul) and the tensor divided."""
    from trtpipe.fusions import graph as g

    div = g.sole_consumer(std, graph, "Div")
    if div is not None:
        return ([div], div.inputs[0]) if div.inputs[1] is std else None
    reciprocal = g.sole_consumer(std, graph, "Reciprocal")
    mul = g.sole_consumer(g.out(reciprocal), graph, "Mul") if reciprocal else None
    numerator = g.other_input(mul, g.out(reciprocal)) if mul else None
    return ([reciprocal, mul], numerator) if numerator is not None else None


def absorb_affine(m: LayerNormMatch, graph: gs.Graph) -> None:
    """Extend the match by a following Mul(gamma) and then Add(beta) that qualify; they may tell unknown dims."""
    from trtpipe.fusions import graph as g

    for op, slot in (("Mul", "gamma"), ("Add", "beta")):
        node = g.sole_consumer(m.result, graph, op)
        param = g.other_input(node, m.result) if node else None
        values = g.value(param) if param is not None else None
        kept = along_axes(values, m) if values is not None and values.dtype == m.dtype else None
        if kept is None:
            continue
        setattr(m, slot, param)
        m.nodes.append(node)
        m.result = g.out(node)
        m.shape = [k if s is None and k != 1 else s for k, s in zip(kept.shape, m.shape)]


def along_axes(values: np.ndarray, m: LayerNormMatch) -> np.ndarray | None:
    """`values` with one dim per normalized axis, when broadcast against x it varies along those axes only."""
    if values.ndim > m.rank:
        return None
    full = values.reshape((1,) * (m.rank - values.ndim) + values.shape)
    if any(full.shape[a] != 1 for a in range(m.rank) if a not in m.axes):
        return None
    kept = full.reshape([full.shape[a] for a in m.axes])
    if any(s is not None and k not in (1, s) for k, s in zip(kept.shape, m.shape)):
        return None
    return kept


def affine_input(graph: gs.Graph, m: LayerNormMatch, param: gs.Tensor | None, fill: float, name: str) -> gs.Tensor:
    """gamma or beta shaped like the normalized dims: the original initializer when it already is, else a new one."""
    import numpy as np

    from trtpipe.fusions import graph as g

    if param is None:
        return g.constant(graph, name, np.full(m.shape, fill, dtype=m.dtype))
    values = np.broadcast_to(along_axes(g.value(param), m), m.shape)
    if g.is_initializer(param) and g.value(param).shape == values.shape:
        return param
    return g.constant(graph, name, values)


def emit(graph: gs.Graph, m: LayerNormMatch, x: gs.Tensor, result: gs.Tensor, replacement: str, path: str) -> gs.Node:
    """One node computing `result` = LayerNorm of `x` over its last len(m.axes) axes, with the match's parameters."""
    from trtpipe.fusions import graph as g

    op = "LayerNormalization" if replacement == ONNX else PLUGINS[replacement].op
    name = g.node_name(graph, path, op)
    gamma = affine_input(graph, m, m.gamma, 1.0, f"{name}.scale")
    beta = affine_input(graph, m, m.beta, 0.0, f"{name}.bias")
    inputs = [x, gamma, beta]
    axis = -len(m.axes)
    if replacement == ONNX:
        return g.replace(graph, result, op, name, inputs, {"axis": axis, "epsilon": m.epsilon})
    fields = {"epsilon": m.epsilon, "axis": axis} if replacement == "LayerNorm" else {"epsilon": m.epsilon}
    return g.replace(graph, result, op, name, inputs, PLUGINS[replacement].attrs(**fields), domain=PLUGIN_DOMAIN)


def unsupported(m: LayerNormMatch, replacement: str) -> str | None:
    if replacement == "trtpipe_layernorm" and len(m.axes) > 1:
        return f"TrtpipeLayerNorm normalizes over the last axis only; this LayerNorm spans {len(m.axes)} axes"
    if replacement == "LayerNorm" and (n := math.prod(m.shape)) <= TRT_PLUGIN_SMALL_ROWS:
        return (f"TensorRT's LayerNorm plugin uses epsilon * n**2 for rows of n <= {TRT_PLUGIN_SMALL_ROWS} values "
                f"(its small-row kernel); these rows have {n}")
    return None


@register
class LayerNorm(Fusion):
    name = "layernorm"
    priority = 10
    opsets = (7, 28)
    replacements = (ONNX, "LayerNorm", "trtpipe_layernorm")
    onnx_op = "LayerNormalization"
    onnx_opset = 17

    def find(self, node: gs.Node, graph: gs.Graph) -> LayerNormMatch | None:
        m = match_layernorm(node, graph)
        return m if m is not None and m.axes == list(range(m.rank - len(m.axes), m.rank)) else None

    def unsupported(self, match: LayerNormMatch, replacement: str) -> str | None:
        return unsupported(match, replacement)

    def rewrite(self, graph: gs.Graph, match: LayerNormMatch, replacement: str) -> gs.Node:
        from trtpipe.fusions import graph as g

        return emit(graph, match, match.x, match.result, replacement, g.module_path(match.nodes))
