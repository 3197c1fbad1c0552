"""A binary op of two scalar-index Gathers along one axis, put back on that axis by Unsqueeze:
Unsqueeze(Div(Gather(x, i, axis=a), Gather(y, j, axis=a)), [a]) is Div(Slice(x, i:i+1, a), Slice(y, j:j+1, a)).
DAB-DETR's decoder computes its box-size ratios `ref[..., 0] / box[..., 2]` this way, and multiplies the
embedding by them after the Unsqueeze.

Matches Add, Sub, Mul and Div whose inputs are both such Gathers of tensors of the same known rank, read by nothing
else, and whose result the Unsqueeze alone reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtpipe.fusions.registry import ONNX, Fusion, Match, register

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

BINARY = ("Add", "Sub", "Mul", "Div")


@dataclass
class GatherSliceMatch(Match):
    sources: list[gs.Tensor]
    starts: list[int]
    axis: int


@register
class GatherSlice(Fusion):
    name = "gather-slice"
    priority = 6
    opsets = (11, 28)
    replacements = (ONNX,)
    onnx_op = "Slice"
    onnx_opset = 10
    default = False

    def find(self, unsqueeze: gs.Node, graph: gs.Graph) -> GatherSliceMatch | None:
        from trtpipe.fusions import graph as g

        if unsqueeze.op != "Unsqueeze":
            return None
        axes = unsqueeze.attrs.get("axes") or (g.ints(unsqueeze.inputs[1]) if len(unsqueeze.inputs) > 1 else None)
        op = g.producer(unsqueeze.inputs[0])
        if not axes or len(axes) != 1 or op is None or op.op not in BINARY or len(op.inputs) != 2:
            return None
        gathers = [g.producer(t) for t in op.inputs]
        found = [scalar_gather(n) for n in gathers]
        ranks = {g.rank(n.inputs[0]) for n in gathers if n is not None}
        if None in found or len(ranks) != 1 or None in ranks:
            return None
        axis = axes[0] % ranks.pop()
        if any(a != axis for a, _ in found):
            return None
        nodes = [*gathers, op, unsqueeze]
        if not g.internal(nodes, g.out(unsqueeze), graph) or gathers[0] is gathers[1]:
            return None
        return GatherSliceMatch(nodes, [n.inputs[0] for n in gathers], [i for _, i in found], axis)

    def rewrite(self, graph: gs.Graph, match: GatherSliceMatch, replacement: str) -> gs.Node:
        from trtpipe.fusions import graph as g

        op, result = match.nodes[2], g.out(match.nodes[3])
        sliced = [g.slice_along(graph, source, match.axis, start, start + 1, f"{gather.name}/Slice")
                  for gather, source, start in zip(match.nodes[:2], match.sources, match.starts)]
        match.nodes[3].outputs.clear()
        op.inputs.clear()
        op.inputs.extend(sliced)
        op.outputs.clear()
        op.outputs.append(result)  # the op keeps its name, which precision plans may list
        return op


def scalar_gather(node: gs.Node | None) -> tuple[int, int] | None:
    """(axis, index) of a Gather with one constant scalar index, both non-negative; None for anything else."""
    from trtpipe.fusions import graph as g

    if node is None or node.op != "Gather":
        return None
    index, rank = g.value(node.inputs[1]), g.rank(node.inputs[0])
    shape = node.inputs[0].shape
    if index is None or index.ndim != 0 or rank is None:
        return None
    axis = node.attrs.get("axis", 0) % rank
    size = shape[axis]
    if not isinstance(size, int):
        return None
    return axis, int(index) % size
