"""A ScatterND that repeats the one producing its data: ScatterND(ScatterND(x, i, u), i, u) writes the same values
to the same places again, so it equals the inner scatter. The torchscript exporter writes an in-place update of a
slice (`x[..., a:b] *= s`) this way; DAB-DETR's decoder has 16 such pairs. The outer scatter is dropped and its
readers read the inner one.

Matches when both have reduction "none" and the same indices (one tensor, or equal constants) and the same updates
tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trtpipe.fusions.registry import ONNX, Fusion, Match, register

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@register
class RepeatedScatter(Fusion):
    name = "repeated-scatter"
    priority = 4  # before scatter-slice, which would turn each of the pair into a Concat
    opsets = (11, 28)
    replacements = (ONNX,)
    onnx_op = "ScatterND"
    onnx_opset = 11
    default = False

    def find(self, outer: gs.Node, graph: gs.Graph) -> Match | None:
        from trtpipe.fusions import graph as g

        if outer.op != "ScatterND" or outer.attrs.get("reduction", "none") != "none":
            return None
        inner = g.producer(outer.inputs[0])
        if inner is None or inner.op != "ScatterND" or inner.attrs.get("reduction", "none") != "none":
            return None
        if inner.inputs[2] is not outer.inputs[2] or not same_indices(inner.inputs[1], outer.inputs[1]):
            return None
        return Match([inner, outer])

    def rewrite(self, graph: gs.Graph, match: Match, replacement: str) -> gs.Node:
        from trtpipe.fusions import graph as g

        inner, outer = match.nodes
        result, kept = g.out(outer), g.out(inner)
        if g.is_graph_output(result, graph):
            return g.replace(graph, result, "Identity", g.unique_name(graph, f"{outer.name}/Identity"), [kept])
        g.redirect(result, kept)
        outer.outputs.clear()
        return inner


def same_indices(a: gs.Tensor, b: gs.Tensor) -> bool:
    import numpy as np

    from trtpipe.fusions import graph as g

    if a is b:
        return True
    va, vb = g.value(a), g.value(b)
    return va is not None and vb is not None and va.shape == vb.shape and bool(np.array_equal(va, vb))
