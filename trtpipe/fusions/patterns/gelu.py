"""Exact (erf) GELU as exporters decompose it: x * 0.5 * (1 + Erf(x / sqrt(2))).

x / sqrt(2) is Div(x, 1.4142...) or Mul(x, 0.7071...); the 0.5 multiplies x first, (1 + erf) first, or the product.
ONNX has Gelu from opset 20 only; below that the matches are reported and left as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtpipe.fusions.registry import ONNX, Fusion, Match, register

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

SCALE_RTOL = 1e-4  # exporters print sqrt(2) to 5-8 digits


@dataclass
class GeluMatch(Match):
    x: gs.Tensor
    result: gs.Tensor


def erf_input(node: gs.Node | None) -> gs.Tensor | None:
    """x, when `node` computes x / sqrt(2)."""
    from trtpipe.fusions import graph as g

    if node is None:
        return None
    if node.op == "Div" and g.is_scalar(node.inputs[1], math.sqrt(2), SCALE_RTOL):
        return node.inputs[0]
    if node.op == "Mul":
        for x, c in (node.inputs, node.inputs[::-1]):
            if g.is_scalar(c, math.sqrt(0.5), SCALE_RTOL) and g.value(x) is None:
                return x
    return None


def is_half_of(node: gs.Node | None, t: gs.Tensor) -> bool:
    """True when `node` is Mul(t, 0.5)."""
    from trtpipe.fusions import graph as g

    return node is not None and node.op == "Mul" and g.is_scalar(g.other_input(node, t), 0.5)


@register
class Gelu(Fusion):
    name = "gelu"
    priority = 20
    opsets = (9, 28)
    replacements = (ONNX,)
    onnx_op = "Gelu"
    onnx_opset = 20

    def find(self, erf: gs.Node, graph: gs.Graph) -> GeluMatch | None:
        from trtpipe.fusions import graph as g

        if erf.op != "Erf":
            return None
        scale = g.producer(erf.inputs[0])
        x = erf_input(scale)
        add = g.sole_consumer(g.out(erf), graph, "Add") if x is not None else None
        if add is None or not g.is_scalar(g.other_input(add, g.out(erf)), 1.0):
            return None
        mul = g.sole_consumer(g.out(add), graph, "Mul")
        other = g.other_input(mul, g.out(add)) if mul else None
        if other is None:
            return None
        if other is x:  # (x * (1 + erf)) * 0.5
            half = g.sole_consumer(g.out(mul), graph, "Mul")
            nodes = [scale, erf, add, mul, half] if is_half_of(half, g.out(mul)) else None
        elif g.is_scalar(other, 0.5):  # x * ((1 + erf) * 0.5)
            last = g.sole_consumer(g.out(mul), graph, "Mul")
            nodes = [scale, erf, add, mul, last] if last is not None and g.other_input(last, g.out(mul)) is x else None
        else:  # (x * 0.5) * (1 + erf)
            half = g.producer(other)
            nodes = [half, scale, erf, add, mul] if is_half_of(half, x) else None
        if nodes is None:
            return None
        result = g.out(nodes[-1])
        return GeluMatch(nodes, x, result) if g.internal(nodes, result, graph) else None

    def rewrite(self, graph: gs.Graph, match: GeluMatch, replacement: str) -> gs.Node:
        from trtpipe.fusions import graph as g

        name = g.node_name(graph, g.module_path(match.nodes), "Gelu")
        return g.replace(graph, match.result, "Gelu", name, [match.x])
