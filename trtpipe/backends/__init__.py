"""Backends run an ONNX model on a target: ONNX Runtime on the CPU (default) or TensorRT on a GPU.

A backend turns an ONNX file into a Session (for TensorRT that means building an engine); a session maps
input arrays to output arrays by name. Stages pick the backend from the recipe's target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Session(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str

    def env(self) -> dict[str, Any]:
        """Facts the results depend on (library version, device), for cache keys."""
        ...

    def load(self, onnx_path: Path, **options: Any) -> Session: ...


def get_backend(target: str, recipe=None, cache_dir: Path | None = None, **build_options: Any) -> Backend:
    """The backend for `target`. TensorRT builds for the recipe's input shapes, keeps its timing cache in
    `cache_dir` and applies `build_options` (trtpipe.trt.config.BuildOptions) to every build."""
    if target == "onnxruntime":
        from trtpipe.backends.onnxruntime import OnnxRuntime

        return OnnxRuntime()
    if target == "tensorrt":
        from trtpipe.backends.tensorrt import TensorRT
        from trtpipe.trt.config import recipe_shapes

        return TensorRT(recipe_shapes(recipe) if recipe is not None else None, cache_dir, build_options)
    raise ValueError(f"unknown target '{target}'")
