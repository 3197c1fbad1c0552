from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from trtpipe.stages.base import Context, Ref, Result, Stage, register
from trtpipe.stages.build import engine_plugins, open_engine


@register
class Profile(Stage):
    """Latency of a built engine at the recipe's min/opt/max input shape: `warmup` launches, then `iterations` timed
    one at a time (CUDA events, inputs already on the GPU), by plain enqueue and by CUDA graph replay; per-layer
    times from TensorRT's IProfiler joined with the engine inspector's layers (precision, ONNX nodes).
    Throughput is the batch (first dim of the first input) over the mean latency.
    An ONNX Runtime model (target onnxruntime) gets the latency numbers only, timed on the host.
    """

    kind = "profile"
    inputs = ("engine",)
    outputs = ("profile",)
    recipe_fields = ("inputs", "target")

    engine: Ref
    shape: Literal["min", "opt", "max"] = "opt"
    warmup: int = Field(20, ge=0)
    iterations: int = Field(200, ge=1)
    cuda_graph: bool = True
    layer_iterations: int = Field(20, ge=0)  # 0: no per-layer times
    top: int = Field(10, ge=0)  # layers in the printed table

    def key_files(self, recipe) -> dict[str, Path]:
        plugins = engine_plugins(recipe, self.engine)
        return super().key_files(recipe) | {f"plugin:{p}": p for p in plugins}

    def run(self, ctx: Context) -> Result:
        from trtpipe import data

        feeds = data.make_inputs(ctx.recipe, self.shape)
        first = next(iter(feeds.values()))
        batch = first.shape[0] if first.ndim else 1
        engine = ctx.inputs["engine"]
        session = open_engine(engine, engine_plugins(ctx.recipe, self.engine))
        ctx.report(f"timing {self.iterations} iterations")
        if engine.suffix == ".engine":
            report = self.profile_tensorrt(session, feeds, batch)
        else:
            times = time_host(session, feeds, self.iterations, self.warmup)
            report = {"latency": {"onnxruntime": latency_stats(times, batch)}}
        path = ctx.out("profile.json")
        path.write_text(json.dumps(report, indent=1))
        print_report(ctx.name, report, self.top)
        return Result({"profile": path}, metrics(report))

    def profile_tensorrt(self, session, feeds, batch) -> dict:
        from trtpipe.trt import layers

        latency = {"enqueue": latency_stats(session.time(feeds, self.iterations, self.warmup), batch)}
        report: dict = {"latency": latency, "cuda_graph_fallback": None}
        if self.cuda_graph:
            session.cuda_graph = True
            session.run(feeds)  # captures the graph for these shapes, or records why it could not
            if session.graph_failures:
                report["cuda_graph_fallback"] = next(iter(session.graph_failures.values()))
            else:
                latency["cuda_graph"] = latency_stats(session.time(feeds, self.iterations, self.warmup), batch)
            session.cuda_graph = False
        times = session.layer_times(feeds, self.layer_iterations) if self.layer_iterations else None
        rows = layers.table(session.describe(), times)
        report["layers"] = sorted(rows, key=lambda r: -r.get("time_ms", 0.0))
        report |= layers.counts(rows)
        return report


def latency_stats(ms, batch: int) -> dict:
    import numpy as np

    ms = np.asarray(ms, dtype=np.float64)
    mean = float(ms.mean())
    percentiles = dict(zip(("median", "p90", "p95", "p99"), np.percentile(ms, [50, 90, 95, 99]).tolist()))
    return {
        "mean_ms": mean,
        **{f"{k}_ms": v for k, v in percentiles.items()},
        "min_ms": float(ms.min()),
        "iterations": int(ms.size),
        "throughput_per_s": batch * 1000.0 / mean,
    }


def time_host(session, feeds, iterations: int, warmup: int) -> list[float]:
    import time

    for _ in range(warmup):
        session.run(feeds)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def metrics(report: dict) -> dict:
    """The headline (median latency, with a CUDA graph when there is one) first, then every mode's stats."""
    latency = report["latency"]
    best = latency.get("cuda_graph") or next(iter(latency.values()))
    found = {"latency_ms": best["median_ms"], "throughput_per_s": best["throughput_per_s"]}
    found |= {k: report[k] for k in ("reformat_layers", "engine_layers", "cuda_graph_fallback") if k in report}
    found |= {"latency": latency}
    if "layers_per_precision" in report:
        found["layers_per_precision"] = report["layers_per_precision"]
        found["top_layers"] = [
            {k: r[k] for k in ("name", "precision", "time_ms")} for r in report["layers"][:5] if "time_ms" in r
        ]
    return found


def print_report(name: str, report: dict, top: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("mode", "mean ms", "median", "p90", "p95", "p99", "per s", title=f"{name}: latency")
    for mode, s in report["latency"].items():
        table.add_row(mode, *(f"{s[k]:.4g}" for k in ("mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms")),
                      f"{s['throughput_per_s']:.1f}")
    console = Console()
    console.print(table)
    if report.get("cuda_graph_fallback"):
        console.print(f"CUDA graph capture failed, plain enqueue only: {report['cuda_graph_fallback']}", markup=False)
    rows = [r for r in report.get("layers", []) if "time_ms" in r][:top]
    if rows:
        layer_table = Table("layer", "type", "precision", "ms", "ONNX nodes", title=f"{name}: slowest layers")
        for r in rows:
            nodes = ", ".join(r["onnx_nodes"][:2]) + (" ..." if len(r["onnx_nodes"]) > 2 else "")
            cells = (r["name"][:60], r["type"], r["precision"] or "-", f"{r['time_ms']:.4f}", nodes)
            layer_table.add_row(*(Text(c) for c in cells))  # layer names hold brackets: no markup
        console.print(layer_table)
        console.print(f"reformat layers: {report['reformat_layers']}, layers per precision: "
                      f"{report['layers_per_precision']}", markup=False)
