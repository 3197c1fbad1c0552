"""The runner and its cache: what re-runs after each kind of change, corruption, interruption, selection."""

import json

import onnx
import pytest
import yaml

from tests.conftest import save_tiny_onnx
from tests.core_stages import Scale
from trtpipe.cli import main

CHAIN = """stages:
  a: {uses: test-scale, factor: 2}
  b: {uses: test-scale, after: [a], factor: 3}
  c: {uses: inspect, after: [b]}
"""


def run(path, *args) -> int:
    return main(["run", str(path), *args])


def statuses(capsys) -> dict[str, str]:
    """stage -> 'ran' or 'cached', read from the run's console lines."""
    found = {}
    for line in capsys.readouterr().err.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("✓", "="):
            found[parts[1]] = "ran" if parts[2] == "ran" else "cached"
    return found


@pytest.fixture
def chain(workspace, capsys):
    path = workspace(CHAIN)
    assert run(path) == 0
    assert statuses(capsys) == {"source": "ran", "a": "ran", "b": "ran", "c": "ran"}
    return path


def test_second_run_is_all_cache_hits(chain, capsys):
    assert run(chain) == 0
    assert set(statuses(capsys).values()) == {"cached"}


def test_an_unchanged_rerun_leaves_the_lock_file_alone(chain, workspace, capsys):
    assert run(chain) == 0  # records that every stage came from the cache
    lock = workspace.dir / "tiny.lock.yaml"
    before = lock.stat()
    assert run(chain) == 0
    after = lock.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # a rewrite is a new file
    assert set(statuses(capsys).values()) == {"cached"}


def test_outputs_are_materialized_and_recorded(chain, workspace):
    model = onnx.load(str(workspace.dir / "build/tiny/b/model.onnx"))
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Relu", "Mul", "Mul"]
    lock = yaml.safe_load((workspace.dir / "tiny.lock.yaml").read_text())["stages"]
    assert lock["b"]["params"] == {"factor": 3.0}
    assert lock["b"]["inputs"]["model"] == lock["a"]["outputs"]["model"]["digest"]
    assert lock["c"]["metrics"]["nodes"] == 4
    assert lock["b"]["env"] == {"test_env": ""}


def test_param_change_reruns_that_stage_and_descendants(chain, capsys):
    assert run(chain, "--set", "stages.b.factor=4") == 0
    assert statuses(capsys) == {"source": "cached", "a": "cached", "b": "ran", "c": "ran"}


def test_plan_says_why(chain, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["plan", str(chain), "--set", "stages.b.factor=4"]) == 0
    out = capsys.readouterr().out
    assert "params changed: factor" in out
    assert "an input will change" in out


def test_input_file_change_reruns_everything(chain, workspace, capsys):
    save_tiny_onnx(workspace.dir / "tiny.onnx", opset=18)
    assert run(chain) == 0
    assert set(statuses(capsys).values()) == {"ran"}


def test_environment_change_reruns_stages_that_declare_it(chain, capsys, monkeypatch):
    monkeypatch.setenv("TRTPIPE_TEST_ENV", "other-gpu")
    assert main(["plan", str(chain)]) == 0
    assert "environment changed: test_env" in capsys.readouterr().out
    assert run(chain) == 0
    assert statuses(capsys) == {"source": "cached", "a": "ran", "b": "ran", "c": "cached"}


def test_stage_code_version_change_reruns(chain, capsys, monkeypatch):
    monkeypatch.setattr(Scale, "version", Scale.version + 1)
    assert run(chain) == 0
    assert statuses(capsys)["a"] == "ran"


def test_unchanged_output_stops_the_rerun_wave(chain, capsys):
    """c's input is b's output; a no-op factor change upstream that yields the same bytes keeps c cached."""
    assert run(chain, "--set", "stages.b.factor=3.0") == 0
    assert set(statuses(capsys).values()) == {"cached"}


def test_corrupted_object_is_detected_and_rebuilt(chain, workspace, capsys):
    lock = yaml.safe_load((workspace.dir / "tiny.lock.yaml").read_text())["stages"]
    digest = lock["a"]["outputs"]["model"]["digest"]
    obj = workspace.dir / ".trtpipe/objects" / digest[:2] / digest[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"garbage")
    assert main(["plan", str(chain)]) == 0
    assert "corrupted" in capsys.readouterr().out
    assert run(chain) == 0
    assert statuses(capsys) == {"source": "cached", "a": "ran", "b": "cached", "c": "cached"}
    assert obj.read_bytes() != b"garbage"


def test_interrupted_stage_leaves_nothing_and_the_next_run_resumes(chain, workspace, capsys, monkeypatch):
    monkeypatch.setenv("TRTPIPE_TEST_INTERRUPT", "b")
    assert run(chain, "--set", "stages.b.factor=5") == 130
    capsys.readouterr()
    assert not list((workspace.dir / ".trtpipe/tmp").iterdir())
    lock = yaml.safe_load((workspace.dir / "tiny.lock.yaml").read_text())["stages"]
    assert lock["b"]["params"] == {"factor": 3.0}, "the lock still describes the last completed run of b"
    monkeypatch.delenv("TRTPIPE_TEST_INTERRUPT")
    assert run(chain, "--set", "stages.b.factor=5") == 0
    assert statuses(capsys) == {"source": "cached", "a": "cached", "b": "ran", "c": "ran"}


def test_failing_stage_exits_1_with_one_line(workspace, capsys):
    path = workspace("stages:\n  a: {uses: test-scale}\n  bad: {uses: test-broken, after: [a]}\n")
    assert run(path) == 1
    err = capsys.readouterr().err
    assert "stage 'bad' failed: ValueError: planted failure" in err
    assert "Traceback" not in err
    assert run(path, "--until", "a") == 0
    assert statuses(capsys) == {"source": "cached", "a": "cached"}


def test_verbose_shows_the_traceback(workspace, capsys):
    path = workspace("stages:\n  bad: {uses: test-broken}\n")
    assert run(path, "-v") == 1
    assert "Traceback" in capsys.readouterr().err


def test_only_needs_cached_inputs(workspace, capsys):
    path = workspace(CHAIN)
    assert run(path, "--only", "b") == 2
    assert "stage 'source' is needed but not selected" in capsys.readouterr().err
    assert run(path, "--until", "a") == 0
    assert statuses(capsys) == {"source": "ran", "a": "ran"}
    assert run(path, "--only", "b") == 0
    assert statuses(capsys) == {"source": "cached", "a": "cached", "b": "ran"}


def test_stages_outside_the_selection_fall_back_to_the_lock_file(chain, capsys, monkeypatch):
    """As when the export ran on a machine with torch and the build runs on one without: a's key changed with the
    environment, but `--from b` takes a's last locked result and says why it is not current."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TRTPIPE_TEST_ENV", "gpu-machine")
    assert main(["plan", str(chain), "--from", "b"]) == 0
    assert "locked" in capsys.readouterr().out
    assert run(chain, "--from", "b") == 0
    err = capsys.readouterr().err
    assert "a from the lock file (environment changed: test_env)" in err
    assert "b ran" in err


def test_two_processes_running_stages_of_one_recipe_lose_no_lock_entry(workspace):
    from trtpipe import recipe
    from trtpipe.runner import Runner, Selection

    path = workspace(CHAIN)
    first, second = (Runner(recipe.load(path), build_dir=workspace.dir / "build") for _ in range(2))
    second.run(Selection(until="b"))
    first.run(Selection(until="a"))  # its lock, read before the other's run, had no b
    lock = yaml.safe_load((workspace.dir / "tiny.lock.yaml").read_text())["stages"]
    assert list(lock) == ["source", "a", "b"]


def test_from_and_force(chain, capsys):
    assert run(chain, "--from", "b", "--force") == 0
    assert statuses(capsys) == {"source": "cached", "a": "cached", "b": "ran", "c": "ran"}
    assert run(chain, "--force", "a") == 0
    assert statuses(capsys) == {"source": "cached", "a": "ran", "b": "cached", "c": "cached"}


def test_show_json(chain, workspace, capsys):
    assert main(["show", str(chain), "b", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["outputs"]["model"] == str((workspace.dir / "build/tiny/b/model.onnx").resolve())
    assert shown["metrics"] == {"nodes": 4}
    assert main(["show", str(chain), "bb"]) == 2
    assert "did you mean 'b'?" in capsys.readouterr().err


def test_status(chain, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["status", str(chain), "--set", "stages.a.factor=7"]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and "params changed: factor" in out


def test_clean_drops_what_no_lock_uses(chain, workspace, capsys):
    assert run(chain, "--set", "stages.b.factor=4") == 0
    objects = workspace.dir / ".trtpipe/objects"
    before = len(list(objects.glob("*/*")))
    assert main(["clean", str(chain)]) == 0
    assert len(list(objects.glob("*/*"))) == before - 1, "b's old output is gone"
    capsys.readouterr()
    assert run(chain, "--set", "stages.b.factor=4") == 0
    assert set(statuses(capsys).values()) == {"cached"}


def test_cache_dir_option(workspace, tmp_path, capsys):
    path = workspace(CHAIN)
    store = tmp_path / "elsewhere"
    assert run(path, "--cache-dir", str(store)) == 0
    assert (store / "runs").is_dir() and not (workspace.dir / ".trtpipe").exists()
