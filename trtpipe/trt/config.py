"""What to ask TensorRT for, decided per TensorRT version in pure Python (so CPU tests cover 8.6, 10.x and 11.x).

The ONNX graph's types are the precision plan (the mixed-precision stage writes them; `fp32_nodes` pins more nodes
to FP32 by rewriting the graph). How the plan reaches TensorRT depends on the version:

- strongly typed network (default from TensorRT 10.12, which deprecated weak typing; the only mode on 11.x):
  TensorRT follows the graph's types; there are no precision flags or constraints to set;
- weak typing (8.6 to 10.x): the FP16/BF16 builder flags the graph needs, and every layer constrained to the type
  it computes in according to those same types (builder.constrain_layers), with OBEY or PREFER constraints;
  `constrain: fp32` constrains only the layers the plan puts in FP32 and lets TensorRT pick FP16 or FP32 for the
  others, as pinning layers by hand does.

Both give every ONNX node the same precision (with `constrain: fp32`, at least the plan's FP32 nodes).
`precision: fp16|bf16` is the classic weakly typed build in which TensorRT may pick the low type for any layer; a
strongly typed network cannot express it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from trtpipe.errors import StageError

if TYPE_CHECKING:
    from trtpipe.recipe import Recipe

Version = tuple[int, int]
Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max)

# STRONGLY_TYPED and BF16 appeared in the 9.x releases (LLM-only); 10.0 is the first general release with both
STRONG_FROM: Version = (10, 0)
STRONG_DEFAULT_FROM: Version = (10, 12)  # weak typing deprecated
WEAK_UNTIL: Version = (11, 0)  # weak typing removed
BF16_FROM: Version = (10, 0)
# cuBLAS/cuDNN tactics were default sources before 10.0; 10.x made them opt-in (deprecated). Leaving them out keeps
# 8.6 builds independent of those libraries and comparable with 10.x.
TACTICS_BEFORE_10 = ("EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS")
LOW_FLAGS = {"fp16": "FP16", "bf16": "BF16"}


class BuildOptions(BaseModel):
    """Builder settings, shared by the build stage and the TensorRT backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    typing: Literal["auto", "strong", "weak"] = "auto"
    precision: Literal["graph", "fp16", "bf16"] = "graph"
    constraints: Literal["obey", "prefer", "none"] = "obey"
    constrain: Literal["all", "fp32"] = "all"  # weak typing: the layers that get a precision constraint
    fp32_nodes: list[str] = []  # ONNX node names or regular expressions (full match)
    optimization_level: int = Field(3, ge=0, le=5)
    max_aux_streams: int | None = Field(None, ge=0)
    workspace_mb: int | None = Field(None, ge=1)
    tf32: bool = False  # FP32 parts of a plan are FP32 because they need the accuracy
    sparse_weights: bool = False
    tactic_sources: list[str] | None = None  # TacticSource names; None: the version's default (see TACTICS_BEFORE_10)
    plugins: list[Path] = []  # plugin libraries to load before parsing

    def plugin_files(self, folder: Path) -> dict[str, Path]:
        """Cache-key name -> path of each plugin library, which a recipe names relative to its folder."""
        return {f"plugin:{p}": folder / p for p in self.plugins}


@dataclass(frozen=True)
class Setup:
    """The builder calls that realize BuildOptions on one TensorRT version (enum member names, not values)."""

    typing: Literal["strong", "weak"]
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag
    flags: tuple[str, ...]  # BuilderFlag to set
    cleared: tuple[str, ...]  # BuilderFlag to clear
    constrain_layers: frozenset[str]  # weak typing: layers of these plan types constrained to their type
    tactic_sources: tuple[str, ...] | None  # TacticSource; None keeps TensorRT's default


def parse_version(text: str) -> Version:
    major, minor = (int(part) for part in text.split(".")[:2])
    return major, minor


def dotted(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def choose_typing(requested: str, version: Version) -> Literal["strong", "weak"]:
    if requested == "auto":
        return "strong" if version >= STRONG_DEFAULT_FROM else "weak"
    if requested == "strong" and version < STRONG_FROM:
        raise StageError(
            f"TensorRT {dotted(version)} has no strongly typed networks (trtpipe uses them from {dotted(STRONG_FROM)})",
            hint="use typing: auto or weak",
        )
    if requested == "weak" and version >= WEAK_UNTIL:
        raise StageError(
            f"TensorRT {dotted(version)} builds strongly typed networks only (weak typing was removed in 11.0)",
            hint="use typing: auto; precision comes from the ONNX graph (mixed-precision stage)",
        )
    return requested  # type: ignore[return-value]


def setup(options: BuildOptions, version: Version, graph_types: set[str]) -> Setup:
    """Flags and constraints for `options` on `version`, for a graph whose float tensors have `graph_types`."""
    typing = choose_typing(options.typing, version)
    low = graph_types & set(LOW_FLAGS)
    if options.precision != "graph":
        if typing == "strong":
            raise StageError(
                f"precision: {options.precision} lets TensorRT choose layer precisions, which a strongly typed "
                f"network (TensorRT {dotted(version)}) cannot do",
                hint="use precision: graph after a mixed-precision stage, or typing: weak on TensorRT < 11",
            )
        if options.fp32_nodes:
            raise StageError("fp32_nodes pins nodes within the graph's plan; it needs precision: graph")
        low.add(options.precision)
    if "bf16" in low and version < BF16_FROM:
        raise StageError(f"TensorRT {dotted(version)} has no BF16 (trtpipe uses it from {dotted(BF16_FROM)})",
                         hint="use fp16 in the mixed-precision stage")
    constrain = typing == "weak" and options.precision == "graph" and options.constraints != "none" and bool(low)
    constrained = frozenset(({"fp32"} if options.constrain == "fp32" else low | {"fp32"}) if constrain else ())
    flags = [LOW_FLAGS[t] for t in sorted(low)] if typing == "weak" else []
    if constrain:
        flags.append(f"{options.constraints.upper()}_PRECISION_CONSTRAINTS")
    if options.sparse_weights:
        flags.append("SPARSE_WEIGHTS")
    if options.tf32:
        flags.append("TF32")
    network_flags = ()
    if typing == "strong" and version < WEAK_UNTIL:
        network_flags = ("STRONGLY_TYPED",)  # on 11.x every network is strongly typed and the flag is ignored
    elif version < (10, 0):
        network_flags = ("EXPLICIT_BATCH",)
    tactics = options.tactic_sources if options.tactic_sources is not None else (
        TACTICS_BEFORE_10 if version < (10, 0) else None
    )
    return Setup(
        typing=typing,
        network_flags=network_flags,
        flags=tuple(flags),
        cleared=() if options.tf32 else ("TF32",),
        constrain_layers=constrained,
        tactic_sources=tuple(tactics) if tactics is not None else None,
    )


def recipe_shapes(recipe: Recipe) -> Shapes:
    return {name: (s.resolve("min"), s.resolve("opt"), s.resolve("max")) for name, s in recipe.inputs.items()}


def profile_shapes(name: str, network_shape: tuple[int, ...], shapes: Shapes) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) for a network input, checked against its static dims (-1 marks a dynamic one)."""
    if name not in shapes:
        raise StageError(
            f"the model's input '{name}' is not among the recipe's inputs ({', '.join(shapes) or 'none'})",
            hint=f"add inputs.{name} with its shape to the recipe",
        )
    lo, opt, hi = shapes[name]
    if len(network_shape) != len(opt):
        raise StageError(f"input '{name}' has {len(network_shape)} dims in the model, the recipe gives {list(opt)}")
    for axis, dim in enumerate(network_shape):
        if dim >= 0 and not lo[axis] == hi[axis] == dim:
            raise StageError(
                f"input '{name}': dim {axis} is {dim} in the model, the recipe asks for {lo[axis]}..{hi[axis]}",
                hint=f"make inputs.{name}.shape[{axis}] {dim}, or export the model with that dim dynamic",
            )
    return lo, opt, hi


def timing_cache_path(cache_dir: Path, facts: dict) -> Path:
    """One timing cache per TensorRT version and GPU: timings from elsewhere would mislead the builder."""
    gpu = re.sub(r"[^a-z0-9]+", "-", facts["gpu"].lower()).strip("-")
    sm = facts["compute_capability"].replace(".", "")
    return Path(cache_dir) / "tensorrt" / f"timing-{facts['tensorrt']}-{gpu}-sm{sm}.cache"
