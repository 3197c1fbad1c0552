"""Other tools' FP16 conversions, for comparison: onnxconverter-common's float16 (ONNX Runtime ships the same code)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


def count_casts(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "Cast" for node in model.graph.node)


def onnxconverter_common(
    model: onnx.ModelProto, fp32_nodes: Iterable[str] | None = None, keep_io_types: bool = True
) -> onnx.ModelProto:
    """`fp32_nodes` None: its default op block list; else exactly those nodes blocked."""
    import onnx
    from onnxconverter_common import float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    blocked = {} if fp32_nodes is None else {"node_block_list": list(fp32_nodes), "op_block_list": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(copy, keep_io_types=keep_io_types, **blocked)


def problem(model: onnx.ModelProto) -> str | None:
    """Why a model is invalid (onnx.checker's full check, then loading in ONNX Runtime), or None."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(model, full_check=True)
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:
        return str(e).strip().splitlines()[0][:300]
    return None
