from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np


class OrtSession:
    def __init__(self, onnx_path: Path, threads: int = 0, optimization: str = "all"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})
        return dict(zip(self.output_names, outputs))


class OnnxRuntime:
    name = "onnxruntime"

    def env(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "machine": platform.machine()}

    def load(self, onnx_path: Path, **options: Any) -> OrtSession:
        return OrtSession(onnx_path, **options)
