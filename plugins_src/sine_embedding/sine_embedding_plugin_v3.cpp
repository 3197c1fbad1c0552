// TrtpipeSineEmbedding as an IPluginV3 (TensorRT 10+). Built when the headers say NV_TENSORRT_MAJOR >= 10.
#include "sine_embedding_plugin_common.h"

namespace trtpipe
{
namespace
{

using namespace nvinfer1;

class SineEmbeddingPlugin final : public IPluginV3,
                                  public IPluginV3OneCore,
                                  public IPluginV3OneBuild,
                                  public IPluginV3OneRuntime
{
public:
    explicit SineEmbeddingPlugin(SineEmbeddingParams const& params)
        : mParams(params)
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
        return newOrNull<SineEmbeddingPlugin>(mParams);
    }

    char const* getPluginName() const noexcept override
    {
        return kSineName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kSineVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return "";
    }

    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    // A strongly typed network keeps this type; a weakly typed build may pick the other one.
    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t, DataType const* inputTypes, int32_t) const noexcept override
    {
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t, DimsExprs const*, int32_t, DimsExprs* outputs, int32_t,
        IExprBuilder& exprBuilder) noexcept override
    {
        outputs[0] = sineOutputDims(inputs[0], mParams, exprBuilder);
        return inputs[0].nbDims > 0 ? 0 : 1;
    }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t, int32_t) noexcept override
    {
        return supportsSineFormat(inOut[pos].desc);
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
        int32_t) noexcept override
    {
        return nbInputs == 1 && checkSineShape(in[0].desc.dims, mParams) ? 0 : 1;
    }

    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t) noexcept override
    {
        return nbInputs == 1 && checkSineShape(in[0].dims, mParams) ? 0 : 1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void*, cudaStream_t stream) noexcept override
    {
        return enqueueSine(inputDesc[0], outputDesc[0], inputs[0], outputs[0], mParams, stream);
    }

    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override
    {
        return clone();
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        mFields[0] = PluginField{"factors", mParams.factors, PluginFieldType::kFLOAT32, mParams.dim};
        mFields[1] = PluginField{"order", mParams.order, PluginFieldType::kINT32, mParams.outCoords};
        mSerialized = PluginFieldCollection{2, mFields};
        return &mSerialized;
    }

private:
    SineEmbeddingParams mParams;
    PluginField mFields[2];
    PluginFieldCollection mSerialized{};
};

class SineEmbeddingPluginCreator final : public IPluginCreatorV3One
{
public:
    IPluginV3* createPlugin(char const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override
    {
        SineEmbeddingParams params{};
        return parseSineFields(fc, params) ? newOrNull<SineEmbeddingPlugin>(params) : nullptr;
    }

    PluginFieldCollection const* getFieldNames() noexcept override
    {
        return sineFieldNames();
    }

    char const* getPluginName() const noexcept override
    {
        return kSineName;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kSineVersion;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return "";
    }
};

PluginRegistration<SineEmbeddingPluginCreator> const registration;

} // namespace
} // namespace trtpipe
