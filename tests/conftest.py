import importlib.util
import shutil

import pytest


def gpu_available() -> bool:
    if importlib.util.find_spec("tensorrt") is None or shutil.which("nvidia-smi") is None:
        return False
    try:
        import tensorrt as trt

        from trtpipe.trt.builder import LOG  # TensorRT keeps its first builder's logger: make it trtpipe's

        trt.Builder(LOG)
    except Exception:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not gpu_available():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU and tensorrt")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def save_tiny_onnx(path, opset: int = 17) -> None:
    """x[1,4] -> MatMul(eye) -> Relu -> y: the smallest model the core tests run."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="/fc/MatMul"),
        helper.make_node("Relu", ["h"], ["y"], name="/act/Relu"),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.save(model, str(path))


TINY_HEAD = """name: tiny
model: {onnx: tiny.onnx}
inputs:
  x: {shape: [1, 4]}
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A directory holding tiny.onnx, used as the working directory; write(body) adds recipe.yaml."""
    import tests.core_stages  # noqa: F401  (registers the test stage types)

    save_tiny_onnx(tmp_path / "tiny.onnx")
    monkeypatch.chdir(tmp_path)

    def write(body: str, name: str = "recipe.yaml", head: str = TINY_HEAD):
        path = tmp_path / name
        path.write_text(head + body)
        return path

    write.dir = tmp_path
    return write
