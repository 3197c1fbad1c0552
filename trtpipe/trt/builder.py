"""ONNX -> serialized TensorRT engine: plugins loaded, the precision plan realized per TensorRT version (config),
one optimization profile from the recipe's shapes, the timing cache reused, failures named by ONNX node."""

from __future__ import annotations

import ctypes
import functools
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
import tensorrt as trt
from loguru import logger

from trtpipe.errors import BuildError, StageError
from trtpipe.trt import config, layers, precision
from trtpipe.trt.config import BuildOptions, Shapes
from trtpipe.trt.engines import Engines

TRT_TYPES = {"FLOAT": "fp32", "HALF": "fp16", "BF16": "bf16"}  # trt.DataType name -> plan type
PLAN_TO_TRT = {plan: name for name, plan in TRT_TYPES.items()}
NO_PRECISION = {"CONSTANT", "CAST", "SHAPE"}  # layer types whose precision means nothing
FAILURE_HINTS = [
    ("could not find any implementation", "no kernel satisfies this layer's precision, formats and workspace: try "
     "constraints: prefer, constrain: fp32 (only the plan's FP32 layers constrained), a larger workspace_mb, or FP32 "
     "for these nodes (fp32_nodes)"),
    ("profile", "the optimization profile comes from the recipe's inputs (shape, dims min/opt/max)"),
]
LIBNVINFER = f"libnvinfer.so.{trt.__version__.split('.')[0]}"  # the soname plugin libraries for this TensorRT link


class Log(trt.ILogger):
    """TensorRT's messages above VERBOSE (all of them while `verbose`), kept so that failures can quote them, and
    passed to loguru's debug log."""

    def __init__(self):
        trt.ILogger.__init__(self)
        self.lines: list[tuple[str, str]] = []
        self.verbose = False

    def log(self, severity, msg):
        if severity != trt.ILogger.VERBOSE or self.verbose:
            self.lines.append((severity.name, msg))
            logger.debug("TensorRT {}: {}", severity.name, msg)

    def errors(self, since: int = 0) -> list[str]:
        return [msg for severity, msg in self.lines[since:] if severity in ("ERROR", "INTERNAL_ERROR")]

    def write(self, path: Path | None, since: int) -> None:
        if path is not None:
            path.write_text("".join(f"[{s}] {m}\n" for s, m in self.lines[since:]))


LOG = Log()  # one logger for every builder and runtime: TensorRT keeps the first one as its global logger


@dataclass
class Built:
    plan: bytes
    onnx_plan: dict[str, str]  # ONNX node -> the float type it computes in
    metrics: dict


def build(
    onnx_path: Path,
    options: BuildOptions,
    shapes: Shapes | None = None,
    timing_cache: Path | None = None,
    log_path: Path | None = None,
    engines: Engines | None = None,
    reuse: bool = True,
) -> Built:
    """Builds `onnx_path`; `shapes` gives (min, opt, max) per input (default: the model's static shapes). With
    `engines`, an engine built before from the same (trtpipe.trt.engines) is returned while `reuse`, and a new one is
    kept there."""
    start, mark = time.perf_counter(), len(LOG.lines)
    load_plugins(options.plugins)
    version = config.parse_version(trt.__version__)
    model = onnx.load(str(onnx_path))
    pinned = []
    if options.fp32_nodes:
        model, pinned = precision.pin_fp32(model, options.fp32_nodes)
    types = precision.tensor_types(model)
    onnx_plan = precision.plan(model, types)
    setup = config.setup(options, version, set(types.values()))
    shapes = shapes or static_shapes(model)
    key = engines.key(onnx_path, options, shapes) if engines is not None else None
    if key and reuse and (kept := engines.get(key)) is not None:
        if log_path is not None:
            log_path.write_text(f"engine {key} built before: {engines.folder}\n")
        return Built(kept[0], onnx_plan, kept[1] | {"engine_reused": True})

    builder = trt.Builder(LOG)
    network = builder.create_network(bits(trt.NetworkDefinitionCreationFlag, setup.network_flags))
    parser = trt.OnnxParser(network, LOG)
    parsed = parser.parse(model.SerializeToString(), str(onnx_path)) if pinned else parser.parse_from_file(
        str(onnx_path)
    )
    if not parsed:
        LOG.write(log_path, mark)
        raise parse_failure(parser, model, log_path)
    constrained = constrain_layers(network, onnx_plan, setup.constrain_layers) if setup.constrain_layers else {}
    cfg = builder_config(builder, network, options, setup, shapes)
    cache_state = use_timing_cache(cfg, timing_cache)
    serialized = builder.build_serialized_network(network, cfg)
    LOG.write(log_path, mark)
    if serialized is None:
        raise build_failure(LOG.errors(mark), model, log_path)
    if timing_cache is not None:
        save_timing_cache(cfg, timing_cache)
    plan = bytes(serialized)
    built = Built(
        plan,
        onnx_plan,
        {
            "tensorrt": trt.__version__,
            "typing": setup.typing,
            "builder_flags": list(setup.flags),
            "precision_plan": dict(Counter(onnx_plan.values())),
            "fp32_pins": len(pinned),
            "constrained_layers": constrained,
            "network_layers": network.num_layers,
            "timing_cache": cache_state,
            "engine_bytes": len(plan),
            "build_seconds": round(time.perf_counter() - start, 2),
            "engine_reused": False,
        },
    )
    if key:
        engines.put(key, plan, built.metrics)
    return built


def load_plugins(paths) -> None:
    """TensorRT's own plugins, then each plugin library in `paths` not loaded yet. A plugin library registers its
    creators with TensorRT's registry when it is loaded (REGISTER_TENSORRT_PLUGIN: what polygraphy --plugins and
    trtexec --plugins load), so loading one is a dlopen, checked for new creators."""
    init_builtin_plugins()
    for path in (Path(p).resolve() for p in paths):  # a name without a slash would be searched for
        if not path.is_file():
            raise StageError(f"plugin library {path} does not exist")
        if not loaded(path):
            load_plugin(path)


def loaded(path: Path) -> bool:
    """Whether this process has loaded the library already (by any path), and so has run its registration."""
    try:
        ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD)
    except OSError:
        return False
    return True


def load_plugin(path: Path) -> None:
    shared_runtime()  # the registry logs to the logger of TensorRT's first builder or runtime: LOG
    before, mark, LOG.verbose = creator_count(), len(LOG.lines), True
    try:
        ctypes.CDLL(str(path))
    except OSError as e:
        raise StageError(f"could not load the plugin library {path}: {e}",
                         hint=f"TensorRT {trt.__version__}'s plugin libraries link {LIBNVINFER}; what the library "
                         "links must be found (LD_LIBRARY_PATH)") from None
    finally:
        LOG.verbose = False
    if creator_count() == before:
        said = "; ".join(f"[{severity}] {msg}" for severity, msg in LOG.lines[mark:]) or "nothing"
        raise StageError(f"the plugin library {path} registered no plugin creator; TensorRT said: {said}",
                         hint="a plugin library registers its creators when it is loaded (REGISTER_TENSORRT_PLUGIN; "
                         "one made only for IPluginRegistry::loadLibrary or trtexec --dynamicPlugins registers "
                         f"nothing) with the process's TensorRT ({LIBNVINFER}), once per name and version")


def creator_count() -> int:
    """The number of creators in TensorRT's plugin registry (TensorRT 10 lists IPluginV3 creators only in
    all_creators)."""
    registry = trt.get_plugin_registry()
    return len(registry.all_creators if hasattr(registry, "all_creators") else registry.plugin_creator_list)


@functools.cache
def init_builtin_plugins() -> None:
    trt.init_libnvinfer_plugins(LOG, "")


@functools.cache
def shared_runtime() -> trt.Runtime:
    """The process's one IRuntime (it must outlive the engines it deserializes)."""
    return trt.Runtime(LOG)


def constrain_layers(network, onnx_plan: dict[str, str], kinds: frozenset[str]) -> dict[str, int]:
    """Weak typing: each layer with float tensors constrained to the type its ONNX node computes in (the plan; the
    parser names a layer after its node), a layer of no node to the type precision.compute_type gives for its
    tensors; only where that type is one of `kinds`. The plan comes from the ONNX graph because a weakly typed
    network's own tensor types need not be the graph's ("Tensor DataType is determined at build time for tensors not
    marked as input or output", TensorRT 8.6). Returns the number of layers per type."""
    done = Counter()
    for layer in (network.get_layer(i) for i in range(network.num_layers)):
        if layer.type.name in NO_PRECISION:
            continue
        outputs = [layer.get_output(k) for k in range(layer.num_outputs)]
        tensors = [layer.get_input(k) for k in range(layer.num_inputs)] + outputs
        own = precision.compute_type(TRT_TYPES.get(t.dtype.name) for t in tensors if t is not None)
        if own is None:
            continue
        nodes = layers.onnx_nodes(layer.name, known=onnx_plan)
        kind = onnx_plan[nodes[0]] if nodes else own
        if kind not in kinds:
            continue
        dtype = getattr(trt.DataType, PLAN_TO_TRT[kind])
        layer.precision = dtype
        for k, out in enumerate(outputs):
            if out.dtype.name in TRT_TYPES:
                layer.set_output_type(k, dtype)
        done[kind] += 1
    return dict(done)


def builder_config(builder, network, options: BuildOptions, setup: config.Setup, shapes: Shapes):
    cfg = builder.create_builder_config()
    for flag in setup.flags:
        cfg.set_flag(member(trt.BuilderFlag, flag))
    for flag in setup.cleared:
        cfg.clear_flag(member(trt.BuilderFlag, flag))
    cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer details and ONNX names for the inspector
    cfg.builder_optimization_level = options.optimization_level
    if options.max_aux_streams is not None:
        cfg.max_aux_streams = options.max_aux_streams
    if options.workspace_mb is not None:
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if setup.tactic_sources is not None:
        cfg.set_tactic_sources(bits(trt.TacticSource, setup.tactic_sources))
    profile = builder.create_optimization_profile()
    for tensor in (network.get_input(i) for i in range(network.num_inputs)):
        profile.set_shape(tensor.name, *config.profile_shapes(tensor.name, tuple(tensor.shape), shapes))
    cfg.add_optimization_profile(profile)
    return cfg


def member(enum, name: str):
    if name not in enum.__members__:
        raise StageError(
            f"TensorRT {trt.__version__} has no {enum.__name__} '{name}'",
            hint=f"choose from: {', '.join(enum.__members__)}",
        )
    return enum.__members__[name]


def bits(enum, names) -> int:
    return sum(1 << int(member(enum, name)) for name in names)


def static_shapes(model: onnx.ModelProto) -> Shapes:
    initializers = {t.name for t in model.graph.initializer}
    shapes = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
        if min(dims, default=1) < 1:
            raise StageError(f"input '{value.name}' has dynamic dims {list(dims)}: give (min, opt, max) shapes for it")
        shapes[value.name] = (dims, dims, dims)
    return shapes


# Timing caches by file, kept for the life of the process: TensorRT 8.6 refused every cache file holding Myelin
# timings when a new process loaded it ("Myelin error from unknown graph ... The timing cache will not be used!",
# DAB-DETR-R50, H200), so each build of a search timed everything anew; builds in one process share one cache.
TIMING_CACHES: dict[Path, trt.ITimingCache] = {}


def use_timing_cache(cfg, path: Path | None) -> str:
    """"off", "in memory" (a build of this process made or loaded it), "loaded", "new" (no file yet) or "rejected"
    (TensorRT refused the file: a new cache, saved over it after the build)."""
    if path is None:
        return "off"
    path = path.resolve()
    if (cache := TIMING_CACHES.get(path)) is not None:
        cfg.set_timing_cache(cache, ignore_mismatch=False)
        return "in memory"
    blob = path.read_bytes() if path.is_file() else b""
    mark = len(LOG.lines)
    cache = cfg.create_timing_cache(blob)
    state = "loaded" if blob else "new"
    if cache is None or not cfg.set_timing_cache(cache, ignore_mismatch=False) or LOG.errors(mark):
        logger.warning("TensorRT refused the timing cache {}: {}", path, "; ".join(LOG.errors(mark)) or "no reason")
        cache, state = cfg.create_timing_cache(b""), "rejected"
        cfg.set_timing_cache(cache, ignore_mismatch=False)
    TIMING_CACHES[path] = cache
    return state


def save_timing_cache(cfg, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(bytes(cfg.get_timing_cache().serialize()))
    os.replace(temp, path)


# ---------------------------------------------------------------- failures, in terms of ONNX nodes


def parse_failure(parser, model: onnx.ModelProto, log_path: Path | None) -> StageError:
    error = parser.get_error(0)
    index = error.node()
    node = model.graph.node[index] if 0 <= index < len(model.graph.node) else None
    where = f" at ONNX node '{precision.node_name(node)}' ({node.op_type})" if node is not None else ""
    hint = None
    if error.code() == trt.ErrorCode.UNSUPPORTED_NODE and node is not None:
        hint = (f"if neither TensorRT nor a loaded plugin implements '{node.op_type}', list a plugin library under "
                "plugins: or rewrite the node (fuse-plugins)")
    return StageError(
        f"TensorRT {trt.__version__} could not parse the model{where}: {layers.squeeze(error.desc())}",
        hint=with_log(hint, log_path),
    )


def build_failure(errors: list[str], model: onnx.ModelProto, log_path: Path | None) -> BuildError:
    reasons = [layers.reason(e) for e in errors] or ["TensorRT gave no error message"]
    main = next((r for r in reasons if "could not find any implementation" in r.lower()), reasons[-1])
    ops = {precision.node_name(n): n.op_type for n in model.graph.node}
    nodes = layers.mentioned_nodes(main, ops)
    where = f"; ONNX nodes: {', '.join(f'{n} ({ops[n]})' for n in nodes)}" if nodes else ""
    hint = next((h for pattern, h in FAILURE_HINTS if pattern in main.lower()), None)
    return BuildError(f"TensorRT {trt.__version__} could not build the engine: {main}{where}",
                      hint=with_log(hint, log_path), nodes=layers.failed_nodes(main, list(ops)))


def with_log(hint: str | None, log_path: Path | None) -> str | None:
    return "; ".join(filter(None, [hint, f"TensorRT's log: {log_path}" if log_path else None])) or None
