"""Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D and Conv1D/2DTranspose (kernels HWIO
turned OIHW), with their padding, strides, dilations, groups, bias and activation."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.precision import real
from .registry import Tensor, layer
from .spatial import as_tuple, keras_pads, spatial_input, spatial_rank


@layer("Conv1D", "Conv2D")
def convert_conv(imp, lay, t):
    nd = spatial_rank(lay)
    x = spatial_input(imp, t, lay)
    c = lay.config
    groups = int(c.get("groups", 1))
    expected = as_tuple(c["kernel_size"], nd) + (imp.shape(x)[0] // groups, int(c["filters"]))
    kernel = imp.weight(lay, 0, "kernel", expected)  # (k..., in/groups, out)
    oihw = kernel.transpose((nd + 1, nd) + tuple(range(nd)))
    return emit_conv(imp, lay, x, oihw, groups)


def emit_conv(imp, lay, x: Tensor, oihw: np.ndarray, group: int) -> Tensor:
    """A Keras convolution (kernel already OIHW) with its bias, padding and activation."""
    c = lay.config
    nd = oihw.ndim - 2
    bias = imp.weight(lay, 1, "bias", oihw.shape[:1]) if c.get("use_bias", True) else None
    strides = as_tuple(c.get("strides", 1), nd)
    dilations = as_tuple(c.get("dilation_rate", 1), nd)
    pads = keras_pads(imp, lay, imp.shape(x)[1:], oihw.shape[2:], strides, dilations)
    y = imp.emit(lay, "Conv", x, {"kernel": oihw.astype(real()),
                                  "bias": None if bias is None else bias.astype(real()),
                                  "strides": strides, "pads": pads, "dilations": dilations,
                                  "group": group})
    return imp.activation(lay, y, c.get("activation"))


@layer("DepthwiseConv1D", "DepthwiseConv2D")
def convert_depthwise(imp, lay, t):
    nd = spatial_rank(lay)
    x = spatial_input(imp, t, lay)
    expected = as_tuple(lay.config["kernel_size"], nd) + (
        imp.shape(x)[0], int(lay.config.get("depth_multiplier", 1)))
    dk = imp.weight(lay, 0, "depthwise_kernel", expected)  # (k..., in, multiplier)
    channels, mult = dk.shape[nd], dk.shape[nd + 1]
    # output channel c * multiplier + m reads input channel c alone
    oihw = dk.reshape(dk.shape[:nd] + (channels * mult,)).transpose(
        (nd,) + tuple(range(nd)))[:, None]
    return emit_conv(imp, lay, x, oihw, channels)


@layer("Conv1DTranspose", "Conv2DTranspose")
def convert_conv_transpose(imp, lay, t):
    """Keras' transposed convolution: kernel (k..., filters, in); "valid" gives
    (n - 1) s + k outputs, "same" n s (TensorFlow's pads: the larger half at the end)."""
    from ...ir.conv_matrix import conv_transpose_matrix

    c = lay.config
    nd = 1 if lay.class_name.startswith("Conv1D") else 2
    if c.get("output_padding") not in (None, [None] * nd):
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: output_padding is not "
                                 "supported")
    x = spatial_input(imp, t, lay)
    c_in, spatial = imp.shape(x)[0], imp.shape(x)[1:]
    ks = as_tuple(c["kernel_size"], nd)
    filters = int(c["filters"])
    kernel = imp.weight(lay, 0, "kernel", ks + (filters, c_in))
    strides = as_tuple(c.get("strides", 1), nd)
    dilations = as_tuple(c.get("dilation_rate", 1), nd)
    full = [(n - 1) * s + (k - 1) * d + 1 for n, k, s, d in zip(spatial, ks, strides, dilations)]
    if c.get("padding", "valid") == "same":
        total = [max(f - n * s, 0) for f, n, s in zip(full, spatial, strides)]
        pads = tuple(t_ // 2 for t_ in total) + tuple(t_ - t_ // 2 for t_ in total)
    else:
        pads = (0,) * (2 * nd)
    out_spatial = tuple(f - pads[a] - pads[nd + a] for a, f in enumerate(full))
    io_kernel = kernel.transpose((nd + 1, nd) + tuple(range(nd))).astype(real())
    imp.check_size(lay, io_kernel.size * int(np.prod(spatial)))
    weight = conv_transpose_matrix(io_kernel, imp.shape(x), out_spatial, strides, pads,
                                   dilations, 1)
    bias = imp.weight(lay, 1, "bias", (filters,)) if c.get("use_bias", True) else None
    out_bias = None if bias is None else np.repeat(bias, int(np.prod(out_spatial)))
    y = imp.emit(lay, "Dense", x, {"weight": weight.astype(real()),
                                   "bias": None if out_bias is None else out_bias.astype(real()),
                                   "out_shape": (filters,) + out_spatial})
    return imp.activation(lay, y, c.get("activation"))


@layer("SeparableConv1D", "SeparableConv2D")
def convert_separable(imp, lay, t):
    """A depthwise convolution (depth_multiplier) then a 1×1 pointwise one, with the bias."""
    c = lay.config
    nd = spatial_rank(lay)
    x = spatial_input(imp, t, lay)
    channels = imp.shape(x)[0]
    mult = int(c.get("depth_multiplier", 1))
    ks = as_tuple(c["kernel_size"], nd)
    dk = imp.weight(lay, 0, "depthwise_kernel", ks + (channels, mult))
    pk = imp.weight(lay, 1, "pointwise_kernel", (1,) * nd + (channels * mult, int(c["filters"])))
    depthwise = dk.reshape(ks + (channels * mult,)).transpose((nd,) + tuple(range(nd)))[:, None]
    strides = as_tuple(c.get("strides", 1), nd)
    dilations = as_tuple(c.get("dilation_rate", 1), nd)
    pads = keras_pads(imp, lay, imp.shape(x)[1:], ks, strides, dilations)
    h = imp.emit(lay, "Conv", x, {"kernel": depthwise.astype(real()), "bias": None,
                                  "strides": strides, "pads": pads, "dilations": dilations,
                                  "group": channels})
    pointwise = pk.reshape(channels * mult, -1).T.reshape((-1, channels * mult) + (1,) * nd)
    bias = imp.weight(lay, 2, "bias", (int(c["filters"]),)) if c.get("use_bias", True) else None
    y = imp.emit(lay, "Conv", h, {"kernel": pointwise.astype(real()),
                                  "bias": None if bias is None else bias.astype(real()),
                                  "strides": (1,) * nd, "pads": (0,) * (2 * nd),
                                  "dilations": (1,) * nd, "group": 1})
    return imp.activation(lay, y, c.get("activation"))
