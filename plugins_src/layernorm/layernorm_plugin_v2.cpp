// TrtpipeLayerNorm as an IPluginV2DynamicExt (TensorRT 8.x). Built when the headers say NV_TENSORRT_MAJOR < 10.
#include "layernorm_plugin_common.h"

#include <string>

namespace trtpipe
{
namespace
{

using namespace nvinfer1;

class LayerNormPlugin final : public IPluginV2DynamicExt
{
public:
    explicit LayerNormPlugin(float epsilon)
        : mEpsilon(epsilon)
    {
    }

    char const* getPluginType() const noexcept override
    {
        return kLayerNormName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kLayerNormVersion;
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
        return sizeof(mEpsilon);
    }

    void serialize(void* buffer) const noexcept override
    {
        std::memcpy(buffer, &mEpsilon, sizeof(mEpsilon));
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

    DataType getOutputDataType(int32_t, DataType const* inputTypes, int32_t) const noexcept override
    {
        return inputTypes[0];
    }

    IPluginV2DynamicExt* clone() const noexcept override
    {
        try
        {
            return new LayerNormPlugin(*this);
        }
        catch (...)
        {
            return nullptr;
        }
    }

    DimsExprs getOutputDimensions(int32_t, DimsExprs const* inputs, int32_t, IExprBuilder&) noexcept override
    {
        return inputs[0];
    }

    bool supportsFormatCombination(int32_t pos, PluginTensorDesc const* inOut, int32_t, int32_t) noexcept override
    {
        return supportsLayerNormFormat(pos, inOut[pos], inOut[0].type);
    }

    void configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
        int32_t) noexcept override
    {
        // configurePlugin cannot fail here: a mismatch is reported now and enqueue refuses to run.
        if (nbInputs == kLayerNormInputs)
            checkLayerNormShapes(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims);
    }

    size_t getWorkspaceSize(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) const noexcept override
    {
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
        void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        return enqueueLayerNorm(inputDesc, inputs, outputs, mEpsilon, stream);
    }

private:
    float mEpsilon;
    std::string mNamespace;
};

class LayerNormPluginCreator final : public IPluginCreator
{
public:
    char const* getPluginName() const noexcept override
    {
        return kLayerNormName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kLayerNormVersion;
    }

    PluginFieldCollection const* getFieldNames() noexcept override
    {
        return layerNormFieldNames();
    }

    IPluginV2* createPlugin(char const*, PluginFieldCollection const* fc) noexcept override
    {
        float epsilon = kDefaultEpsilon;
        return parseLayerNormFields(fc, epsilon) ? make(epsilon) : nullptr;
    }

    IPluginV2* deserializePlugin(char const*, void const* serialData, size_t serialLength) noexcept override
    {
        float epsilon = kDefaultEpsilon;
        if (serialLength != sizeof(epsilon))
        {
            logError(kLayerNormName, "serialized plugin has the wrong size");
            return nullptr;
        }
        std::memcpy(&epsilon, serialData, sizeof(epsilon));
        return make(epsilon);
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
    IPluginV2* make(float epsilon) const noexcept
    {
        try
        {
            auto* plugin = new LayerNormPlugin(epsilon);
            plugin->setPluginNamespace(mNamespace.c_str());
            return plugin;
        }
        catch (...)
        {
            return nullptr;
        }
    }

    std::string mNamespace;
};

PluginRegistration<LayerNormPluginCreator> const registration;

} // namespace
} // namespace trtpipe
