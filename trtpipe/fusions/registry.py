"""What a fusion pattern is, the registry of patterns, and the TensorRT plugins a pattern may be replaced with.

A pattern finds subgraphs in an onnx-graphsurgeon graph (`find`, from one anchor node) and replaces each with one
node (`rewrite`). Patterns run in ascending `priority`, each only on models whose opset lies in `opsets`.
This module stays light: pattern modules import numpy and onnx-graphsurgeon inside their methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

ONNX = "onnx"
# onnx-tensorrt finds a plugin by op type alone, whatever the domain; a domain of their own keeps onnx.checker happy
PLUGIN_DOMAIN = "trt.plugins"


@dataclass(frozen=True)
class Plugin:
    """A TensorRT plugin as onnx-tensorrt's fallback importer sees it: op type = creator name, two string attributes
    (`plugin_version`, `plugin_namespace`) select the creator, the other attributes become PluginFields."""

    op: str
    version: str = "1"
    namespace: str = ""
    note: str = ""
    io_dtypes: tuple[str, ...] = ("float32",)  # what every float input and output may be, all alike

    def attrs(self, **fields: Any) -> dict[str, Any]:
        return {**fields, "plugin_version": self.version, "plugin_namespace": self.namespace}


PLUGINS = {
    "LayerNorm": Plugin(
        "LayerNorm",
        note="TensorRT's built-in LayerNorm plugin (fields epsilon, axis; inputs x, gamma, beta), registered by "
        "libnvinfer_plugin 8.5 and 8.6 (seen in the 8.6.0 wheel); on 8.6+ ONNX LayerNormalization imports natively; "
        "not used for rows of <= 32 values, which it normalizes with epsilon * n**2"),
    "trtpipe_layernorm": Plugin("TrtpipeLayerNorm", note="trtpipe's own plugin (plugins_src/layernorm), FP32 math",
                                io_dtypes=("float32", "float16")),
    "trtpipe_sine_embedding": Plugin(
        "TrtpipeSineEmbedding", io_dtypes=("float32", "float16"),
        note="trtpipe's own plugin (plugins_src/sine_embedding), FP32 math; on TensorRT 8.6 (weak typing) its input "
        "and output types are picked independently, so FP32 boxes can give FP16 embeddings"),
}


@dataclass
class Match:
    """The nodes of one found subgraph, in graph order; patterns add what their rewrite needs."""

    nodes: list[gs.Node]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


class Fusion:
    name: ClassVar[str]
    priority: ClassVar[int]
    opsets: ClassVar[tuple[int, int]]  # up to the newest opset the pattern's ops were checked against
    replacements: ClassVar[tuple[str, ...]]  # "onnx" and/or keys of PLUGINS
    onnx_op: ClassVar[str]
    onnx_opset: ClassVar[int]  # first opset with `onnx_op`
    default: ClassVar[bool] = True  # applied (as "onnx") by a fuse-plugins stage that names no patterns

    def find(self, node: gs.Node, graph: gs.Graph) -> Match | None:
        raise NotImplementedError

    def unsupported(self, match: Match, replacement: str) -> str | None:
        """Why `replacement` cannot express this match, or None when it can."""
        return None

    def rewrite(self, graph: gs.Graph, match: Match, replacement: str) -> gs.Node:
        """Replace the match with one node (plus layout glue where needed); return the new main node."""
        raise NotImplementedError


REGISTRY: dict[str, Fusion] = {}


def register(cls: type[Fusion]) -> type[Fusion]:
    assert re.fullmatch(r"[a-z][a-z0-9-]*", cls.name) and cls.name not in REGISTRY, cls.name
    assert all(r == ONNX or r in PLUGINS for r in cls.replacements), cls.replacements
    REGISTRY[cls.name] = cls()
    return cls
