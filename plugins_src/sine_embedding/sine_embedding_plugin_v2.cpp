// TrtpipeSineEmbedding as an IPluginV2DynamicExt (TensorRT 8.x). Built when the headers say NV_TENSORRT_MAJOR < 10.
#include "sine_embedding_plugin_common.h"

#include <string>

namespace trtpipe
{
namespace
{

using namespace nvinfer1;

// Serialized: dim, outCoords (int32), then dim factors (float32) and outCoords order entries (int32).
size_t serializedSize(SineEmbeddingParams const& p)
{
    return 2 * sizeof(int32_t) + p.dim * sizeof(float) + p.outCoords * sizeof(int32_t);
}

void writeParams(SineEmbeddingParams const& p, void* buffer)
{
    char* out = static_cast<char*>(buffer);
    writeValues(out, &p.dim, 1);
    writeValues(out, &p.outCoords, 1);
    writeValues(out, p.factors, p.dim);
    writeValues(out, p.order, p.outCoords);
}

bool readParams(void const* data, size_t length, SineEmbeddingParams& p)
{
    char const* in = static_cast<char const*>(data);
    char const* const end = in + length;
    bool const ok = readValues(in, end, &p.dim, 1) && readValues(in, end, &p.outCoords, 1) && p.dim >= 2
        && p.dim <= kSineMaxDim && p.dim % 2 == 0 && p.outCoords >= 1 && p.outCoords <= kSineMaxCoords
        && readValues(in, end, p.factors, p.dim) && readValues(in, end, p.order, p.outCoords) && in == end;
    if (!ok)
        logError(kSineName, "the serialized plugin is malformed");
    return ok;
}

class SineEmbeddingPlugin final : public IPluginV2DynamicExt
{
public:
    explicit SineEmbeddingPlugin(SineEmbeddingParams const& params)
        : mParams(params)
    {
    }

    char const* getPluginType() const noexcept override
    {
        return kSineName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kSineVersion;
    }

    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    int32_t initialize() noexcept override
    {
        return 0;
    }

    void terminate() noexcept override {}

    size_t getSerializationSize() const noexcept override
    {
        return serializedSize(mParams);
    }

    void serialize(void* buffer) const noexcept override
    {
        writeParams(mParams, buffer);
    }

    void destroy() noexcept override
    {
        delete this;
    }

    void setPluginNamespace(char const* pluginNamespace) noexcept override
    {
        mNamespace = pluginNamespace;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return mNamespace.c_str();
    }

    // The builder may still pick the other type for the output (supportsFormatCombination allows both).
    DataType getOutputDataType(int32_t, DataType const* inputTypes, int32_t) const noexcept override
    {
        return inputTypes[0];
    }

    IPluginV2DynamicExt* clone() const noexcept override
    {
        return newOrNull<SineEmbeddingPlugin>(*this);
    }

    DimsExprs getOutputDimensions(int32_t, DimsExprs const* inputs, int32_t, IExprBuilder& exprBuilder) noexcept override
    {
        return sineOutputDims(inputs[0], mParams, exprBuilder);
    }

    bool supportsFormatCombination(int32_t pos, PluginTensorDesc const* inOut, int32_t, int32_t) noexcept override
    {
        return supportsSineFormat(inOut[pos]);
    }

    void configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
        int32_t) noexcept override
    {
        // configurePlugin cannot fail here: a mismatch is reported now and enqueue refuses to run.
        if (nbInputs == 1)
            checkSineShape(in[0].desc.dims, mParams);
    }

    size_t getWorkspaceSize(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) const noexcept override
    {
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        return enqueueSine(inputDesc[0], outputDesc[0], inputs[0], outputs[0], mParams, stream);
    }

private:
    SineEmbeddingParams mParams;
    std::string mNamespace;
};

class SineEmbeddingPluginCreator final : public IPluginCreator
{
public:
    char const* getPluginName() const noexcept override
    {
        return kSineName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kSineVersion;
    }

    PluginFieldCollection const* getFieldNames() noexcept override
    {
        return sineFieldNames();
    }

    IPluginV2* createPlugin(char const*, PluginFieldCollection const* fc) noexcept override
    {
        SineEmbeddingParams params{};
        return parseSineFields(fc, params) ? make(params) : nullptr;
    }

    IPluginV2* deserializePlugin(char const*, void const* serialData, size_t serialLength) noexcept override
    {
        SineEmbeddingParams params{};
        return readParams(serialData, serialLength, params) ? make(params) : nullptr;
    }

    void setPluginNamespace(char const* pluginNamespace) noexcept override
    {
        mNamespace = pluginNamespace;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return mNamespace.c_str();
    }

private:
    IPluginV2* make(SineEmbeddingParams const& params) const noexcept
    {
        auto* plugin = newOrNull<SineEmbeddingPlugin>(params);
        if (plugin != nullptr)
            plugin->setPluginNamespace(mNamespace.c_str());
        return plugin;
    }

    std::string mNamespace;
};

PluginRegistration<SineEmbeddingPluginCreator> const registration;

} // namespace
} // namespace trtpipe
