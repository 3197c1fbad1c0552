"""Engines kept by what they were built from: the graph's bytes, the build options, the plugin libraries' bytes, the
input shapes, TensorRT's version and the GPU. A second build of the same is the engine built first.

TensorRT's choices (tactics, and under weak typing the precision of the layers left unconstrained) come from timing
and differ between builds, and so does the accuracy: a precision search measures its candidates' engines, and the
build that follows it must ship the engine that met the budget, not a new one (DAB-DETR-R50, H200, TensorRT 8.6: the
search's engine had logits max error 2.78e-3, a new build of the same graph and options 3.05e-3, over the 3e-3 budget).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from trtpipe.store import atomic_write, sha256_file, sha256_json

MAX_BYTES = 4 << 30  # per cache directory; the least recently used engines go first


class Engines:
    def __init__(self, folder: Path, env: dict, max_bytes: int = MAX_BYTES):
        self.folder, self.env, self.max_bytes = Path(folder), env, max_bytes

    @classmethod
    def at(cls, cache_dir: Path, env: dict) -> Engines:
        return cls(Path(cache_dir) / "tensorrt" / "engines", env)

    def key(self, onnx_path: Path, options, shapes) -> str:
        """`options`: trtpipe.trt.config.BuildOptions, or a stage that extends it (only its build fields count)."""
        from trtpipe.trt.config import BuildOptions

        fields = options.model_dump(mode="json", include=set(BuildOptions.model_fields) - {"plugins"})
        return sha256_json({
            "onnx": sha256_file(Path(onnx_path)),
            "options": fields,
            "plugins": [sha256_file(Path(p)) for p in options.plugins],
            "shapes": {name: [list(s) for s in mmo] for name, mmo in shapes.items()},
            "env": self.env,
        })  # fmt: skip

    def get(self, key: str) -> tuple[bytes, dict] | None:
        """The engine and its build metrics, or None."""
        plan, metrics = self.folder / f"{key}.engine", self.folder / f"{key}.json"
        if not (plan.is_file() and metrics.is_file()):
            return None
        touch(plan)
        return plan.read_bytes(), json.loads(metrics.read_text())

    def put(self, key: str, plan: bytes, metrics: dict) -> None:
        atomic_write(self.folder / f"{key}.json", json.dumps(metrics))
        atomic_write(self.folder / f"{key}.engine", plan)
        touch(self.folder / f"{key}.engine")
        self.prune()

    def prune(self) -> None:
        """Drops the least recently used engines beyond `max_bytes` (never the newest)."""
        plans = sorted(self.folder.glob("*.engine"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for i, plan in enumerate(plans):
            total += plan.stat().st_size
            if i and total > self.max_bytes:
                plan.unlink()
                plan.with_suffix(".json").unlink(missing_ok=True)


def touch(path: Path) -> None:
    """Used now, to the nanosecond (a file's own timestamps can be a clock tick apart)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))
