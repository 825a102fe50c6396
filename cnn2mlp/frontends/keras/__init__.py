"""Keras frontend: ``.keras`` (a zip with config.json and model.weights.h5) and legacy
``.h5`` files, read with zipfile, json and h5py alone: TensorFlow is never imported and no
code in the file is ever run or unmarshalled (a Lambda layer is refused by its class name).

Keras tensors are channels-last (N, H, W, C) unless a layer says channels_first; the IR's
convolutions are channels-first. Each tensor is tracked with its layout, and Transposes are
inserted only where a layer needs the other one (the layout pass then folds them into the
weights for free).

``importer`` holds the driver (reading, the layer graph, the registries); each layer family
registers its converters with ``@layer`` or ``@merge_layer`` in a module of its own:

- ``activations``: Activation, ReLU, LeakyReLU, ELU, PReLU, Softmax, Dropout and friends
- ``convolution``: Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D, Conv1D/2DTranspose
- ``core``: Dense, BatchNormalization
- ``layout``: Flatten, Reshape, ZeroPadding, UpSampling, Cropping, Permute, RepeatVector
- ``merge``: Add, Subtract, Average, Maximum, Minimum, Concatenate (Multiply, Dot refused)
- ``pooling``: Max/AveragePooling, Global pooling
- ``preprocessing``: Rescaling, Normalization
- ``spatial``: what the spatial layers share (data_format, padding, selections)
"""
from . import (  # noqa: F401  (each module registers its layers)
    activations,
    convolution,
    core,
    layout,
    merge,
    pooling,
    preprocessing,
)
from .importer import KerasImporter, load_keras
from .registry import CONVERTERS, MERGE_CONVERTERS

__all__ = ["load_keras", "KerasImporter", "CONVERTERS", "MERGE_CONVERTERS"]
