// C entry points of the trtpipe LayerNorm kernels (ctypes-friendly: plain pointers and integers).
//
// y[r, c] = (x[r, c] - mean_r) / sqrt(var_r + eps) * gamma[c] + beta[c]
// over a row-major rows x cols tensor; mean and biased variance per row, accumulated in FP32.
// gamma and beta (cols elements, same type as x) may each be null: no scale / no shift.
// All pointers are device pointers; the work is enqueued on `stream`. Returns a cudaError_t (0 on success).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <stdint.h>

#define TRTPIPE_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

TRTPIPE_API int trtpipe_layernorm_f32(float const* x, float const* gamma, float const* beta, float* y, int64_t rows,
    int64_t cols, float eps, cudaStream_t stream);

TRTPIPE_API int trtpipe_layernorm_f16(__half const* x, __half const* gamma, __half const* beta, __half* y,
    int64_t rows, int64_t cols, float eps, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
