"""The lock file `<recipe dir>/<name>.lock.yaml`: per stage its key, params, input/output digests, environment,
metrics, the seconds it took when it ran, and whether the last run took it from the cache (`cached`). Rewritten
atomically after every stage, so it always describes completed work."""

from __future__ import annotations

from pathlib import Path

import yaml

from trtpipe.store import atomic_write

HEADER = "# Rewritten by trtpipe after each stage: what the last run of each stage used and produced. Do not edit.\n"


def lock_path(recipe) -> Path:
    return recipe.dir / f"{recipe.name}.lock.yaml"


def read(path: Path) -> dict[str, dict]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return {}
    return data.get("stages", {}) if isinstance(data, dict) else {}


def write(path: Path, recipe_name: str, stages: dict[str, dict]) -> None:
    body = yaml.safe_dump({"recipe": recipe_name, "stages": stages}, sort_keys=False, width=120)
    atomic_write(path, HEADER + body)
