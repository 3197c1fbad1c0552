"""Input data for a recipe (seeded random or .npz) and the reference file that later stages compare against."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtpipe.errors import StageError

if TYPE_CHECKING:
    from trtpipe.recipe import Recipe


def make_inputs(recipe: Recipe, which: str = "opt") -> dict[str, np.ndarray]:
    """One array per recipe input, at the min/opt/max shape; .npz data is used as given."""
    feeds = {}
    for name, spec in recipe.inputs.items():
        if spec.npz is not None:
            feeds[name] = load_npz_input(recipe.npz_path(name), name, spec)
            continue
        rng = np.random.default_rng(spec.seed)
        shape = spec.resolve(which)
        if spec.dtype == "bool":
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        elif spec.dtype.startswith(("int", "uint")):
            feeds[name] = rng.integers(
                int(spec.low), max(int(spec.high), int(spec.low) + 1), size=shape, dtype=spec.dtype
            )
        else:
            feeds[name] = rng.uniform(spec.low, spec.high, size=shape).astype(np_dtype(spec.dtype))
    return feeds


def np_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def load_npz_input(path: Path, name: str, spec) -> np.ndarray:
    with np.load(path) as data:
        if name not in data:
            raise StageError(f"{path} has no array '{name}' (it has: {', '.join(data.files)})")
        array = data[name]
    lo, hi = spec.resolve("min"), spec.resolve("max")
    if len(array.shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(array.shape, lo, hi)):
        raise StageError(f"{path}: '{name}' has shape {list(array.shape)}, outside {list(lo)}..{list(hi)}")
    if array.dtype != np_dtype(spec.dtype):
        raise StageError(f"{path}: '{name}' has dtype {array.dtype}, the recipe says {spec.dtype}")
    return array


def save_reference(path: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Path:
    arrays = {f"inputs/{k}": v for k, v in inputs.items()} | {f"outputs/{k}": v for k, v in outputs.items()}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs, outputs) as saved by `save_reference`, in saved order."""
    inputs, outputs = {}, {}
    with np.load(path) as data:
        for key in data.files:
            kind, _, name = key.partition("/")
            (inputs if kind == "inputs" else outputs)[name] = data[key]
    return inputs, outputs
