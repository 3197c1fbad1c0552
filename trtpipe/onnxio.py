"""Small ONNX helpers shared by stages: load with a clear error, save, graph statistics, nodes by name pattern."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from trtpipe.errors import StageError

if TYPE_CHECKING:
    import onnx


def load(path: Path, check: bool = False) -> onnx.ModelProto:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and friends
        raise StageError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from e
    if not model.graph.node and not model.graph.output:
        raise StageError(f"{path} is not an ONNX model (empty graph)")
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:
            raise StageError(f"{path} fails onnx.checker: {str(e).splitlines()[0][:200]}") from e
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def full_matches(names: Iterable[str], patterns: list[str]) -> list[str]:
    """The names (in their order) that fully match one of `patterns`, node names or regular expressions."""
    regexes = [re.compile(p) for p in patterns]
    return [n for n in names if any(r.fullmatch(n) for r in regexes)]


def matching_nodes(names: Iterable[str], patterns: list[str], what: str = "fp32_nodes") -> list[str]:
    """full_matches, where a pattern that matches no name is an error."""
    names = list(names)
    if unmatched := [p for p in patterns if not full_matches(names, [p])]:
        raise StageError(f"{what}: '{unmatched[0]}' matches no ONNX node", hint="patterns match whole node names")
    return full_matches(names, patterns)


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def stats(model: onnx.ModelProto) -> dict:
    import numpy as np
    from onnx import numpy_helper

    g = model.graph
    return {
        "nodes": len(g.node),
        "initializers": len(g.initializer),
        "parameters": int(sum(np.prod(numpy_helper.to_array(t).shape, dtype=np.int64) for t in g.initializer)),
        "opset": opset(model),
        "ops": dict(sorted(Counter(n.op_type for n in g.node).items())),
    }


def before_after(before: onnx.ModelProto, after: onnx.ModelProto) -> dict:
    b, a = stats(before), stats(after)
    return {
        "nodes_before": b["nodes"],
        "nodes_after": a["nodes"],
        "initializers_before": b["initializers"],
        "initializers_after": a["initializers"],
        "ops": a["ops"],
    }


def new_names(before: onnx.ModelProto, after: onnx.ModelProto, examples: int = 5) -> dict:
    """Nodes of `after` (Constants aside) whose names `before` lacks: a rewrite created or renamed them."""
    old = {n.name for n in before.graph.node}
    fresh = [n for n in after.graph.node if n.name not in old and n.op_type != "Constant"]
    new = [n.name or f"<unnamed {n.op_type}>" for n in fresh]
    return {"new_names": len(new), "new_names_examples": new[:examples]}
