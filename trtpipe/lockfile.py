"""The lock file `<recipe dir>/<name>.lock.yaml`: per stage its key, params, input/output digests, environment,
metrics, the seconds it took when it ran, and whether the last run took it from the cache (`cached`). Rewritten
atomically after every stage whose entry changed, so it always describes completed work."""

from __future__ import annotations

from pathlib import Path

import yaml

from trtpipe.store import atomic_write

HEADER = "# Rewritten by trtpipe after each stage: what the last run of each stage used and produced. Do not edit.\n"
# libyaml's parser and emitter where PyYAML has them: 10x faster on a lock file of a few hundred KB.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def lock_path(recipe) -> Path:
    return recipe.dir / f"{recipe.name}.lock.yaml"


def read(path: Path) -> dict[str, dict]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return {}
    return data.get("stages", {}) if isinstance(data, dict) else {}


def write(path: Path, recipe_name: str, stages: dict[str, dict]) -> None:
    body = yaml.dump({"recipe": recipe_name, "stages": stages}, Dumper=DUMPER, sort_keys=False, width=120)
    atomic_write(path, HEADER + body)
