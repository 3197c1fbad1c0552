from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from trtpipe.errors import RecipeError, StageError, needs


@functools.cache
def facts() -> dict[str, str]:
    """TensorRT version, GPU name and compute capability: what an engine and its timings depend on."""
    for module in ("tensorrt", "cuda"):
        if importlib.util.find_spec(module) is None:
            raise RecipeError(f"target tensorrt needs {module}: {needs(module, 'trt')}", hint="or --target onnxruntime")
    import tensorrt as trt

    from trtpipe.trt import cuda

    try:
        return {"tensorrt": trt.__version__, **cuda.device()}
    except StageError as e:
        raise RecipeError(f"target tensorrt needs a CUDA GPU: {e.message}", hint="or --target onnxruntime") from e


class TensorRT:
    """`load` builds an engine (reusing the timing cache under `cache_dir`, and keeping the engine there for a build
    of the same: trtpipe.trt.engines) and returns a runtime session.

    options: trtpipe.trt.config.BuildOptions fields; `shapes` gives (min, opt, max) per input (default: the model's
    static shapes, see trtpipe.trt.config.recipe_shapes); `cuda_graph` makes the session replay CUDA graphs.
    """

    name = "tensorrt"

    def __init__(self, shapes=None, cache_dir: Path | None = None, build_options: dict | None = None):
        self.shapes = shapes
        self.cache_dir = cache_dir
        self.build_options = build_options or {}

    def env(self) -> dict[str, Any]:
        return facts()

    def load(self, onnx_path: Path, shapes=None, cache_dir: Path | None = None, cuda_graph: bool = False, **options):
        from trtpipe.trt import builder, config, runtime
        from trtpipe.trt.engines import Engines

        shapes = shapes or self.shapes
        cache_dir = cache_dir or self.cache_dir
        build_options = config.BuildOptions(**(self.build_options | options))
        cache = config.timing_cache_path(cache_dir, facts()) if cache_dir is not None else None
        engines = Engines.at(cache_dir, facts()) if cache_dir is not None else None
        built = builder.build(Path(onnx_path), build_options, shapes, cache, engines=engines)
        return runtime.Session(runtime.deserialize(built.plan, build_options.plugins), cuda_graph=cuda_graph)
