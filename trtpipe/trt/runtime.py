"""A TensorRT engine on cuda-python: device buffers sized for the profile's largest shapes (so addresses never change),
one stream, name-based I/O (set_tensor_address, execute_async_v3), dynamic shapes (set_input_shape), and a CUDA graph
per input shape that falls back to plain enqueue when capture fails, with the reason kept in `graph_failures`."""

from __future__ import annotations

import json
import weakref
from collections import defaultdict

import numpy as np
import tensorrt as trt

from trtpipe.errors import StageError
from trtpipe.trt import cuda
from trtpipe.trt.builder import LOG, load_plugins, shared_runtime
from trtpipe.trt.cuda import cudart

NP_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
            "UINT8": np.uint8, "BOOL": np.bool_}


def np_type(dtype):
    if dtype.name == "BF16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return NP_TYPES[dtype.name]


def deserialize(plan: bytes, plugins=()) -> trt.ICudaEngine:
    load_plugins(plugins)
    mark = len(LOG.lines)
    engine = shared_runtime().deserialize_cuda_engine(plan)
    if engine is None:
        raise StageError("TensorRT could not load the engine", hint=" ".join(LOG.errors(mark)[-1:]) or None)
    return engine


class LayerTimer(trt.IProfiler):
    def __init__(self):
        trt.IProfiler.__init__(self)
        self.ms: dict[str, float] = defaultdict(float)

    def report_layer_time(self, layer_name, ms):
        self.ms[layer_name] += ms


class Session:
    """Runs an engine on named numpy arrays; `cuda_graph` switches CUDA graph replay on for `launch`."""

    def __init__(self, engine: trt.ICudaEngine, cuda_graph: bool = False):
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        dynamic = any(-1 in tuple(engine.get_tensor_shape(n)) for n in self.input_names)
        if dynamic and self.context.active_optimization_profile < 0:
            raise StageError(
                "another execution context holds this engine's optimization profile",
                hint=f"TensorRT {trt.__version__} gives an optimization profile to one execution context at a time "
                "(until 9.0): use one session per engine",
            )
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(np_type(engine.get_tensor_dtype(n))) for n in names}
        self.cuda_graph = cuda_graph
        self.graphs: dict[tuple, object | None] = {}
        self.graph_failures: dict[tuple, str] = {}
        self.stream = cuda.stream()
        self.buffers: dict[str, int] = {}
        self._release = weakref.finalize(self, release, self.buffers, self.graphs, self.stream)
        self.allocate()

    def allocate(self) -> None:
        """One device buffer per I/O tensor, for the profile's largest input shapes."""
        largest = {n: tuple(self.engine.get_tensor_profile_shape(n, 0)[2]) for n in self.input_names}
        self.set_shapes(largest)
        for name in self.input_names + self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if min(shape, default=0) < 0:
                raise StageError(f"output '{name}' has a data-dependent shape {list(shape)}, which trtpipe cannot run")
            self.buffers[name] = cuda.call(cudart.cudaMalloc, max(int(np.prod(shape)) * self.dtypes[name].itemsize, 1))
            self.context.set_tensor_address(name, self.buffers[name])

    def set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name in self.input_names:
            shape = tuple(shapes[name])
            if tuple(self.context.get_tensor_shape(name)) != shape and not self.context.set_input_shape(name, shape):
                lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
                raise StageError(
                    f"input '{name}' of shape {list(shape)} is outside the engine's profile {list(lo)}..{list(hi)}",
                    hint="the profile comes from the recipe's inputs (dims min/opt/max) when the engine is built",
                )

    def shape_key(self) -> tuple:
        return tuple(tuple(self.context.get_tensor_shape(n)) for n in self.input_names)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if missing := [n for n in self.input_names if n not in feeds]:
            raise StageError(f"no data for the engine's input '{missing[0]}' (given: {', '.join(feeds)})")
        self.set_shapes({n: np.shape(feeds[n]) for n in self.input_names})
        hosts = {n: np.ascontiguousarray(feeds[n], dtype=self.dtypes[n]) for n in self.input_names}
        for name, host in hosts.items():
            cuda.copy(self.buffers[name], host.ctypes.data, host.nbytes, "h2d", self.stream)
        self.launch()
        outputs = {n: np.empty(tuple(self.context.get_tensor_shape(n)), self.dtypes[n]) for n in self.output_names}
        for name, host in outputs.items():
            cuda.copy(host.ctypes.data, self.buffers[name], host.nbytes, "d2h", self.stream)
        cuda.synchronize(self.stream)
        return outputs

    def launch(self) -> None:
        """Run the engine once on the inputs already on the device: graph replay when on and captured."""
        graph = self.graph() if self.cuda_graph else None
        if graph is not None:
            cuda.call(cudart.cudaGraphLaunch, graph, self.stream)
        elif not self.enqueue():
            raise StageError("TensorRT could not enqueue the engine", hint=" ".join(LOG.errors()[-1:]) or None)

    def enqueue(self) -> bool:
        return self.context.execute_async_v3(int(self.stream))

    def graph(self):
        """The CUDA graph for the current input shapes, captured on first use; None when capture failed."""
        key = self.shape_key()
        if key not in self.graphs:
            # TensorRT finishes shape-dependent setup on the first enqueue after a shape change: keep it out of capture
            self.enqueue()
            cuda.synchronize(self.stream)
            self.graphs[key], failure = cuda.capture(self.stream, self.enqueue)
            if failure:
                self.graph_failures[key] = failure
        return self.graphs[key]

    def time(self, feeds: dict[str, np.ndarray], iterations: int, warmup: int) -> np.ndarray:
        """Milliseconds of GPU time per launch, one launch at a time (the inputs are uploaded once)."""
        self.run(feeds)
        for _ in range(warmup):
            self.launch()
        cuda.synchronize(self.stream)
        timer, times = cuda.Timer(self.stream), []
        try:
            for _ in range(iterations):
                timer.begin()
                self.launch()
                times.append(timer.elapsed_ms())
        finally:
            timer.close()
        return np.array(times)

    def layer_times(self, feeds: dict[str, np.ndarray], iterations: int) -> dict[str, float]:
        """Mean milliseconds per engine layer from TensorRT's IProfiler, on the session's own context (TensorRT 8.6
        gives a second context of an engine with dynamic shapes no optimization profile while this one holds it).
        The profiler serializes the layers and stays attached (TensorRT 8.6 refuses a null profiler), so take every
        latency measurement before this."""
        self.run(feeds)
        timer = LayerTimer()
        self.context.profiler = timer
        for _ in range(iterations):
            self.enqueue()
            cuda.synchronize(self.stream)
        return {name: total / iterations for name, total in timer.ms.items()}

    def describe(self) -> dict:
        """The engine inspector's JSON at the current input shapes. Run the session at those shapes first: for an
        engine with dynamic shapes TensorRT 8.6 reports every tensor's format and type as 'N/A due to dynamic
        shapes' until the context has run."""
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        # TensorRT 8.6 writes layer names and metadata into the JSON unescaped, newlines included
        return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON), strict=False)

    def close(self) -> None:
        self._release()


def release(buffers: dict[str, int], graphs: dict, stream) -> None:
    for graph in graphs.values():
        if graph is not None:
            cudart.cudaGraphExecDestroy(graph)
    for address in buffers.values():
        cudart.cudaFree(address)
    cudart.cudaStreamDestroy(stream)
