// LayerNorm over the last axis of a rows x cols tensor: FP32 or FP16 I/O, FP32 statistics.
//
// Rows of up to 16 KiB of packs stay in registers, held by a group of threads (a few lanes, a warp, or up to sixteen
// warps) that reduces with shuffles, and through shared memory between warps. Longer rows get a block each, cached in shared
// memory between passes, or read again from global memory when they do not fit in shared memory.
// Statistics are two-pass: the mean, then the mean squared deviation from it.
// Loads and stores move packs of up to 16 bytes; the pack shrinks to a divisor of cols when cols (or a pointer's
// alignment) does not allow the full width.
#include "layernorm.h"

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>

namespace
{

constexpr int kWarpSize = 32;
constexpr int kMaxBlockThreads = 1024;
// Register kernel: threads per block, or per row where a row takes more; bytes of full packs a thread holds, and a row
// holds at most: 64 and 16 KiB (4 FP32 packs a thread, up to 256 threads a row; FP16: 2 packs, 512 threads).
constexpr int kRowsBlockThreads = 128;
constexpr int kThreadBytes = 64;
constexpr int kRowBytes = 16 * 1024;
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

// Sum over aligned groups of G threads. Every thread of a group gets the same bits: both lanes of a butterfly pair add
// the same two values, and the warps' sums are added in one order. Groups wider than a warp exchange their warps' sums
// through shared memory, so every thread of the block must take part.
template <int G>
__device__ __forceinline__ float groupSum(float v)
{
    constexpr int lanes = G < kWarpSize ? G : kWarpSize;
#pragma unroll
    for (int offset = lanes / 2; offset > 0; offset /= 2)
        v += __shfl_xor_sync(~0u, v, offset, lanes);
    if constexpr (G > kWarpSize)
    {
        constexpr int warps = G / kWarpSize;
        __shared__ float warpSums[kMaxBlockThreads / kWarpSize];
        int const warp = threadIdx.x / kWarpSize;
        __syncthreads(); // the previous call's reads are done
        if (threadIdx.x % kWarpSize == 0)
            warpSums[warp] = v;
        __syncthreads();
        int const first = warp / warps * warps;
        v = 0.f;
#pragma unroll
        for (int w = 0; w < warps; ++w)
            v += warpSums[first + w];
    }
    return v;
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

// A whole number of groups: 96-thread groups take 96-thread blocks.
template <int G>
constexpr int rowsBlockThreads()
{
    return G >= kRowsBlockThreads ? G : kRowsBlockThreads / G * G;
}

// Packs of a thread and threads of a row at most. FP16 values take twice their bytes in registers once converted: at
// 4 packs a thread those kernels need 80 registers, so 24 warps per SM, and a 16 MiB tensor took 2.6 of those waves
// of rows; at 2 packs every instance fits 32 warps (64 registers) without spills.
template <typename T>
constexpr int maxPacks()
{
    return kThreadBytes / 16 / (sizeof(T) == 2 ? 2 : 1);
}

template <typename T>
constexpr int maxRowThreads()
{
    return kRowBytes / (maxPacks<T>() * 16);
}

// A group of G threads normalizes a row of at most G * N packs, each thread holding N packs of P values in registers;
// pack j of a thread starts at column (j * G + lane) * P, so the group's accesses are coalesced. The groups walk the
// rows with the whole grid as stride, each thread loading its packs of the next row before it works on the current
// one, so that loads stay in flight while it computes.
template <typename T, int P, int N, int G, int BLOCK = rowsBlockThreads<G>()>
__global__ void __launch_bounds__(BLOCK, kMaxBlockThreads / BLOCK)
    layerNormRows(T const* __restrict__ x, T const* __restrict__ gamma, T const* __restrict__ beta, T* __restrict__ y,
        int64_t rows, int cols, float eps)
{
    using V = Pack<T, P>;
    constexpr int kGroups = BLOCK / G;
    int const lane = threadIdx.x % G;
    int64_t const stride = int64_t{gridDim.x} * kGroups;
    auto const holds = [&](int64_t row, int j) { return row < rows && (j * G + lane) * P < cols; };
    auto const load = [&](int64_t row, V (&packs)[N]) {
#pragma unroll
        for (int j = 0; j < N; ++j)
            packs[j] = holds(row, j) ? *reinterpret_cast<V const*>(x + row * cols + (j * G + lane) * P) : V{};
    };
    float const perCol = 1.f / cols;

    int64_t row = int64_t{blockIdx.x} * kGroups + threadIdx.x / G;
    V next[N];
    load(row, next);
    // The block's trip count, not the group's: groups wider than a warp synchronize the block in groupSum.
    for (int64_t blockRow = int64_t{blockIdx.x} * kGroups; blockRow < rows; blockRow += stride, row += stride)
    {
        V in[N];
#pragma unroll
        for (int j = 0; j < N; ++j)
            in[j] = next[j];
        load(row + stride, next);

        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < N; ++j)
        {
#pragma unroll
            for (int k = 0; k < P; ++k)
                sum += toFloat(in[j].v[k]);
        }
        float const mean = groupSum<G>(sum) * perCol;

        float squares = 0.f;
#pragma unroll
        for (int j = 0; j < N; ++j)
        {
#pragma unroll
            for (int k = 0; k < P; ++k)
            {
                float const d = holds(row, j) ? toFloat(in[j].v[k]) - mean : 0.f;
                squares += d * d;
            }
        }
        float const rstd = rsqrtf(groupSum<G>(squares) * perCol + eps);

#pragma unroll
        for (int j = 0; j < N; ++j)
        {
            if (!holds(row, j))
                continue;
            int const col = (j * G + lane) * P;
            Affine<T, P> const affine(gamma, beta, col);
            V out;
#pragma unroll
            for (int k = 0; k < P; ++k)
                out.v[k] = fromFloat<T>((toFloat(in[j].v[k]) - mean) * rstd * affine.scale[k] + affine.shift[k]);
            *reinterpret_cast<V*>(y + row * cols + col) = out;
        }
    }
}

// One block per row, three passes: sum, squared deviations, normalization. CACHED keeps the row in dynamic shared
// memory (cols * sizeof(T) bytes) after the first pass, each thread reading back the packs it stored; otherwise every
// pass reads x.
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
    auto const load = [&](int i) { return CACHED ? cache[i] : xRow[i]; };
    float const perCol = 1.f / cols;

    float sum = 0.f;
#pragma unroll 4
    for (int i = threadIdx.x; i < packs; i += BLOCK)
    {
        V const pack = xRow[i];
        if constexpr (CACHED)
            cache[i] = pack;
#pragma unroll
        for (int k = 0; k < P; ++k)
            sum += toFloat(pack.v[k]);
    }
    float const mean = groupSum<BLOCK>(sum) * perCol;

    float squares = 0.f;
#pragma unroll 4
    for (int i = threadIdx.x; i < packs; i += BLOCK)
    {
        V const pack = load(i);
#pragma unroll
        for (int k = 0; k < P; ++k)
        {
            float const d = toFloat(pack.v[k]) - mean;
            squares += d * d;
        }
    }
    float const rstd = rsqrtf(groupSum<BLOCK>(squares) * perCol + eps);

#pragma unroll 2 // at 4, ptxas spills in the 1024-thread FP16 instance
    for (int i = threadIdx.x; i < packs; i += BLOCK)
    {
        V const in = load(i);
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

// The grid: the blocks that fit on the device at once, or fewer when the rows are few.
template <typename T, int P, int N, int G>
cudaError_t launchRows(Args<T> const& a, cudaStream_t stream)
{
    constexpr int threads = rowsBlockThreads<G>();
    Kernel<T> const kernel = layerNormRows<T, P, N, G>;
    int device = 0;
    int sms = 0;
    int blocksPerSm = 0;
    RETURN_IF_ERROR(cudaGetDevice(&device));
    RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocksPerSm, kernel, threads, 0));
    int64_t const rowBlocks = (a.rows + threads / G - 1) / (threads / G);
    unsigned const blocks = static_cast<unsigned>(std::min(rowBlocks, int64_t{sms} * blocksPerSm));
    return launch<T>(kernel, blocks, threads, 0, a, stream);
}

// A row of at most maxRowThreads * maxPacks packs: the packs per thread grow to maxPacks, then the threads per row,
// until the group covers the row. Rows of 3 * 2^k packs go to 3/4 of the group, so that no thread holds an empty pack:
// FP16 rows keep 2 packs a thread where 3/4 of the group is whole warps (1536 and 3072 columns: 96 and 192 threads;
// at 3 packs a thread they ran at 77% and 80% of a copy on an H200, now 87-91%), other rows take 3 packs a thread.
template <typename T, int P, int N, int G>
cudaError_t launchRegisterRows(Args<T> const& a, cudaStream_t stream)
{
    constexpr int kMax = maxPacks<T>();
    if (a.cols > G * N * P)
    {
        if constexpr (N < kMax)
            return launchRegisterRows<T, P, 2 * N, G>(a, stream);
        else if constexpr (G < maxRowThreads<T>())
            return launchRegisterRows<T, P, N, 2 * G>(a, stream);
    }
    if constexpr (N == kMax && G * N >= 4)
    {
        constexpr int threads = G * N / 4; // three packs each: 3/4 of the group's packs
        constexpr int wide = 3 * G / 4;
        if constexpr (N == 2 && wide % kWarpSize == 0)
        {
            if (a.cols <= wide * N * P)
                return launchRows<T, P, N, wide>(a, stream);
        }
        else if (a.cols <= threads * 3 * P)
            return launchRows<T, P, 3, threads>(a, stream);
    }
    return launchRows<T, P, N, G>(a, stream);
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
    {
        Kernel<T> const uncached = layerNormBlock<T, P, kUncachedBlockThreads, false>;
        return launch<T>(uncached, blocks, kUncachedBlockThreads, 0, a, stream);
    }

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
    if (a.cols <= maxRowThreads<T>() * maxPacks<T>() * P)
        return launchRegisterRows<T, P, 1, 1>(a, stream);
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
