// Standalone check and benchmark of the LayerNorm kernels (no Python, no TensorRT).
//
//   layernorm_bench [f32|f16|all] [ROWSxCOLS ...]
//
// Per shape: random inputs, output poisoned with NaN, result compared with a float64 host reference
// (error = |y - ref| / max(1, |ref|)); then the kernel is timed with CUDA events over up to 64 input sets rotated
// through more memory than L2 holds (where 64 suffice). Prints bandwidth (x read once, y written once) next to a
// device-to-device copy's.
// Exits 1 when any check fails.
#include "layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace
{

#define CHECK_CUDA(expr)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (expr);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
        {                                                                                                              \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(status_));          \
            std::exit(2);                                                                                              \
        }                                                                                                              \
    } while (0)

constexpr size_t kRotationBytes = size_t{512} << 20;
constexpr size_t kMaxSets = 64;
constexpr int kWarmup = 5;
constexpr int kLaunchesPerSample = 20;
constexpr int kSamples = 15;

struct Shape
{
    int64_t rows;
    int64_t cols;
};

int run(float const* x, float const* g, float const* b, float* y, Shape s, cudaStream_t stream)
{
    return trtpipe_layernorm_f32(x, g, b, y, s.rows, s.cols, 1e-5F, stream);
}

int run(__half const* x, __half const* g, __half const* b, __half* y, Shape s, cudaStream_t stream)
{
    return trtpipe_layernorm_f16(x, g, b, y, s.rows, s.cols, 1e-5F, stream);
}

float toFloat(float v)
{
    return v;
}

float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
T fromFloat(float v)
{
    return static_cast<T>(v);
}

template <>
__half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

template <typename T>
std::vector<T> randomRows(Shape s, std::mt19937& rng)
{
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> offset(-4.F, 4.F);
    std::uniform_real_distribution<float> scale(0.5F, 2.F);
    std::vector<T> v(size_t(s.rows * s.cols));
    for (int64_t r = 0; r < s.rows; ++r)
    {
        float const m = offset(rng);
        float const k = scale(rng);
        for (int64_t c = 0; c < s.cols; ++c)
            v[size_t(r * s.cols + c)] = fromFloat<T>(m + k * normal(rng));
    }
    return v;
}

// max over elements of |y - ref| / max(1, |ref|), ref computed in float64; NaN (an unwritten output) gives +inf.
template <typename T>
double maxError(Shape s, std::vector<T> const& x, std::vector<T> const& g, std::vector<T> const& b,
    std::vector<T> const& y)
{
    double worst = 0.0;
    for (int64_t r = 0; r < s.rows; ++r)
    {
        T const* row = x.data() + r * s.cols;
        double mean = 0.0;
        for (int64_t c = 0; c < s.cols; ++c)
            mean += toFloat(row[c]);
        mean /= double(s.cols);
        double var = 0.0;
        for (int64_t c = 0; c < s.cols; ++c)
            var += (toFloat(row[c]) - mean) * (toFloat(row[c]) - mean);
        double const rstd = 1.0 / std::sqrt(var / double(s.cols) + 1e-5);
        for (int64_t c = 0; c < s.cols; ++c)
        {
            double const ref = (toFloat(row[c]) - mean) * rstd * toFloat(g[c]) + toFloat(b[c]);
            double const out = toFloat(y[size_t(r * s.cols + c)]);
            double const err = std::isfinite(out) ? std::fabs(out - ref) / std::max(1.0, std::fabs(ref)) : INFINITY;
            worst = std::max(worst, err);
        }
    }
    return worst;
}

template <typename T>
T* deviceCopy(std::vector<T> const& host)
{
    T* device = nullptr;
    CHECK_CUDA(cudaMalloc(&device, host.size() * sizeof(T)));
    CHECK_CUDA(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return device;
}

// Median milliseconds of one call of `launch(i)`, i cycling through the rotated input sets.
template <typename F>
float medianMs(cudaStream_t stream, F const& launch)
{
    cudaEvent_t start;
    cudaEvent_t stop;
    CHECK_CUDA(cudaEventCreate(&start));
    CHECK_CUDA(cudaEventCreate(&stop));
    for (int i = 0; i < kWarmup; ++i)
        launch(i);
    std::vector<float> samples;
    for (int s = 0; s < kSamples; ++s)
    {
        CHECK_CUDA(cudaEventRecord(start, stream));
        for (int i = 0; i < kLaunchesPerSample; ++i)
            launch(i);
        CHECK_CUDA(cudaEventRecord(stop, stream));
        CHECK_CUDA(cudaEventSynchronize(stop));
        float ms = 0.F;
        CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
        samples.push_back(ms / kLaunchesPerSample);
    }
    CHECK_CUDA(cudaEventDestroy(start));
    CHECK_CUDA(cudaEventDestroy(stop));
    std::nth_element(samples.begin(), samples.begin() + kSamples / 2, samples.end());
    return samples[kSamples / 2];
}

// Device-to-device copy bandwidth in GB/s (bytes read plus bytes written) over 1 GiB.
double copyBandwidth(cudaStream_t stream)
{
    size_t const bytes = size_t{1} << 30;
    void* src = nullptr;
    void* dst = nullptr;
    CHECK_CUDA(cudaMalloc(&src, bytes));
    CHECK_CUDA(cudaMalloc(&dst, bytes));
    CHECK_CUDA(cudaMemset(src, 1, bytes));
    float const ms
        = medianMs(stream, [&](int) { CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)); });
    CHECK_CUDA(cudaFree(src));
    CHECK_CUDA(cudaFree(dst));
    return 2.0 * double(bytes) / (ms * 1e6);
}

template <typename T>
bool checkAndTime(Shape s, double tolerance, double copyGbs, std::mt19937& rng, cudaStream_t stream)
{
    size_t const n = size_t(s.rows * s.cols);
    std::vector<T> const x = randomRows<T>(s, rng);
    std::vector<T> const g = randomRows<T>({1, s.cols}, rng);
    std::vector<T> const b = randomRows<T>({1, s.cols}, rng);
    size_t const sets = std::clamp<size_t>(kRotationBytes / (2 * n * sizeof(T)), 2, kMaxSets);
    T* dx = nullptr;
    T* dy = nullptr;
    CHECK_CUDA(cudaMalloc(&dx, sets * n * sizeof(T)));
    CHECK_CUDA(cudaMalloc(&dy, sets * n * sizeof(T)));
    for (size_t i = 0; i < sets; ++i)
        CHECK_CUDA(cudaMemcpy(dx + i * n, x.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    T* dg = deviceCopy(g);
    T* db = deviceCopy(b);

    CHECK_CUDA(cudaMemset(dy, 0xFF, n * sizeof(T))); // all-ones bits: NaN in FP32 and FP16
    CHECK_CUDA(static_cast<cudaError_t>(run(dx, dg, db, dy, s, stream)));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::vector<T> y(n);
    CHECK_CUDA(cudaMemcpy(y.data(), dy, n * sizeof(T), cudaMemcpyDeviceToHost));
    double const err = maxError(s, x, g, b, y);

    float const ms = medianMs(stream, [&](int i) {
        size_t const set = size_t(i) % sets;
        CHECK_CUDA(static_cast<cudaError_t>(run(dx + set * n, dg, db, dy + set * n, s, stream)));
    });
    double const gbs = 2.0 * double(n * sizeof(T)) / (double(ms) * 1e6);
    bool const ok = err <= tolerance;
    std::printf("%-4s %7lld %6lld  %9.2e %-4s %10.2f %8.0f %6.1f%%\n", sizeof(T) == 4 ? "f32" : "f16",
        static_cast<long long>(s.rows), static_cast<long long>(s.cols), err, ok ? "ok" : "FAIL", double(ms) * 1e3,
        gbs, 100.0 * gbs / copyGbs);

    for (T* p : {dx, dy, dg, db})
        CHECK_CUDA(cudaFree(p));
    return ok;
}

std::vector<Shape> parseShapes(int argc, char** argv, int first)
{
    std::vector<Shape> shapes;
    for (int i = first; i < argc; ++i)
    {
        long long rows = 0;
        long long cols = 0;
        if (std::sscanf(argv[i], "%lldx%lld", &rows, &cols) != 2 || rows < 1 || cols < 1)
        {
            std::fprintf(stderr, "bad shape '%s' (expected ROWSxCOLS)\n", argv[i]);
            std::exit(2);
        }
        shapes.push_back({rows, cols});
    }
    if (shapes.empty())
        shapes = {{1, 32}, {3, 33}, {7, 100}, {1000, 127}, {65536, 256}, {4096, 768}, {16384, 1024}, {4096, 1025},
            {4096, 2048}, {3, 4095}, {4096, 4096}, {1024, 8192}, {4, 70001}};
    return shapes;
}

} // namespace

int main(int argc, char** argv)
{
    std::string const dtype = argc > 1 ? argv[1] : "all";
    if (dtype != "f32" && dtype != "f16" && dtype != "all")
    {
        std::fprintf(stderr, "usage: %s [f32|f16|all] [ROWSxCOLS ...]\n", argv[0]);
        return 2;
    }
    std::vector<Shape> const shapes = parseShapes(argc, argv, 2);
    cudaStream_t stream = nullptr;
    CHECK_CUDA(cudaStreamCreate(&stream));
    std::mt19937 rng(0);

    double const copyGbs = copyBandwidth(stream);
    std::printf("device-to-device copy: %.0f GB/s (read + write)\n", copyGbs);
    std::printf("%-4s %7s %6s  %9s %-4s %10s %8s %7s\n", "type", "rows", "cols", "max_err", "", "time_us", "GB/s",
        "%copy");
    bool ok = true;
    for (Shape const s : shapes)
    {
        if (dtype != "f16")
            ok = checkAndTime<float>(s, 1e-5, copyGbs, rng, stream) && ok;
        if (dtype != "f32")
            ok = checkAndTime<__half>(s, 1e-3, copyGbs, rng, stream) && ok;
    }
    CHECK_CUDA(cudaStreamDestroy(stream));
    std::printf("%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
    return ok ? 0 : 1;
}
