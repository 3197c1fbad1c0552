// What the TensorRT 8.6 (IPluginV2DynamicExt) and 10+ (IPluginV3) wrappers of the sine embedding kernel share.
//
// Contract (the ONNX op `TrtpipeSineEmbedding` written by fuse-plugins): one input, boxes or points (..., coords);
// fields `factors` (float32, an even number of values: dim) and `order` (int32, outCoords entries in [0, coords));
// one output (..., outCoords * dim) as in sine_embedding.h. Linear tensors; the input FP32 or FP16, the output FP32
// or FP16 whatever the input is, so that TensorRT can read FP32 boxes and write FP16 embeddings.
#pragma once

#include "sine_embedding.h"
#include "trtpipe_plugin.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace trtpipe
{

constexpr char const* kSineName = "TrtpipeSineEmbedding";
constexpr char const* kSineVersion = "1";

inline nvinfer1::PluginFieldCollection const* sineFieldNames()
{
    static nvinfer1::PluginField const fields[]{{"factors", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 0},
        {"order", nullptr, nvinfer1::PluginFieldType::kINT32, 0}};
    static nvinfer1::PluginFieldCollection const collection{2, fields};
    return &collection;
}

inline bool isField(nvinfer1::PluginField const& field, char const* name, nvinfer1::PluginFieldType type,
    int32_t maxLength)
{
    return std::strcmp(field.name, name) == 0 && field.type == type && field.length >= 1
        && field.length <= maxLength && field.data != nullptr;
}

// Reads the fields `factors` and `order` into p; false (with a message) when one is missing, malformed or unknown.
inline bool parseSineFields(nvinfer1::PluginFieldCollection const* fc, SineEmbeddingParams& p)
{
    using nvinfer1::PluginFieldType;
    p.dim = p.outCoords = 0;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fc->fields[i];
        if (isField(field, "factors", PluginFieldType::kFLOAT32, kSineMaxDim) && field.length % 2 == 0)
        {
            p.dim = field.length;
            std::memcpy(p.factors, field.data, p.dim * sizeof(float));
        }
        else if (isField(field, "order", PluginFieldType::kINT32, kSineMaxCoords))
        {
            p.outCoords = field.length;
            std::memcpy(p.order, field.data, p.outCoords * sizeof(int32_t));
        }
        else
        {
            logError(kSineName, "bad field '%s' of %d values: the fields are factors, an even number of float32 (at "
                "most %d), and order, 1 to %d int32", field.name, field.length, kSineMaxDim, kSineMaxCoords);
            return false;
        }
    }
    if (p.dim == 0 || p.outCoords == 0 || *std::min_element(p.order, p.order + p.outCoords) < 0)
    {
        logError(kSineName, "needs both fields, factors and order, and no negative order entry");
        return false;
    }
    return true;
}

inline bool supportsSineFormat(nvinfer1::PluginTensorDesc const& desc)
{
    return desc.format == nvinfer1::TensorFormat::kLINEAR
        && (desc.type == nvinfer1::DataType::kFLOAT || desc.type == nvinfer1::DataType::kHALF);
}

// The input's dims with the last one outCoords * dim.
inline nvinfer1::DimsExprs sineOutputDims(
    nvinfer1::DimsExprs const& x, SineEmbeddingParams const& p, nvinfer1::IExprBuilder& exprBuilder)
{
    nvinfer1::DimsExprs y = x;
    if (y.nbDims > 0)
        y.d[y.nbDims - 1] = exprBuilder.constant(p.outCoords * p.dim);
    return y;
}

// False (with a message) when x has no dimensions or `order` names a coordinate beyond x's last dimension. An
// unknown (-1) last dimension passes: it is checked again with the actual shape.
inline bool checkSineShape(nvinfer1::Dims const& x, SineEmbeddingParams const& p)
{
    if (x.nbDims < 1)
    {
        logError(kSineName, "the input must have at least one dimension");
        return false;
    }
    int64_t const coords = x.d[x.nbDims - 1];
    int32_t const last = *std::max_element(p.order, p.order + p.outCoords);
    if (coords >= 0 && coords <= last)
    {
        logError(kSineName, "order reads coordinate %d of an input whose last dimension is %lld", last,
            static_cast<long long>(coords));
        return false;
    }
    return true;
}

inline int32_t enqueueSine(nvinfer1::PluginTensorDesc const& in, nvinfer1::PluginTensorDesc const& out,
    void const* x, void* y, SineEmbeddingParams const& p, cudaStream_t stream)
{
    if (!checkSineShape(in.dims, p))
        return 1;
    int64_t const coords = in.dims.d[in.dims.nbDims - 1];
    int const status = sineEmbedding(x, in.type == nvinfer1::DataType::kHALF, y,
        out.type == nvinfer1::DataType::kHALF, volume(in.dims) / coords, static_cast<int32_t>(coords), p, stream);
    if (status != 0)
        logError(kSineName, "kernel launch failed: %s", cudaGetErrorString(static_cast<cudaError_t>(status)));
    return status;
}

} // namespace trtpipe
