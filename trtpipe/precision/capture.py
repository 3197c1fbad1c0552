"""Intermediate tensors of an ONNX model through ONNX Runtime on the CPU, a chunk of tensors per session run.

The model is run once per chunk with only that chunk's tensors as outputs, so at most `chunk` intermediate tensors
are held at a time whatever the model's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

FLOAT_TYPES = (1, 10, 16)  # TensorProto FLOAT, FLOAT16, BFLOAT16


def float_outputs(model: onnx.ModelProto) -> list[str]:
    """Names of the float tensors that nodes produce, in graph order."""
    types = tensor_types(model)
    return [t for node in model.graph.node for t in node.output if types.get(t) in FLOAT_TYPES]


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {vi.name: vi.type.tensor_type.elem_type for vi in infos if vi.type.HasField("tensor_type")}


def capture(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str], chunk: int = 64
) -> Iterator[dict[str, np.ndarray]]:
    """Yields {tensor name: value} for `names`, `chunk` tensors at a time."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    types = tensor_types(model)
    if missing := [n for n in names if n not in types]:
        raise ValueError(f"no type known for tensor(s) {', '.join(missing[:5])}")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        del probe.graph.output[:]
        probe.graph.output.extend(helper.make_tensor_value_info(n, types[n], None) for n in part)
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        yield dict(zip(part, session.run(part, {k: v for k, v in feeds.items() if k in wanted})))


def max_abs(values: np.ndarray) -> float:
    """Largest magnitude, inf when any value is NaN or inf."""
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return 0.0
    return float(np.abs(values).max()) if np.isfinite(values).all() else float("inf")
