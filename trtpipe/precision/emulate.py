"""Low-precision numerics for ONNX Runtime on the CPU.

ONNX Runtime's CPU provider has few float16 kernels: it computes the other ops in FP32 and removes the Casts it inserted
around them, so values between such ops are never rounded to float16 and never overflow. `emulate` rewrites a mixed
graph into an FP32 graph that rounds every low-precision tensor explicitly (Cast to float16/bfloat16 and back, which
ONNX Runtime keeps): each value is stored as the low dtype would store it, overflow included, as on a GPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

if TYPE_CHECKING:
    import onnx

LOW = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def emulate(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs
    from onnx import helper

    from trtpipe.fusions.graph import redirect

    graph = gs.import_onnx(model)

    def low(tensor) -> int | None:
        if tensor.dtype is None:
            return None
        code = helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
        return code if code in LOW else None

    def cast(source, to: int, out) -> None:
        graph.nodes.append(gs.Node("Cast", f"{out.name}/emulate", {"to": to}, [source], [out]))

    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and low(tensor):
            tensor.values = tensor.values.astype(np.float32)
    outputs = {t.name for t in graph.outputs}
    for node in list(graph.nodes):
        if node.op == "Cast" and node.attrs["to"] in LOW:
            node.attrs["to"] = TensorProto.FLOAT
        if node.op == "ConstantOfShape" and "value" in node.attrs and low(node.attrs["value"]):
            node.attrs["value"] = gs.Constant("value", node.attrs["value"].values.astype(np.float32))
        for i, out in enumerate(node.outputs):
            if code := low(out):
                raw = gs.Variable(f"{out.name}/fp32", np.float32, out.shape)
                node.outputs[i] = raw
                if out.name in outputs:  # keeps its name and dtype; its readers get an FP32 copy
                    copy = gs.Variable(f"{out.name}/rounded", np.float32, out.shape)
                    redirect(out, copy)
                    cast(raw, code, out)
                    cast(out, TensorProto.FLOAT, copy)
                else:
                    rounded = gs.Variable(f"{out.name}/rounded", out.dtype, out.shape)
                    out.dtype = np.float32
                    cast(raw, code, rounded)
                    cast(rounded, TensorProto.FLOAT, out)
    for tensor in graph.inputs:
        if low(tensor):
            inner = gs.Variable(f"{tensor.name}/fp32", np.float32, tensor.shape)
            redirect(tensor, inner)
            cast(tensor, TensorProto.FLOAT, inner)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    return out
