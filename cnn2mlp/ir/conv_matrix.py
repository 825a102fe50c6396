"""The matrix of a convolution and of a transposed convolution, built directly in CSR in
O(non-zeros): row (o, p) of a conv holds the kernel taps of output channel o at position p
(padding taps dropped). The conv-to-dense pass and the frontends (ConvTranspose) use them.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .geometry import combined_mask, flat_input_pixel, window_axes
from .linear import index_dtype
from .precision import real


def strided_positions(shape: tuple[int, ...], strides) -> np.ndarray:
    """Flat indices of positions ``(c, s1*i1, s2*i2, ...)`` in a ``(C, *spatial)`` tensor."""
    grid = np.arange(math.prod(shape)).reshape(shape)
    return grid[(slice(None),) + tuple(slice(None, None, s) for s in strides)].ravel()


def conv_matrix(kernel: np.ndarray, bias: np.ndarray | None, in_shape, strides, pads,
                dilations, group: int):
    """The CSR matrix, bias vector and output shape of a convolution on ``in_shape``.

    Every row has the same pattern up to a column offset per group: the columns for output
    position ``p`` are ``(c, in_pos(p, u))`` for the offsets ``u`` inside the input,
    ordered by channel then offset, which is ascending column order (CSR without a sort).
    """
    c_in, spatial = in_shape[0], tuple(in_shape[1:])
    n_out = kernel.shape[0]
    c_group = c_in // group
    axes = window_axes(spatial, kernel.shape[2:], strides, dilations, pads)
    out_spatial = tuple(ax.size_out for ax in axes)
    n_pos, n_off = math.prod(out_spatial), math.prod(kernel.shape[2:])
    n_pix = math.prod(spatial)

    inside = combined_mask(axes).reshape(n_pos, n_off)
    pixel = flat_input_pixel(axes, spatial).reshape(n_pos, n_off)
    pos, chan, off = np.nonzero(np.broadcast_to(inside[:, None, :], (n_pos, c_group, n_off)))
    row_cols = chan * n_pix + pixel[pos, off]   # columns of one output channel, group 0
    row_taps = chan * n_off + off               # which kernel entry fills each column
    per_row = inside.sum(axis=1) * c_group      # non-zeros per output position

    pattern = len(row_cols)
    nnz = n_out * pattern
    dt = index_dtype(nnz, c_in * n_pix, n_out * n_pos)
    data = np.empty(nnz, dtype=real())
    np.take(kernel.reshape(n_out, -1).astype(real(), copy=False), row_taps, axis=1,
            out=data.reshape(n_out, pattern))
    indices = np.empty(nnz, dtype=dt)
    group_start = (np.arange(n_out) // (n_out // group)) * (c_group * n_pix)
    np.add(group_start.astype(dt)[:, None], row_cols.astype(dt)[None, :],
           out=indices.reshape(n_out, pattern))
    indptr = np.zeros(n_out * n_pos + 1, dtype=dt)
    np.cumsum(np.tile(per_row.astype(dt), n_out), out=indptr[1:])

    weight = sp.csr_array((data, indices, indptr), shape=(n_out * n_pos, c_in * n_pix))
    weight.has_sorted_indices = True
    out_bias = None if bias is None else np.repeat(np.asarray(bias, real()), n_pos)
    return weight, out_bias, (n_out,) + out_spatial


def conv_transpose_matrix(kernel: np.ndarray, in_shape, out_spatial, strides, pads, dilations,
                          group: int) -> sp.csr_array:
    """ConvTranspose's matrix (n_out × n_in) for a kernel (C_in, C_out/group, k...): the
    transpose of the convolution that maps the output space back onto the input."""
    c_in, spatial = in_shape[0], tuple(in_shape[1:])
    c_out = kernel.shape[1] * group
    adjoint, _, shape = conv_matrix(kernel, None, (c_out,) + tuple(out_spatial), strides, pads,
                                    dilations, group)
    if tuple(shape) != (c_in,) + spatial:
        raise ValueError(f"the transpose geometry gives {shape[1:]} input positions for "
                         f"{spatial}")
    weight = sp.csr_array(adjoint.T)
    weight.sort_indices()
    return weight
