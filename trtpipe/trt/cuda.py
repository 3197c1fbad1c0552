"""cuda-python's runtime API (13.x: `cuda.bindings.runtime`, 12.x: `cuda.cudart`) with errors raised, not returned."""

from __future__ import annotations

from trtpipe.errors import StageError

try:
    from cuda.bindings import runtime as cudart
except ImportError:
    from cuda import cudart


def call(fn, *args):
    """fn(*args) -> its values after the error code (one value unwrapped, none as None); raises on a CUDA error."""
    err, *values = fn(*args)
    if err != cudart.cudaError_t.cudaSuccess:
        raise StageError(f"CUDA {fn.__name__} failed: {error_name(err)}")
    return values[0] if len(values) == 1 else tuple(values) or None


def error_name(err) -> str:
    return cudart.cudaGetErrorName(err)[1].decode()


def device(index: int = 0) -> dict[str, str]:
    props = call(cudart.cudaGetDeviceProperties, index)
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.rstrip("\0").strip(), "compute_capability": f"{props.major}.{props.minor}"}


def stream():
    return call(cudart.cudaStreamCreateWithFlags, cudart.cudaStreamNonBlocking)


def synchronize(stream) -> None:
    call(cudart.cudaStreamSynchronize, stream)


def copy(dst: int, src: int, nbytes: int, kind: str, stream) -> None:
    """Async copy; kind 'h2d' or 'd2h'. Host memory must stay alive until the stream is synchronized."""
    kinds = cudart.cudaMemcpyKind
    direction = {"h2d": kinds.cudaMemcpyHostToDevice, "d2h": kinds.cudaMemcpyDeviceToHost}[kind]
    call(cudart.cudaMemcpyAsync, dst, src, nbytes, direction, stream)


class Timer:
    """GPU time between two points of a stream, from a pair of CUDA events."""

    def __init__(self, stream):
        self.stream = stream
        self.start, self.end = call(cudart.cudaEventCreate), call(cudart.cudaEventCreate)

    def begin(self) -> None:
        call(cudart.cudaEventRecord, self.start, self.stream)

    def elapsed_ms(self) -> float:
        call(cudart.cudaEventRecord, self.end, self.stream)
        call(cudart.cudaEventSynchronize, self.end)
        return call(cudart.cudaEventElapsedTime, self.start, self.end)

    def close(self) -> None:
        call(cudart.cudaEventDestroy, self.start)
        call(cudart.cudaEventDestroy, self.end)


def capture(stream, enqueue) -> tuple[object | None, str]:
    """A CUDA graph of what `enqueue()` puts on `stream` (an instantiated cudaGraphExec_t), or None and the reason."""
    call(cudart.cudaStreamBeginCapture, stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
    ok = enqueue()
    err, graph = cudart.cudaStreamEndCapture(stream)
    if not ok or err != cudart.cudaError_t.cudaSuccess:
        cudart.cudaGetLastError()  # a failed capture leaves an error behind; clear it before plain enqueue
        if graph is not None and int(graph):
            cudart.cudaGraphDestroy(graph)
        return None, "TensorRT enqueue failed during capture" if not ok else f"capture failed: {error_name(err)}"
    try:
        return call(cudart.cudaGraphInstantiate, graph, 0), ""
    except StageError as e:
        cudart.cudaGetLastError()
        return None, e.message
    finally:
        cudart.cudaGraphDestroy(graph)
