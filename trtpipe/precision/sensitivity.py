"""Which nodes add the most error when they run in low precision.

Two measures, both against FP32:
- `local`: run the whole graph in FP32 and in low precision (emulated, trtpipe.precision.emulate) on ONNX Runtime,
  capturing every float tensor chunk by chunk; a node's score is the relative error of its output minus the largest
  relative error of its inputs: what it adds itself. Two passes over the model whatever its size.
- `output`: run the graph with only one block of `block_size` consecutive nodes in low precision and measure the
  error of the model's outputs; one backend evaluation per block. Within a block, `local` orders the nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtpipe.precision.capture import capture
from trtpipe.precision.convert import analyze, convert, is_fp32, prepare
from trtpipe.precision.emulate import emulate

if TYPE_CHECKING:
    import onnx


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """||out - ref|| / ||ref||; inf when `out` has NaN or inf where `ref` is finite."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if not np.isfinite(out[np.isfinite(ref)]).all():
        return float("inf")
    diff = np.nan_to_num(out - ref, nan=0.0, posinf=0.0, neginf=0.0)
    return float(np.linalg.norm(diff) / max(np.linalg.norm(np.nan_to_num(ref)), 1e-12))


def output_score(outputs: dict[str, np.ndarray], refs: dict[str, np.ndarray]) -> float:
    """The worst relative error over the model's outputs."""
    return max(relative_error(outputs[name], ref) for name, ref in refs.items())


def local(model: onnx.ModelProto, feeds: dict, dtype: str, chunk: int = 64) -> dict[str, float]:
    """Candidate node -> relative error it adds to its own output when the whole graph runs in low precision."""
    graph = prepare(model)
    candidates = set(analyze(model, dtype).candidates)
    names = [t.name for n in graph.nodes for t in n.outputs if is_fp32(t)]
    low = emulate(convert(model, (), dtype).model)
    error = {}
    for ref, out in zip(capture(model, feeds, names, chunk), capture(low, feeds, names, chunk)):
        error.update({name: relative_error(out[name], ref[name]) for name in ref})
    scores = {}
    for node in graph.nodes:
        if node.name in candidates:
            own = max((error[t.name] for t in node.outputs if t.name in error), default=0.0)
            before = max((error.get(t.name, 0.0) for t in node.inputs), default=0.0)
            scores[node.name] = own - before if np.isfinite(before) else 0.0
    return scores


def blocks(candidates: list[str], size: int) -> list[list[str]]:
    return [candidates[i : i + size] for i in range(0, len(candidates), size)]


def output(
    model: onnx.ModelProto,
    feeds: dict,
    refs: dict,
    dtype: str,
    run: Callable[[Path, dict], dict],
    block_size: int,
    workdir: Path,
    report: Callable[[str], None] = lambda message: None,
    emulated: bool = False,
) -> dict[str, float]:
    """Candidate node -> output error with only its block in low precision. `run(onnx_path, feeds)` gives outputs;
    `emulated`: run the graph with explicit rounding (for ONNX Runtime on the CPU, see trtpipe.precision.emulate)."""
    from trtpipe import onnxio

    candidates = analyze(model, dtype).candidates
    scores = {}
    parts = blocks(candidates, block_size)
    for i, block in enumerate(parts):
        keep = set(block)
        mixed = convert(model, [c for c in candidates if c not in keep], dtype).model
        mixed = emulate(mixed) if emulated else mixed
        path = onnxio.save(mixed, workdir / "block.onnx")
        score = output_score(run(path, feeds), refs)
        scores.update(dict.fromkeys(block, score))
        report(f"block {i + 1}/{len(parts)} ({block[0]}): error {score:.3g}")
    return scores


def rank(scores: dict[str, float], order: list[str], tiebreak: dict[str, float] | None = None) -> list[str]:
    """Highest score first; ties by the highest `tiebreak` score (e.g. local error within a block), then graph order."""
    position = {name: i for i, name in enumerate(order)}
    tiebreak = tiebreak or {}
    return sorted(scores, key=lambda n: (-scores[n], -tiebreak.get(n, 0.0), position.get(n, len(position))))
