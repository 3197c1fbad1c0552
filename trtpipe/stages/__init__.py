"""Stage types, registered by name: every module in this package defines one (found here, imported at start).

Stage modules import only light packages at import time; torch, onnx, tensorrt are imported inside `run`.
"""

import importlib
import pkgutil

from trtpipe.stages.base import REGISTRY, Context, Ref, Result, Stage, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Context", "Ref", "Result", "Stage", "register"]
