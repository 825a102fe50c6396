"""Dense (also on the last axis of a map) and BatchNormalization."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.precision import real
from .registry import layer


@layer("Dense")
def convert_dense(imp, lay, t):
    c = lay.config
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    units = int(c["units"])
    kernel = imp.weight(lay, 0, "kernel", (shape[-1], units))  # (in, out)
    bias = imp.weight(lay, 1, "bias", (units,)) if c.get("use_bias", True) else None
    if len(shape) == 1:
        weight = kernel.T.astype(real())
    else:  # Dense acts on the last axis of each position
        import scipy.sparse as sp

        rows = int(np.prod(shape[:-1]))
        imp.check_size(lay, rows * np.count_nonzero(kernel))
        weight = sp.kron(sp.identity(rows, format="csr"), sp.csr_array(kernel.T),
                         format="csr").astype(real())
        bias = None if bias is None else np.tile(bias, rows)
    y = imp.emit(lay, "Dense", x, {"weight": weight,
                                   "bias": None if bias is None else bias.astype(real()),
                                   "out_shape": shape[:-1] + (kernel.shape[1],)})
    return imp.activation(lay, y, c.get("activation"))


@layer("BatchNormalization")
def convert_batchnorm(imp, lay, t):
    c = lay.config
    axis = c.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) else axis
    rank = len(imp.shape(t)) + 1
    if axis % rank == 1 and rank > 2:  # channels_first: the Keras array is (C, ...) already
        x = imp.keras_layout(t, lay)
    elif axis % rank == rank - 1:
        x = imp.internal_layout(t, lay)
    else:
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: BatchNormalization over "
                                 f"axis {axis}; only a channel axis (1 or -1) is supported")
    channels = (imp.shape(x)[0],)
    index = 0
    scale = imp.weight(lay, index, "gamma", channels) if c.get("scale", True) else None
    index += scale is not None
    shift = imp.weight(lay, index, "beta", channels) if c.get("center", True) else None
    index += shift is not None
    mean = imp.weight(lay, index, "moving_mean", channels)
    var = imp.weight(lay, index + 1, "moving_variance", channels)
    ones = np.ones_like(mean)
    return imp.emit(lay, "BatchNorm", x, {
        "scale": ones if scale is None else scale, "bias": 0 * ones if shift is None else shift,
        "mean": mean, "var": var, "epsilon": float(c.get("epsilon", 1e-3))})
