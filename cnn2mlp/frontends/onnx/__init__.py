"""ONNX frontend: an ``.onnx`` file into the IR with static per-sample shapes.

``importer`` holds the driver (reading, checking, constant folding, shapes); each op family
registers its converters with ``@converter`` in a module of its own:

- ``activations``: Relu, LeakyRelu, Sigmoid, Tanh, Softmax (at the end)
- ``arithmetic``: Add, Sub, Mul, Div, Sum, Mean, Max, Min (constants and joins)
- ``convolution``: Conv
- ``layout``: Identity, Dropout, Cast, Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Pad,
  Concat, Split, Slice
- ``linear``: Gemm, MatMul, BatchNormalization
- ``pooling``: MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool
"""
from . import activations, arithmetic, convolution, layout, linear, pooling  # noqa: F401
from .importer import OnnxImporter, load_onnx
from .model import check_model, read_model  # noqa: F401
from .registry import BATCH, CONVERTERS  # noqa: F401

__all__ = ["load_onnx", "read_model", "OnnxImporter", "CONVERTERS"]
