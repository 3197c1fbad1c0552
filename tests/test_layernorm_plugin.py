"""GPU tests of trtpipe's LayerNorm (plugins_src/layernorm, built by `make plugins`): the kernels through their C API
against a float64 numpy reference, and the TensorRT plugin built from an ONNX node written the way fuse-plugins writes
it. They need a python with tensorrt and cuda-python (the TensorRT bundle's); torch is not used.

Error = max |y - ref| / max(1, |ref|): absolute up to |ref| = 1, relative above, where FP16's own rounding step
exceeds the 1e-3 tolerance."""

import ctypes
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.gpu

BUILD = Path(__file__).resolve().parents[1] / "build" / "plugins"
TOLERANCE = {np.float32: 1e-5, np.float16: 1e-3}
GUARD = 256  # poisoned bytes kept on either side of an output
CUDA_ERROR_INVALID_VALUE = 1

# (rows, cols) reaching every kernel path: rows in registers held by 1 to 32 lanes and by 2 to 8 warps (barriers),
# several rows per group where the rows outnumber the resident groups (65536 x 64; 5001 x 2048, an odd count with two
# rows per block in FP16), odd and non-pack-multiple cols (narrower packs), block per row with the row in shared
# memory (above 48 KiB for 20000 FP32 values), and rows beyond shared memory (70001 FP32 values: three passes over x).
SHAPES = [(1, 32), (3, 33), (257, 100), (1000, 127), (11, 330), (4096, 256), (513, 768), (64, 1000), (7, 1023),
          (2000, 1024), (65536, 64), (5, 1025), (9, 1030), (5001, 2048), (33, 3072), (17, 4095), (64, 8192),
          (2, 20000), (3, 70001)]


class Gpu:
    """Device memory through cuda-python's driver API, on the primary context (the one TensorRT and the kernels'
    statically linked cudart use)."""

    def __init__(self):
        from cuda.bindings import driver

        self.cu = driver
        self.call(driver.cuInit, 0)
        self.device = self.call(driver.cuDeviceGet, 0)
        self.call(driver.cuCtxSetCurrent, self.call(driver.cuDevicePrimaryCtxRetain, self.device))
        self.allocations = []

    def call(self, fn, *args):
        err, *values = fn(*args)
        if err != self.cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"{fn.__name__} failed: {err}")
        return values[0] if values else None

    def alloc(self, nbytes: int) -> int:
        ptr = int(self.call(self.cu.cuMemAlloc, nbytes))
        self.allocations.append(ptr)
        return ptr

    def put(self, array: np.ndarray) -> int:
        ptr = self.alloc(array.nbytes)
        self.call(self.cu.cuMemcpyHtoD, ptr, array.ctypes.data, array.nbytes)
        return ptr

    def poisoned(self, nbytes: int) -> int:
        """nbytes of all-ones bits (NaN in FP32 and FP16) inside GUARD more on either side; returns the inner start."""
        ptr = self.alloc(nbytes + 2 * GUARD)
        self.call(self.cu.cuMemsetD8, ptr, 0xFF, nbytes + 2 * GUARD)
        return ptr + GUARD

    def get(self, ptr: int, nbytes: int) -> bytes:
        out = np.empty(nbytes, np.uint8)
        self.call(self.cu.cuCtxSynchronize)
        self.call(self.cu.cuMemcpyDtoH, out.ctypes.data, ptr, nbytes)
        return out.tobytes()

    def output(self, ptr: int, shape, dtype) -> np.ndarray:
        """The array at a poisoned() pointer, after checking that nothing around it was written."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        assert self.get(ptr - GUARD, GUARD) == b"\xff" * GUARD, "written before the output"
        assert self.get(ptr + nbytes, GUARD) == b"\xff" * GUARD, "written past the output"
        return np.frombuffer(self.get(ptr, nbytes), dtype).reshape(shape)

    def close(self):
        for ptr in self.allocations:
            self.call(self.cu.cuMemFree, ptr)
        self.call(self.cu.cuDevicePrimaryCtxRelease, self.device)


@pytest.fixture
def gpu():
    g = Gpu()
    yield g
    g.close()


def built(name: str) -> Path:
    path = BUILD / name
    if not path.exists():
        pytest.skip(f"{path} not built: run `make plugins`")
    return path


@pytest.fixture(scope="module")
def kernels():
    lib = ctypes.CDLL(str(built("libtrtpipe_layernorm.so")))
    fns = {np.float32: lib.trtpipe_layernorm_f32, np.float16: lib.trtpipe_layernorm_f16}
    for fn in fns.values():
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p]
        fn.restype = ctypes.c_int
    return fns


def random_rows(rng, shape, dtype) -> np.ndarray:
    """Rows with their own offset and spread, as LayerNorm inputs have."""
    rows = shape[:-1] + (1,)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2, rows) + rng.uniform(-4, 4, rows)
    return x.astype(dtype)


def reference(x, gamma, beta, eps) -> np.ndarray:
    x = x.astype(np.float64)
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    if gamma is not None:
        y = y * gamma.astype(np.float64)
    if beta is not None:
        y = y + beta.astype(np.float64)
    return y


def error(y, ref) -> float:
    return float(np.max(np.abs(y.astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref))))


def run_kernel(gpu, kernels, x, gamma, beta, eps) -> tuple[int, int]:
    """(status, output pointer) of the kernel on fresh device copies, the output poisoned beforehand."""
    y = gpu.poisoned(x.nbytes)
    status = kernels[x.dtype.type](gpu.put(x), None if gamma is None else gpu.put(gamma),
                                   None if beta is None else gpu.put(beta), y, x.size // x.shape[-1], x.shape[-1],
                                   eps, None)
    return status, y


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_kernels_match_float64_reference(gpu, kernels, dtype, rows, cols):
    rng = np.random.default_rng([rows, cols, np.dtype(dtype).itemsize])
    x = random_rows(rng, (rows, cols), dtype)
    gamma, beta = rng.standard_normal(cols).astype(dtype), rng.standard_normal(cols).astype(dtype)
    status, y = run_kernel(gpu, kernels, x, gamma, beta, 1e-5)
    assert status == 0
    out = gpu.output(y, x.shape, dtype)
    assert np.isfinite(out).all(), "some outputs were not written"
    assert error(out, reference(x, gamma, beta, 1e-5)) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("cols", [96, 3000])
def test_kernels_without_gamma_and_beta(gpu, kernels, dtype, cols):
    x = random_rows(np.random.default_rng(cols), (33, cols), dtype)
    status, y = run_kernel(gpu, kernels, x, None, None, 1e-3)
    assert status == 0
    assert error(gpu.output(y, x.shape, dtype), reference(x, None, None, 1e-3)) <= TOLERANCE[dtype]


@pytest.mark.parametrize(("rows", "cols"), [(4, 0), (-1, 8)])
def test_kernels_reject_bad_shapes_and_write_nothing(gpu, kernels, rows, cols):
    x = gpu.put(np.ones(64, np.float32))
    y = gpu.poisoned(64 * 4)
    assert kernels[np.float32](x, None, None, y, rows, cols, 1e-5, None) == CUDA_ERROR_INVALID_VALUE
    assert np.isnan(gpu.output(y, (64,), np.float32)).all()


# --- the TensorRT plugin ---

@pytest.fixture(scope="module")
def trt():
    return pytest.importorskip("tensorrt")


@pytest.fixture(scope="module")
def logger(trt):
    """trtpipe's logger: TensorRT keeps the first builder's or runtime's logger for the whole process."""
    from trtpipe.trt.builder import LOG

    return LOG


@pytest.fixture(scope="module")
def creator(trt, logger):
    """The plugin's creator, registered by its library when trtpipe's loader (that of build, the TensorRT backend and
    runtime.deserialize) loads it."""
    from trtpipe.fusions.registry import PLUGINS
    from trtpipe.trt.builder import load_plugins

    plugin = PLUGINS["trtpipe_layernorm"]
    load_plugins([built("libtrtpipe_layernorm_plugin.so")])
    creator = trt.get_plugin_registry().get_plugin_creator(plugin.op, plugin.version, plugin.namespace)
    assert creator is not None, f"{plugin.op} version {plugin.version} is not registered"
    return creator


def test_creator_fields_and_serialization(trt, creator):
    assert [f.name for f in creator.field_names] == ["epsilon"]
    eps = trt.PluginField("epsilon", np.array([1e-3], np.float32), trt.PluginFieldType.FLOAT32)
    plugin = creator.create_plugin("ln", trt.PluginFieldCollection([eps]))
    data = bytes(plugin.serialize())
    assert np.frombuffer(data, np.float32).tolist() == [np.float32(1e-3)]
    assert creator.deserialize_plugin("ln", data) is not None
    axis = trt.PluginField("axis", np.array([1], np.int32), trt.PluginFieldType.INT32)
    assert creator.create_plugin("ln", trt.PluginFieldCollection([axis])) is None


def plugin_model(dtype, cols: int, eps: float, rng) -> tuple[bytes, np.ndarray, np.ndarray]:
    """x[batch, 5, cols] -> TrtpipeLayerNorm -> y, with gamma and beta initializers; as fuse-plugins writes the node."""
    from onnx import helper, numpy_helper

    from trtpipe.fusions.registry import PLUGIN_DOMAIN, PLUGINS

    plugin = PLUGINS["trtpipe_layernorm"]
    gamma, beta = rng.standard_normal(cols).astype(dtype), rng.standard_normal(cols).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node(plugin.op, ["x", "gamma", "beta"], ["y"], name="/encoder/norm/LayerNorm",
                            domain=PLUGIN_DOMAIN, **plugin.attrs(epsilon=eps))
    graph = helper.make_graph([node], "layernorm", [helper.make_tensor_value_info("x", elem, ["batch", 5, cols])],
                              [helper.make_tensor_value_info("y", elem, ["batch", 5, cols])],
                              [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(beta, "beta")])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    return model.SerializeToString(), gamma, beta


def build_engine(trt, model: bytes, tmp_path):
    """The engine trtpipe's builder makes of the model: the graph's dtype is the plugin's precision."""
    from trtpipe.trt import builder
    from trtpipe.trt.config import BuildOptions

    path = tmp_path / "layernorm.onnx"
    path.write_bytes(model)
    cols = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    shapes = {"x": ((1, 5, cols), (4, 5, cols), (8, 5, cols))}
    plan = builder.build(path, BuildOptions(plugins=[built("libtrtpipe_layernorm_plugin.so")]), shapes).plan
    runtime = trt.Runtime(builder.LOG)
    return runtime, runtime.deserialize_cuda_engine(plan)


def plugin_layer_info(trt, engine, context) -> dict:
    """The plugin layer as the engine inspector sees it (types read only once `context` has run: 8.6 reports
    "N/A due to dynamic shapes" before)."""
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON), strict=False)
    layers = [layer for layer in info["Layers"] if str(layer.get("LayerType", "")).startswith("Plugin")]
    assert len(layers) == 1, info["Layers"]
    return layers[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_trt_plugin_from_onnx_matches_numpy(gpu, trt, creator, dtype, tmp_path):
    rng = np.random.default_rng(np.dtype(dtype).itemsize)
    model, gamma, beta = plugin_model(dtype, 96, 1e-3, rng)
    runtime, engine = build_engine(trt, model, tmp_path)

    context = engine.create_execution_context()
    stream = gpu.call(gpu.cu.cuStreamCreate, 0)
    for batch in (3, 8):  # dynamic shapes: rows = batch * 5
        x = random_rows(rng, (batch, 5, 96), dtype)
        y = gpu.poisoned(x.nbytes)
        assert context.set_input_shape("x", x.shape)
        context.set_tensor_address("x", gpu.put(x))
        context.set_tensor_address("y", y)
        assert context.execute_async_v3(int(stream))
        gpu.call(gpu.cu.cuStreamSynchronize, stream)
        assert error(gpu.output(y, x.shape, dtype), reference(x, gamma, beta, 1e-3)) <= TOLERANCE[dtype]
    layer = plugin_layer_info(trt, engine, context)
    assert ("FP16" if dtype == np.float16 else "FP32") in json.dumps(layer["Inputs"][0])
    gpu.call(gpu.cu.cuStreamDestroy, stream)
    del context, engine, runtime
