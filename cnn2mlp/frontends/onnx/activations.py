"""Element-wise activations and the final Softmax."""
from __future__ import annotations

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
