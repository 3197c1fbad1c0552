"""What the mixed-precision converter knows about ONNX ops."""

from __future__ import annotations

from functools import cache

LOW_DTYPES = ("float16", "bfloat16")

# Float outputs are copies, selections or fills of float inputs: exact in any precision, so these ops take whichever
# precision needs the fewest Casts around them (this is how Casts move across Reshape, Transpose, ...).
MOVE_OPS = frozenset(
    {
        "Cast",
        "Concat",
        "ConstantOfShape",
        "DepthToSpace",
        "Expand",
        "Flatten",
        "Gather",
        "GatherElements",
        "GatherND",
        "Identity",
        "Pad",
        "Reshape",
        "ScatterElements",
        "ScatterND",
        "Slice",
        "SpaceToDepth",
        "Split",
        "Squeeze",
        "Tile",
        "Transpose",
        "Unsqueeze",
        "Where",
    }
)

# Inputs that accept any dtype: a low-precision tensor is consumed there without a Cast.
ANY_DTYPE_INPUTS = {"Shape": (0,), "Size": (0,), "Cast": (0,)}

# Ops worth running in low precision even at the price of Casts: never merged into an FP32 island.
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "Einsum", "Gemm", "MatMul"})

# Ops whose output dtype comes from a `dtype` attribute, which the converter leaves as it is.
DTYPE_ATTRIBUTE_OPS = frozenset(
    {"Bernoulli", "EyeLike", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
)

CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


@cache
def schema(op_type: str, domain: str, opset: int):
    """The op's ONNX schema at the model's opset, or None for ops ONNX does not define (custom domains, plugins)."""
    import onnx

    if domain not in (None, "", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def plugin_allows(op_type: str, domain: str, dtype: str) -> bool:
    """Whether a TensorRT plugin node of trtpipe's (trtpipe.fusions.PLUGINS) takes and gives `dtype` tensors."""
    from trtpipe.fusions.registry import PLUGIN_DOMAIN, PLUGINS

    return domain == PLUGIN_DOMAIN and any(p.op == op_type and dtype in p.io_dtypes for p in PLUGINS.values())


def allows(op_schema, index: int, output: bool, dtype: str) -> bool:
    """Whether input/output `index` of an op with this schema may hold `dtype` ("float16" or "bfloat16")."""
    formals = op_schema.outputs if output else op_schema.inputs
    if not formals:
        return False
    formal = formals[min(index, len(formals) - 1)]  # the last formal may be variadic
    types = next(
        (c.allowed_type_strs for c in op_schema.type_constraints if c.type_param_str == formal.type_str),
        [formal.type_str],
    )
    return f"tensor({dtype})" in types


def torch_module(node_name: str) -> str:
    """The torch module path in a TorchScript-exported node name: "/model/layers.0/fc/MatMul" -> "model.layers.0.fc".

    A called container shows as "/layer/layer.0/": the child's scope repeats the parent's name.
    """
    path: list[str] = []
    for part in node_name.split("/")[1:-1] if node_name.startswith("/") else []:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)
