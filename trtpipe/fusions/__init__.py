"""Fusion patterns for the fuse-plugins stage: one module per pattern in fusions/patterns/, found automatically.

`fuse(model, choices)` (in fusions/rewrite.py) applies the chosen patterns to a model.
"""

import importlib
import pkgutil

from trtpipe.fusions import patterns
from trtpipe.fusions.registry import ONNX, PLUGINS, REGISTRY, Fusion, Match, Plugin, register

for _module in pkgutil.iter_modules(patterns.__path__):
    importlib.import_module(f"{patterns.__name__}.{_module.name}")

__all__ = ["ONNX", "PLUGINS", "REGISTRY", "Fusion", "Match", "Plugin", "register"]
