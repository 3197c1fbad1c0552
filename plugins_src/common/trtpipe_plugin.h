// What trtpipe's TensorRT plugins share: errors through TensorRT's logger, the registration of a creator when the
// library is loaded, shapes, allocation without exceptions, and byte serialization (IPluginV2).
//
// A plugin library registers its creator with TensorRT's plugin registry when it is loaded (PluginRegistration): the
// convention of trtexec --plugins / --staticPlugins and polygraphy --plugins; trtpipe loads it with ctypes.CDLL. It
// links libnvinfer (getPluginRegistry, getLogger), so it registers with the libnvinfer of the process that loads it.
#pragma once

#include <NvInferRuntime.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>

namespace trtpipe
{

// An error of `plugin` through TensorRT's global logger (its first builder's or runtime's), or on stderr while there
// is none.
__attribute__((format(printf, 2, 3))) inline void logError(char const* plugin, char const* format, ...)
{
    char message[512];
    int const prefix = std::snprintf(message, sizeof(message), "%s: ", plugin);
    va_list args;
    va_start(args, format);
    std::vsnprintf(message + prefix, sizeof(message) - prefix, format, args);
    va_end(args);
    nvinfer1::ILogger* const logger = getLogger();
    if (logger != nullptr)
        logger->log(nvinfer1::ILogger::Severity::kERROR, message);
    else
        std::fprintf(stderr, "%s\n", message);
}

// Registers a Creator with TensorRT's plugin registry, in the default namespace, when the library is loaded: one
// object of this type at namespace scope. The registry keeps a reference to the creator, which lives as long as the
// library.
template <typename Creator>
class PluginRegistration
{
public:
    PluginRegistration()
    {
        if (!getPluginRegistry()->registerCreator(mCreator, ""))
            logError(mCreator.getPluginName(),
                "TensorRT's plugin registry refused the creator of version %s (one is registered already?)",
                mCreator.getPluginVersion());
    }

    PluginRegistration(PluginRegistration const&) = delete;
    PluginRegistration& operator=(PluginRegistration const&) = delete;

private:
    Creator mCreator;
};

inline int64_t volume(nvinfer1::Dims const& dims)
{
    int64_t n = 1;
    for (int32_t i = 0; i < dims.nbDims; ++i)
        n *= dims.d[i];
    return n;
}

// new T(args...) for TensorRT's noexcept interfaces: nullptr where it throws.
template <typename T, typename... Args>
T* newOrNull(Args&&... args) noexcept
{
    try
    {
        return new T(std::forward<Args>(args)...);
    }
    catch (...)
    {
        return nullptr;
    }
}

// Appends n values to a serialization buffer.
template <typename T>
void writeValues(char*& buffer, T const* values, size_t n)
{
    std::memcpy(buffer, values, n * sizeof(T));
    buffer += n * sizeof(T);
}

// Reads n values from a serialized buffer that ends at `end`; false when it holds fewer bytes.
template <typename T>
bool readValues(char const*& buffer, char const* end, T* values, size_t n)
{
    if (static_cast<size_t>(end - buffer) < n * sizeof(T))
        return false;
    std::memcpy(values, buffer, n * sizeof(T));
    buffer += n * sizeof(T);
    return true;
}

} // namespace trtpipe
