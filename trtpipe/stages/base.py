"""What every stage is: a pydantic model of its params plus `run`, registered under its type name.

A stage type declares
- `kind`: the name recipes use in `uses:`; `version`: bump it when the stage's output changes for the same inputs;
- `inputs`: names of its fields that reference another stage's output as "stage.output";
- `outputs`: the files it produces, by name;
- `requires`: importable modules it needs, with the pip extra that provides them;
- `recipe_fields`: parts of the recipe (model, inputs, target) its result depends on;
- `env()`: environment facts its result depends on (TensorRT version, GPU), part of its cache key.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, StringConstraints

from trtpipe.errors import RecipeError, needs

if TYPE_CHECKING:
    from trtpipe.recipe import Recipe

REF_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_]*$"
Ref = Annotated[str, StringConstraints(pattern=REF_PATTERN)]

REGISTRY: dict[str, type[Stage]] = {}
TARGET_NEEDS = {"tensorrt": {"tensorrt": "trt", "cuda": "trt"}, "onnxruntime": {"onnxruntime": None}}


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uses: str
    after: list[str] = []

    kind: ClassVar[str] = ""
    version: ClassVar[int] = 1
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[dict[str, str]] = {}
    recipe_fields: ClassVar[tuple[str, ...]] = ()

    def refs(self) -> dict[str, str]:
        """Input slot -> "stage.output" for the inputs that are wired (see recipe.wire_model_inputs)."""
        return {slot: getattr(self, slot) for slot in self.inputs if getattr(self, slot) is not None}

    def params(self) -> dict[str, Any]:
        """The params that go into the cache key: everything but wiring."""
        return self.model_dump(mode="json", exclude={"uses", "after", *self.inputs})

    def env(self, recipe: Recipe) -> dict[str, Any]:
        """A stage that reads the target depends on its backend: library version and device."""
        if "target" not in self.recipe_fields:
            return {}
        from trtpipe.backends import get_backend

        return get_backend(recipe.target).env()

    def key_files(self, recipe: Recipe) -> dict[str, Path]:
        """Files outside the store whose content the result depends on."""
        files = {}
        if "inputs" in self.recipe_fields:
            files.update({f"inputs.{n}": recipe.npz_path(n) for n, s in recipe.inputs.items() if s.npz is not None})
        return files

    def needs(self, recipe: Recipe) -> dict[str, str]:
        """Modules this stage imports for this recipe, with the pip extra that provides each."""
        target = TARGET_NEEDS[recipe.target] if "target" in self.recipe_fields else {}
        return self.requires | target

    def check_requires(self, name: str, recipe: Recipe) -> None:
        for module, extra in self.needs(recipe).items():
            if importlib.util.find_spec(module) is None:
                raise RecipeError(f"stage '{name}' needs {module}: {needs(module, extra)}")

    def run(self, ctx: Context) -> Result:
        raise NotImplementedError


def register(cls: type[Stage]) -> type[Stage]:
    assert cls.kind and cls.kind not in REGISTRY, cls
    assert re.fullmatch(r"[a-z][a-z0-9-]*", cls.kind), cls.kind
    REGISTRY[cls.kind] = cls
    return cls


@dataclass
class Result:
    outputs: dict[str, Path]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a running stage sees: its inputs as files, a fresh directory for its outputs, the recipe.

    `report(message)` shows progress of long work on the console.
    """

    name: str
    recipe: Recipe
    inputs: dict[str, Path]
    workdir: Path
    cache_dir: Path
    key: str = ""
    report: Callable[[str], None] = lambda message: None
    forced: bool = False  # run on request (--force), not for a changed input

    def out(self, filename: str) -> Path:
        return self.workdir / filename

    @property
    def scratch(self) -> Path:
        """A directory that survives an interrupted run of this exact stage (same key), for resumable work."""
        path = self.cache_dir / "scratch" / self.key
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def target(self) -> str:
        return self.recipe.target
