"""Linear ops as sparse matrices on the flattened sample: ``vec(y) = W vec(x) + b``.

These are the matrix forms of the IR's cheap linear ops (element-wise affine, layout,
padding). Convolution and pooling have their own builders in the passes that lower them.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .graph import Graph, Node, Shape
from .ops import batchnorm_affine

LinearMap = tuple[sp.csr_array, np.ndarray | None]


def index_dtype(*sizes: int):
    """int32 when every index and count fits, else int64."""
    return np.int32 if max(sizes, default=0) < 2**31 - 1 else np.int64


def to_csr(w) -> sp.csr_array:
    return w if isinstance(w, sp.csr_array) else sp.csr_array(w)


def diagonal(values: np.ndarray) -> sp.csr_array:
    n = len(values)
    idx = np.arange(n, dtype=index_dtype(n + 1))
    return sp.csr_array((values.astype(np.float32), idx, np.arange(n + 1, dtype=idx.dtype)),
                        shape=(n, n))


def selection(indices: np.ndarray, n_in: int) -> sp.csr_array:
    """The matrix with row r holding a single 1 in column ``indices[r]``."""
    n = len(indices)
    dt = index_dtype(n + 1, n_in)
    return sp.csr_array((np.ones(n, np.float32), indices.astype(dt), np.arange(n + 1, dtype=dt)),
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
    w = sp.csr_array((np.ones(int(kept.sum()), np.float32), source[kept].astype(dt), indptr),
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
    if node.op == "Dense":
        return to_csr(node.attrs["weight"]), node.attrs.get("bias")
    return None
