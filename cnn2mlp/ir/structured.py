"""A layer's matrix kept as what generates it: the weight type of structured matrices.

A convolution's matrix holds one copy of every kernel for every output position, so in
CSR it grows with the image (the CNN's multiply-adds) while the network's parameters do
not. A :class:`StructuredMatrix` keeps it as parts, each stored as what generates it:

- :class:`ProductGroup`: ``out[kernel_rows[k] + base_rows[b]] += sum_t kernels[k, taps[t]]
  * h[shifts[k] + bases[b] + offsets[t]]``, every (kernel, position) pair of a convolution
  (depthwise and grouped ones shift each kernel's channels). Border positions, which lose
  the taps that fall outside, make groups of their own that share the kernels and use
  fewer taps: each kernel is stored once whatever the borders;
- :class:`CopyRuns`: ``out[rows[i] + j] += weights[i] * h[columns[i] + j]`` for ``j <
  lengths[i]`` (carried values, shortcuts, permutations);
- :class:`CsrRows`: ``out[rows] += matrix @ h`` for whatever else.

Rows that several parts write add up (a convolution plus its residual). The operations
the passes need (``structured_rules.py``) keep the structure where the parts allow it and
fall back to CSR rows for a part that does not, never to an approximation. ``to_csr``
materializes the whole matrix, and every fallback its part, checked against a byte limit
(``materialize_limit``) before anything is allocated.

:func:`conv_structured` builds a convolution's matrix directly in this form, in
O(parameters + positions), never O(multiply-adds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .geometry import combined_mask, flat_input_pixel, window_axes
from .structured_rules import (part_arrays, relabel_rows, remap_columns, scale_columns,
                               scale_rows, select_rows)
from .structured_parts import (INDEX, CopyRuns, CsrRows, Part, ProductGroup,
                               check_materialize, csr_bytes_bound, csr_parts, materialize_limit)

#: the parts and the limit are used through this module (``from .structured import ...``)
__all__ = ["INDEX", "CopyRuns", "CsrRows", "Part", "ProductGroup", "StructuredMatrix",
           "check_materialize", "conv_structured", "csr_bytes_bound", "materialize_limit"]

@dataclass(frozen=True, eq=False)
class StructuredMatrix:
    """An (n_out, n_in) matrix as the sum of its parts (see the module's docstring)."""

    shape: tuple[int, int]
    parts: tuple[Part, ...]
    dtype: np.dtype

    # ------------------------------------------------------------------ what it is
    @property
    def nnz(self) -> int:
        """Weights the matrix applies (a CSR's non-zeros, counting a row that two parts
        write once per part)."""
        return sum(p.nnz for p in self.parts)

    @property
    def stored_bytes(self) -> int:
        """Bytes of the arrays that generate it, each array its parts share once."""
        arrays = {id(a): a.nbytes for p in self.parts for a in part_arrays(p)}
        return sum(arrays.values())

    @classmethod
    def from_csr(cls, matrix) -> "StructuredMatrix":
        """A CSR matrix as parts: its runs of copies (rows of one entry that copy
        consecutive columns with one weight: carried values, shortcuts) as CopyRuns,
        the other rows as CSR rows."""
        matrix = sp.csr_array(matrix)
        return cls(tuple(matrix.shape), csr_parts(matrix), np.dtype(matrix.dtype))

    # ------------------------------------------------------------------ evaluation
    def apply(self, h: np.ndarray) -> np.ndarray:
        """``W @ h`` for h (n_in, B), in h's precision (float32 or float64)."""
        h = np.asarray(h)
        if h.ndim != 2 or h.shape[0] != self.shape[1]:
            raise ValueError(f"apply takes (n_in={self.shape[1]}, B), got {h.shape}")
        out = np.zeros((self.shape[0], h.shape[1]), h.dtype)
        for part in self.parts:
            part.apply(h, out)
        return out

    def to_csr(self, max_bytes: int | None = None) -> sp.csr_array:
        """The whole matrix in CSR (duplicate entries summed), refused with a CompileError
        before anything is allocated when its bytes would pass ``max_bytes`` (by default
        the limit of the enclosing ``materialize_limit``)."""
        check_materialize(self.nnz, self.shape, self.dtype.itemsize, max_bytes)
        if len(self.parts) == 1 and isinstance(self.parts[0], CsrRows) and \
                np.array_equal(self.parts[0].rows, np.arange(self.shape[0])):
            return self.parts[0].matrix.astype(self.dtype, copy=False)
        rows, cols, values = self.coo()
        if max(self.nnz, *self.shape) < 2**31 - 1:  # int32 indices, as CSR built directly
            rows, cols = rows.astype(np.int32), cols.astype(np.int32)
        matrix = sp.coo_array((values.astype(self.dtype, copy=False), (rows, cols)),
                              shape=self.shape).tocsr()
        matrix.sum_duplicates()
        return matrix

    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        triples = [p.to_coo() for p in self.parts]
        if not triples:
            return (np.zeros(0, INDEX), np.zeros(0, INDEX), np.zeros(0, self.dtype))
        return tuple(np.concatenate([t[i] for t in triples]) for i in range(3))

    def with_parts(self, parts, shape=None, dtype=None) -> "StructuredMatrix":
        return StructuredMatrix(tuple(shape or self.shape), tuple(parts),
                                np.dtype(dtype or self.dtype))

    # ------------------------------------------------------------------ what passes do
    # (the rules for each kind of part are in structured_rules.py)
    def select_rows(self, keep: np.ndarray) -> "StructuredMatrix":
        """The matrix of rows ``keep`` (distinct: new row r is old row ``keep[r]``)."""
        return select_rows(self, keep)

    def relabel_rows(self, new_of_old: np.ndarray, n_out: int) -> "StructuredMatrix":
        """Old row i becomes row ``new_of_old[i]`` of an ``n_out``-row matrix (-1: dropped;
        the kept rows go to distinct rows): a selection, a stride, a Concat's placement."""
        return relabel_rows(self, new_of_old, n_out)

    def scale_rows(self, scale: np.ndarray) -> "StructuredMatrix":
        """``diag(scale) @ W`` (a BatchNorm after a convolution scales each channel)."""
        return scale_rows(self, np.asarray(scale))

    def scale_columns(self, scale: np.ndarray) -> "StructuredMatrix":
        """``W @ diag(scale)`` (a per-channel normalization before it)."""
        return scale_columns(self, np.asarray(scale))

    def remap_columns(self, new_of_old: np.ndarray, n_in: int) -> "StructuredMatrix":
        """The matrix reading column ``new_of_old[j]`` of an ``n_in``-wide input where it
        read column ``j`` (-1: the column reads nothing now, its weights are dropped)."""
        return remap_columns(self, np.asarray(new_of_old, INDEX), n_in)


# ---------------------------------------------------------------------- convolutions
def conv_structured(kernel: np.ndarray, bias: np.ndarray | None, in_shape, strides, pads,
                    dilations, group: int, dtype=np.float32):
    """A convolution's matrix as product groups, its bias and its output shape: the
    same matrix as ``conv_matrix`` builds in CSR (rows (o, p), columns (c, pixel)), in
    O(parameters + positions). Positions whose windows lie wholly inside the input form
    one group; border positions, grouped by which taps they keep, form smaller ones that
    share the kernels."""
    c_in, spatial = in_shape[0], tuple(in_shape[1:])
    n_out = kernel.shape[0]
    c_group, per_group = c_in // group, n_out // group
    axes = window_axes(spatial, kernel.shape[2:], strides, dilations, pads)
    out_spatial = tuple(ax.size_out for ax in axes)
    n_pos, n_off = math.prod(out_spatial), math.prod(kernel.shape[2:])
    n_pix = math.prod(spatial)
    inside = combined_mask(axes).reshape(n_pos, n_off)
    pixel = flat_input_pixel(axes, spatial).reshape(n_pos, n_off).astype(INDEX)
    # pixel[p, u] = base[p] + relative[u] wherever the tap is inside: both are linear in
    # the window's origin and the tap's offset
    relative = window_relative(axes, spatial)
    first = np.argmax(inside, axis=1)
    base = pixel[np.arange(n_pos), first] - relative[first]
    kernels = np.ascontiguousarray(np.asarray(kernel, dtype).reshape(n_out, c_group * n_off))
    kernel_rows = np.arange(n_out, dtype=INDEX) * n_pos
    shifts = (np.arange(n_out, dtype=INDEX) // per_group) * (c_group * n_pix)
    patterns, which = np.unique(inside, axis=0, return_inverse=True)
    parts = []
    for index, mask in enumerate(patterns):
        taps_u = np.flatnonzero(mask)
        if not len(taps_u):
            continue
        positions = np.flatnonzero(which.ravel() == index).astype(INDEX)
        taps = (np.arange(c_group)[:, None] * n_off + taps_u[None, :]).ravel().astype(INDEX)
        offsets = (np.arange(c_group, dtype=INDEX)[:, None] * n_pix
                   + relative[taps_u][None, :]).ravel()
        parts.append(ProductGroup(kernels, taps, offsets, base[positions], shifts,
                                  kernel_rows, positions))
    out_bias = None if bias is None else np.repeat(np.asarray(bias, dtype), n_pos)
    matrix = StructuredMatrix((n_out * n_pos, c_in * n_pix), tuple(parts), np.dtype(dtype))
    return matrix, out_bias, (n_out,) + out_spatial


def window_relative(axes, spatial) -> np.ndarray:
    """Each kernel offset's flat input displacement from the window's origin."""
    strides = np.cumprod((1,) + tuple(spatial[::-1]))[:-1][::-1]   # row-major pixel strides
    grids = np.meshgrid(*[np.arange(ax.kernel) * ax.dilation for ax in axes], indexing="ij")
    return sum(g.ravel().astype(INDEX) * s for g, s in zip(grids, strides))
