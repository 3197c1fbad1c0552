"""trtpipe: a declarative pipeline from a PyTorch model to a fast and accurate TensorRT engine.

Importing this package is cheap: torch, tensorrt, onnx and onnxruntime are imported by the stages that use them.
"""

__version__ = "0.1.0"

try:
    from loguru import logger as _logger
except ImportError:  # a bare python (say, a GPU machine's own) importing trtpipe.models only
    pass
else:
    _logger.disable("trtpipe")  # a library stays quiet; the command line enables its logs (cli.setup_logging)
