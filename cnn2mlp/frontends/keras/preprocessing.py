"""Preprocessing layers that are affine maps, folded into the first matrix: Rescaling and
Normalization."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from .registry import layer


@layer("Rescaling")
def convert_rescaling(imp, lay, t):
    """``x * scale + offset`` (input preprocessing): folded into the first matrix."""
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    scale = np.broadcast_to(np.asarray(lay.config.get("scale", 1.0), np.float64), shape)
    offset = np.broadcast_to(np.asarray(lay.config.get("offset", 0.0), np.float64), shape)
    y = imp.emit(lay, "MulConst", x, {"const": np.array(scale)})
    return imp.emit(lay, "AddConst", y, {"const": np.array(offset)})


#: keras.config.epsilon(), the floor Normalization puts under the standard deviation
KERAS_EPSILON = 1e-7


@layer("Normalization")
def convert_normalization(imp, lay, t):
    """``(x - mean) / max(sqrt(var), ε)`` (or its inverse with ``invert``), an affine map
    folded into the first matrix; mean and variance come from the config or, after
    ``adapt()``, from the weights, over the kept ``axis``."""
    c = lay.config
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    rank = len(shape) + 1
    axes = c.get("axis", -1)
    axes = [axes] if axes is None or isinstance(axes, int) else list(axes)
    if None in axes:
        axes = []
    keep = sorted(a % rank for a in axes)
    if 0 in keep:
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: Normalization keeps the "
                                 "batch axis; only per-sample axes are supported")
    broadcast = tuple(shape[d - 1] if d in keep else 1 for d in range(1, rank))
    kept_dims = tuple(shape[d - 1] for d in keep)
    if c.get("mean") is not None:
        mean = config_stat(c["mean"], keep, broadcast)
        var = config_stat(c["variance"], keep, broadcast)
    else:
        mean = imp.weight(lay, 0, "mean", kept_dims).reshape(broadcast)
        var = imp.weight(lay, 1, "variance", kept_dims).reshape(broadcast)
    std = np.maximum(np.sqrt(np.asarray(var, np.float64)), KERAS_EPSILON)
    mean = np.asarray(mean, np.float64)
    if c.get("invert"):
        scale, offset = std, mean
    else:
        scale, offset = 1.0 / std, -mean / std
    y = imp.emit(lay, "MulConst", x, {"const": np.broadcast_to(scale, shape).copy()})
    return imp.emit(lay, "AddConst", y, {"const": np.broadcast_to(offset, shape).copy()})


def config_stat(value, keep: list[int], broadcast: tuple[int, ...]) -> np.ndarray:
    """A mean or variance given in the config, aligned to the kept axes from the right
    (as Keras does) and broadcast over the rest."""
    v = np.asarray(value, np.float64)
    if v.ndim == 0:
        return np.broadcast_to(v, broadcast)
    expanded = [1] * len(broadcast)
    for i in range(1, v.ndim + 1):
        expanded[keep[-i] - 1] = v.shape[-i]
    return np.broadcast_to(v.reshape(expanded), broadcast)
