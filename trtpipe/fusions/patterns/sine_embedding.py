"""DETR-style sine embeddings of boxes or points (DAB-DETR, Conditional DETR, DINO: transformers'
encode_sinusoidal_position_embedding), as the torchscript exporter writes them and onnxsim leaves them:

    c_0 .. c_{K-1} = Split(pos, axis -1)                    pos (..., K) into K tensors (..., 1)
    u_k = Div(Mul(c_k, scale), dim_t)                         scale a constant scalar, dim_t a constant (D,), D even
    e_k = Reshape(Concat(Unsqueeze(Sin(u_k[..., 0::2]), -1), Unsqueeze(Cos(u_k[..., 1::2]), -1), axis -1))  (..., D)
    out = Concat(e_order[0], ..., e_order[K-1], axis -1)      transformers puts y first: order 1, 0, 2, 3

so out[..., k*D + j] = (sin if j is even else cos)(pos[..., order[k]] * scale / dim_t[j]). The Reshape flattens the
last two axes, by a constant shape or by Concat(Slice(Shape(stacked), 0, -2), [-1]) (flatten(-2) of a dynamic
shape); before onnxsim a Squeeze/Unsqueeze pair of the last axis sits between Split and Mul. Every coordinate must
have the same scale and dim_t and appear once in the output.

The only replacement is trtpipe's plugin (fields factors = scale / dim_t and order): it computes in FP32 and may
write FP16, where TensorRT in FP16 loses the embedding's accuracy and, with the subgraph pinned to FP32, spreads FP32
around it. ONNX has no such op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from trtpipe.fusions.registry import PLUGIN_DOMAIN, PLUGINS, Fusion, Match, register

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs

PLUGIN_MAX_DIM = 512  # kSineMaxDim, kSineMaxCoords in plugins_src/sine_embedding/sine_embedding.h
PLUGIN_MAX_COORDS = 8


@dataclass
class SineEmbeddingMatch(Match):
    pos: gs.Tensor
    result: gs.Tensor
    factors: np.ndarray  # float32, D values
    order: list[int]


class Coordinate(NamedTuple):
    nodes: list[gs.Node]
    factors: np.ndarray
    embedding: gs.Tensor  # e_k


def is_last(axes: list[int] | None, rank: int) -> bool:
    return axes is not None and len(axes) == 1 and axes[0] in (-1, rank - 1)


def int_input(node: gs.Node, index: int, default: list[int] | None = None) -> list[int] | None:
    """The values of the node's constant integer input `index`; `default` where that optional input is left out."""
    from trtpipe.fusions import graph as g

    return g.ints(node.inputs[index]) if len(node.inputs) > index and node.inputs[index].name else default


def unit_split(split: gs.Node, pos: gs.Tensor, rank: int) -> bool:
    """True when `split` cuts pos's last axis into pieces of one value."""
    if not is_last([split.attrs.get("axis", 0)], rank):
        return False
    sizes = int_input(split, 1, default=[])
    if sizes == []:  # equal parts
        return pos.shape is not None and pos.shape[-1] == len(split.outputs)
    return sizes == [1] * len(split.outputs)


def through_squeeze(c: gs.Tensor, graph: gs.Graph, rank: int) -> tuple[list[gs.Node], gs.Tensor] | None:
    """The nodes of an Unsqueeze(Squeeze(c)) of the last axis, if any, and the tensor the coordinate's Mul reads."""
    from trtpipe.fusions import graph as g

    squeeze = g.sole_consumer(c, graph, "Squeeze")
    if squeeze is None:
        return [], c
    unsqueeze = g.sole_consumer(g.out(squeeze), graph, "Unsqueeze")
    if unsqueeze is None or not is_last(int_input(squeeze, 1), rank) or not is_last(int_input(unsqueeze, 1), rank):
        return None
    return [squeeze, unsqueeze], g.out(unsqueeze)


def scaled(c: gs.Tensor, graph: gs.Graph, rank: int) -> tuple[list[gs.Node], np.ndarray] | None:
    """Mul(c, scale) then Div(., dim_t): the two nodes and scale / dim_t."""
    import numpy as np

    from trtpipe.fusions import graph as g

    mul = g.sole_consumer(c, graph, "Mul")
    scale = g.value(g.other_input(mul, c)) if mul else None
    if scale is None or scale.size != 1 or scale.ndim > rank or scale.dtype.kind != "f":
        return None
    div = g.sole_consumer(g.out(mul), graph, "Div")
    dim_t = g.value(div.inputs[1]) if div and div.inputs[0] is g.out(mul) else None
    if dim_t is None or dim_t.ndim != 1 or dim_t.size % 2 or dim_t.dtype.kind != "f":
        return None
    with np.errstate(divide="ignore"):
        factors = (scale.astype(np.float64).reshape(()) / dim_t.astype(np.float64)).astype(np.float32)
    return ([mul, div], factors) if dim_t.size and np.isfinite(factors).all() else None


def every_other(node: gs.Node, u: gs.Tensor, rank: int, dim: int) -> int | None:
    """The start (0 or 1) when `node` is Slice(u, start::2) over u's whole last axis."""
    if node.op != "Slice" or node.inputs[0] is not u:
        return None
    starts, ends, axes, steps = int_input(node, 1), int_input(node, 2), int_input(node, 3, [0]), int_input(node, 4, [1])
    if steps != [2] or not is_last(axes, rank) or ends is None or len(ends) != 1 or ends[0] < dim:
        return None
    return starts[0] if starts in ([0], [1]) else None


def interleaved(u: gs.Tensor, graph: gs.Graph, rank: int, dim: int) -> tuple[list[gs.Node], gs.Tensor] | None:
    """Concat(Unsqueeze(Sin(u[..., 0::2]), -1), Unsqueeze(Cos(u[..., 1::2]), -1), axis -1): its nodes and output."""
    from trtpipe.fusions import graph as g

    slices = {every_other(n, u, rank, dim): n for n in u.outputs}
    if len(u.outputs) != 2 or set(slices) != {0, 1} or g.is_graph_output(u, graph):
        return None
    waves = [g.sole_consumer(g.out(slices[start]), graph, op) for start, op in ((0, "Sin"), (1, "Cos"))]
    unsqueezes = [g.sole_consumer(g.out(w), graph, "Unsqueeze") if w else None for w in waves]
    if any(n is None for n in unsqueezes) or not all(is_last(int_input(n, 1), rank + 1) for n in unsqueezes):
        return None
    stack = g.sole_consumer(g.out(unsqueezes[0]), graph, "Concat")
    if stack is None or len(stack.inputs) != 2 or any(t is not g.out(n) for t, n in zip(stack.inputs, unsqueezes)):
        return None
    nodes = [slices[0], slices[1], *waves, *unsqueezes, stack]
    return (nodes, g.out(stack)) if is_last([stack.attrs.get("axis")], rank + 1) else None


def flattened(stacked: gs.Tensor, rank: int, dim: int) -> list[gs.Node] | None:
    """The Reshape of stacked (..., D/2, 2) to (..., D), after the nodes computing its shape from stacked's."""
    from trtpipe.fusions import graph as g

    reshape = next((n for n in stacked.outputs if n.op == "Reshape" and n.inputs[0] is stacked), None)
    if reshape is None:
        return None
    shape = g.ints(reshape.inputs[1])
    if shape is None:
        chain = flatten_shape(reshape.inputs[1], stacked, rank)
        return [*chain, reshape] if chain else None
    dims = stacked.shape or [None] * (rank + 1)
    zero_copies = not reshape.attrs.get("allowzero", 0)
    lead = all((v == 0 and zero_copies) or v == d for v, d in zip(shape[:-1], dims))
    return [reshape] if len(shape) == rank and shape[-1] in (-1, dim) and lead else None


def flatten_shape(shape: gs.Tensor, stacked: gs.Tensor, rank: int) -> list[gs.Node] | None:
    """Shape(stacked), Slice(0, -2) of it and Concat(., [-1]): stacked's shape with the last two dims as one."""
    from trtpipe.fusions import graph as g

    concat = g.producer(shape)
    if concat is None or concat.op != "Concat" or len(concat.inputs) != 2 or g.ints(concat.inputs[1]) != [-1]:
        return None
    cut = g.producer(concat.inputs[0])
    if cut is None or cut.op != "Slice":
        return None
    starts, ends, axes, steps = int_input(cut, 1), int_input(cut, 2), int_input(cut, 3, [0]), int_input(cut, 4, [1])
    if starts != [0] or ends not in ([-2], [rank - 1]) or axes not in ([0], [-1]) or steps != [1]:
        return None
    of = g.producer(cut.inputs[0])
    if of is None or of.op != "Shape" or of.inputs[0] is not stacked or of.attrs.get("start", 0) or "end" in of.attrs:
        return None
    return [of, cut, concat]


def coordinate(c: gs.Tensor, graph: gs.Graph, rank: int) -> Coordinate | None:
    """The embedding of one coordinate c (..., 1): its nodes, its factors and its output (..., D)."""
    from trtpipe.fusions import graph as g

    squeezed = through_squeeze(c, graph, rank)
    scaling = scaled(squeezed[1], graph, rank) if squeezed else None
    if scaling is None:
        return None
    dim = len(scaling[1])
    stacked = interleaved(g.out(scaling[0][-1]), graph, rank, dim)
    flat = flattened(stacked[1], rank, dim) if stacked else None
    if flat is None:
        return None
    return Coordinate([*squeezed[0], *scaling[0], *stacked[0], *flat], scaling[1], g.out(flat[-1]))


@register
class SineEmbedding(Fusion):
    name = "sine-embedding"
    priority = 30
    opsets = (13, 28)  # Split sizes, Squeeze and Unsqueeze axes as inputs
    replacements = ("trtpipe_sine_embedding",)

    def find(self, split: gs.Node, graph: gs.Graph) -> SineEmbeddingMatch | None:
        import numpy as np

        from trtpipe.fusions import graph as g

        if split.op != "Split":
            return None
        pos = split.inputs[0]
        rank = g.rank(pos)
        if not rank or not unit_split(split, pos, rank):
            return None
        coords = [coordinate(c, graph, rank) for c in split.outputs]
        if any(c is None for c in coords) or any(not np.array_equal(c.factors, coords[0].factors) for c in coords):
            return None
        concat = g.sole_consumer(coords[0].embedding, graph, "Concat")
        if concat is None or not is_last([concat.attrs.get("axis")], rank):
            return None
        index = {id(c.embedding): k for k, c in enumerate(coords)}
        order = [index.get(id(t)) for t in concat.inputs]
        if None in order or sorted(order) != list(range(len(coords))):
            return None
        nodes = [split, *(n for c in coords for n in c.nodes), concat]
        result = g.out(concat)
        if not g.internal(nodes, result, graph):
            return None
        return SineEmbeddingMatch(nodes, pos, result, coords[0].factors, order)

    def unsupported(self, match: SineEmbeddingMatch, replacement: str) -> str | None:
        if len(match.factors) > PLUGIN_MAX_DIM or len(match.order) > PLUGIN_MAX_COORDS:
            return (f"TrtpipeSineEmbedding takes up to {PLUGIN_MAX_COORDS} coordinates of up to {PLUGIN_MAX_DIM} "
                    f"values; this embedding has {len(match.order)} of {len(match.factors)}")
        return None

    def rewrite(self, graph: gs.Graph, match: SineEmbeddingMatch, replacement: str) -> gs.Node:
        from trtpipe.fusions import graph as g

        plugin = PLUGINS[replacement]
        name = g.node_name(graph, g.module_path(match.nodes), plugin.op)
        attrs = plugin.attrs(factors=[float(f) for f in match.factors], order=match.order)
        return g.replace(graph, match.result, plugin.op, name, [match.pos], attrs, domain=PLUGIN_DOMAIN)
