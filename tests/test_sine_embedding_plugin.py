"""GPU test of trtpipe's sine embedding plugin (plugins_src/sine_embedding, built by `make plugins`): TensorRT engines
of the node fuse-plugins writes for DAB-DETR-R50's decoder embedding, the plugin layer constrained to each pair of
input and output types, against ONNX Runtime running the subgraph the node replaced. Needs a python with tensorrt
and cuda-python (the TensorRT bundle's); torch is not used."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.test_fusions import SINE, Builder, boxes, ort_outputs, sine_embedding
from trtpipe.fusions.rewrite import fuse

pytestmark = pytest.mark.gpu

LIBRARY = Path(__file__).resolve().parents[1] / "build" / "plugins" / "libtrtpipe_sine_embedding_plugin.so"
# FP32: pos * (scale / dim_t) against the graph's (pos * scale) / dim_t (a few ulp of angles up to 2*pi) and sinf's
# 2 ulp. FP16: half of FP16's step below 1 on top.
TOLERANCE = {np.float32: 2e-6, np.float16: 2.5e-4}
QUERIES = 300


@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip("tensorrt")
    if not LIBRARY.exists():
        pytest.skip(f"{LIBRARY} not built: run `make plugins`")
    from trtpipe.trt.builder import load_plugins

    load_plugins([LIBRARY])
    return trt


def embedding_models() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """pos [batch, 300, 4] -> DAB-DETR-R50's decoder embedding (4 coordinates of 128 values), and the fused model."""
    b = Builder(module="/model/decoder")
    model = b.model(sine_embedding(b, b.input("pos", ["batch", QUERIES, 4]), dim=128))
    fused, report = fuse(model, SINE)
    assert [n.op_type for n in fused.graph.node] == ["TrtpipeSineEmbedding"], report
    return model, fused


def build(trt, fused: onnx.ModelProto, input_type, output_type) -> bytes:
    """An engine of `fused` with `input_type` boxes, whose plugin layer must read them so and write `output_type`."""
    from trtpipe.trt.builder import LOG

    fused = onnx.ModelProto.FromString(fused.SerializeToString())
    fused.graph.input[0].type.tensor_type.elem_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(input_type))
    types = {np.float32: trt.float32, np.float16: trt.float16}
    builder = trt.Builder(LOG)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, LOG)
    assert parser.parse(fused.SerializeToString()), parser.get_error(0).desc()
    (plugin,) = [layer for layer in map(network.get_layer, range(network.num_layers))
                 if layer.type == trt.LayerType.PLUGIN_V2]
    plugin.precision = types[input_type]
    plugin.set_output_type(0, types[output_type])
    network.get_output(0).dtype = types[output_type]
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    config.set_tactic_sources(0)  # one plugin layer: no cuBLAS or cuDNN (the GPU bundle's cuBLAS is a stub)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector's layer types and formats
    profile = builder.create_optimization_profile()
    profile.set_shape("pos", (1, QUERIES, 4), (2, QUERIES, 4), (8, QUERIES, 4))
    config.add_optimization_profile(profile)
    mark = len(LOG.lines)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, LOG.errors(mark)
    return bytes(plan)


def plugin_types(info: dict) -> tuple[str | None, str | None]:
    """The plugin layer's input and output types as the engine inspector reports them."""
    from trtpipe.trt.layers import tensor_type

    (layer,) = [layer for layer in info["Layers"] if str(layer.get("LayerType", "")).startswith("Plugin")]
    return tensor_type(layer["Inputs"][0]), tensor_type(layer["Outputs"][0])


@pytest.mark.parametrize("output_type", [np.float32, np.float16], ids=["out-fp32", "out-fp16"])
@pytest.mark.parametrize("input_type", [np.float32, np.float16], ids=["in-fp32", "in-fp16"])
def test_plugin_engine_matches_the_subgraph_it_replaced(trt, input_type, output_type):
    from trtpipe.trt.runtime import Session, deserialize

    model, fused = embedding_models()
    session = Session(deserialize(build(trt, fused, input_type, output_type), [LIBRARY]))
    try:
        for batch in (1, 8):
            pos = boxes((batch, QUERIES, 4), seed=batch).astype(input_type)
            (got,) = session.run({"pos": pos}).values()
            want = ort_outputs(model, {"pos": pos.astype(np.float32)})[0]
            assert got.dtype == output_type and got.shape == (batch, QUERIES, 512)
            np.testing.assert_allclose(got.astype(np.float32), want, atol=TOLERANCE[output_type], rtol=0)
        names = {np.float32: "fp32", np.float16: "fp16"}
        assert plugin_types(session.describe()) == (names[input_type], names[output_type])
    finally:
        session.close()
