// TrtpipeLayerNorm as an IPluginV3 (TensorRT 10+). Built when the headers say NV_TENSORRT_MAJOR >= 10.
#include "layernorm_plugin_common.h"

namespace trtpipe
{
namespace
{

using namespace nvinfer1;

class LayerNormPlugin final : public IPluginV3,
                              public IPluginV3OneCore,
                              public IPluginV3OneBuild,
                              public IPluginV3OneRuntime
{
public:
    explicit LayerNormPlugin(float epsilon)
        : mEpsilon(epsilon)
    {
    }

    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override
    {
        try
        {
            return new LayerNormPlugin(mEpsilon);
        }
        catch (...)
        {
            return nullptr;
        }
    }

    char const* getPluginName() const noexcept override
    {
        return kLayerNormName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kLayerNormVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return "";
    }

    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t, DataType const* inputTypes, int32_t) const noexcept override
    {
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t, DimsExprs const*, int32_t, DimsExprs* outputs, int32_t,
        IExprBuilder&) noexcept override
    {
        outputs[0] = inputs[0];
        return 0;
    }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t, int32_t) noexcept override
    {
        return supportsLayerNormFormat(pos, inOut[pos].desc, inOut[0].desc.type);
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
        int32_t) noexcept override
    {
        bool const ok
            = nbInputs == kLayerNormInputs && checkLayerNormShapes(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims);
        return ok ? 0 : 1;
    }

    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t) noexcept override
    {
        bool const ok = nbInputs == kLayerNormInputs && checkLayerNormShapes(in[0].dims, in[1].dims, in[2].dims);
        return ok ? 0 : 1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
        void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        return enqueueLayerNorm(inputDesc, inputs, outputs, mEpsilon, stream);
    }

    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override
    {
        return clone();
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        mEpsilonField = PluginField{"epsilon", &mEpsilon, PluginFieldType::kFLOAT32, 1};
        mSerialized = PluginFieldCollection{1, &mEpsilonField};
        return &mSerialized;
    }

private:
    float mEpsilon;
    PluginField mEpsilonField;
    PluginFieldCollection mSerialized{};
};

class LayerNormPluginCreator final : public IPluginCreatorV3One
{
public:
    IPluginV3* createPlugin(char const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override
    {
        float epsilon = kDefaultEpsilon;
        if (!parseLayerNormFields(fc, epsilon))
            return nullptr;
        try
        {
            return new LayerNormPlugin(epsilon);
        }
        catch (...)
        {
            return nullptr;
        }
    }

    PluginFieldCollection const* getFieldNames() noexcept override
    {
        return layerNormFieldNames();
    }

    char const* getPluginName() const noexcept override
    {
        return kLayerNormName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kLayerNormVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return "";
    }
};

PluginRegistration<LayerNormPluginCreator> const registration;

} // namespace
} // namespace trtpipe
