// LayerNorm over the last axis of a rows x cols tensor: FP32 or FP16 I/O, FP32 statistics (Welford).
//
// Rows of up to kMaxWarpCols values are held in registers by a group of lanes (a warp, or fewer lanes for short rows)
// and reduced with shuffles; longer rows get a block each, cached in shared memory between the statistics pass and the
// normalization pass, or read twice from global memory when they do not fit in shared memory.
// Loads and stores move packs of up to 16 bytes; the pack shrinks to a divisor of cols when cols (or a pointer's
// alignment) does not allow the full width.
#include "layernorm.h"

#include <climits>
#include <cstddef>
#include <cstdint>

namespace
{

constexpr int kWarpSize = 32;
constexpr int kMaxWarpCols = 1024;
constexpr int kWarpKernelThreads = 128;
constexpr int kUncachedBlockThreads = 512;
constexpr size_t kDefaultSharedMemory = 48 * 1024;

#define RETURN_IF_ERROR(expr)                                                                                          \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (expr);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
            return status_;                                                                                            \
    } while (0)

template <typename T, int P>
struct alignas(sizeof(T) * P) Pack
{
    T v[P];
};

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}

__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float v);

template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}

template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

// Mean, sum of squared deviations from the mean, and count of a set of values.
struct Welford
{
    float mean;
    float m2;
    float count;
};

__device__ __forceinline__ void welfordAdd(Welford& w, float v)
{
    w.count += 1.f;
    float const delta = v - w.mean;
    w.mean += __fdividef(delta, w.count);
    w.m2 += delta * (v - w.mean);
}

__device__ __forceinline__ Welford welfordMerge(Welford a, Welford b)
{
    float const count = a.count + b.count;
    float const wb = count > 0.f ? __fdividef(b.count, count) : 0.f;
    float const delta = b.mean - a.mean;
    return {a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.count * wb, count};
}

// Butterfly all-reduce within aligned groups of G lanes. Every lane returns lane 0's result: the merge order differs
// between lanes, and a row must be normalized with a single mean and variance.
template <int G>
__device__ __forceinline__ Welford groupAllReduce(Welford w)
{
#pragma unroll
    for (int offset = G / 2; offset > 0; offset /= 2)
    {
        Welford const other{__shfl_xor_sync(~0u, w.mean, offset, G), __shfl_xor_sync(~0u, w.m2, offset, G),
            __shfl_xor_sync(~0u, w.count, offset, G)};
        w = welfordMerge(w, other);
    }
    return {__shfl_sync(~0u, w.mean, 0, G), __shfl_sync(~0u, w.m2, 0, G), w.count};
}

template <int BLOCK>
__device__ __forceinline__ Welford blockAllReduce(Welford w)
{
    __shared__ Welford partial[kWarpSize];
    __shared__ Welford total;
    int const warp = threadIdx.x / kWarpSize;
    int const lane = threadIdx.x % kWarpSize;
    w = groupAllReduce<kWarpSize>(w);
    if (lane == 0)
        partial[warp] = w;
    __syncthreads();
    if (warp == 0)
    {
        w = groupAllReduce<kWarpSize>(lane < BLOCK / kWarpSize ? partial[lane] : Welford{0.f, 0.f, 0.f});
        if (lane == 0)
            total = w;
    }
    __syncthreads();
    return total;
}

__device__ __forceinline__ float rstdOf(Welford w, float eps)
{
    return rsqrtf(__fdividef(w.m2, w.count) + eps);
}

// Scale and shift of one pack of columns: gamma and beta when given, else 1 and 0.
template <typename T, int P>
struct Affine
{
    float scale[P];
    float shift[P];

    __device__ __forceinline__ Affine(T const* gamma, T const* beta, int col)
    {
        using V = Pack<T, P>;
        V const g = gamma ? *reinterpret_cast<V const*>(gamma + col) : V{};
        V const b = beta ? *reinterpret_cast<V const*>(beta + col) : V{};
#pragma unroll
        for (int k = 0; k < P; ++k)
        {
            scale[k] = gamma ? toFloat(g.v[k]) : 1.f;
            shift[k] = beta ? toFloat(b.v[k]) : 0.f;
        }
    }
};

// A group of G lanes owns R consecutive rows of at most kMaxWarpCols values; each lane holds N packs of P values of
// each row in registers. Pack j of a lane starts at column (j * G + lane) * P, so the group's accesses are coalesced.
template <typename T, int P, int N, int G, int R>
__global__ void __launch_bounds__(kWarpKernelThreads) layerNormWarp(T const* __restrict__ x,
    T const* __restrict__ gamma, T const* __restrict__ beta, T* __restrict__ y, int64_t rows, int cols, float eps)
{
    using V = Pack<T, P>;
    int const lane = threadIdx.x % G;
    int64_t const firstRow = (int64_t{blockIdx.x} * kWarpKernelThreads + threadIdx.x) / G * R;

    float v[R][N][P];
#pragma unroll
    for (int r = 0; r < R; ++r)
    {
#pragma unroll
        for (int j = 0; j < N; ++j)
        {
            int const col = (j * G + lane) * P;
            if (firstRow + r < rows && col < cols)
            {
                V const pack = *reinterpret_cast<V const*>(x + (firstRow + r) * cols + col);
#pragma unroll
                for (int k = 0; k < P; ++k)
                    v[r][j][k] = toFloat(pack.v[k]);
            }
        }
    }

    float mean[R];
    float rstd[R];
#pragma unroll
    for (int r = 0; r < R; ++r)
    {
        Welford w{0.f, 0.f, 0.f};
#pragma unroll
        for (int j = 0; j < N; ++j)
        {
            if (firstRow + r < rows && (j * G + lane) * P < cols)
            {
#pragma unroll
                for (int k = 0; k < P; ++k)
                    welfordAdd(w, v[r][j][k]);
            }
        }
        w = groupAllReduce<G>(w);
        mean[r] = w.mean;
        rstd[r] = rstdOf(w, eps);
    }

#pragma unroll
    for (int j = 0; j < N; ++j)
    {
        int const col = (j * G + lane) * P;
        if (col >= cols)
            continue;
        Affine<T, P> const affine(gamma, beta, col);
#pragma unroll
        for (int r = 0; r < R; ++r)
        {
            if (firstRow + r >= rows)
                continue;
            V out;
#pragma unroll
            for (int k = 0; k < P; ++k)
                out.v[k] = fromFloat<T>((v[r][j][k] - mean[r]) * rstd[r] * affine.scale[k] + affine.shift[k]);
            *reinterpret_cast<V*>(y + (firstRow + r) * cols + col) = out;
        }
    }
}

// One block per row. CACHED keeps the row in dynamic shared memory (cols * sizeof(T) bytes) between the two passes;
// otherwise the second pass reads x again.
template <typename T, int P, int BLOCK, bool CACHED>
__global__ void __launch_bounds__(BLOCK) layerNormBlock(T const* __restrict__ x, T const* __restrict__ gamma,
    T const* __restrict__ beta, T* __restrict__ y, int64_t /*rows: one block per row*/, int cols, float eps)
{
    using V = Pack<T, P>;
    extern __shared__ __align__(16) unsigned char sharedBytes[];
    V* const cache = reinterpret_cast<V*>(sharedBytes);
    int const packs = cols / P;
    int64_t const offset = int64_t{blockIdx.x} * cols;
    V const* const xRow = reinterpret_cast<V const*>(x + offset);
    V* const yRow = reinterpret_cast<V*>(y + offset);

    Welford w{0.f, 0.f, 0.f};
#pragma unroll 4
    for (int i = threadIdx.x; i < packs; i += BLOCK)
    {
        V const pack = xRow[i];
        if constexpr (CACHED)
            cache[i] = pack;
#pragma unroll
        for (int k = 0; k < P; ++k)
            welfordAdd(w, toFloat(pack.v[k]));
    }
    w = blockAllReduce<BLOCK>(w);
    float const mean = w.mean;
    float const rstd = rstdOf(w, eps);

#pragma unroll 4
    for (int i = threadIdx.x; i < packs; i += BLOCK)
    {
        V const in = CACHED ? cache[i] : xRow[i];
        Affine<T, P> const affine(gamma, beta, i * P);
        V out;
#pragma unroll
        for (int k = 0; k < P; ++k)
            out.v[k] = fromFloat<T>((toFloat(in.v[k]) - mean) * rstd * affine.scale[k] + affine.shift[k]);
        yRow[i] = out;
    }
}

template <typename T>
struct Args
{
    T const* x;
    T const* gamma;
    T const* beta;
    T* y;
    int64_t rows;
    int cols;
    float eps;
};

template <typename T>
using Kernel = void (*)(T const*, T const*, T const*, T*, int64_t, int, float);

template <typename T>
cudaError_t launch(Kernel<T> kernel, unsigned blocks, int threads, size_t sharedMemory, Args<T> const& a,
    cudaStream_t stream)
{
    kernel<<<blocks, threads, sharedMemory, stream>>>(a.x, a.gamma, a.beta, a.y, a.rows, a.cols, a.eps);
    return cudaGetLastError();
}

template <typename T, int P, int N, int G, int R>
cudaError_t launchWarpKernel(Args<T> const& a, cudaStream_t stream)
{
    constexpr int rowsPerBlock = kWarpKernelThreads / G * R;
    unsigned const blocks = static_cast<unsigned>((a.rows + rowsPerBlock - 1) / rowsPerBlock);
    return launch<T>(layerNormWarp<T, P, N, G, R>, blocks, kWarpKernelThreads, 0, a, stream);
}

// A warp per row, N packs per lane: the smallest power of two that covers the row.
template <typename T, int P, int N>
cudaError_t launchWarpRows(Args<T> const& a, cudaStream_t stream)
{
    if constexpr (N * kWarpSize * P < kMaxWarpCols)
    {
        if (a.cols > N * kWarpSize * P)
            return launchWarpRows<T, P, 2 * N>(a, stream);
    }
    constexpr int rowsPerGroup = N == 1 ? 2 : 1;
    return launchWarpKernel<T, P, N, kWarpSize, rowsPerGroup>(a, stream);
}

// Rows of at most 32 packs: the smallest power-of-two group of lanes with one pack each, two rows per group so that
// each lane keeps two loads in flight.
template <typename T, int P, int G>
cudaError_t launchShortRows(Args<T> const& a, cudaStream_t stream)
{
    if constexpr (G < kWarpSize)
    {
        if (a.cols > G * P)
            return launchShortRows<T, P, 2 * G>(a, stream);
        return launchWarpKernel<T, P, 1, G, 2>(a, stream);
    }
    else
    {
        return launchWarpRows<T, P, 1>(a, stream);
    }
}

// Block size for the cached block kernel: the most resident warps per multiprocessor, the smallest block on a tie
// (more packs per thread, cheaper barriers). Falls back to the uncached kernel when the row exceeds shared memory.
template <typename T, int P>
cudaError_t launchBlockRows(Args<T> const& a, cudaStream_t stream)
{
    constexpr int kThreads[] = {128, 256, 512, 1024};
    Kernel<T> const kernels[] = {layerNormBlock<T, P, 128, true>, layerNormBlock<T, P, 256, true>,
        layerNormBlock<T, P, 512, true>, layerNormBlock<T, P, 1024, true>};
    size_t const sharedMemory = size_t(a.cols) * sizeof(T);
    unsigned const blocks = static_cast<unsigned>(a.rows);

    int device = 0;
    int sharedOptin = 0;
    cudaFuncAttributes attributes{};
    RETURN_IF_ERROR(cudaGetDevice(&device));
    RETURN_IF_ERROR(cudaDeviceGetAttribute(&sharedOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    RETURN_IF_ERROR(cudaFuncGetAttributes(&attributes, kernels[0]));
    if (sharedMemory + attributes.sharedSizeBytes > size_t(sharedOptin))
        return launch<T>(layerNormBlock<T, P, kUncachedBlockThreads, false>, blocks, kUncachedBlockThreads, 0, a, stream);

    // The opt-in limit is raised to the device's maximum, not to this row's size: concurrent callers with other
    // widths then cannot lower it between another caller's set and launch.
    int const maxDynamic = sharedOptin - static_cast<int>(attributes.sharedSizeBytes);
    int best = 0;
    int bestWarps = 0;
    for (int i = 0; i < 4; ++i)
    {
        if (sharedMemory > kDefaultSharedMemory)
            RETURN_IF_ERROR(cudaFuncSetAttribute(kernels[i], cudaFuncAttributeMaxDynamicSharedMemorySize, maxDynamic));
        int blocksPerSm = 0;
        RETURN_IF_ERROR(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocksPerSm, kernels[i], kThreads[i], sharedMemory));
        int const warps = blocksPerSm * kThreads[i] / kWarpSize;
        if (warps > bestWarps)
        {
            best = i;
            bestWarps = warps;
        }
    }
    return launch<T>(kernels[best], blocks, kThreads[best], sharedMemory, a, stream);
}

template <typename T>
bool aligned(T const* p, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// P: values per pack, the widest (at most 16 bytes) that divides cols and the alignment of every pointer.
template <typename T, int P>
cudaError_t dispatch(Args<T> const& a, cudaStream_t stream)
{
    if constexpr (P > 1)
    {
        size_t const bytes = P * sizeof(T);
        bool const fits = a.cols % P == 0 && aligned(a.x, bytes) && aligned(a.y, bytes) && aligned(a.gamma, bytes)
            && aligned(a.beta, bytes);
        if (!fits)
            return dispatch<T, P / 2>(a, stream);
    }
    if (a.cols <= kMaxWarpCols)
        return launchShortRows<T, P, 1>(a, stream);
    return launchBlockRows<T, P>(a, stream);
}

template <typename T>
int layerNorm(T const* x, T const* gamma, T const* beta, T* y, int64_t rows, int64_t cols, float eps,
    cudaStream_t stream)
{
    if (x == nullptr || y == nullptr || rows < 0 || rows > INT_MAX || cols < 1 || cols > INT_MAX)
        return cudaErrorInvalidValue;
    if (rows == 0)
        return cudaSuccess;
    Args<T> const args{x, gamma, beta, y, rows, static_cast<int>(cols), eps};
    return dispatch<T, 16 / sizeof(T)>(args, stream);
}

} // namespace

extern "C" int trtpipe_layernorm_f32(float const* x, float const* gamma, float const* beta, float* y, int64_t rows,
    int64_t cols, float eps, cudaStream_t stream)
{
    return layerNorm(x, gamma, beta, y, rows, cols, eps, stream);
}

extern "C" int trtpipe_layernorm_f16(__half const* x, __half const* gamma, __half const* beta, __half* y,
    int64_t rows, int64_t cols, float eps, cudaStream_t stream)
{
    return layerNorm(x, gamma, beta, y, rows, cols, eps, stream);
}
