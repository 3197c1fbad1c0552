"""TensorRT: build options per version (config), precision plans (precision), engine layers and their ONNX nodes
(layers), the builder (builder), and a cuda-python runtime (runtime).

config, precision and layers are pure Python and run without TensorRT; the other modules import tensorrt and
cuda-python at the top, so import them only where a GPU is needed.
"""
