"""Builder setup per TensorRT version (8.6, 10.x, 11.x), profile shapes, and what the cache keys of TensorRT stages
hold. Pure Python: no TensorRT needed."""

import importlib.util

import pytest

from trtpipe.errors import StageError
from trtpipe.trt.config import BuildOptions, parse_version, profile_shapes, setup, timing_cache_path

MIXED = {"fp32", "fp16"}


def test_versions_parse_from_tensorrt_strings():
    assert parse_version("8.6.1") == (8, 6)
    assert parse_version("10.12.0.36") == (10, 12)
    assert parse_version("11.0.0") == (11, 0)


def test_8_6_is_weakly_typed_with_flags_and_obeyed_layer_types():
    s = setup(BuildOptions(), (8, 6), MIXED)
    assert s.typing == "weak"
    assert s.network_flags == ("EXPLICIT_BATCH",)
    assert s.flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert s.constrain_layers
    assert s.cleared == ("TF32",)
    assert "CUBLAS" not in s.tactic_sources and "CUDNN" not in s.tactic_sources


def test_8_6_prefer_constraints_and_an_fp32_graph():
    assert setup(BuildOptions(constraints="prefer"), (8, 6), MIXED).flags == ("FP16", "PREFER_PRECISION_CONSTRAINTS")
    fp32 = setup(BuildOptions(), (8, 6), {"fp32"})
    assert fp32.flags == () and not fp32.constrain_layers


def test_constrain_fp32_leaves_the_low_precision_layers_to_tensorrt():
    assert setup(BuildOptions(), (8, 6), MIXED).constrain_layers == {"fp16", "fp32"}
    s = setup(BuildOptions(constraints="prefer", constrain="fp32"), (8, 6), MIXED)
    assert s.constrain_layers == {"fp32"} and s.flags == ("FP16", "PREFER_PRECISION_CONSTRAINTS")
    assert not setup(BuildOptions(constrain="fp32"), (8, 6), {"fp32"}).constrain_layers
    assert not setup(BuildOptions(constrain="fp32"), (10, 12), MIXED).constrain_layers


def test_8_6_naive_fp16_lets_tensorrt_choose():
    s = setup(BuildOptions(precision="fp16", tf32=True), (8, 6), {"fp32"})
    assert s.flags == ("FP16", "TF32") and not s.constrain_layers and s.cleared == ()


@pytest.mark.parametrize(
    ("options", "version", "types", "says"),
    [
        (BuildOptions(typing="strong"), (8, 6), MIXED, "no strongly typed networks"),
        (BuildOptions(), (8, 6), {"fp32", "bf16"}, "has no BF16"),
        (BuildOptions(typing="weak"), (11, 0), MIXED, "strongly typed networks only"),
        (BuildOptions(precision="fp16"), (11, 0), {"fp32"}, "cannot do"),
        (BuildOptions(precision="fp16"), (10, 12), {"fp32"}, "cannot do"),
        (BuildOptions(precision="fp16", fp32_nodes=["a"]), (8, 6), {"fp32"}, "needs precision: graph"),
    ],
)
def test_impossible_combinations_are_refused(options, version, types, says):
    with pytest.raises(StageError, match=says):
        setup(options, version, types)


def test_10_x_before_10_12_is_weak_by_default_and_strong_on_request():
    weak = setup(BuildOptions(), (10, 8), {"fp32", "bf16"})
    assert weak.typing == "weak" and weak.network_flags == () and weak.flags == ("BF16", "OBEY_PRECISION_CONSTRAINTS")
    assert weak.tactic_sources is None
    strong = setup(BuildOptions(typing="strong"), (10, 8), MIXED)
    assert strong.network_flags == ("STRONGLY_TYPED",) and strong.flags == () and not strong.constrain_layers


def test_10_12_and_later_are_strongly_typed_by_default():
    s = setup(BuildOptions(), (10, 12), MIXED)
    assert s.typing == "strong" and s.network_flags == ("STRONGLY_TYPED",) and s.flags == ()
    assert setup(BuildOptions(typing="weak"), (10, 12), MIXED).typing == "weak"


def test_11_is_strongly_typed_without_precision_flags():
    for options in (BuildOptions(), BuildOptions(constraints="prefer"), BuildOptions(constraints="none")):
        s = setup(options, (11, 0), MIXED)
        assert s.typing == "strong" and s.network_flags == () and s.flags == () and not s.constrain_layers


def test_same_recipe_leaves_tensorrt_no_precision_choice_in_either_world():
    """Weak typing constrains every layer to the graph's types; strong typing takes them as they are."""
    weak, strong = setup(BuildOptions(), (8, 6), MIXED), setup(BuildOptions(), (10, 12), MIXED)
    assert weak.constrain_layers and "OBEY_PRECISION_CONSTRAINTS" in weak.flags
    assert strong.typing == "strong"


def test_other_builder_settings():
    s = setup(BuildOptions(sparse_weights=True, tactic_sources=["CUBLAS_LT"], tf32=True), (8, 6), {"fp32"})
    assert "SPARSE_WEIGHTS" in s.flags and "TF32" in s.flags and s.tactic_sources == ("CUBLAS_LT",)


def test_profile_shapes_follow_the_recipe_and_respect_static_dims():
    shapes = {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))}
    assert profile_shapes("x", (-1, 3, 8, 8), shapes) == shapes["x"]
    with pytest.raises(StageError, match="dim 0 is 2 in the model, the recipe asks for 1..8"):
        profile_shapes("x", (2, 3, 8, 8), shapes)
    with pytest.raises(StageError, match="has 3 dims in the model"):
        profile_shapes("x", (-1, 3, 8), shapes)
    with pytest.raises(StageError, match="input 'mask' is not among the recipe's inputs"):
        profile_shapes("mask", (1,), shapes)


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path):
    h100 = {"tensorrt": "8.6.1", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    path = timing_cache_path(tmp_path, h100)
    assert path.name == "timing-8.6.1-nvidia-h100-80gb-hbm3-sm90.cache"
    assert timing_cache_path(tmp_path, {**h100, "gpu": "NVIDIA H200"}) != path
    assert timing_cache_path(tmp_path, {**h100, "tensorrt": "10.13.0"}) != path


TRT_RECIPE = """stages:
  build: {uses: build}
  profile: {uses: profile, engine: build.engine}
  compare: {uses: compare, engine: build.engine, reference: source.model}
"""


@pytest.fixture
def gpu_facts(monkeypatch):
    """Environment facts as the TensorRT backend reports them, set by the test (this machine has no GPU)."""
    from trtpipe.backends import tensorrt

    facts = {"tensorrt": "8.6.1", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    monkeypatch.setattr(tensorrt, "facts", lambda: dict(facts))
    return facts


def test_cache_keys_of_tensorrt_stages_hold_tensorrt_version_and_gpu(workspace, gpu_facts):
    from trtpipe import recipe
    from trtpipe.cli import main
    from trtpipe.runner import Runner, Selection

    path = workspace(TRT_RECIPE)
    assert main(["run", str(path), "--until", "source"]) == 0

    def runner():
        return Runner(recipe.load(path, target="tensorrt"))

    def build_key():
        return next(run.key for run in runner().plan(Selection()) if run.name == "build")

    for name in ("build", "profile", "compare"):
        assert runner().key_material(name, runner().recipe.stage(name), {})["env"] == gpu_facts
    before = build_key()
    assert before is not None
    for change in ({"gpu": "NVIDIA H200"}, {"compute_capability": "8.0"}, {"tensorrt": "10.13.0"}):
        saved = dict(gpu_facts)
        gpu_facts.update(change)
        assert build_key() != before, change
        gpu_facts.update(saved)
    assert build_key() == before


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs the tensorrt package (no GPU needed)")
def test_setup_names_exist_in_the_installed_tensorrt():
    import tensorrt as trt

    version = parse_version(trt.__version__)
    for types in ({"fp32"}, MIXED):
        for options in (BuildOptions(), BuildOptions(constraints="prefer", sparse_weights=True, tf32=True)):
            s = setup(options, version, types)
            assert set(s.network_flags) <= set(trt.NetworkDefinitionCreationFlag.__members__)
            assert set(s.flags + s.cleared) <= set(trt.BuilderFlag.__members__)
            assert set(s.tactic_sources or ()) <= set(trt.TacticSource.__members__)
