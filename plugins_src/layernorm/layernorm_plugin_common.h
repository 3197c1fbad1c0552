// What the TensorRT 8.6 (IPluginV2DynamicExt) and 10+ (IPluginV3) wrappers of the LayerNorm kernel share.
//
// Contract (the ONNX op `TrtpipeLayerNorm` written by fuse-plugins): inputs x, gamma, beta; gamma and beta hold as
// many values as x's last dimension; one float field `epsilon`; normalization over the last axis; the output has x's
// shape and type. Tensors are linear FP32 or FP16, all three inputs of one type.
#pragma once

#include "layernorm.h"
#include "trtpipe_plugin.h"

#include <cstdint>
#include <cstring>

namespace trtpipe
{

constexpr char const* kLayerNormName = "TrtpipeLayerNorm";
constexpr char const* kLayerNormVersion = "1";
constexpr float kDefaultEpsilon = 1e-5F;
constexpr int32_t kLayerNormInputs = 3;

inline nvinfer1::PluginFieldCollection const* layerNormFieldNames()
{
    static nvinfer1::PluginField const fields[]{{"epsilon", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1}};
    static nvinfer1::PluginFieldCollection const collection{1, fields};
    return &collection;
}

// Reads `epsilon` (default kDefaultEpsilon) from a creator's fields; false for any other or malformed field.
inline bool parseLayerNormFields(nvinfer1::PluginFieldCollection const* fc, float& epsilon)
{
    epsilon = kDefaultEpsilon;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fc->fields[i];
        bool const isEpsilon = std::strcmp(field.name, "epsilon") == 0
            && field.type == nvinfer1::PluginFieldType::kFLOAT32 && field.length == 1 && field.data != nullptr;
        if (!isEpsilon)
        {
            logError(kLayerNormName, "unexpected field '%s': the only field is epsilon, one float32", field.name);
            return false;
        }
        epsilon = *static_cast<float const*>(field.data);
    }
    return true;
}

inline bool supportsLayerNormFormat(int32_t pos, nvinfer1::PluginTensorDesc const& desc, nvinfer1::DataType xType)
{
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
        return false;
    if (pos == 0)
        return desc.type == nvinfer1::DataType::kFLOAT || desc.type == nvinfer1::DataType::kHALF;
    return desc.type == xType;
}

// False (with a message) when gamma or beta does not hold one value per column of x. Unknown (-1) dimensions of x
// pass: they are checked again with the actual shapes.
inline bool checkLayerNormShapes(nvinfer1::Dims const& x, nvinfer1::Dims const& gamma, nvinfer1::Dims const& beta)
{
    if (x.nbDims < 1)
    {
        logError(kLayerNormName, "x must have at least one dimension");
        return false;
    }
    int64_t const cols = x.d[x.nbDims - 1];
    if (cols < 0)
        return true;
    if (volume(gamma) != cols || volume(beta) != cols)
    {
        logError(kLayerNormName, "gamma and beta have %lld and %lld values, expected %lld (x's last dimension)",
            static_cast<long long>(volume(gamma)), static_cast<long long>(volume(beta)), static_cast<long long>(cols));
        return false;
    }
    return true;
}

inline int32_t enqueueLayerNorm(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs,
    void* const* outputs, float epsilon, cudaStream_t stream)
{
    nvinfer1::Dims const& x = inputDesc[0].dims;
    if (!checkLayerNormShapes(x, inputDesc[1].dims, inputDesc[2].dims))
        return 1;
    int64_t const cols = x.d[x.nbDims - 1];
    if (cols == 0)
        return 0;
    int64_t const rows = volume(x) / cols;
    int const status = inputDesc[0].type == nvinfer1::DataType::kHALF
        ? trtpipe_layernorm_f16(static_cast<__half const*>(inputs[0]), static_cast<__half const*>(inputs[1]),
            static_cast<__half const*>(inputs[2]), static_cast<__half*>(outputs[0]), rows, cols, epsilon, stream)
        : trtpipe_layernorm_f32(static_cast<float const*>(inputs[0]), static_cast<float const*>(inputs[1]),
            static_cast<float const*>(inputs[2]), static_cast<float*>(outputs[0]), rows, cols, epsilon, stream);
    if (status != 0)
        logError(kLayerNormName, "kernel launch failed: %s", cudaGetErrorString(static_cast<cudaError_t>(status)));
    return status;
}

} // namespace trtpipe
