"""Export a model factory to ONNX with torch alone, for the GPU machine's own python3 (torch, no trtpipe deps).

usage: python3 bench/torch_export.py FACTORY KWARGS_JSON INPUT_NAME SHAPE OUT.onnx [OPSET]
e.g.   python3 bench/torch_export.py trtpipe.models.dab_detr:build '{"size": "tiny"}' pixel_values 1,3,320,320 x.onnx
The project's export stage does more (checks, reference outputs); this is for machines that lack its deps.
"""

import importlib
import json
import sys

import torch


def main(factory: str, kwargs: str, input_name: str, shape: str, out: str, opset: str = "17") -> None:
    module, _, name = factory.partition(":")
    model = getattr(importlib.import_module(module), name)(**json.loads(kwargs))
    example = torch.rand(*(int(d) for d in shape.split(",")))
    names = list(getattr(model, "output_names", ["output"]))
    with torch.no_grad():
        torch.onnx.export(model, (example,), out, input_names=[input_name], output_names=names,
                          opset_version=int(opset), dynamo=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
