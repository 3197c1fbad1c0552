"""Content-addressed store: immutable objects named by sha256, and a run cache from stage key to output digests.

Layout under the cache dir:
    objects/ab/cdef...    files, read-only, named by the sha256 of their bytes
    runs/<key>.json       what a stage run with that key produced (written last: the commit point)
    tmp/                  work directories of running stages, on the same file system as objects/
    state.json            size/mtime/inode -> digest, so unchanged files are not hashed again
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileDigests:
    """sha256 of files, remembered by (size, mtime, inode) like DVC's state: a changed file is hashed again."""

    def __init__(self, path: Path):
        self.path = path
        self.known: dict[str, list] = {}
        self.dirty = False
        if path.is_file():
            try:
                self.known = json.loads(path.read_text())
            except ValueError:
                self.known = {}

    def digest(self, path: Path) -> str:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.known.get(str(path.resolve()))
        if entry and entry[:3] == stamp:
            return entry[3]
        digest = sha256_file(path)
        self.remember(path, digest)
        return digest

    def remember(self, path: Path, digest: str) -> None:
        st = path.stat()
        self.known[str(path.resolve())] = [st.st_size, st.st_mtime_ns, st.st_ino, digest]
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            atomic_write(self.path, json.dumps(self.known))
            self.dirty = False


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.runs = self.root / "runs"
        self.tmp = self.root / "tmp"
        for d in (self.objects, self.runs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.files = FileDigests(self.root / "state.json")

    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest[2:]

    def put(self, path: Path) -> str:
        """Move a file into the store; returns its digest."""
        digest = sha256_file(path)
        dest = self.object_path(digest)
        if self.intact(digest):
            path.unlink()
            return digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o444)
        os.replace(path, dest)
        self.files.remember(dest, digest)
        return digest

    def intact(self, digest: str) -> bool:
        path = self.object_path(digest)
        return path.is_file() and self.files.digest(path) == digest

    def drop(self, digest: str) -> None:
        self.object_path(digest).unlink(missing_ok=True)

    def materialize(self, digest: str, dest: Path) -> Path:
        """Copy an object to `dest` unless it already holds those bytes."""
        if dest.is_file() and self.files.digest(dest) == digest:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.copyfile(self.object_path(digest), tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.files.remember(dest, digest)
        return dest

    def get_run(self, key: str) -> dict | None:
        path = self.runs / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def put_run(self, key: str, record: dict) -> None:
        atomic_write(self.runs / f"{key}.json", json.dumps(record, indent=1, sort_keys=True))

    def workdir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"{name}-"))

    def clean(self, keep_keys: set[str]) -> tuple[int, int]:
        """Drop run records not in `keep_keys`, then objects no kept record refers to. Returns (files, bytes) freed."""
        keep_digests: set[str] = set()
        files = freed = 0
        for run in self.runs.glob("*.json"):
            record = self.get_run(run.stem)
            if run.stem in keep_keys and record is not None:
                keep_digests.update(o["digest"] for o in record["outputs"].values())
            else:
                run.unlink()
                files += 1
        for obj in self.objects.glob("*/*"):
            if obj.parent.name + obj.name not in keep_digests:
                freed += obj.stat().st_size
                obj.unlink()
                files += 1
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return files, freed
