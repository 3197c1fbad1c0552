"""In-place slice assignment as the torchscript exporter writes it: `x[..., a:b] = u` (and `x[..., a:b] *= s`)
becomes ScatterND(x, indices, u) with constant indices that list every element of the block, one (i, j, k, ...)
per element. Rewritten as Concat(Slice(x, :a), u, Slice(x, b:)) along that axis: data movement, where the scatter
is a kernel of its own with an index tensor of rank x 8 bytes per element (DAB-DETR-R50: 20 such scatters in the
decoder, 300x128 elements each).

Matches when the indices (shape u.shape + [rank of x]) run, in row-major order, over the whole of every axis of x
but one and over a contiguous range of that one; x's shape must be known; reduction "none" only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtpipe.fusions.registry import ONNX, Fusion, Match, register

if TYPE_CHECKING:
    import numpy as np
    import onnx_graphsurgeon as gs


@dataclass
class ScatterSliceMatch(Match):
    data: gs.Tensor
    updates: gs.Tensor
    result: gs.Tensor
    axis: int
    start: int
    stop: int
    length: int  # of the data along `axis`


def block(indices: np.ndarray, shape: list[int]) -> tuple[int, int, int] | None:
    """(axis, start, stop) when `indices` list the elements of data[..., start:stop, ...] in row-major order."""
    import numpy as np

    rank = len(shape)
    if indices.ndim != rank + 1 or indices.shape[-1] != rank:
        return None
    extent = indices.shape[:-1]
    partial = [a for a in range(rank) if extent[a] != shape[a]]
    if len(partial) > 1 or any(n == 0 for n in extent):
        return None
    axis = partial[0] if partial else rank - 1
    start = int(indices.reshape(-1, rank)[0, axis]) % shape[axis]
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in extent), indexing="ij"), axis=-1)
    grid[..., axis] += start
    if not np.array_equal(np.where(indices < 0, indices + np.asarray(shape), indices), grid):
        return None
    return axis, start, start + extent[axis]


@register
class ScatterSlice(Fusion):
    name = "scatter-slice"
    priority = 5
    opsets = (11, 28)
    replacements = (ONNX,)
    onnx_op = "Concat"
    onnx_opset = 11
    default = False  # a rewrite of the graph's data movement, not a fusion: asked for by name

    def find(self, scatter: gs.Node, graph: gs.Graph) -> ScatterSliceMatch | None:
        from trtpipe.fusions import graph as g

        if scatter.op != "ScatterND" or scatter.attrs.get("reduction", "none") != "none":
            return None
        data, indices, updates = scatter.inputs
        shape = data.shape
        values = g.value(indices)
        if values is None or shape is None or not all(isinstance(n, int) and n > 0 for n in shape):
            return None
        found = block(values, list(shape))
        return ScatterSliceMatch([scatter], data, updates, g.out(scatter), *found, shape[found[0]]) if found else None

    def rewrite(self, graph: gs.Graph, match: ScatterSliceMatch, replacement: str) -> gs.Node:
        from trtpipe.fusions import graph as g

        base = match.nodes[0].name or "ScatterND"
        data, axis = match.data, match.axis
        parts = [g.slice_along(graph, data, axis, 0, match.start, f"{base}/head")] if match.start > 0 else []
        parts.append(match.updates)
        if match.stop < match.length:
            parts.append(g.slice_along(graph, data, axis, match.stop, match.length, f"{base}/tail"))
        name = g.unique_name(graph, f"{base}/Concat")
        return g.replace(graph, match.result, "Concat", name, parts, {"axis": match.axis})

