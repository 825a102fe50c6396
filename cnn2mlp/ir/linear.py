"""Linear ops as sparse matrices on the flattened sample: ``vec(y) = W vec(x) + b``.

These are the matrix forms of the IR's linear ops (element-wise affine, layout, padding,
average pooling) and the window tables of pooling. Convolution's matrix is built by the
conv-to-dense pass.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .geometry import combined_mask, flat_input_pixel, window_axes
from .graph import Graph, Node, Shape
from .ops import batchnorm_affine
from .precision import real

LinearMap = tuple[sp.csr_array, np.ndarray | None]


def index_dtype(*sizes: int):
    """int32 when every index and count fits, else int64."""
    return np.int32 if max(sizes, default=0) < 2**31 - 1 else np.int64


def to_csr(w) -> sp.csr_array:
    """Any weight as CSR (a structured one materialized, under the materialize limit)."""
    from .weights import as_csr
    return as_csr(w)


def diagonal(values: np.ndarray) -> sp.csr_array:
    n = len(values)
    idx = np.arange(n, dtype=index_dtype(n + 1))
    return sp.csr_array((values.astype(real()), idx, np.arange(n + 1, dtype=idx.dtype)),
                        shape=(n, n))


def selection(indices: np.ndarray, n_in: int) -> sp.csr_array:
    """The matrix with row r holding a single 1 in column ``indices[r]``."""
    n = len(indices)
    dt = index_dtype(n + 1, n_in)
    return sp.csr_array((np.ones(n, real()), indices.astype(dt), np.arange(n + 1, dtype=dt)),
                        shape=(n, n_in))


def elementwise_affine(node: Node, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """AddConst / MulConst / BatchNorm as per-entry ``scale``, ``shift`` over vec(x)."""
    if node.op == "AddConst":
        return np.ones(int(np.prod(shape))), np.broadcast_to(node.attrs["const"], shape).ravel()
    if node.op == "MulConst":
        return np.broadcast_to(node.attrs["const"], shape).ravel(), np.zeros(int(np.prod(shape)))
    if node.op == "BatchNorm":
        scale, shift = batchnorm_affine(node.attrs)
        per_channel = int(np.prod(shape[1:]))
        return np.repeat(scale, per_channel), np.repeat(shift, per_channel)
    raise ValueError(f"{node.op} is not element-wise affine")


def transpose_indices(shape: Shape, perm) -> np.ndarray:
    n = int(np.prod(shape))
    return np.arange(n, dtype=index_dtype(n)).reshape(shape).transpose(perm).ravel()


def pad_map(shape: Shape, pads, value: float) -> LinearMap:
    """Pad as a selection of the kept entries plus ``value`` on the padded ones."""
    nd = len(shape)
    n = int(np.prod(shape))
    source = np.arange(n, dtype=np.int64).reshape(shape)
    grow = [(max(pads[i], 0), max(pads[nd + i], 0)) for i in range(nd)]
    source = np.pad(source, grow, constant_values=-1)
    crop = tuple(slice(max(-pads[i], 0), source.shape[i] - max(-pads[nd + i], 0))
                 for i in range(nd))
    source = source[crop].ravel()
    kept = source >= 0
    dt = index_dtype(len(source) + 1, n)
    indptr = np.concatenate([[0], np.cumsum(kept)]).astype(dt)
    w = sp.csr_array((np.ones(int(kept.sum()), real()), source[kept].astype(dt), indptr),
                     shape=(len(source), n))
    bias = np.where(kept, 0.0, value) if value else None
    return w, bias


def linear_map(graph: Graph, node: Node) -> LinearMap | None:
    """The matrix form of a cheap linear op, or None when ``node`` is not one."""
    shape = graph.shape(node.input)
    n = int(np.prod(shape))
    if node.op in ("AddConst", "MulConst", "BatchNorm"):
        scale, shift = elementwise_affine(node, shape)
        return diagonal(scale), (shift if np.any(shift) else None)
    if node.op == "Transpose":
        return selection(transpose_indices(shape, node.attrs["perm"]), n), None
    if node.op == "Select":
        return selection(node.attrs["indices"], n), None
    if node.op in ("Reshape", "Identity"):
        return selection(np.arange(n), n), None
    if node.op == "Pad":
        return pad_map(shape, node.attrs["pads"], node.attrs.get("value", 0.0))
    if node.op == "AveragePool":
        return avgpool_matrix(shape, node.attrs), None
    if node.op == "Dense":
        return node.attrs["weight"], node.attrs.get("bias")
    return None


# ------------------------------------------------------------------------------- pooling
def pool_axes(attrs, spatial):
    return window_axes(spatial, attrs["kernel_shape"], attrs["strides"], attrs["dilations"],
                       attrs["pads"], attrs.get("ceil_mode", False))


def window_members(in_shape, attrs) -> np.ndarray:
    """``(C * n_pos, k)`` flat input indices read by each pool output (row-major over
    (channel, position)); the valid ones first, then -1 for padding."""
    channels, spatial = in_shape[0], tuple(in_shape[1:])
    axes = pool_axes(attrs, spatial)
    n_pos = math.prod(ax.size_out for ax in axes)
    n_off = math.prod(attrs["kernel_shape"])
    inside = combined_mask(axes).reshape(n_pos, n_off)
    pixel = flat_input_pixel(axes, spatial).reshape(n_pos, n_off)
    order = np.argsort(~inside, axis=1, kind="stable")  # valid first, in kernel order
    pixel = np.take_along_axis(pixel, order, axis=1)
    valid = np.take_along_axis(inside, order, axis=1)
    n_pix = math.prod(spatial)
    members = np.arange(channels)[:, None, None] * n_pix + pixel[None]
    members = np.where(valid[None], members, -1)
    return members.reshape(channels * n_pos, n_off)


def avgpool_matrix(in_shape, attrs) -> sp.csr_array:
    """AveragePool as a CSR matrix: 1/count on the valid cells of each window, where count
    includes the explicit padding when count_include_pad (never the ceil-mode overhang)."""
    channels, spatial = in_shape[0], tuple(in_shape[1:])
    axes = pool_axes(attrs, spatial)
    nd = len(axes)
    which = "inside_padded" if attrs.get("count_include_pad") else "inside"
    counts = combined_mask(axes, which).sum(axis=tuple(range(nd, 2 * nd))).ravel()
    members = window_members(in_shape, attrs)
    valid = members >= 0
    per_row = valid.sum(axis=1)
    if np.any(per_row == 0):
        raise ValueError("a pooling window lies entirely in the padding")
    weights = np.broadcast_to((1.0 / np.tile(counts, channels))[:, None], members.shape)
    n_in = channels * math.prod(spatial)
    dt = index_dtype(members.size, n_in)
    indptr = np.zeros(len(members) + 1, dtype=dt)
    np.cumsum(per_row, out=indptr[1:])
    return sp.csr_array((weights[valid].astype(real()), members[valid].astype(dt), indptr),
                        shape=(len(members), n_in))


def half_pixel_linear(n_in: int, scale: int) -> sp.csr_array:
    """The (n_in·scale × n_in) matrix of linear interpolation with half-pixel centres
    (TensorFlow's resize_bilinear, ONNX Resize linear/half_pixel): output o reads input
    coordinate (o + 0.5)/scale - 0.5, clamped to the edge."""
    out = np.arange(n_in * scale)
    coord = np.clip((out + 0.5) / scale - 0.5, 0.0, n_in - 1)
    lower = np.floor(coord).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    frac = coord - lower
    rows = np.concatenate([out, out])
    cols = np.concatenate([lower, upper])
    vals = np.concatenate([1.0 - frac, frac])
    return sp.csr_array((vals, (rows, cols)), shape=(len(out), n_in))


def kron_per_axis(shape: Shape, matrices: dict) -> sp.csr_array:
    """The map on a row-major tensor of ``shape`` that applies ``matrices[axis]`` along
    each listed axis (identity along the others): a Kronecker product, built sparse."""
    result = sp.csr_array(np.ones((1, 1)))
    for axis, n in enumerate(shape):
        m = matrices.get(axis)
        m = sp.identity(n, format="csr") if m is None else sp.csr_array(m)
        result = sp.kron(result, m, format="csr")
    result.sum_duplicates()
    return result
