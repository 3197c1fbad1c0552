"""The inputs and FP32 outputs that precision work is measured against."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtpipe.errors import StageError

if TYPE_CHECKING:
    from trtpipe.recipe import Recipe


def reference_data(
    recipe: Recipe, model_path: Path, reference: Path | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """(inputs, FP32 outputs, where they come from): a saved reference (the export's torch outputs), else the
    recipe's inputs through the FP32 model in ONNX Runtime."""
    import onnx

    from trtpipe.backends.onnxruntime import OnnxRuntime
    from trtpipe.data import load_reference, make_inputs

    outputs = [o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output]
    if reference is None:
        feeds = make_inputs(recipe)
        return feeds, OnnxRuntime().load(model_path).run(feeds), "onnxruntime fp32"
    feeds, refs = load_reference(reference)
    if missing := [o for o in outputs if o not in refs]:
        raise StageError(
            f"the reference has no output {', '.join(missing)} (it has {', '.join(refs)})",
            hint="the reference must come from the same model, e.g. the export stage's reference output",
        )
    return feeds, {o: refs[o] for o in outputs}, "reference"
