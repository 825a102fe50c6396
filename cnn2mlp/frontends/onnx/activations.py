"""Element-wise activations and the final Softmax."""
from __future__ import annotations

import numpy as np
import onnx

from .importer import OnnxImporter, attr, converter


@converter("Relu", "Sigmoid", "Tanh", "LeakyRelu")
def convert_activation(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    attrs = {"alpha": float(attr(node, "alpha", 0.01))} if node.op_type == "LeakyRelu" else {}
    imp.emit(node, node.op_type, [imp.data(node)], attrs, output=node.output[0])


@converter("Softmax")
def convert_softmax(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    full_rank = imp.sample_rank(x) + 1
    default = 1 if imp.opset < 13 else -1
    axis = imp.sample_axis(node, attr(node, "axis", default), full_rank)
    # Before opset 13 softmax flattens from `axis` on: axis 1 is the whole sample.
    whole = axis == 0 if imp.opset < 13 else imp.sample_rank(x) == 1
    if not whole:
        imp.fail(node, "softmax over part of the sample is not supported")
    imp.emit(node, "Softmax", [x], output=node.output[0])


@converter("Clip")
def convert_clip(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Clip(x, min, max), ReLU6 among them: bounds from attributes (opset < 11) or constant
    inputs; either may be absent."""
    x = imp.data(node)
    if imp.opset < 11:
        low, high = attr(node, "min", None), attr(node, "max", None)
    else:
        low, high = (imp.const(node, i, optional=True) for i in (1, 2))
    bounds = {}
    for key, value in (("low", low), ("high", high)):
        if value is not None:
            value = np.asarray(value, np.float64)
            if value.size != 1:
                imp.fail(node, f"{key} bound of shape {value.shape}; Clip takes scalars")
            bounds[key] = float(value.ravel()[0])
    imp.emit(node, "Clip", [x], bounds, output=node.output[0])
