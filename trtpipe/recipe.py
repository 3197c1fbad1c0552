"""Recipe: YAML -> validated pydantic models, with errors that point at file:line:col and suggest fixes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trtpipe.errors import RecipeError, did_you_mean
from trtpipe.stages import REGISTRY, Stage

DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")
TARGETS = ("onnxruntime", "tensorrt")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DimRange(Strict):
    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def ordered(self):
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"need min <= opt <= max, got {self.min}, {self.opt}, {self.max}")
        return self


class InputSpec(Strict):
    """One model input. Named dims in `shape` are dynamic; `dims` gives their min/opt/max.

    Data is seeded uniform random in [low, high) at the opt shape unless `npz` names a file holding it.
    """

    shape: list[int | str]
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    dims: dict[str, DimRange] = {}
    seed: int = 0
    low: float = 0.0
    high: float = 1.0
    npz: Path | None = None

    @model_validator(mode="after")
    def dims_match_shape(self):
        names = [d for d in self.shape if isinstance(d, str)]
        for d in self.shape:
            if isinstance(d, int) and d < 1:
                raise ValueError(f"shape {self.shape}: dimensions must be >= 1 or a name declared in dims")
        if missing := [n for n in names if n not in self.dims]:
            raise ValueError(f"shape {self.shape}: dynamic dim '{missing[0]}' has no entry in dims")
        if unused := [n for n in self.dims if n not in names]:
            raise ValueError(f"dims: '{unused[0]}' is not a name in shape {self.shape}")
        return self

    def resolve(self, which: Literal["min", "opt", "max"] = "opt") -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else getattr(self.dims[d], which) for d in self.shape)


class ModelSpec(Strict):
    factory: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict[str, Any] = {}
    onnx: Path | None = None

    @model_validator(mode="after")
    def one_source(self):
        if (self.factory is None) == (self.onnx is None):
            raise ValueError("give exactly one of 'factory' (package.module:callable) or 'onnx' (a path)")
        if self.onnx is not None and self.kwargs:
            raise ValueError("'kwargs' applies to 'factory' only")
        return self


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    model: ModelSpec
    inputs: dict[str, InputSpec] = Field(min_length=1)
    target: Literal[TARGETS] = "onnxruntime"  # type: ignore[valid-type]
    stages: dict[str, Any] = Field(min_length=1)
    path: Path = Field(Path("recipe.yaml"), exclude=True)

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def model_path(self) -> Path:
        return self.dir / self.model.onnx

    def npz_path(self, input_name: str) -> Path:
        return self.dir / self.inputs[input_name].npz

    def stage(self, name: str) -> Stage:
        return self.stages[name]


# ---------------------------------------------------------------- loading


def load(path: str | Path, overrides: list[str] = (), target: str | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RecipeError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with name, model, inputs and stages")
    for item in overrides:
        apply_override(data, item)
    if target is not None:
        data["target"] = target
    return validate(data, path, Positions(node, path))


def apply_override(data: dict, item: str) -> None:
    """`--set a.b.c=value`: value parsed as YAML, so numbers, booleans and lists keep their types."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise RecipeError(f"--set {item!r}: expected key.path=value")
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {item!r}: '{'.'.join(parents[: i + 1])}' is not a mapping")
        node = child
    node[leaf] = yaml.safe_load(value)


def validate(data: dict, path: Path, pos: Positions) -> Recipe:
    errors: list[str] = []
    try:
        recipe = Recipe.model_validate({**data, "path": path})
    except ValidationError as e:
        errors += [pos.format(err["loc"], message(err, Recipe), at_key=at_key(err)) for err in e.errors()]
        recipe = None
    stages = {}
    raw_stages = data.get("stages")
    for name, spec in (raw_stages if isinstance(raw_stages, dict) else {}).items():
        stage, errs = validate_stage(str(name), spec, pos)
        errors += errs
        stages[str(name)] = stage
    if errors:
        raise RecipeError(summarize(errors))
    stages = wire_model_inputs(stages, source=recipe.model.onnx is not None, pos=pos)
    if errors := check_graph(stages, pos):
        raise RecipeError(summarize(errors))
    return recipe.model_copy(update={"stages": stages})


def wire_model_inputs(stages: dict[str, Stage], source: bool, pos: Positions) -> dict[str, Stage]:
    """An `onnx:` recipe gets a `source` stage. A stage's unset `model` input is the model of its first `after`
    stage that produces one, else the source model."""
    if source and "source" not in stages:
        from trtpipe.stages.source import Source

        stages = {"source": Source(uses="source"), **stages}
    wired = {}
    for name, stage in stages.items():
        if "model" in stage.inputs and stage.model is None:
            producers = [a for a in stage.after if a in stages and "model" in stages[a].outputs]
            if not producers and not source:
                raise RecipeError(
                    pos.format(("stages", name), f"stage '{name}' has no model to work on"),
                    hint="add 'after: [<stage that makes a model>]' or 'model: <stage>.model'",
                )
            stage = stage.model_copy(update={"model": f"{producers[0] if producers else 'source'}.model"})
        wired[name] = stage
    return wired


def summarize(errors: list[str], limit: int = 12) -> str:
    more = f"\n... and {len(errors) - limit} more" if len(errors) > limit else ""
    return "\n".join(errors[:limit]) + more


def validate_stage(name: str, spec: Any, pos: Positions) -> tuple[Stage | None, list[str]]:
    loc = ("stages", name)
    if not isinstance(spec, dict):
        return None, [pos.format(loc, "a stage is a mapping with 'uses: <stage type>' and its params")]
    uses = spec.get("uses")
    if uses is None:
        return None, [pos.format(loc, f"missing 'uses'; stage types: {', '.join(sorted(REGISTRY))}")]
    cls = REGISTRY.get(str(uses))
    if cls is None:
        return None, [
            pos.format(
                (*loc, "uses"),
                f"unknown stage type '{uses}'{did_you_mean(uses, REGISTRY)}; "
                f"stage types: {', '.join(sorted(REGISTRY))}",
            )
        ]
    try:
        return cls.model_validate(spec), []
    except ValidationError as e:
        return None, [pos.format((*loc, *err["loc"]), message(err, cls), at_key=at_key(err)) for err in e.errors()]


def at_key(err: dict) -> bool:
    return err["type"] == "extra_forbidden"


def message(err: dict, model: type[BaseModel]) -> str:
    if err["type"] == "extra_forbidden":
        key = err["loc"][-1]
        fields = fields_at(model, err["loc"][:-1])
        return f"unknown key '{key}'{did_you_mean(key, fields)}" + (
            f"; valid keys: {', '.join(fields)}" if fields else ""
        )
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return "missing required key"
    if "input" in err and not isinstance(err["input"], dict | list):
        msg += f" (got {err['input']!r})"
    return msg


def fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model nested at `loc` inside `model`, for suggestions; [] when there is none."""
    ann: Any = model
    for part in loc:
        ann = child_annotation(ann, part)
    return list(ann.model_fields) if is_model(ann) else []


def child_annotation(ann: Any, part: str | int) -> Any:
    if is_model(ann):
        info = ann.model_fields.get(part)
        return info.annotation if info else None
    args = get_args(ann)
    if get_origin(ann) is dict:
        return args[1]
    if get_origin(ann) is list:
        return args[0]
    models = [a for a in args if is_model(a)]
    return child_annotation(models[0], part) if models else None


def is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def check_graph(stages: dict[str, Stage], pos: Positions) -> list[str]:
    errors = []
    known = stages
    for name, stage in stages.items():
        for i, dep in enumerate(stage.after):
            if dep not in known:
                errors.append(pos.format(("stages", name, "after", i), unknown_stage(dep, known)))
        for slot, ref in stage.refs().items():
            producer, output = ref.split(".", 1)
            where = ("stages", name, slot if slot in stage.model_fields_set else "after")
            if producer not in known:
                errors.append(pos.format(where, unknown_stage(producer, known)))
            elif output not in known[producer].outputs:
                outs = known[producer].outputs
                errors.append(
                    pos.format(
                        where,
                        f"stage '{producer}' ({known[producer].kind}) has no output '{output}'"
                        f"{did_you_mean(output, outs)}; it produces: {', '.join(outs) or 'nothing'}",
                    )
                )
    if not errors:
        from trtpipe.dag import find_cycle

        if cycle := find_cycle(stages):
            steps = ", ".join(f"{a} after {b}" for a, b in zip(cycle, cycle[1:]))
            errors.append(pos.format(("stages", cycle[0]), f"dependency cycle: {steps}"))
    return errors


def unknown_stage(name: str, known) -> str:
    return f"no stage named '{name}'{did_you_mean(name, known)}"


# ---------------------------------------------------------------- YAML positions


class Positions:
    """Maps a path of keys/indices to the line:col of that node in the YAML source."""

    def __init__(self, root: yaml.Node | None, path: Path):
        self.root = root
        self.path = path

    def find(self, loc: tuple, at_key: bool = False) -> yaml.Node | None:
        """The value node at `loc` (its key node with `at_key`), or the deepest node on the way there."""
        node, found = self.root, self.root
        for i, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if k.value == str(part)]
                if not match:
                    break
                key, node = match[0]
                found = key if at_key and i == len(loc) - 1 else node
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = found = node.value[part]
            else:
                break
        return found

    def format(self, loc: tuple, msg: str, at_key: bool = False) -> str:
        loc = tuple(p for p in loc if not (isinstance(p, str) and re.fullmatch(r"(function-)?\w+\[.*\]", p)))
        node = self.find(loc, at_key)
        where = f"{self.path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node else str(self.path)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        return f"{where}: {dotted}: {msg}"
