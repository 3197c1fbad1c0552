"""TensorRT on a GPU: build (FP32, mixed, plugin), run, compare, profile, CUDA graphs, aux streams, caches.

On the GPU machine, from the project root:
    bash /opt/trtparts/install.sh && . /opt/trt/env.sh && python -m pytest -m gpu tests/test_trt_gpu.py
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from trtpipe.errors import StageError
from trtpipe.metrics import error_stats

pytestmark = pytest.mark.gpu

SHAPES = {"x": ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))}


def conv_model(path: Path, mixed: bool = False) -> Path:
    """x[N,3,16,16] -> two conv branches (3x3+Relu, 1x1+Sigmoid) -> Add -> GlobalAveragePool -> Gemm -> Softmax.
    mixed: the branches and their Add in FP16 (Casts at the edges), the head in FP32."""
    rng = np.random.default_rng(0)
    low = np.float16 if mixed else np.float32

    def weight(name, shape, dtype=low):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(dtype), name)

    inits = [weight("wa", (8, 3, 3, 3)), weight("ba", (8,)), weight("wb", (8, 3, 1, 1)), weight("bb", (8,)),
             weight("wg", (8, 10), np.float32), weight("bg", (10,), np.float32)]
    x = "x16" if mixed else "x"
    s = "s16" if mixed else "s"
    nodes = [
        helper.make_node("Conv", [x, "wa", "ba"], ["a"], name="/a/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="/a/Relu"),
        helper.make_node("Conv", [x, "wb", "bb"], ["b"], name="/b/Conv"),
        helper.make_node("Sigmoid", ["b"], ["sb"], name="/b/Sigmoid"),
        helper.make_node("Add", ["ra", "sb"], [s], name="/merge/Add"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], name="/head/Pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/head/Flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], name="/head/Gemm"),
        helper.make_node("Softmax", ["logits"], ["y"], name="/head/Softmax", axis=-1),
    ]
    if mixed:
        nodes.insert(0, helper.make_node("Cast", ["x"], ["x16"], name="/in/Cast", to=TensorProto.FLOAT16))
        nodes.insert(6, helper.make_node("Cast", ["s16"], ["s"], name="/merge/Cast", to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes, "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    return path


def layernorm_plugin_model(path: Path, cols: int = 32) -> Path:
    """x[B,16,cols] -> TensorRT's LayerNorm plugin (as fuse-plugins writes it) over the last axis -> y."""
    rng = np.random.default_rng(1)
    gamma = numpy_helper.from_array(rng.uniform(0.5, 1.5, cols).astype(np.float32), "gamma")
    beta = numpy_helper.from_array(rng.uniform(-0.5, 0.5, cols).astype(np.float32), "beta")
    node = helper.make_node("LayerNorm", ["x", "gamma", "beta"], ["y"], name="/ln/LayerNorm", domain="trt.plugins",
                            epsilon=1e-5, axis=-1, plugin_version="1", plugin_namespace="")
    graph = helper.make_graph(
        [node], "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 16, cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 16, cols])],
        [gamma, beta],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("trt.plugins", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), str(path))
    return path


def inputs(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).uniform(-1, 1, (batch, 3, 16, 16)).astype(np.float32)}


def onnxruntime(path: Path, feeds) -> dict[str, np.ndarray]:
    from trtpipe.backends.onnxruntime import OrtSession

    return OrtSession(path).run(feeds)


@pytest.fixture
def load(tmp_path):
    """TensorRT().load with the timing cache in tmp_path."""
    from trtpipe.backends.tensorrt import TensorRT

    def load_(path, **options):
        return TensorRT().load(path, cache_dir=tmp_path / "cache", **{"shapes": SHAPES, **options})

    return load_


def test_fp32_engine_matches_onnxruntime_at_every_batch(tmp_path, load):
    path = conv_model(tmp_path / "fp32.onnx")
    session = load(path)
    for batch in (1, 4, 2):
        feeds = inputs(batch, seed=batch)
        stats = error_stats(session.run(feeds)["y"], onnxruntime(path, feeds)["y"])
        assert stats["max_abs"] < 1e-5, (batch, stats)


@pytest.mark.parametrize("constraints", ["obey", "prefer"])
def test_mixed_engine_runs_the_graph_precision_plan(tmp_path, constraints):
    from trtpipe.trt import builder, layers, runtime
    from trtpipe.trt.config import BuildOptions

    path = conv_model(tmp_path / "mixed.onnx", mixed=True)
    built = builder.build(path, BuildOptions(constraints=constraints), SHAPES)
    assert built.onnx_plan["/a/Conv"] == "fp16" and built.onnx_plan["/head/Gemm"] == "fp32"
    fp16_nodes = [node for node, kind in built.onnx_plan.items() if kind == "fp16"]
    assert built.metrics["constrained_layers"]["fp16"] == len(fp16_nodes) == 5  # one layer per node
    session = runtime.Session(runtime.deserialize(built.plan))
    feeds = inputs(2)
    out = session.run(feeds)["y"]
    info = session.describe()
    rows = layers.table(info, known=built.onnx_plan)
    mismatches = layers.plan_mismatches(rows, built.onnx_plan)
    assert mismatches == [], [layer for layer in info["Layers"] if layer["Name"] in {m["layer"] for m in mismatches}]
    assert any(r["precision"] == "fp16" for r in rows) and any(r["precision"] == "fp32" for r in rows)
    fp32 = onnxruntime(conv_model(tmp_path / "fp32.onnx"), feeds)["y"]
    assert error_stats(out, fp32)["max_abs"] < 5e-3


def test_constrain_fp32_pins_only_the_plans_fp32_layers(tmp_path):
    from trtpipe.trt import builder, layers, runtime
    from trtpipe.trt.config import BuildOptions

    path = conv_model(tmp_path / "mixed.onnx", mixed=True)
    built = builder.build(path, BuildOptions(constraints="prefer", constrain="fp32"), SHAPES)
    fp32_nodes = [node for node, kind in built.onnx_plan.items() if kind == "fp32"]
    constrained = built.metrics["constrained_layers"]  # with the layers of no node whose tensors are FP32
    assert list(constrained) == ["fp32"] and constrained["fp32"] >= len(fp32_nodes) > 0
    session = runtime.Session(runtime.deserialize(built.plan))
    rows = layers.table(session.describe(), known=built.onnx_plan)
    assert all(m["plan"] == "fp16" for m in layers.plan_mismatches(rows, built.onnx_plan))
    feeds = inputs(2)
    fp32 = onnxruntime(conv_model(tmp_path / "fp32.onnx"), feeds)["y"]
    assert error_stats(session.run(feeds)["y"], fp32)["max_abs"] < 5e-3


def test_naive_fp16_build_lets_tensorrt_choose(tmp_path):
    import tensorrt as trt

    from trtpipe.trt import builder, config, runtime

    if config.parse_version(trt.__version__) >= config.WEAK_UNTIL:
        pytest.skip("TensorRT 11 builds strongly typed networks only")
    path = conv_model(tmp_path / "fp32.onnx")
    built = builder.build(path, config.BuildOptions(precision="fp16", typing="weak"), SHAPES)
    assert "FP16" in built.metrics["builder_flags"] and built.metrics["constrained_layers"] == {}
    feeds = inputs(2)
    out = runtime.Session(runtime.deserialize(built.plan)).run(feeds)["y"]
    assert error_stats(out, onnxruntime(path, feeds)["y"])["max_abs"] < 1e-2


def test_cuda_graphs_per_input_shape_give_the_same_outputs(tmp_path, load):
    session = load(conv_model(tmp_path / "fp32.onnx"))
    batches = [inputs(batch, seed=batch) for batch in (1, 4, 1)]
    plain = [session.run(feeds)["y"] for feeds in batches]
    session.cuda_graph = True  # the third run replays the first one's graph, right after the batch-4 capture
    for feeds, expected in zip(batches, plain):
        np.testing.assert_allclose(session.run(feeds)["y"], expected, rtol=0, atol=1e-7)
    assert len(session.graphs) == 2 and all(g is not None for g in session.graphs.values())
    assert session.graph_failures == {}
    times = session.time(inputs(4), iterations=20, warmup=5)
    assert times.shape == (20,) and (times > 0).all()


def test_a_second_session_of_a_dynamic_engine(tmp_path, load):
    import tensorrt as trt

    from trtpipe.trt import config, runtime

    first = load(conv_model(tmp_path / "fp32.onnx"))
    if config.parse_version(trt.__version__) < (9, 0):  # one execution context per optimization profile
        with pytest.raises(StageError, match="another execution context holds this engine's optimization profile"):
            runtime.Session(first.engine)
    else:
        feeds = inputs(3)
        np.testing.assert_array_equal(runtime.Session(first.engine).run(feeds)["y"], first.run(feeds)["y"])


def test_failed_capture_falls_back_to_enqueue_and_says_why(tmp_path, load):
    from trtpipe.trt.cuda import cudart

    session = load(conv_model(tmp_path / "fp32.onnx"), cuda_graph=True)
    enqueue = session.enqueue

    def synchronizing_enqueue():  # a stream sync is illegal while capturing: it breaks the capture
        cudart.cudaStreamSynchronize(session.stream)
        return enqueue()

    session.enqueue = synchronizing_enqueue
    feeds = inputs(2)
    out = session.run(feeds)["y"]
    assert list(session.graphs.values()) == [None]
    assert "capture" in next(iter(session.graph_failures.values()))
    assert error_stats(out, onnxruntime(tmp_path / "fp32.onnx", feeds)["y"])["max_abs"] < 1e-5


def test_aux_streams_on_and_off(tmp_path, load):
    path = conv_model(tmp_path / "fp32.onnx")
    off, on = load(path, max_aux_streams=0, cuda_graph=True), load(path, max_aux_streams=2, cuda_graph=True)
    assert off.engine.num_aux_streams == 0
    assert 0 <= on.engine.num_aux_streams <= 2
    feeds = inputs(4)
    np.testing.assert_allclose(on.run(feeds)["y"], off.run(feeds)["y"], rtol=0, atol=1e-5)
    assert on.graph_failures == {} and off.graph_failures == {}


def test_timing_cache_is_written_and_reused(tmp_path):
    """Builds of one process share the cache in memory; a new process loads the file, or says that TensorRT refused
    it (8.6 refused caches with Myelin timings from other processes, "Myelin error from unknown graph")."""
    import subprocess
    import sys

    from trtpipe.trt import builder
    from trtpipe.trt.config import BuildOptions

    cache = tmp_path / "timing.cache"
    first = builder.build(conv_model(tmp_path / "fp32.onnx"), BuildOptions(), SHAPES, timing_cache=cache)
    assert first.metrics["timing_cache"] == "new" and cache.stat().st_size > 0
    size = cache.stat().st_size
    second = builder.build(tmp_path / "fp32.onnx", BuildOptions(optimization_level=2), SHAPES, timing_cache=cache)
    assert second.metrics["timing_cache"] == "in memory"
    third = builder.build(conv_model(tmp_path / "mixed.onnx", mixed=True), BuildOptions(), SHAPES, timing_cache=cache)
    assert third.metrics["timing_cache"] == "in memory" and cache.stat().st_size >= size
    script = ("import sys; from pathlib import Path; from trtpipe.trt import builder; from trtpipe.trt.config import "
              f"BuildOptions; built = builder.build(Path(sys.argv[1]), BuildOptions(), {SHAPES!r}, "
              "timing_cache=Path(sys.argv[2])); print(built.metrics['timing_cache'], "
              "any('timing cache will not be used' in e for e in builder.LOG.errors()))")
    new_process = subprocess.run([sys.executable, "-c", script, str(tmp_path / "fp32.onnx"), str(cache)],
                                 capture_output=True, text=True, check=True)
    state, refused = new_process.stdout.split()[-2:]
    assert state == ("rejected" if refused == "True" else "loaded")


def test_a_timing_cache_tensorrt_refuses_is_replaced(tmp_path):
    from trtpipe.trt import builder
    from trtpipe.trt.config import BuildOptions

    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"not a timing cache" * 64)
    built = builder.build(conv_model(tmp_path / "fp32.onnx"), BuildOptions(), SHAPES, timing_cache=cache)
    assert built.metrics["timing_cache"] == "rejected"
    assert not cache.read_bytes().startswith(b"not a timing cache")


@pytest.mark.parametrize(("cols", "epsilon"), [(64, 1e-5), (32, 1e-5 * 32**2)])
def test_layernorm_plugin_model(tmp_path, load, cols, epsilon):
    """The plugin normalizes with the epsilon it is given, except for rows of <= 32 values: there its kernel
    (LayerNormSmallKernel, TensorRT 8.5.3 plugin/layerNormPlugin) scales x by 1/cols before squaring, which makes
    the epsilon cols**2 times larger. fuse-plugins therefore keeps such LayerNorms off this plugin."""
    from trtpipe.trt import layers

    path = layernorm_plugin_model(tmp_path / "ln.onnx", cols)
    session = load(path, shapes={"x": ((1, 16, cols), (2, 16, cols), (8, 16, cols))})
    x = np.random.default_rng(2).standard_normal((3, 16, cols)).astype(np.float32) * 3 + 1
    gamma, beta = (numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + epsilon) * gamma + beta
    assert error_stats(session.run({"x": x})["y"], expected)["max_abs"] < 1e-4
    rows = layers.table(session.describe())
    assert any("/ln/LayerNorm" in r["onnx_nodes"] and "Plugin" in r["type"] for r in rows), rows


def test_unsupported_op_names_the_onnx_node(tmp_path):
    from trtpipe.trt import builder
    from trtpipe.trt.config import BuildOptions

    path = layernorm_plugin_model(tmp_path / "bad.onnx")
    model = onnx.load(str(path))
    model.graph.node[0].op_type = "NoSuchOp"
    model.graph.node[0].name = "/bad/NoSuchOp"
    onnx.save(model, str(path))
    with pytest.raises(StageError, match=r"at ONNX node '/bad/NoSuchOp' \(NoSuchOp\)") as error:
        builder.build(path, BuildOptions(), {"x": ((1, 16, 32),) * 3})
    assert "plugins:" in error.value.hint


def test_shapes_outside_the_profile_are_refused(tmp_path, load):
    session = load(conv_model(tmp_path / "fp32.onnx"))
    with pytest.raises(StageError, match=r"outside the engine's profile \[1, 3, 16, 16\]..\[4, 3, 16, 16\]"):
        session.run(inputs(8))


RECIPE = """name: conv
model: {onnx: model.onnx}
inputs:
  x: {shape: [N, 3, 16, 16], dims: {N: {min: 1, opt: 2, max: 4}}, low: -1.0, high: 1.0}
target: tensorrt
stages:
  build: {uses: build}
  profile: {uses: profile, engine: build.engine, warmup: 5, iterations: 50, layer_iterations: 5}
  compare: {uses: compare, engine: build.engine, reference: source.model, tolerances: {y: {max_abs: TOL}}}
"""


@pytest.mark.parametrize(("mixed", "tolerance"), [(False, 1e-5), (True, 5e-3)])
def test_recipe_builds_profiles_compares_and_caches_the_engine(tmp_path, monkeypatch, mixed, tolerance):
    from trtpipe import recipe
    from trtpipe.runner import Runner, Selection

    monkeypatch.chdir(tmp_path)
    conv_model(tmp_path / "model.onnx", mixed=mixed)
    path = tmp_path / "conv.yaml"
    path.write_text(RECIPE.replace("TOL", f"{tolerance:.1e}"))
    runs = Runner(recipe.load(path)).run(Selection())
    assert [r.status for r in runs] == ["ran"] * 4
    lock = yaml.safe_load((tmp_path / "conv.lock.yaml").read_text())["stages"]
    build, profile = lock["build"]["metrics"], lock["profile"]["metrics"]
    assert build["plan_mismatches"] == 0 and build["engine_layers"] > 0
    assert build["typing"] in ("weak", "strong") and build["timing_cache"] == "new"
    assert set(build["precision_plan"]) == ({"fp16", "fp32"} if mixed else {"fp32"})
    assert {"enqueue", "cuda_graph"} <= set(profile["latency"]) and profile["cuda_graph_fallback"] is None
    assert profile["latency_ms"] > 0 and "reformat_layers" in profile
    assert sum(profile["layers_per_precision"].values()) > 0 and profile["top_layers"][0]["time_ms"] > 0
    assert lock["compare"]["metrics"]["y_max_abs"] <= tolerance
    rerun = Runner(recipe.load(path)).run(Selection())
    assert [r.status for r in rerun] == ["cached"] * 4
    forced = Runner(recipe.load(path)).run(Selection(force=["build"]))
    assert forced[1].status == "ran" and forced[1].metrics["timing_cache"] == "in memory"
    assert forced[1].metrics["engine_reused"] is False


SEARCH_RECIPE = """name: search
model: {onnx: model.onnx}
inputs:
  x: {shape: [2, 3, 16, 16], low: -1.0, high: 1.0}
target: tensorrt
stages:
  precision-search: {uses: precision-search, budget: {y: {max_abs: 0.05}}, builder: {optimization_level: 1}}
  build: {uses: build, after: [precision-search], optimization_level: 1}
  compare: {uses: compare, engine: build.engine, reference: source.model}
"""


def test_the_build_after_a_search_ships_the_engine_the_search_measured(tmp_path, monkeypatch):
    from trtpipe import recipe
    from trtpipe.runner import Runner, Selection

    monkeypatch.chdir(tmp_path)
    conv_model(tmp_path / "model.onnx")
    path = tmp_path / "search.yaml"
    path.write_text(SEARCH_RECIPE)
    runs = {r.name: r for r in Runner(recipe.load(path)).run(Selection())}
    plan = json.loads(Path("build/search/precision-search/plan.json").read_text())
    built = plan["candidates"][0]
    if "build" in built["violations"]:
        # TensorRT 8.6 with OBEY constraints, FP16 everywhere: "No supported formats for reshape_after_/head/Gemm",
        # a shuffle its builder adds when it makes the Gemm a convolution (H200, 2026-11-22); that node stays FP32
        assert "reshape_after_/head/Gemm" in built["violations"]["build"][0]
        assert [n["chosen_by"] for n in plan["fp32_nodes"] if n["node"] == "/head/Gemm"] == ["search:build"]
        built = plan["candidates"][1]
    assert built["met"] and built["latency_ms"] > 0  # FP16 everywhere else meets the budget; CUDA graph replay
    assert runs["precision-search"].metrics["evaluations"] == len(plan["candidates"])
    assert runs["build"].metrics["engine_reused"] is True
    searched = runs["precision-search"].metrics["errors"]["y"]["max_abs"]
    assert runs["compare"].metrics["y_max_abs"] == pytest.approx(searched, rel=1e-3)
    forced = {r.name: r for r in Runner(recipe.load(path)).run(Selection(force=["build"]))}
    assert forced["build"].metrics["engine_reused"] is False
