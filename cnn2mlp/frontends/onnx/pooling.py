"""MaxPool, AveragePool and their global forms."""
from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from .convolution import window_pads
from .registry import attr, converter

if TYPE_CHECKING:
    from .importer import OnnxImporter


@converter("MaxPool", "AveragePool")
def convert_pool(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    if len([o for o in node.output if o]) > 1:
        imp.fail(node, "the Indices output of MaxPool is not supported")
    if attr(node, "storage_order", 0):
        imp.fail(node, "storage_order=1 is not supported")
    spatial = imp.graph.shape(x)[1:]
    nd = len(spatial)
    ks = tuple(attr(node, "kernel_shape"))
    if len(ks) != nd:
        imp.fail(node, f"kernel_shape {ks} does not fit input {imp.graph.shape(x)}")
    strides = tuple(attr(node, "strides", [1] * nd))
    dilations = tuple(attr(node, "dilations", [1] * nd))
    attrs = {"kernel_shape": ks, "strides": strides, "dilations": dilations,
             "pads": window_pads(imp, node, spatial, ks, strides, dilations),
             "ceil_mode": bool(attr(node, "ceil_mode", 0))}
    if node.op_type == "AveragePool":
        attrs["count_include_pad"] = bool(attr(node, "count_include_pad", 0))
    imp.emit(node, node.op_type, [x], attrs, output=node.output[0])


@converter("GlobalMaxPool", "GlobalAveragePool")
def convert_global_pool(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    spatial = imp.graph.shape(x)[1:]
    nd = len(spatial)
    attrs = {"kernel_shape": tuple(spatial), "strides": (1,) * nd, "dilations": (1,) * nd,
             "pads": (0,) * (2 * nd), "ceil_mode": False, "count_include_pad": False}
    op = "MaxPool" if node.op_type == "GlobalMaxPool" else "AveragePool"
    imp.emit(node, op, [x], attrs, output=node.output[0])


@converter("ReduceMax", "ReduceMin")
def convert_reduce_extremum(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Max / min over sample axes with the max-pool machinery: the reduced axes go last
    (a permutation), flattened, and one max pool over all of them; min(x) = -max(-x)."""
    import numpy as np

    x = imp.data(node)
    shape = imp.graph.shape(x)
    reduced = imp.reduce_axes(node, x)
    if reduced is None:
        imp.alias(node, x)
        return
    kept = [a for a in range(len(shape)) if a not in reduced]
    keep_n = int(np.prod([shape[a] for a in kept]))
    span = int(np.prod([shape[a] for a in reduced]))
    sign = 1.0 if node.op_type == "ReduceMax" else -1.0
    h = x
    if sign < 0:
        h = imp.emit(node, "MulConst", [h], {"const": np.full(shape, -1.0)})
    h = imp.emit(node, "Transpose", [h], {"perm": tuple(kept + reduced)})
    h = imp.emit(node, "Reshape", [h], {"shape": (keep_n, span)})
    h = imp.emit(node, "MaxPool", [h], {"kernel_shape": (span,), "strides": (1,),
                                        "dilations": (1,), "pads": (0, 0), "ceil_mode": False})
    if attr(node, "keepdims", 1):
        out_shape = tuple(1 if a in reduced else d for a, d in enumerate(shape))
    else:
        out_shape = tuple(shape[a] for a in kept)
    if sign < 0:  # negate back before the final reshape (a reshape stays last)
        h = imp.emit(node, "MulConst", [h], {"const": np.full((keep_n, 1), -1.0)})
    imp.emit(node, "Reshape", [h], {"shape": out_shape}, output=node.output[0])


@converter("ReduceL1")
def convert_reduce_l1(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """sum |x| over sample axes: |x| = relu(x) + relu(-x), then a sum (a matrix)."""

    from .activations import relu_pair
    from .layout import linear_by_reference

    x = imp.data(node)
    if imp.reduce_axes(node, x) is None:
        imp.alias(node, x)
        return
    axes = imp.const(node, 1, optional=True) if imp.opset >= 18 else attr(node, "axes", None)
    absolute = relu_pair(imp, node, x, -1.0, None)
    summed = onnx.helper.make_node("ReduceSum", [absolute] + list(node.input[1:]),
                                   list(node.output), name=node.name,
                                   keepdims=attr(node, "keepdims", 1),
                                   **({} if imp.opset >= 18 else {"axes": list(axes)}))
    if imp.opset >= 13 and imp.opset < 18:  # ReduceSum took axes as an input from 13 on
        summed = onnx.helper.make_node("ReduceSum", [absolute, imp.const_name(node, axes)],
                                       list(node.output), name=node.name,
                                       keepdims=attr(node, "keepdims", 1))
    linear_by_reference(imp, summed, absolute)
