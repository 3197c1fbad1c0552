from __future__ import annotations

import json
from pathlib import Path

from trtpipe.stages.base import Context, Ref, Result, Stage, register
from trtpipe.trt.config import BuildOptions


@register
class Build(Stage, BuildOptions):
    """ONNX -> TensorRT engine, following the graph's precision plan (see trtpipe.trt.config for how each TensorRT
    version gets it). Outputs `engine` and `layers` (the engine inspector's layers with precision and ONNX nodes).

    An engine built before from the same graph, options, TensorRT and GPU (trtpipe.trt.engines), such as the
    precision search's candidate that met its budget, is that engine (metric `engine_reused`) unless the stage is
    forced.

    With `target: onnxruntime` the stage writes an ONNX Runtime-optimized model as `engine` instead (extended graph
    optimizations, which stay portable across CPUs), so a recipe runs to its end without a GPU.
    """

    kind = "build"
    inputs = ("model",)
    outputs = ("engine", "layers")
    recipe_fields = ("inputs", "target")
    model: Ref | None = None

    def key_files(self, recipe) -> dict[str, Path]:
        return super().key_files(recipe) | self.plugin_files(recipe.dir)

    def run(self, ctx: Context) -> Result:
        if ctx.target == "onnxruntime":
            return self.run_onnxruntime(ctx)
        from trtpipe import data
        from trtpipe.trt import builder, config, layers, runtime
        from trtpipe.trt.engines import Engines

        options = self.model_copy(update={"plugins": list(self.plugin_files(ctx.recipe.dir).values())})
        shapes = config.recipe_shapes(ctx.recipe)
        env = self.env(ctx.recipe)
        ctx.report("building the TensorRT engine")
        built = builder.build(
            ctx.inputs["model"],
            options,
            shapes,
            timing_cache=config.timing_cache_path(ctx.cache_dir, env),
            log_path=ctx.scratch / "tensorrt.log",
            engines=Engines.at(ctx.cache_dir, env),
            reuse=not ctx.forced,
        )
        engine_path = ctx.out("model.engine")
        engine_path.write_bytes(built.plan)
        session = runtime.Session(runtime.deserialize(built.plan, options.plugins))
        try:
            session.run(data.make_inputs(ctx.recipe, "opt"))  # see Session.describe
            rows = layers.table(session.describe(), known=built.onnx_plan)
            aux_streams = session.engine.num_aux_streams
        finally:
            session.close()
        mismatches = layers.plan_mismatches(rows, built.onnx_plan)
        layers_path = ctx.out("layers.json")
        layers_path.write_text(json.dumps({"layers": rows, "plan_mismatches": mismatches}, indent=1))
        metrics = built.metrics | layers.counts(rows) | {"aux_streams": aux_streams, "plan_mismatches": len(mismatches)}
        return Result({"engine": engine_path, "layers": layers_path}, metrics)

    def run_onnxruntime(self, ctx: Context) -> Result:
        import onnxruntime as ort

        from trtpipe import onnxio
        from trtpipe.trt import precision

        source = ctx.inputs["model"]
        before = onnxio.load(source)
        if self.fp32_nodes:
            source = onnxio.save(precision.pin_fp32(before, self.fp32_nodes)[0], ctx.out("pinned.onnx"))
        engine_path = ctx.out("model.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(engine_path)
        options.log_severity_level = 3
        ctx.report("optimizing for ONNX Runtime")
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        after = onnxio.load(engine_path)
        rows = [{"name": n.name, "type": n.op_type, "onnx_nodes": [n.name]} for n in after.graph.node]
        layers_path = ctx.out("layers.json")
        layers_path.write_text(json.dumps({"layers": rows}, indent=1))
        return Result({"engine": engine_path, "layers": layers_path}, onnxio.before_after(before, after))


def engine_plugins(recipe, engine_ref: str) -> list[Path]:
    """Plugin libraries an engine needs: those its build stage loaded."""
    producer = recipe.stage(engine_ref.split(".", 1)[0])
    return [recipe.dir / p for p in getattr(producer, "plugins", [])]


def open_engine(path: Path, plugins: list[Path], cuda_graph: bool = False):
    """A session for a build output: TensorRT for an .engine, ONNX Runtime for an (optimized) .onnx model."""
    if path.suffix == ".engine":
        from trtpipe.trt import runtime

        return runtime.Session(runtime.deserialize(path.read_bytes(), plugins), cuda_graph=cuda_graph)
    from trtpipe.backends.onnxruntime import OrtSession

    return OrtSession(path, optimization="disabled")
