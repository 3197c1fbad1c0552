"""Broken recipes: each is exit 2 with a message naming the place and the cause, never a traceback."""

import pytest

from tests.conftest import TINY_HEAD
from trtpipe.cli import main

STAGES = "stages:\n  inspect: {uses: inspect}\n"

BROKEN = {
    "bad yaml": ("name: tiny\nmodel: {onnx: tiny.onnx\n", "recipe.yaml:3:1: invalid YAML"),
    "not a mapping": ("- just\n- a list\n", "a recipe is a YAML mapping"),
    "unknown stage type": (
        TINY_HEAD + "stages:\n  s: {uses: bogus_stage_xyz}\n",
        "unknown stage type 'bogus_stage_xyz'",
    ),
    "misspelt stage type": (TINY_HEAD + "stages:\n  s: {uses: inspekt}\n", "did you mean 'inspect'?"),
    "missing uses": (TINY_HEAD + "stages:\n  s: {after: []}\n", "stages.s: missing 'uses'"),
    "unknown param": (
        TINY_HEAD + "stages:\n  s: {uses: test-scale, factr: 2}\n",
        "unknown key 'factr' (did you mean 'factor'?)",
    ),
    "wrong param type": (
        TINY_HEAD + "stages:\n  s: {uses: test-scale, factor: big}\n",
        "stages.s.factor: Input should be a valid number",
    ),
    "cycle": (
        TINY_HEAD + "stages:\n  a: {uses: test-scale, after: [b]}\n  b: {uses: test-scale, after: [a]}\n",
        "dependency cycle: a after b, b after a",
    ),
    "missing dependency": (
        TINY_HEAD + "stages:\n  a: {uses: test-scale, after: [sourse]}\n",
        "no stage named 'sourse' (did you mean 'source'?)",
    ),
    "bad reference output": (
        TINY_HEAD + "stages:\n  a: {uses: test-scale}\n  b: {uses: inspect, model: a.modl}\n",
        "stage 'a' (test-scale) has no output 'modl' (did you mean 'model'?)",
    ),
    "bad reference syntax": (
        TINY_HEAD + "stages:\n  b: {uses: inspect, model: 'a model'}\n",
        "stages.b.model: String should match",
    ),
    "missing model file": (TINY_HEAD.replace("tiny.onnx", "nowhere.onnx") + STAGES, "no such file"),
    "bad shape": (
        "name: tiny\nmodel: {onnx: tiny.onnx}\ninputs:\n  x: {shape: [1, -4]}\n" + STAGES,
        "dimensions must be >= 1",
    ),
    "undeclared dim": (
        "name: tiny\nmodel: {onnx: tiny.onnx}\ninputs:\n  x: {shape: [batch, 4]}\n" + STAGES,
        "dynamic dim 'batch' has no entry in dims",
    ),
    "bad dim range": (
        "name: tiny\nmodel: {onnx: tiny.onnx}\ninputs:\n  x: {shape: [b, 4], dims: {b: {min: 8, opt: 1, max: 4}}}\n"
        + STAGES,
        "need min <= opt <= max",
    ),
    "bad dtype": (
        "name: tiny\nmodel: {onnx: tiny.onnx}\ninputs:\n  x: {shape: [1, 4], dtype: float33}\n" + STAGES,
        "inputs.x.dtype: Input should be 'float32'",
    ),
    "both model sources": (
        "name: tiny\nmodel: {onnx: tiny.onnx, factory: 'a.b:c'}\ninputs:\n  x: {shape: [1]}\n" + STAGES,
        "give exactly one of 'factory'",
    ),
    "bad factory syntax": (
        "name: tiny\nmodel: {factory: 'no colon'}\ninputs:\n  x: {shape: [1]}\n" + STAGES,
        "model.factory: String should match",
    ),
    "no inputs": (
        "name: tiny\nmodel: {onnx: tiny.onnx}\ninputs: {}\n" + STAGES,
        "inputs: Dictionary should have at least 1 item",
    ),
    "no stages": (TINY_HEAD + "stages: {}\n", "stages: Dictionary should have at least 1 item"),
    "bad target": (TINY_HEAD + "target: tensorrtt\n" + STAGES, "target: Input should be 'onnxruntime' or 'tensorrt'"),
    "bad name": (TINY_HEAD.replace("name: tiny", "name: 'a b'") + STAGES, "name: String should match"),
    "missing name": (TINY_HEAD.replace("name: tiny\n", "") + STAGES, "recipe.yaml:1:1: name: missing required key"),
    "bad seed pattern": (
        TINY_HEAD + "stages:\n  s: {uses: precision-search, budget: {y: {max_abs: 1.0}}, seeds: {a: ['/fc(']}}\n",
        "seed 'a': '/fc(' is not a regular expression",
    ),
    "factory recipe without model producer": (
        "name: t\nmodel: {factory: 'a.b:c'}\ninputs:\n  x: {shape: [1]}\nstages:\n  s: {uses: inspect}\n",
        "stage 's' has no model to work on",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_recipe(case, workspace, capsys):
    text, expected = BROKEN[case]
    path = workspace("", head=text)
    assert main(["run", str(path.name)]) == 2
    err = capsys.readouterr().err
    assert expected in err.replace("\n", " ")
    assert "Traceback" not in err


def test_error_points_at_line_and_column(workspace, capsys):
    path = workspace("stages:\n  a: {uses: test-scale}\n  b: {uses: test-scale, factor: [1]}\n")
    assert main(["run", path.name]) == 2
    assert "recipe.yaml:7:33: stages.b.factor" in capsys.readouterr().err


def test_unknown_stage_on_command_line(workspace, capsys):
    path = workspace("stages:\n  scale: {uses: test-scale}\n")
    assert main(["run", path.name, "--until", "scal"]) == 2
    assert "no stage named 'scal'" in capsys.readouterr().err


def test_missing_package_fails_before_running(workspace, capsys):
    path = workspace("stages:\n  scale: {uses: test-scale}\n  gpu: {uses: test-needs-missing}\n")
    assert main(["run", path.name]) == 2
    assert "stage 'gpu' needs trtpipe_no_such_module: pip install 'trtpipe[trt]'" in capsys.readouterr().err
    assert not (workspace.dir / "tiny.lock.yaml").exists()


def test_set_override_is_validated(workspace, capsys):
    path = workspace("stages:\n  scale: {uses: test-scale}\n")
    assert main(["run", path.name, "--set", "stages.scale.factor=oops"]) == 2
    assert "stages.scale.factor" in capsys.readouterr().err
    assert main(["run", path.name, "--set", "nonsense"]) == 2
    assert "expected key.path=value" in capsys.readouterr().err
