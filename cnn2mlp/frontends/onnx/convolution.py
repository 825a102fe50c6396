"""Conv (any rank, strides, pads and auto_pad, dilations, groups)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ...ir.geometry import same_pads
from ...ir.precision import real
from .registry import as_str, attr, converter

if TYPE_CHECKING:
    from .importer import OnnxImporter


@converter("Conv")
def convert_conv(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    kernel = np.asarray(imp.const(node, 1), dtype=real())
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
    attrs = {"kernel": kernel, "bias": None if bias is None else np.asarray(bias, real()),
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


@converter("ConvTranspose")
def convert_conv_transpose(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """ConvTranspose as the transpose of a convolution's matrix: the convolution that maps
    the output space back onto the input (kernel (C_in, C_out/g, k...), same strides, pads
    and dilations) has matrix A (n_in × n_out); ConvTranspose is ``y = Aᵀ x + b``. Built
    directly in CSR, O(non-zeros)."""
    from ...ir.conv_matrix import conv_transpose_matrix

    x = imp.data(node)
    kernel = np.asarray(imp.const(node, 1), real())
    bias = imp.const(node, 2, optional=True)
    c_in, spatial = imp.graph.shape(x)[0], imp.graph.shape(x)[1:]
    nd = len(spatial)
    group = int(attr(node, "group", 1))
    if kernel.ndim != nd + 2 or kernel.shape[0] != c_in or c_in % group:
        imp.fail(node, f"weight {kernel.shape} does not fit input {imp.graph.shape(x)}")
    ks = tuple(attr(node, "kernel_shape", kernel.shape[2:]))
    strides = tuple(attr(node, "strides", [1] * nd))
    dilations = tuple(attr(node, "dilations", [1] * nd))
    out_pad = tuple(attr(node, "output_padding", [0] * nd))
    if any(op >= max(s, d) for op, s, d in zip(out_pad, strides, dilations)):
        imp.fail(node, f"output_padding {list(out_pad)} must be below strides or dilations")
    full = [s * (n - 1) + op + (k - 1) * d + 1
            for n, k, s, d, op in zip(spatial, ks, strides, dilations, out_pad)]
    pads = transpose_pads(imp, node, spatial, full)
    out_spatial = tuple(f - pads[a] - pads[nd + a] for a, f in enumerate(full))
    c_out = kernel.shape[1] * group
    if min(out_spatial, default=1) < 1:
        imp.fail(node, f"its output would have the spatial shape {out_spatial}")
    imp.check_values(node, c_out * math.prod(out_spatial), "its output")
    imp.check_size(node, kernel.size * int(np.prod(spatial)))
    try:
        weight = conv_transpose_matrix(kernel, (c_in,) + tuple(spatial), out_spatial, strides,
                                       pads, dilations, group)
    except ValueError as exc:
        imp.fail(node, str(exc))
    out_bias = None if bias is None else np.repeat(np.asarray(bias, real()),
                                                   int(np.prod(out_spatial)))
    imp.emit(node, "Dense", [x], {"weight": weight, "bias": out_bias,
                                  "out_shape": (c_out,) + out_spatial}, output=node.output[0])


def transpose_pads(imp: OnnxImporter, node: onnx.NodeProto, spatial, full) -> tuple[int, ...]:
    """ConvTranspose's pads: given, from output_shape, or from auto_pad (the ONNX spec)."""
    nd = len(spatial)
    auto_pad = as_str(attr(node, "auto_pad", "NOTSET"))
    output_shape = attr(node, "output_shape", None)
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [n * s for n, s in zip(spatial, attr(node, "strides", [1] * nd))]
    if output_shape is None:
        pads = tuple(attr(node, "pads", [0] * (2 * nd)))
        if auto_pad == "VALID":
            pads = (0,) * (2 * nd)
        if len(pads) != 2 * nd or min(pads) < 0:
            imp.fail(node, f"pads {list(pads)} do not fit {nd} spatial axes")
        return pads
    output_shape = list(output_shape)[-nd:]
    # a negative total (an output_shape beyond what the kernel covers) gives a negative end
    # pad: extra outputs that only the bias reaches, as the ONNX formula says
    total = [f - o for f, o in zip(full, output_shape)]
    if auto_pad == "SAME_UPPER":
        begins, ends = [t // 2 for t in total], [t - t // 2 for t in total]
    else:
        begins, ends = [t - t // 2 for t in total], [t // 2 for t in total]
    return tuple(begins) + tuple(ends)
