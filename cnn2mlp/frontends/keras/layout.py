"""Layers that move values: Flatten, Reshape, ZeroPadding, UpSampling (nearest: a
selection; bilinear: a fixed linear map), Cropping, Permute, RepeatVector."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.precision import real
from .registry import layer
from .spatial import (
    as_tuple,
    select_keras,
    spatial_axis_offset,
    spatial_input,
    spatial_pairs,
    spatial_rank,
)


@layer("Flatten")
def convert_flatten(imp, lay, t):
    x = imp.keras_layout(t, lay)  # Keras flattens in (H, W, C) order
    rank = len(imp.shape(x))
    if lay.config.get("data_format") == "channels_first" and rank > 1:
        # Flatten(data_format="channels_first") moves the channels last before flattening
        x = imp.emit(lay, "Transpose", x, {"perm": tuple(range(1, rank)) + (0,)})
    return imp.emit(lay, "Reshape", x, {"shape": (int(np.prod(imp.shape(x))),)})


@layer("Reshape")
def convert_reshape(imp, lay, t):
    x = imp.keras_layout(t, lay)
    target = [int(d) for d in lay.config["target_shape"]]
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = int(np.prod(imp.shape(x))) // known
    return imp.emit(lay, "Reshape", x, {"shape": tuple(target)})


@layer("ZeroPadding1D", "ZeroPadding2D")
def convert_zero_padding(imp, lay, t):
    pairs = spatial_pairs(lay.config.get("padding", 1), spatial_rank(lay))
    x = spatial_input(imp, t, lay)
    pads = (0,) + tuple(p[0] for p in pairs) + (0,) + tuple(p[1] for p in pairs)
    return imp.emit(lay, "Pad", x, {"pads": pads, "value": 0.0})


@layer("UpSampling1D", "UpSampling2D")
def convert_upsampling(imp, lay, t):
    """Nearest: each cell repeated (a selection). Bilinear: TensorFlow's resize with
    half-pixel centres, a fixed linear map per spatial axis."""
    c = lay.config
    nd = spatial_rank(lay)
    size = as_tuple(c.get("size", 2), nd)
    mode = c.get("interpolation", "nearest")
    first = spatial_axis_offset(imp, lay)  # where the spatial axes start in Keras' layout
    if mode == "bilinear":
        from ...ir.linear import half_pixel_linear, kron_per_axis

        x = imp.keras_layout(t, lay)
        shape = imp.shape(x)
        axes = {first + a: half_pixel_linear(shape[first + a], s) for a, s in enumerate(size)}
        out_shape = tuple(n * size[a - first] if a in axes else n for a, n in enumerate(shape))
        imp.check_size(lay, int(np.prod(out_shape)) * 2 ** nd)
        weight = kron_per_axis(shape, axes).astype(real())
        return imp.emit(lay, "Dense", x, {"weight": weight, "bias": None,
                                          "out_shape": out_shape})
    if mode != "nearest":
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: interpolation "
                                 f"{mode!r}; nearest and bilinear are supported")

    def repeat(grid):
        for axis, s in enumerate(size):
            grid = np.repeat(grid, s, axis=first + axis)
        return grid

    return select_keras(imp, lay, t, repeat)


@layer("Cropping1D", "Cropping2D")
def convert_cropping(imp, lay, t):
    pairs = spatial_pairs(lay.config.get("cropping", 1), spatial_rank(lay))
    first = spatial_axis_offset(imp, lay)
    pairs = [(0, 0)] * first + pairs
    return select_keras(imp, lay, t, lambda grid: grid[tuple(
        slice(a, grid.shape[i] - b) for i, (a, b) in enumerate(pairs))])


@layer("Permute")
def convert_permute(imp, lay, t):
    dims = [int(d) - 1 for d in lay.config["dims"]]
    return select_keras(imp, lay, t, lambda grid: grid.transpose(dims))


@layer("RepeatVector")
def convert_repeat_vector(imp, lay, t):
    n = int(lay.config["n"])
    return select_keras(imp, lay, t, lambda grid: np.repeat(grid[None, :], n, axis=0))
