"""The PyTorch rows of bench/dab_detr.py: DAB-DETR in eager FP32, eager with autocast FP16, and torch.compile
mode="reduce-overhead" (CUDA graphs) with autocast FP16, on the export stage's reference input.

Needs torch and transformers only (the GPU image's own python3): of trtpipe it imports the model factory and the
reference reader. TF32 is off for every row (the FP32 reference is torch FP32 without TF32); cuDNN autotunes its
convolutions (cudnn.benchmark), as TensorRT times its tactics. Each timed call runs alone (CUDA events, the input
already on the device): latency is the median at batch 1, throughput 8 images over the mean at batch 8 (the
reference image 8 times). Errors are those of the batch-1 outputs against the reference outputs. The JSON is
rewritten after each row, so a run stopped early keeps the rows it finished; rows measured before on the same
reference and not run again are kept.

usage: python3 bench/dab_detr_torch.py --reference build/dab_detr/export/reference.npz --out torch.json
          [--model-kwargs '{"size": "r50", "seed": 0}'] [--rows eager_fp32 autocast_fp16 compile_fp16] [--device cuda]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trtpipe.data import load_reference
from trtpipe.models import dab_detr

ROWS = ("eager_fp32", "autocast_fp16", "compile_fp16")
BATCH = 8
COMPILE_WARMUP = 3  # calls after the compiling one before cudagraph trees replay a recorded graph


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    # the legacy flags: torch 2.9 to 2.11's inductor reads them, and fails once the new fp32_precision API was used
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    feeds, refs = load_reference(args.reference)
    (image,) = feeds.values()
    x1 = torch.from_numpy(image).to(device)
    x8 = x1.repeat(BATCH, *([1] * (x1.dim() - 1)))
    model = dab_detr.build(**json.loads(args.model_kwargs)).to(device)
    digest = hashlib.sha256(args.reference.read_bytes()).hexdigest()
    result = {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
              "reference_sha256": digest, "rows": rows_before(args.out, digest)}
    for row in args.rows:
        print(f"torch {row} ...", flush=True)
        run, facts = runner(row, model, device, x1, x8)
        result["rows"][row] = measure(run, x1, x8, refs, model.output_names, device, args) | facts
        print(f"torch {row}: {json.dumps(result['rows'][row])}", flush=True)
        write(args.out, result)
        release(device)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, required=True, help="the export stage's reference.npz")
    p.add_argument("--out", type=Path, required=True, help="JSON file, rewritten after each row")
    p.add_argument("--model-kwargs", default='{"size": "r50", "seed": 0}', help="dab_detr.build's, as JSON")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--device", default="cuda")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iterations", type=int, default=200)
    return p.parse_args()


def rows_before(path: Path, digest: str) -> dict:
    """Rows an earlier run wrote to `path` on the same reference (one stopped early, or one of other rows)."""
    before = json.loads(path.read_text()) if path.is_file() else {}
    return before.get("rows", {}) if before.get("reference_sha256") == digest else {}


def runner(row: str, model, device: torch.device, x1, x8) -> tuple[Callable, dict]:
    """A function image batch -> (logits, boxes) for the row, compiled for both batch sizes where it compiles, and
    how it runs (timing: eager, cuda_graph or compiled; compile_s: seconds to the first replay per batch size)."""
    def autocast(x):
        with torch.autocast(device.type, dtype=torch.float16):
            return model(x)

    if row == "eager_fp32":
        return model, {"timing": "eager"}
    if row == "autocast_fp16":
        return autocast, {"timing": "eager"}
    compiled = torch.compile(autocast, mode="reduce-overhead", dynamic=False)

    def replay(x):
        torch.compiler.cudagraph_mark_step_begin()
        return tuple(t.clone() for t in compiled(x))

    seconds = {}
    for batch, x in (("b1", x1), ("b8", x8)):
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(1 + COMPILE_WARMUP):
                replay(x)
        synchronize(device)
        seconds[batch] = round(time.perf_counter() - start, 1)
    return replay, {"timing": "cuda_graph" if device.type == "cuda" else "compiled", "compile_s": seconds}


def measure(run: Callable, x1, x8, refs: dict, names, device, args) -> dict:
    with torch.inference_mode():
        outputs = dict(zip(names, run(x1)))
        errors = {}
        for name in names:
            diff = np.abs(outputs[name].float().cpu().numpy().astype(np.float64) - refs[name].astype(np.float64))
            errors |= {f"{name}_mean_abs": float(diff.mean()), f"{name}_max_abs": float(diff.max())}
        b1 = time_ms(run, x1, device, args.warmup, args.iterations)
        b8 = time_ms(run, x8, device, args.warmup, args.iterations)
    return {
        "latency_ms": statistics.median(b1),
        "latency_b8_ms": statistics.median(b8),
        "throughput_b8": BATCH * 1000.0 / statistics.fmean(b8),
        **errors,
    }


def time_ms(run: Callable, x, device: torch.device, warmup: int, iterations: int) -> list[float]:
    for _ in range(warmup):
        run(x)
    synchronize(device)
    times = []
    if device.type != "cuda":
        for _ in range(iterations):
            start = time.perf_counter()
            run(x)
            times.append((time.perf_counter() - start) * 1000.0)
        return times
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(iterations):
        start.record()
        run(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
