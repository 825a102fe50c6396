"""MaxPool, AveragePool and their global forms."""
from __future__ import annotations

import onnx

from .convolution import window_pads
from .importer import OnnxImporter, attr, converter


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
