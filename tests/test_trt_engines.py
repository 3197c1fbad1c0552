"""The engine store (trtpipe.trt.engines): what a key depends on, reuse, and pruning; no TensorRT needed."""

from pathlib import Path

import pytest

from trtpipe.stages.build import Build
from trtpipe.trt.config import BuildOptions
from trtpipe.trt.engines import Engines

ENV = {"tensorrt": "8.6.1", "gpu": "NVIDIA H200", "compute_capability": "9.0"}
SHAPES = {"x": ((1, 3), (2, 3), (4, 3))}


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("model.onnx", "other.onnx", "plugin.so")}
    for name, path in paths.items():
        path.write_bytes(name.encode())
    return paths


def test_key_follows_the_graph_options_plugins_shapes_and_environment(tmp_path, files):
    engines = Engines(tmp_path / "engines", ENV)
    options = BuildOptions(optimization_level=2, plugins=[files["plugin.so"]])
    key = engines.key(files["model.onnx"], options, SHAPES)
    same = BuildOptions(optimization_level=2, plugins=[files["plugin.so"]])
    assert engines.key(files["model.onnx"], same, SHAPES) == key
    changed = [
        engines.key(files["other.onnx"], options, SHAPES),
        engines.key(files["model.onnx"], options.model_copy(update={"optimization_level": 3}), SHAPES),
        engines.key(files["model.onnx"], options, {"x": ((1, 3), (4, 3), (4, 3))}),
        Engines(tmp_path, ENV | {"tensorrt": "10.13.0"}).key(files["model.onnx"], options, SHAPES),
    ]
    files["plugin.so"].write_bytes(b"rebuilt")
    changed.append(engines.key(files["model.onnx"], options, SHAPES))
    assert len({key, *changed}) == 6


def test_a_build_stage_and_the_search_builder_with_the_same_options_share_a_key(tmp_path, files):
    engines = Engines(tmp_path, ENV)
    stage = Build(uses="build", after=["precision-search"], optimization_level=2, constraints="prefer",
                  constrain="fp32")
    builder = BuildOptions(optimization_level=2, constraints="prefer", constrain="fp32")
    assert engines.key(files["model.onnx"], stage, SHAPES) == engines.key(files["model.onnx"], builder, SHAPES)


def test_put_then_get_and_the_least_recently_used_go_beyond_the_limit(tmp_path):
    engines = Engines(tmp_path / "engines", ENV, max_bytes=25)
    assert engines.get("a") is None
    engines.put("a", b"A" * 10, {"build_seconds": 1.0})
    assert engines.get("a") == (b"A" * 10, {"build_seconds": 1.0})
    engines.put("b", b"B" * 10, {})
    engines.get("a")  # used after b was built: b goes first
    engines.put("c", b"C" * 10, {})
    assert engines.get("b") is None and engines.get("a") is not None and engines.get("c") is not None
    engines.put("d", b"D" * 100, {})  # over the limit alone: kept, as the newest
    assert engines.get("d") is not None and not any(engines.get(k) for k in "abc")
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == ["d.engine", "d.json"]
