"""LayerNorm over the channel axis of a channels-first tensor (N, C, ...), e.g. ConvNeXt's LayerNorm2d: the
decomposition of layernorm.py reducing axis 1 of a rank >= 3 tensor, gamma/beta shaped (C, 1, ...).

Rewritten as Transpose to channels-last, a last-axis LayerNorm, Transpose back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trtpipe.fusions.patterns.layernorm import LayerNorm, LayerNormMatch, emit, match_layernorm, unsupported
from trtpipe.fusions.registry import Fusion, register

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@register
class LayerNormChannels(Fusion):
    name = "layernorm-nchw"
    priority = 10
    opsets = LayerNorm.opsets
    replacements = LayerNorm.replacements
    onnx_op = LayerNorm.onnx_op
    onnx_opset = LayerNorm.onnx_opset

    def find(self, node: gs.Node, graph: gs.Graph) -> LayerNormMatch | None:
        m = match_layernorm(node, graph)
        return m if m is not None and m.rank >= 3 and m.axes == [1] else None

    def unsupported(self, match: LayerNormMatch, replacement: str) -> str | None:
        return unsupported(match, replacement)

    def rewrite(self, graph: gs.Graph, match: LayerNormMatch, replacement: str) -> gs.Node:
        from trtpipe.fusions import graph as g

        path, rank = g.module_path(match.nodes), match.rank
        channels_last = g.variable(graph, f"{path}/ToChannelsLast_output", like=match.x)
        normalized = g.variable(graph, f"{path}/LayerNorm_output", like=match.x)
        to_last = [0, *range(2, rank), 1]
        to_first = [0, rank - 1, *range(1, rank - 1)]
        g.add(graph, "Transpose", g.node_name(graph, path, "ToChannelsLast"), [match.x], [channels_last],
              {"perm": to_last})
        node = emit(graph, match, channels_last, normalized, replacement, path)
        g.replace(graph, match.result, "Transpose", g.node_name(graph, path, "ToChannelsFirst"), [normalized],
                  {"perm": to_first})
        return node
