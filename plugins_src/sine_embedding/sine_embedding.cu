// One thread per (sin, cos) pair of outputs. sinf/cosf are the accurate functions (2 ulp): the build uses no
// --use_fast_math, which would turn them into __sinf/__cosf, whose error grows with the argument (up to 2*pi*|x|).
#include "sine_embedding.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <climits>

namespace trtpipe
{
namespace
{

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 4096;

__device__ float toFloat(float v)
{
    return v;
}

__device__ float toFloat(__half v)
{
    return __half2float(v);
}

__device__ void store(float* y, float v)
{
    *y = v;
}

__device__ void store(__half* y, float v)
{
    *y = __float2half_rn(v);
}

// Pair i writes y[2i] and y[2i + 1]: j = 2 * (i % pairs) of coordinate k = (i / pairs) % outCoords of its row.
template <typename In, typename Out>
__global__ void __launch_bounds__(kThreads)
    sineEmbeddingKernel(In const* __restrict__ x, Out* __restrict__ y, int32_t n, int32_t coords, SineEmbeddingParams p)
{
    __shared__ float2 factors[kSineMaxDim / 2];
    __shared__ int32_t order[kSineMaxCoords];
    int32_t const pairs = p.dim / 2;
    for (int32_t i = threadIdx.x; i < pairs; i += blockDim.x)
        factors[i] = make_float2(p.factors[2 * i], p.factors[2 * i + 1]);
    if (threadIdx.x < p.outCoords)
        order[threadIdx.x] = p.order[threadIdx.x];
    __syncthreads();

    for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    {
        int32_t const rowCoord = i / pairs;
        int32_t const row = rowCoord / p.outCoords;
        float const v = toFloat(x[row * coords + order[rowCoord - row * p.outCoords]]);
        float2 const f = factors[i - rowCoord * pairs];
        store(y + 2 * i, sinf(v * f.x));
        store(y + 2 * i + 1, cosf(v * f.y));
    }
}

template <typename In, typename Out>
int launch(void const* x, void* y, int32_t n, int32_t coords, SineEmbeddingParams const& p, cudaStream_t stream)
{
    int const blocks = std::min((n + kThreads - 1) / kThreads, kMaxBlocks);
    sineEmbeddingKernel<In, Out>
        <<<blocks, kThreads, 0, stream>>>(static_cast<In const*>(x), static_cast<Out*>(y), n, coords, p);
    return cudaGetLastError();
}

bool valid(SineEmbeddingParams const& p, int32_t coords)
{
    if (p.dim < 2 || p.dim > kSineMaxDim || p.dim % 2 != 0 || p.outCoords < 1 || p.outCoords > kSineMaxCoords)
        return false;
    return std::all_of(p.order, p.order + p.outCoords, [coords](int32_t k) { return k >= 0 && k < coords; });
}

} // namespace

int sineEmbedding(void const* x, bool xHalf, void* y, bool yHalf, int64_t rows, int32_t coords,
    SineEmbeddingParams const& params, cudaStream_t stream)
{
    if (rows < 0 || !valid(params, coords) || rows * params.outCoords * params.dim > INT32_MAX
        || rows * coords > INT32_MAX)
        return cudaErrorInvalidValue;
    int32_t const n = static_cast<int32_t>(rows * params.outCoords * params.dim / 2);
    if (n == 0)
        return cudaSuccess;
    if (x == nullptr || y == nullptr)
        return cudaErrorInvalidValue;
    if (xHalf)
        return yHalf ? launch<__half, __half>(x, y, n, coords, params, stream)
                     : launch<__half, float>(x, y, n, coords, params, stream);
    return yHalf ? launch<float, __half>(x, y, n, coords, params, stream)
                 : launch<float, float>(x, y, n, coords, params, stream);
}

} // namespace trtpipe
