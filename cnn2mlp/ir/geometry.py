"""Sliding-window geometry shared by convolution and pooling (any number of spatial axes).

For one spatial axis with input size ``n``, kernel ``k``, stride ``s``, dilation ``d`` and
pads ``(pb, pe)``, output position ``i`` reads input positions ``s*i - pb + d*u`` for
``u in range(k)``; positions outside ``[0, n)`` are padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisWindow:
    """Window tables of one spatial axis."""

    size_in: int
    size_out: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int

    def positions(self) -> np.ndarray:
        """``(size_out, kernel)`` input positions read by each output and kernel offset."""
        i = np.arange(self.size_out)[:, None]
        u = np.arange(self.kernel)[None, :]
        return self.stride * i - self.pad_begin + self.dilation * u

    def inside(self) -> np.ndarray:
        """Mask of positions inside the input (not padding)."""
        pos = self.positions()
        return (pos >= 0) & (pos < self.size_in)

    def inside_padded(self) -> np.ndarray:
        """Mask of positions inside input plus explicit pads (not ceil-mode overhang)."""
        pos = self.positions()
        return (pos >= -self.pad_begin) & (pos < self.size_in + self.pad_end)


def output_size(size_in: int, kernel: int, stride: int, dilation: int,
                pad_begin: int, pad_end: int, ceil_mode: bool = False) -> int:
    """ONNX/PyTorch output size; with ceil_mode a last window must start inside the input
    or its leading padding, never entirely in the trailing padding."""
    span = dilation * (kernel - 1) + 1
    room = size_in + pad_begin + pad_end - span
    if room < 0:
        return 0
    if not ceil_mode:
        return room // stride + 1
    out = math.ceil(room / stride) + 1
    if (out - 1) * stride >= size_in + pad_begin:
        out -= 1
    return out


def same_pads(size_in: int, kernel: int, stride: int, dilation: int,
              upper: bool = True) -> tuple[int, int]:
    """Pads for auto_pad SAME_UPPER (extra at the end, as TF) or SAME_LOWER."""
    out = math.ceil(size_in / stride)
    span = dilation * (kernel - 1) + 1
    total = max(0, (out - 1) * stride + span - size_in)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def window_axes(spatial_in, kernel, strides, dilations, pads, ceil_mode=False) -> list[AxisWindow]:
    """One :class:`AxisWindow` per spatial axis; ``pads`` is ONNX-style (begins..., ends...)."""
    nd = len(spatial_in)
    for what, values in (("kernel", kernel), ("strides", strides), ("dilations", dilations)):
        if len(values) != nd or any(int(v) < 1 for v in values):
            raise ValueError(f"{what} {list(values)} must be {nd} whole numbers of at least 1")
    axes = []
    for a in range(nd):
        pb, pe = pads[a], pads[nd + a]
        out = output_size(spatial_in[a], kernel[a], strides[a], dilations[a], pb, pe, ceil_mode)
        axes.append(AxisWindow(spatial_in[a], out, kernel[a], strides[a], dilations[a], pb, pe))
    return axes


def broadcast_axis(table: np.ndarray, axis: int, nd: int) -> np.ndarray:
    """Reshape an ``(out, kernel)`` table of ``axis`` to broadcast as (out_1..out_nd, k_1..k_nd)."""
    shape = [1] * (2 * nd)
    shape[axis] = table.shape[0]
    shape[nd + axis] = table.shape[1]
    return table.reshape(shape)


def combined_mask(axes: list[AxisWindow], which: str = "inside") -> np.ndarray:
    """``(out_1..out_nd, k_1..k_nd)`` mask, the product of the per-axis masks."""
    nd = len(axes)
    mask = np.ones([1] * (2 * nd), dtype=bool)
    for a, ax in enumerate(axes):
        mask = mask & broadcast_axis(getattr(ax, which)(), a, nd)
    return mask


def gather_windows(x: np.ndarray, axes: list[AxisWindow], fill: float) -> np.ndarray:
    """``x`` of shape ``(B, C, *spatial)`` → windows ``(B, C, out..., k...)``; padding = fill."""
    nd = len(axes)
    index = tuple(broadcast_axis(np.clip(ax.positions(), 0, max(ax.size_in - 1, 0)), a, nd)
                  for a, ax in enumerate(axes))
    windows = x[(slice(None), slice(None)) + index]
    return np.where(combined_mask(axes), windows, fill)


def flat_input_pixel(axes, spatial) -> np.ndarray:
    """Row-major flat index of the (clipped) input pixel read at each (out..., k...)."""
    nd = len(axes)
    flat = np.zeros([1] * (2 * nd), dtype=np.int64)
    for a, ax in enumerate(axes):
        pos = np.clip(ax.positions(), 0, spatial[a] - 1)
        flat = flat * spatial[a] + broadcast_axis(pos, a, nd)
    return flat
