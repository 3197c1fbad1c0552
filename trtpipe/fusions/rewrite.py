"""Apply fusion patterns to an ONNX model: find every match, rewrite, clean up, and set the opset new ops need."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from trtpipe.errors import StageError
from trtpipe.fusions.registry import ONNX, PLUGINS, REGISTRY, Fusion, Match

MAX_RAISED_OPSET = 17  # the newest opset TensorRT 8.6's ONNX parser reads; a model's opset is never raised past it


def fuse(model: onnx.ModelProto, choices: dict[str, str]) -> tuple[onnx.ModelProto, dict]:
    """The model with the chosen patterns replaced (pattern name -> "onnx" or a plugin name), and a report per
    pattern: its matches, the nodes that replaced them, and the matches left as they were, with the reason."""
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    opset = graph.opset
    report, needed, new_ops = {}, opset, set()
    for fusion in sorted((REGISTRY[name] for name in choices), key=lambda f: (f.priority, f.name)):
        replacement = choices[fusion.name]
        report[fusion.name] = entry = apply(graph, fusion, replacement, opset)
        if replacement == ONNX and entry["fused"]:
            needed = max(needed, fusion.onnx_opset)
            new_ops.add(fusion.onnx_op)
    if needed > opset:
        check_raise(graph, opset, needed, new_ops)
    return export(graph, model, needed), report


def apply(graph: gs.Graph, fusion: Fusion, replacement: str, opset: int) -> dict:
    entry = {"replacement": replacement, "matches": 0, "fused": [], "kept": []}
    if replacement in PLUGINS:
        entry["plugin"] = PLUGINS[replacement].note
    lo, hi = fusion.opsets
    if not lo <= opset <= hi:
        return entry | {"skipped": f"the pattern covers opsets {lo}..{hi}; the model has opset {opset}"}
    matches = find_all(graph, fusion)
    entry["matches"] = len(matches)
    blocked = blocked_reason(fusion, replacement, opset)
    for m in matches:
        reason = blocked or fusion.unsupported(m, replacement)
        if reason:
            entry["kept"].append({"nodes": m.names, "reason": reason})
        else:
            entry["fused"].append({"node": fusion.rewrite(graph, m, replacement).name, "nodes": m.names})
    graph.cleanup().toposort()
    return entry


def find_all(graph: gs.Graph, fusion: Fusion) -> list[Match]:
    """Non-overlapping matches, in graph order."""
    taken: set[int] = set()
    matches = []
    for node in graph.nodes:
        m = fusion.find(node, graph)
        ids = {id(n) for n in m.nodes} if m else set()
        if m and not ids & taken:
            taken |= ids
            matches.append(m)
    return matches


def blocked_reason(fusion: Fusion, replacement: str, opset: int) -> str | None:
    if replacement != ONNX or fusion.onnx_opset <= max(opset, MAX_RAISED_OPSET):
        return None
    return (
        f"ONNX {fusion.onnx_op} needs opset {fusion.onnx_opset}; the model has opset {opset} and is not raised past "
        f"{MAX_RAISED_OPSET} (TensorRT 8.6's newest): left unfused"
    )


def check_raise(graph: gs.Graph, old: int, new: int, new_ops: set[str]) -> None:
    """Raising the opset is safe when no op already in the graph changed definition between the two opsets."""
    nodes = [*graph.nodes, *(n for sub in graph.subgraphs(recursive=True) for n in sub.nodes)]
    ops = {n.op for n in nodes if n.domain in (None, "", "ai.onnx")} - new_ops
    changed = sorted(op for op in ops if since_version(op, old) != since_version(op, new))
    if changed:
        raise StageError(
            f"{'/'.join(sorted(new_ops))} needs opset {new}, but raising the model's opset {old} -> {new} would "
            f"change the meaning of {', '.join(changed)}",
            hint=f"export at opset >= {new}, or pick a trt-plugin replacement",
        )


def since_version(op: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op, opset).since_version
    except onnx.defs.SchemaError:
        return None


def export(graph: gs.Graph, source: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    model = gs.export_onnx(graph)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    model.ir_version = max(source.ir_version, onnx.helper.find_min_ir_version_for(model.opset_import, True))
    model.metadata_props.extend(source.metadata_props)
    return model
