"""Conv (any rank, strides, pads and auto_pad, dilations, groups)."""
from __future__ import annotations

import numpy as np
import onnx

from ...ir.geometry import same_pads
from .importer import OnnxImporter, as_str, attr, converter


@converter("Conv")
def convert_conv(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    kernel = np.asarray(imp.const(node, 1), dtype=np.float32)
    bias = imp.const(node, 2, optional=True)
    spatial = imp.graph.shape(x)[1:]
    nd = kernel.ndim - 2
    if len(spatial) != nd:
        imp.fail(node, f"kernel {kernel.shape} does not fit input {imp.graph.shape(x)}")
    ks = tuple(attr(node, "kernel_shape", kernel.shape[2:]))
    if tuple(ks) != kernel.shape[2:]:
        imp.fail(node, f"kernel_shape {ks} differs from the weight's {kernel.shape[2:]}")
    strides = tuple(attr(node, "strides", [1] * nd))
    dilations = tuple(attr(node, "dilations", [1] * nd))
    pads = window_pads(imp, node, spatial, ks, strides, dilations)
    attrs = {"kernel": kernel, "bias": None if bias is None else np.asarray(bias, np.float32),
             "strides": strides, "pads": pads, "dilations": dilations,
             "group": int(attr(node, "group", 1))}
    imp.emit(node, "Conv", [x], attrs, output=node.output[0])


def window_pads(imp: OnnxImporter, node: onnx.NodeProto, spatial, kernel, strides,
                dilations) -> tuple[int, ...]:
    """Explicit (begins..., ends...) pads from ``pads`` or ``auto_pad``."""
    nd = len(spatial)
    auto_pad = as_str(attr(node, "auto_pad", "NOTSET"))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [same_pads(spatial[a], kernel[a], strides[a], dilations[a],
                           upper=auto_pad == "SAME_UPPER") for a in range(nd)]
        return tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs)
    if auto_pad == "VALID":
        return (0,) * (2 * nd)
    if auto_pad != "NOTSET":
        imp.fail(node, f"auto_pad {auto_pad!r} is unknown")
    pads = tuple(attr(node, "pads", [0] * (2 * nd)))
    if len(pads) != 2 * nd or min(pads) < 0:
        imp.fail(node, f"pads {list(pads)} do not fit {nd} spatial axes")
    return pads
