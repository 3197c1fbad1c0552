"""Engine layers as TensorRT's engine inspector describes them, and the ONNX nodes each one comes from.

How names map. onnx-tensorrt (read for 8.6 and 10.x) names every network layer after the ONNX node that made it
(`node.name`, or `node_of_<first output>` for an unnamed node); when one node makes several layers, the later
ones get `<name>_<k>`, k from a parser-wide counter. It also sets each layer's metadata to `[ONNX Layer: <name>]`.
(Helper layers an importer does not register keep TensorRT's `(Unnamed Layer* i) [Type]` and map to no node.)
The builder then fuses layers: an engine layer's name joins network layer names (`a + b`, `PWN(a, b)`,
`{ForeignNode[first...last]}` for a Myelin region) and its `Metadata` joins the `[ONNX Layer: ...]` entries with
\\x1f; reformat layers the builder adds come from no node. So an engine layer's ONNX nodes are the ones its metadata
names; without metadata (engines built below DETAILED verbosity, names in error messages) they are the parts of its
name that are node names, once a trailing `_<k>` is dropped. A ForeignNode's name gives its first and last nodes only.
TensorRT 8.6's builder turns a MatMul by constants into a convolution between two shuffles it names
`reshape_before_<layer>` and `reshape_after_<layer>` (MatMulToConvTransform in its verbose log): they map to the
layer's node.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Container

from trtpipe.trt.precision import compute_type

TRANSFORM_PREFIX = re.compile(r"^reshape_(?:before|after)_")
METADATA = re.compile(r"\[ONNX Layer: ([^|\]\x1f]+?)\s*(?:\||\])")
SEPARATORS = re.compile(r" \+ |PWN\(|\)|, |\{ForeignNode\[|\.\.\.|\]\}")
DTYPES = {
    "fp32": "fp32", "float": "fp32", "fp16": "fp16", "half": "fp16", "bf16": "bf16", "bfloat16": "bf16",
    "fp8": "fp8", "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64", "bool": "bool",
}


def onnx_nodes(name: str, metadata: str = "", known: Container[str] = ()) -> list[str]:
    """The ONNX nodes an engine or network layer comes from, in order, without repeats."""
    found = METADATA.findall(metadata or "")
    if not found:
        for part in (p.strip() for p in SEPARATORS.split(name)):
            part = part if part in known else TRANSFORM_PREFIX.sub("", part)
            base = part if part in known else re.sub(r"_\d+$", "", part)
            if base in known:
                found.append(base)
    return list(dict.fromkeys(found))


def tensor_type(tensor: dict) -> str | None:
    """'fp32', 'fp16', ... from an inspector tensor: `DataType` (11.x) or words of `Format/Datatype` (8.6, 10.x)."""
    text = f"{tensor.get('DataType', '')} {tensor.get('Format/Datatype', '')}".lower()
    return next((DTYPES[w] for w in re.findall(r"[a-z]+\d*", text) if w in DTYPES), None)


def is_reformat(layer: dict) -> bool:
    return layer.get("LayerType") == "Reformat" or layer.get("Name", "").startswith("Reformatting CopyNode")


def table(info: dict, times: dict[str, float] | None = None, known: Container[str] = ()) -> list[dict]:
    """One row per engine layer: name, type, precision, ONNX nodes and (when given) mean time in ms."""
    rows = []
    for layer in info.get("Layers", []):
        layer = layer if isinstance(layer, dict) else {"Name": layer}
        tensors = [*layer.get("Inputs", []), *layer.get("Outputs", [])]
        rows.append({
            "name": layer["Name"],
            "type": layer.get("LayerType", ""),
            "precision": compute_type(tensor_type(t) for t in tensors),
            "onnx_nodes": onnx_nodes(layer["Name"], layer.get("Metadata", ""), known),
            "reformat": is_reformat(layer),
            **({"time_ms": times.get(layer["Name"], 0.0)} if times is not None else {}),
        })
    return rows


def counts(rows: list[dict]) -> dict:
    return {
        "engine_layers": len(rows),
        "reformat_layers": sum(r["reformat"] for r in rows),
        "layers_per_precision": dict(Counter(r["precision"] or "none" for r in rows if not r["reformat"])),
    }


def plan_mismatches(rows: list[dict], plan: dict[str, str]) -> list[dict]:
    """Engine layers made from a single planned ONNX node that run in another precision than the plan says."""
    return [
        {"layer": r["name"], "node": r["onnx_nodes"][0], "plan": plan[r["onnx_nodes"][0]], "engine": r["precision"]}
        for r in rows
        if len(r["onnx_nodes"]) == 1 and r["onnx_nodes"][0] in plan and r["precision"]
        and r["precision"] != plan[r["onnx_nodes"][0]]
    ]


# ---------------------------------------------------------------- TensorRT messages


def reason(message: str) -> str:
    """'... Error Code 10: Internal Error (Could not find ...)' -> 'Could not find ...'."""
    found = re.search(r"Error Code \d+: [^(]*\((.*)\)\s*$", message, re.S)
    return squeeze(found.group(1) if found else message)


def mentioned_nodes(text: str, known: Container[str]) -> list[str]:
    """ONNX nodes behind the layers a TensorRT message names ('node X', 'layer X', 'formats for X',
    '{ForeignNode[a...b]}')."""
    names = re.findall(r"\{ForeignNode\[.*?\]\}", text)
    names += re.findall(r"(?:node|layer|formats for):? ([^\s{]\S*?)[.,:;)]?(?:\s|$)", text)
    return list(dict.fromkeys(n for name in names for n in onnx_nodes(name, known=known)))


def failed_nodes(text: str, order: list[str]) -> list[str]:
    """The ONNX nodes behind a layer a TensorRT build failure names, `order` being the graph's node names in order.
    A Myelin region ({ForeignNode[first...last]}) holds layers from its first to its last: every node in between."""
    named = mentioned_nodes(text, set(order))
    if "{ForeignNode[" not in text or len(named) < 2:
        return named
    where = sorted(order.index(n) for n in named)
    return order[where[0] : where[-1] + 1]


def squeeze(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]
