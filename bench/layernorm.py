"""The project's LayerNorm kernels (plugins_src/layernorm) against torch on the GPU: correctness, bandwidth, speedup.

usage: python3 bench/layernorm.py [--lib build/plugins/libtrtpipe_layernorm.so] [--out-dir bench/results]

Needs a python with CUDA torch and `make plugins` done. The kernels are called through ctypes on torch's tensors.
- Correctness: cols 32..8192 (with non-multiples of the 16-byte pack) and longer, rows 1..65536, FP32 and FP16,
  fresh random inputs per check, outputs poisoned with NaN inside a NaN guard band: every output must be written and
  nothing around it. Error = max |y - ref| / max(1, |ref|), ref = F.layer_norm in float64 on the same inputs (an
  absolute error for |ref| <= 1; relative above, where FP16's own rounding step exceeds 1e-3).
- Bandwidth: bytes (x read once, y written once) / time, cols 256..4096 at 16 MiB and 256 MiB per tensor, against
  the device-to-device copy (Tensor.copy_, a cudaMemcpyAsync) of the same tensors: per shape, the fastest copy of the
  same tensor size (so that one copy size that the driver handles slowly cannot flatter a kernel), and the fastest
  copy of all (peak). Kernels, torch and copies are timed the same way: each pass calls them once on each of a
  rotation of input sets totalling >= 1 GiB (so L2 does not serve them; at most 64 sets, so the small latency shapes
  stay in L2 as they would in a network), between CUDA events, queued behind a spin kernel so that host launch
  overhead does not show; median of the passes.
  Not in CUDA graphs: a captured copy becomes a graph memcpy node, which the driver runs as copy kernels of its own
  choosing whose speed depends on the exact size (a 1 GiB node ran at 2.6 TB/s on an H200 where stream-ordered
  copies reach 4.2; pytorch/pytorch#191284 reports the same for 512 MiB, 1 GiB and 2 GiB nodes).
Writes <out-dir>/layernorm_<gpu>_<date>.json; exits 1 if a correctness check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import re
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3}
CORRECTNESS_COLS = [32, 33, 64, 100, 127, 128, 255, 256, 320, 500, 512, 640, 768, 1000, 1023, 1024, 1025, 1536,
                    2000, 2048, 3000, 3072, 4095, 4096, 5000, 6144, 8191, 8192]
MAX_CHECK_ELEMENTS = 1 << 27
BANDWIDTH_COLS = [256, 512, 768, 1024, 1536, 2048, 3072, 4096]
BANDWIDTH_TENSOR_BYTES = [16 << 20, 256 << 20]
LATENCY_SHAPES = [(300, 256), (625, 256), (4096, 768), (1, 1024)]
ROTATION_BYTES = 1 << 30
MAX_SETS = 64
GUARD = 64


class LayerNormKernels:
    """ctypes binding of layernorm.h."""

    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path))
        self._fns = {torch.float32: lib.trtpipe_layernorm_f32, torch.float16: lib.trtpipe_layernorm_f16}
        for fn in self._fns.values():
            fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p]
            fn.restype = ctypes.c_int

    def __call__(self, x, gamma, beta, y, eps: float) -> None:
        cols = x.shape[-1]
        status = self._fns[x.dtype](
            x.data_ptr(), None if gamma is None else gamma.data_ptr(), None if beta is None else beta.data_ptr(),
            y.data_ptr(), x.numel() // cols, cols, eps, torch.cuda.current_stream().cuda_stream)
        if status != 0:
            raise RuntimeError(f"trtpipe_layernorm failed with CUDA error {status} for {tuple(x.shape)} {x.dtype}")


def random_rows(rows: int, cols: int, dtype) -> torch.Tensor:
    """Rows with their own offset and spread, as LayerNorm inputs have."""
    offset = torch.empty(rows, 1, device="cuda").uniform_(-4, 4)
    spread = torch.empty(rows, 1, device="cuda").uniform_(0.5, 2)
    return (torch.randn(rows, cols, device="cuda") * spread + offset).to(dtype)


def error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).abs() / ref.abs().clamp(min=1)).max().item()


def check(kernels, rows: int, cols: int, dtype, eps: float = 1e-5, affine=(True, True), misaligned=False) -> dict:
    """One correctness check: fresh inputs, NaN-poisoned output with guard bands on both sides."""
    n = rows * cols
    x = random_rows(rows, cols, dtype)
    if misaligned:  # one element past a 16-byte boundary: the kernels must fall back to narrower packs
        shifted = torch.empty(n + 1, dtype=dtype, device="cuda")
        shifted[1:].copy_(x.view(-1))
        x = shifted[1:].view(rows, cols)
    gamma = torch.randn(cols, device="cuda").to(dtype) if affine[0] else None
    beta = torch.randn(cols, device="cuda").to(dtype) if affine[1] else None
    band = torch.full((n + 2 * GUARD,), float("nan"), dtype=dtype, device="cuda")
    y = band[GUARD:GUARD + n].view(rows, cols)
    kernels(x, gamma, beta, y, eps)
    torch.cuda.synchronize()

    ref = F.layer_norm(x.double(), (cols,), None if gamma is None else gamma.double(),
                       None if beta is None else beta.double(), eps)
    torch_y = F.layer_norm(x, (cols,), gamma, beta, eps)
    written = bool(torch.isfinite(y).all())
    guards_intact = bool(band[:GUARD].isnan().all() and band[GUARD + n:].isnan().all())
    err = error(y, ref) if written else math.inf
    return {
        "dtype": str(dtype).removeprefix("torch."), "rows": rows, "cols": cols, "eps": eps,
        "gamma": affine[0], "beta": affine[1], "misaligned": misaligned,
        "max_err": err, "torch_max_err": error(torch_y, ref), "written": written, "guards_intact": guards_intact,
        "ok": written and guards_intact and err <= TOLERANCE[dtype],
    }


def correctness(kernels) -> list[dict]:
    results = []
    for dtype in (torch.float32, torch.float16):
        for i, cols in enumerate(CORRECTNESS_COLS):
            big = min(65536, MAX_CHECK_ELEMENTS // cols)
            for rows in (1, 7, 1000, big):
                results.append(check(kernels, rows, cols, dtype, eps=(1e-5, 1e-6, 1e-3)[i % 3]))
        # Rows past the cached block kernel's 48 KiB default, and past shared memory altogether (FP32).
        results += [check(kernels, 100, 20000, dtype), check(kernels, 3, 70001, dtype)]
        results += [check(kernels, 333, 768, dtype, affine=(False, False)),
                    check(kernels, 333, 4096, dtype, affine=(True, False)),
                    check(kernels, 129, 1024, dtype, misaligned=True),
                    check(kernels, 65, 2048, dtype, misaligned=True)]
    return results


def median_us(fns, samples: int = 25) -> float:
    """Median device time of one call over passes that call each of fns once. Each pass is queued behind a spin kernel;
    a pass whose spin ended before it was fully queued is not counted, and the spin doubles."""
    for fn in fns:
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    spin_cycles = 1 << 20
    times = []
    while len(times) < samples:
        torch.cuda._sleep(spin_cycles)
        start.record()
        for fn in fns:
            fn()
        end.record()
        queued_in_time = not start.query()
        end.synchronize()
        if queued_in_time:
            times.append(start.elapsed_time(end) * 1e3 / len(fns))
        else:
            spin_cycles *= 2
    return statistics.median(times)


def time_shape(kernels, rows: int, cols: int, dtype, size: int) -> dict:
    """Kernel, torch and copy times of one shape; `size` names the tensor size whose copies make its baseline."""
    tensor_bytes = rows * cols * torch.finfo(dtype).bits // 8
    sets = min(MAX_SETS, max(2, math.ceil(ROTATION_BYTES / (2 * tensor_bytes))))
    xs = [random_rows(rows, cols, dtype) for _ in range(sets)]
    ys = [torch.empty_like(x) for x in xs]
    gamma = torch.randn(cols, device="cuda").to(dtype)
    beta = torch.randn(cols, device="cuda").to(dtype)
    ours = median_us([lambda x=x, y=y: kernels(x, gamma, beta, y, 1e-5) for x, y in zip(xs, ys)])
    ref = median_us([lambda x=x: F.layer_norm(x, (cols,), gamma, beta, 1e-5) for x in xs])
    copy = median_us([lambda x=x, y=y: y.copy_(x) for x, y in zip(xs, ys)])
    return {
        "dtype": str(dtype).removeprefix("torch."), "rows": rows, "cols": cols, "tensor_mib": tensor_bytes / 2**20,
        "size": size, "us": ours, "torch_us": ref, "copy_us": copy, "gbs": 2 * tensor_bytes / (ours * 1e3),
        "copy_gbs": 2 * tensor_bytes / (copy * 1e3), "vs_torch_speedup": ref / ours,
    }


def bandwidth(kernels) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.float16):
        item = torch.finfo(dtype).bits // 8
        for tensor_bytes in BANDWIDTH_TENSOR_BYTES:
            for cols in BANDWIDTH_COLS:
                rows.append(time_shape(kernels, tensor_bytes // (cols * item), cols, dtype, tensor_bytes))
        rows += [time_shape(kernels, r, c, dtype, r * c * item) | {"latency_only": True} for r, c in LATENCY_SHAPES]
    return rows


def copy_baselines(timings: list[dict]) -> tuple[dict[int, float], float]:
    """The fastest copy (GB/s) of each tensor size, and of the bandwidth sizes (the peak); adds each timing's fraction
    of the former and of the latter."""
    best: dict[int, float] = {}
    for t in timings:
        best[t["size"]] = max(best.get(t["size"], 0.0), t["copy_gbs"])
    peak = max(best[size] for size in BANDWIDTH_TENSOR_BYTES)
    for t in timings:
        t["bandwidth_fraction"] = t["gbs"] / best[t["size"]]
        t["peak_fraction"] = t["gbs"] / peak
    return best, peak


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # the GPU image's python may not have rich
        print(title)
        for line in [columns, *rows]:
            print("  ".join(f"{cell:>12}" for cell in line))
        return
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)


def summarize(checks: list[dict], timings: list[dict], copy_gbs: dict[int, float], copy_peak_gbs: float) -> dict:
    def worst(dtype, key="max_err"):
        return max(c[key] for c in checks if c["dtype"] == dtype)

    throughput = [t for t in timings if not t.get("latency_only")]
    speedups = [t["vs_torch_speedup"] for t in throughput]
    summary = {
        "max_err_fp32": worst("float32"),
        "max_err_fp16": worst("float16"),
        "torch_max_err_fp32": worst("float32", "torch_max_err"),
        "torch_max_err_fp16": worst("float16", "torch_max_err"),
        "bandwidth_fraction_min": min(t["bandwidth_fraction"] for t in throughput),
        "bandwidth_baseline": "per shape, the fastest device-to-device copy (Tensor.copy_ = cudaMemcpyAsync, stream-"
                              "ordered, no CUDA graph) of the same tensor size over the same rotation of buffers",
        "bandwidth_fraction_of_peak_min": min(t["peak_fraction"] for t in throughput),
        "copy_peak_gbs": copy_peak_gbs,
        "copy_gbs_by_size": {f"{size / 2**20:g} MiB": copy_gbs[size] for size in BANDWIDTH_TENSOR_BYTES},
        "vs_torch_speedup": math.exp(statistics.fmean(math.log(s) for s in speedups)),
        "vs_torch_speedup_min": min(speedups),
        "checks": len(checks),
        "checks_failed": sum(not c["ok"] for c in checks),
    }
    summary["pass"] = {
        "correctness": summary["checks_failed"] == 0,
        "bandwidth_fraction_min >= 0.8": summary["bandwidth_fraction_min"] >= 0.8,
    }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", type=Path, default=ROOT / "build/plugins/libtrtpipe_layernorm.so")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/layernorm.py needs a CUDA GPU")
    if not args.lib.exists():
        sys.exit(f"{args.lib} not found: run `make plugins` first")
    kernels = LayerNormKernels(args.lib)
    torch.manual_seed(0)

    checks = correctness(kernels)
    timings = bandwidth(kernels)
    summary = summarize(checks, timings, *copy_baselines(timings))

    failed = [c for c in checks if not c["ok"]]
    print_table(f"correctness: {len(checks) - len(failed)}/{len(checks)} checks passed (failures below)",
                ["dtype", "rows", "cols", "max_err", "torch_err", "written", "guards"],
                [[c["dtype"], str(c["rows"]), str(c["cols"]), f"{c['max_err']:.2e}", f"{c['torch_max_err']:.2e}",
                  str(c["written"]), str(c["guards_intact"])] for c in failed])
    print_table(f"bandwidth (read + write; of copy: of the fastest copy of the same size; "
                f"peak copy {summary['copy_peak_gbs']:.0f} GB/s)",
                ["dtype", "rows", "cols", "MiB", "us", "torch us", "copy us", "GB/s", "copy GB/s", "of copy",
                 "of peak", "vs torch"],
                [[t["dtype"], str(t["rows"]), str(t["cols"]), f"{t['tensor_mib']:.2f}", f"{t['us']:.1f}",
                  f"{t['torch_us']:.1f}", f"{t['copy_us']:.1f}", f"{t['gbs']:.0f}", f"{t['copy_gbs']:.0f}",
                  f"{t['bandwidth_fraction']:.0%}", f"{t['peak_fraction']:.0%}", f"{t['vs_torch_speedup']:.2f}x"]
                 for t in timings])
    print(json.dumps(summary, indent=2))

    gpu = torch.cuda.get_device_name()
    record = {"gpu": gpu, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "cuda": torch.version.cuda, "library": str(args.lib), **summary,
              "error_metric": "max |y - ref| / max(1, |ref|), ref = torch layer_norm in float64 on the same inputs",
              "correctness": checks, "timings": timings}
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"layernorm_{slug}_{record['date']}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
