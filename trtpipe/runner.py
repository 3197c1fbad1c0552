"""Runs a recipe's stages in dependency order, taking each from the cache when its key is already there.

A stage's key is the sha256 of canonical JSON over: stage type and code version, its params, the digests of its
inputs (other stages' outputs and outside files it names), the recipe fields it reads, and the environment facts it
declares. A run record is written only after all outputs are in the store, so an interrupted stage leaves nothing.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from trtpipe import dag, lockfile
from trtpipe.errors import RecipeError, StageError, TrtpipeError, did_you_mean
from trtpipe.recipe import Recipe
from trtpipe.stages import Context, Stage
from trtpipe.store import Store, sha256_json


@dataclass
class Selection:
    only: list[str] = field(default_factory=list)
    start: str | None = None
    until: str | None = None
    force: list[str] | None = None  # None: force nothing; []: force every selected stage

    def stages(self, recipe: Recipe) -> set[str]:
        names = set(recipe.stages)
        for name in [*self.only, self.start, self.until, *(self.force or [])]:
            if name is not None and name not in names:
                raise RecipeError(f"no stage named '{name}' in {recipe.path}{did_you_mean(name, names)}")
        if self.only:
            return set(self.only)
        chosen = names
        if self.start:
            chosen &= dag.descendants(recipe.stages, {self.start})
        if self.until:
            chosen &= dag.ancestors(recipe.stages, {self.until})
        return chosen

    def forced(self, name: str) -> bool:
        return self.force is not None and (not self.force or name in self.force)


@dataclass
class StageRun:
    name: str
    status: str  # cached | ran | locked (outside the selection, from the lock file) | will run | unavailable
    reason: str = ""
    key: str | None = None
    outputs: dict[str, dict] = field(default_factory=dict)  # name -> {digest, file, bytes}
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Runner:
    def __init__(self, recipe: Recipe, cache_dir: Path | None = None, build_dir: Path = Path("build")):
        self.recipe = recipe
        self.store = Store(cache_dir or recipe.dir / ".trtpipe")
        self.build_dir = build_dir / recipe.name
        self.lock_path = lockfile.lock_path(recipe)
        self.lock = lockfile.read(self.lock_path)

    # ------------------------------------------------------------ keys

    def key_material(self, name: str, stage: Stage, inputs: dict[str, str]) -> dict[str, Any]:
        files = {k: self.file_digest(name, k, p) for k, p in stage.key_files(self.recipe).items()}
        return {
            "stage": stage.kind,
            "version": stage.version,
            "params": stage.params(),
            "inputs": inputs,
            "files": files,
            "recipe": recipe_facts(self.recipe, stage.recipe_fields),
            "env": stage.env(self.recipe),
        }

    def file_digest(self, stage: str, what: str, path: Path) -> str:
        if not path.is_file():
            raise RecipeError(f"stage '{stage}': {what}: no such file {path}")
        return self.store.files.digest(path)

    def input_digests(self, stage: Stage, done: dict[str, StageRun]) -> dict[str, str] | None:
        """Digest per input slot, or None when an upstream stage has not produced its outputs."""
        digests = {}
        for slot, ref in stage.refs().items():
            producer, output = ref.split(".", 1)
            run = done.get(producer)
            if run is None or output not in run.outputs:
                return None
            digests[slot] = run.outputs[output]["digest"]
        return digests

    def cached(self, key: str) -> dict | None:
        record = self.store.get_run(key)
        return record if record and self.intact(record) else None

    def intact(self, record: dict) -> bool:
        """Every output a run record or lock entry names is in the store with the bytes it had."""
        return all(self.store.intact(o["digest"]) for o in record["outputs"].values())

    def why(self, name: str, material: dict[str, Any] | None, key: str | None) -> str:
        """Why a stage must run, compared with the lock file's record of its last run."""
        old = self.lock.get(name)
        if old is None:
            return "never run"
        if material is None:
            return "an input will change"
        for what, label in (
            ("params", "params"),
            ("inputs", "input"),
            ("files", "input file"),
            ("recipe", "recipe"),
            ("env", "environment"),
            ("version", "stage code"),
        ):
            if canonical(old.get(what)) != canonical(material[what]):
                changed = diff_keys(old.get(what), material[what])
                return f"{label} changed" + (f": {', '.join(changed)}" if changed else "")
        if old.get("key") == key and self.store.get_run(key) is not None:
            return "output missing or corrupted in the cache"
        return "not in the cache"

    # ------------------------------------------------------------ plan and run

    def plan(self, selection: Selection) -> list[StageRun]:
        chosen = selection.stages(self.recipe)
        needed = dag.ancestors(self.recipe.stages, chosen)
        done: dict[str, StageRun] = {}
        plan = []
        for name in dag.order(self.recipe.stages):
            if name not in needed:
                continue
            stage = self.recipe.stage(name)
            inputs = self.input_digests(stage, done)
            material = self.key_material(name, stage, inputs) if inputs is not None else None
            key = sha256_json(material) if material else None
            record = self.cached(key) if key and not (name in chosen and selection.forced(name)) else None
            if record:
                done[name] = StageRun(name, "cached", key=key, outputs=record["outputs"], metrics=record["metrics"])
            elif name in chosen:
                reason = "forced" if selection.forced(name) else self.why(name, material, key)
                done[name] = StageRun(name, "will run", reason, key=key)
            elif self.locked(name):
                entry = self.lock[name]
                done[name] = StageRun(name, "locked", self.why(name, material, key), entry["key"], entry["outputs"])
            else:
                done[name] = StageRun(name, "unavailable", "not selected and not in the cache", key=key)
            plan.append(done[name])
        return plan

    def check(self, selection: Selection) -> None:
        """Fail before running anything when a selected stage lacks an optional package."""
        chosen = selection.stages(self.recipe)
        for name in dag.order(self.recipe.stages):
            if name in chosen:
                self.recipe.stage(name).check_requires(name, self.recipe)

    def run(
        self, selection: Selection, on_event: Callable[[str, StageRun, str], None] = lambda *a: None
    ) -> list[StageRun]:
        self.check(selection)
        chosen = selection.stages(self.recipe)
        needed = dag.ancestors(self.recipe.stages, chosen)
        order = [n for n in dag.order(self.recipe.stages) if n in needed]
        done: dict[str, StageRun] = {}
        try:
            for name in order:
                done[name] = self.run_stage(name, name in chosen, selection, done, on_event)
        finally:
            self.store.files.save()
        return [done[n] for n in order]

    def run_stage(self, name, chosen, selection, done, on_event) -> StageRun:
        stage = self.recipe.stage(name)
        if not chosen:
            return self.reuse(name, stage, done, on_event)
        material = self.key_material(name, stage, self.input_digests(stage, done))
        key = sha256_json(material)
        record = None if selection.forced(name) else self.cached(key)
        if record is not None:
            run = StageRun(
                name,
                "cached",
                key=key,
                outputs=record["outputs"],
                metrics=record["metrics"],
                seconds=record.get("seconds", 0.0),
            )
            on_event("start", run, "")
        else:
            run = StageRun(name, "ran", "forced" if selection.forced(name) else self.why(name, material, key), key=key)
            on_event("start", run, run.reason)
            self.execute(name, stage, run, done, lambda message: on_event("progress", run, message))
        self.materialize(name, run)
        self.record_lock(name, stage, material, run)
        on_event("done", run, "")
        return run

    def reuse(self, name: str, stage: Stage, done: dict[str, StageRun], on_event) -> StageRun:
        """A stage outside the selection: its cached result, else the result its lock entry records (say, an export
        made on another machine, whose torch the GPU machine lacks)."""
        try:
            material = self.key_material(name, stage, self.input_digests(stage, done))
        except TrtpipeError as e:
            material, reason = None, e.message
        record = self.cached(sha256_json(material)) if material else None
        if record is not None:
            run = StageRun(
                name,
                "cached",
                key=sha256_json(material),
                outputs=record["outputs"],
                metrics=record["metrics"],
                seconds=record.get("seconds", 0.0),
            )
            self.record_lock(name, stage, material, run)
        else:
            entry = self.locked(name)
            if entry is None:
                raise RecipeError(
                    f"stage '{name}' is needed but not selected, and its result is not in the cache",
                    hint=f"run without --only/--from first, or add '{name}' to the selection",
                )
            reason = self.why(name, material, None) if material else reason
            run = StageRun(name, "locked", reason, key=entry["key"], outputs=entry["outputs"], metrics=entry["metrics"])
        self.materialize(name, run)
        on_event("done", run, "")
        return run

    def locked(self, name: str) -> dict | None:
        """The lock file's entry for a stage, when the outputs it records are intact in the store."""
        entry = self.lock.get(name)
        return entry if entry and self.intact(entry) else None

    def execute(self, name: str, stage: Stage, run: StageRun, done: dict[str, StageRun], report) -> None:
        inputs = {slot: self.output_path(*ref.split(".", 1), done) for slot, ref in stage.refs().items()}
        workdir = self.store.workdir(name)
        ctx = Context(name, self.recipe, inputs, workdir, self.store.root, run.key, report, run.reason == "forced")
        start = time.perf_counter()
        try:
            result = stage.run(ctx)
            check_result(name, stage, result)
            run.outputs = {out: self.ingest(Path(path)) for out, path in result.outputs.items()}
        except TrtpipeError as e:
            logger.debug(traceback.format_exc())
            raise StageError(f"stage '{name}' failed: {e.message}", hint=e.hint) from e
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            logger.debug(traceback.format_exc())
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise StageError(
                f"stage '{name}' failed: {type(e).__name__}: {first}", hint="run with -v for the traceback"
            ) from e
        finally:
            self.store.files.save()
            shutil.rmtree(workdir, ignore_errors=True)
        run.seconds = time.perf_counter() - start
        run.metrics = json.loads(json.dumps(result.metrics, default=to_json))
        self.store.put_run(
            run.key, {"stage": name, "outputs": run.outputs, "metrics": run.metrics, "seconds": run.seconds}
        )

    def ingest(self, path: Path) -> dict:
        size = path.stat().st_size
        return {"digest": self.store.put(path), "file": path.name, "bytes": size}

    def output_path(self, stage: str, output: str, done: dict[str, StageRun]) -> Path:
        return self.build_dir / stage / done[stage].outputs[output]["file"]

    def materialize(self, name: str, run: StageRun) -> None:
        for output in run.outputs.values():
            self.store.materialize(output["digest"], self.build_dir / name / output["file"])

    def record_lock(self, name: str, stage: Stage, material: dict, run: StageRun) -> None:
        entry = {
            "uses": stage.kind,
            "key": run.key,
            **{k: material[k] for k in ("version", "params", "inputs", "files", "recipe", "env")},
        }
        entry["outputs"] = {k: {**v, "path": str(self.build_dir / name / v["file"])} for k, v in run.outputs.items()}
        entry["metrics"] = run.metrics
        entry["seconds"] = round(run.seconds, 3)
        entry["cached"] = run.status == "cached"
        if canonical(entry) == canonical(self.lock.get(name)):
            return  # an unchanged re-run rewrites nothing
        # read again: another process running stages of this recipe may have recorded some since
        lock = lockfile.read(self.lock_path) | {name: entry}
        self.lock = {n: e for n, e in lock.items() if n in self.recipe.stages}
        lockfile.write(self.lock_path, self.recipe.name, self.lock)

    def clean(self) -> tuple[int, int]:
        """Keep the runs that some lock file beside the recipe points at; drop every other run and object."""
        keep = {
            entry.get("key") for lock in self.recipe.dir.glob("*.lock.yaml") for entry in lockfile.read(lock).values()
        }
        return self.store.clean(keep)


def check_result(name: str, stage: Stage, result) -> None:
    missing = [o for o in stage.outputs if o not in result.outputs]
    extra = [o for o in result.outputs if o not in stage.outputs]
    if missing or extra:
        raise StageError(f"produced outputs {sorted(result.outputs)}, declared {list(stage.outputs)}")
    for out, path in result.outputs.items():
        if not Path(path).is_file():
            raise StageError(f"output '{out}' is not a file: {path}")


def recipe_facts(recipe: Recipe, fields: tuple[str, ...]) -> dict[str, Any]:
    facts = {}
    if "model" in fields:
        facts["model"] = recipe.model.model_dump(mode="json", exclude={"onnx"}, exclude_none=True)
    if "inputs" in fields:
        facts["inputs"] = {n: s.model_dump(mode="json", exclude={"npz"}) for n, s in recipe.inputs.items()}
    if "target" in fields:
        facts["target"] = recipe.target
    return facts


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def diff_keys(old: Any, new: Any) -> list[str]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    return sorted(k for k in old.keys() | new.keys() if canonical(old.get(k)) != canonical(new.get(k)))


def to_json(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metric value of type {type(value).__name__} is not JSON")
