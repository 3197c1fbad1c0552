// DETR-style sine embeddings of boxes or points, as DAB-DETR, Conditional DETR and DINO compute them for their
// decoder queries: for x of shape (rows, coords),
//
//     y[r, k * dim + j] = (j even ? sin : cos)(x[r, order[k]] * factors[j]),   k < outCoords, j < dim
//
// with factors[j] = scale / dim_t[j]. FP32 math whatever the types: x is FP32 or FP16, y FP32 or FP16.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace trtpipe
{

constexpr int32_t kSineMaxDim = 512;
constexpr int32_t kSineMaxCoords = 8;

// Passed to the kernel by value (2 KiB), so that a plugin needs no device memory of its own.
struct SineEmbeddingParams
{
    float factors[kSineMaxDim];
    int32_t order[kSineMaxCoords];
    int32_t dim;       // even, 2..kSineMaxDim
    int32_t outCoords; // 1..kSineMaxCoords
};

// Enqueues the embedding of the device tensor x (FP16 when xHalf, else FP32) into y (FP16 when yHalf, else FP32).
// Returns a cudaError_t: cudaErrorInvalidValue for params outside their ranges, an order entry outside [0, coords),
// or more than INT32_MAX output values.
int sineEmbedding(void const* x, bool xHalf, void* y, bool yHalf, int64_t rows, int32_t coords,
    SineEmbeddingParams const& params, cudaStream_t stream);

} // namespace trtpipe
