"""A layer's matrix kept as what generates it: the weight type of structured matrices.

A convolution's matrix holds one copy of every kernel for every output position, so in
CSR it grows with the image (the CNN's multiply-adds) while the network's parameters do
not. A :class:`StructuredMatrix` keeps it as parts, each stored as what generates it:

- :class:`ProductGroup`: ``out[rows[k, b]] += sum_t kernels[k, t] * h[shifts[k] + bases[b]
  + offsets[t]]``, every (kernel, position) pair of a convolution (depthwise and grouped
  ones shift each kernel's channels; border positions, which lose the taps that fall
  outside, make groups of their own);
- :class:`CopyRuns`: ``out[rows[i] + j] += weights[i] * h[columns[i] + j]`` for ``j <
  lengths[i]`` (carried values, shortcuts, permutations);
- :class:`CsrRows`: ``out[rows] += matrix @ h`` for whatever else.

Rows that several parts write add up (a convolution plus its residual). Every operation a
pass needs keeps the structure where the parts allow it and falls back to CSR rows for
the part that does not, never to an approximation: row selection (a stride), row and
column scaling (BatchNorm, a normalization), column remapping (layout changes), and the
product with another matrix (through CSR, under the size check). ``to_csr`` materializes
the whole matrix, checked against a byte limit before anything is allocated.

:func:`conv_structured` builds a convolution's matrix directly in this form, in
O(parameters + positions), never O(multiply-adds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from ..errors import CompileError
from .geometry import combined_mask, flat_input_pixel, window_axes

INDEX = np.int64


@dataclass(frozen=True)
class ProductGroup:
    """kernels (n_k, taps); offsets (taps,): columns relative to a position's base;
    bases (n_b,): each position's base column; shifts (n_k,): each kernel's own shift of
    the bases; rows (n_k, n_b): the output row of each (kernel, position) pair."""

    kernels: np.ndarray
    offsets: np.ndarray
    bases: np.ndarray
    rows: np.ndarray
    shifts: np.ndarray

    @property
    def nnz(self) -> int:
        return self.kernels.size * len(self.bases)

    @property
    def stored_bytes(self) -> int:
        return sum(a.nbytes for a in (self.kernels, self.offsets, self.bases, self.rows,
                                      self.shifts))

    def columns(self) -> np.ndarray:
        """(n_k, n_b, taps): the column each weight reads (O(nnz): for checks and CSR)."""
        return (self.shifts[:, None, None] + self.bases[None, :, None]
                + self.offsets[None, None, :])

    def apply(self, h: np.ndarray, out: np.ndarray) -> None:
        """``out[rows] += kernels @ patches`` for h (n_in, B), by kernel shift."""
        kernels = self.kernels.astype(h.dtype, copy=False)
        index = self.bases[None, :] + self.offsets[:, None]          # (taps, n_b)
        for shift in np.unique(self.shifts):
            which = np.flatnonzero(self.shifts == shift)
            patches = np.take(h, (index + shift).ravel(), axis=0)     # (taps * n_b, B)
            patches = patches.reshape(len(self.offsets), -1)          # (taps, n_b * B)
            product = (kernels[which] @ patches).reshape(len(which) * len(self.bases), -1)
            np.add.at(out, self.rows[which].ravel(), product)

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, columns, values) of every weight."""
        n_k, taps, n_b = len(self.kernels), len(self.offsets), len(self.bases)
        rows = np.broadcast_to(self.rows[:, :, None], (n_k, n_b, taps)).ravel()
        values = np.broadcast_to(self.kernels[:, None, :], (n_k, n_b, taps)).ravel()
        return rows, self.columns().ravel(), values


@dataclass(frozen=True)
class CopyRuns:
    """``out[rows[i] + j] += weights[i] * h[columns[i] + j]`` for ``j < lengths[i]``."""

    rows: np.ndarray
    columns: np.ndarray
    lengths: np.ndarray
    weights: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.lengths.sum())

    @property
    def stored_bytes(self) -> int:
        return sum(a.nbytes for a in (self.rows, self.columns, self.lengths, self.weights))

    def apply(self, h: np.ndarray, out: np.ndarray) -> None:
        for row, column, length, weight in zip(self.rows, self.columns, self.lengths,
                                               self.weights):
            out[row:row + length] += h.dtype.type(weight) * h[column:column + length]

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        step = np.arange(self.nnz) - np.repeat(np.cumsum(self.lengths) - self.lengths,
                                                self.lengths)
        return (np.repeat(self.rows, self.lengths) + step,
                np.repeat(self.columns, self.lengths) + step,
                np.repeat(self.weights, self.lengths))


@dataclass(frozen=True)
class CsrRows:
    """``out[rows] += matrix @ h``: rows (n_r,) distinct, matrix (n_r, n_in) CSR."""

    rows: np.ndarray
    matrix: sp.csr_array

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def stored_bytes(self) -> int:
        m = self.matrix
        return self.rows.nbytes + m.data.nbytes + m.indices.nbytes + m.indptr.nbytes

    def apply(self, h: np.ndarray, out: np.ndarray) -> None:
        out[self.rows] += self.matrix.astype(h.dtype, copy=False) @ h

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coo = self.matrix.tocoo()
        return self.rows[coo.row], coo.col.astype(INDEX), coo.data


Part = ProductGroup | CopyRuns | CsrRows


def csr_bytes(nnz: int, n_rows: int, itemsize: int) -> int:
    """What a CSR of ``nnz`` entries takes (int64 indices: the worst case)."""
    return nnz * (itemsize + 8) + (n_rows + 1) * 8


@dataclass(frozen=True)
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
        return sum(p.stored_bytes for p in self.parts)

    @classmethod
    def from_csr(cls, matrix) -> "StructuredMatrix":
        matrix = sp.csr_array(matrix)
        rows = np.arange(matrix.shape[0], dtype=INDEX)
        return cls(tuple(matrix.shape), (CsrRows(rows, matrix),), np.dtype(matrix.dtype))

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
        before anything is allocated when its bytes would pass ``max_bytes``."""
        need = csr_bytes(self.nnz, self.shape[0], self.dtype.itemsize)
        if max_bytes is not None and need > max_bytes:
            raise CompileError(f"materializing a {self.shape[0]:,}x{self.shape[1]:,} matrix "
                               f"of {self.nnz:,} non-zeros takes {need / 2**20:,.0f} MiB, "
                               f"above the limit of {max_bytes / 2**20:,.0f} MiB")
        rows, cols, values = self.coo()
        matrix = sp.coo_array((values.astype(self.dtype, copy=False), (rows, cols)),
                              shape=self.shape).tocsr()
        matrix.sum_duplicates()
        return matrix

    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        triples = [p.to_coo() for p in self.parts]
        if not triples:
            return (np.zeros(0, INDEX), np.zeros(0, INDEX), np.zeros(0, self.dtype))
        return tuple(np.concatenate([t[i] for t in triples]) for i in range(3))

    # ------------------------------------------------------------------ what passes do
    def select_rows(self, keep: np.ndarray) -> "StructuredMatrix":
        """The matrix of rows ``keep`` (distinct, in the new order: new row r is old row
        ``keep[r]``). A group whose kept pairs are a set of kernels times a set of
        positions (a stride keeps every kernel at some positions) stays a group."""
        keep = np.asarray(keep, INDEX)
        if len(np.unique(keep)) != len(keep):
            raise ValueError("select_rows takes distinct rows")
        new_of_old = np.full(self.shape[0], -1, INDEX)
        new_of_old[keep] = np.arange(len(keep), dtype=INDEX)
        parts: list[Part] = []
        for part in self.parts:
            parts += select_part(part, new_of_old, self.shape[1])
        return StructuredMatrix((len(keep), self.shape[1]), tuple(parts), self.dtype)

    def scale_rows(self, scale: np.ndarray) -> "StructuredMatrix":
        """``diag(scale) @ W`` (a BatchNorm after a convolution scales each channel)."""
        scale = np.asarray(scale)
        return self.with_parts(scale_part_rows(p, scale, self.shape[1]) for p in self.parts)

    def scale_columns(self, scale: np.ndarray) -> "StructuredMatrix":
        """``W @ diag(scale)`` (a per-channel normalization before it)."""
        scale = np.asarray(scale)
        return self.with_parts(scale_part_columns(p, scale) for p in self.parts)

    def remap_columns(self, new_of_old: np.ndarray, n_in: int) -> "StructuredMatrix":
        """The matrix reading column ``new_of_old[j]`` of an ``n_in``-wide input where it
        read column ``j`` (a layout change moves whole channels: groups stay groups)."""
        new_of_old = np.asarray(new_of_old, INDEX)
        parts = []
        for part in self.parts:
            parts += remap_part(part, new_of_old, n_in)
        return StructuredMatrix((self.shape[0], n_in), tuple(parts), self.dtype)

    def matmul(self, other, max_bytes: int | None = None) -> "StructuredMatrix":
        """``self @ other`` (other a StructuredMatrix or a sparse matrix) through CSR,
        under the size check; the structure-keeping products come with the passes that
        use them."""
        right = other.to_csr(max_bytes) if isinstance(other, StructuredMatrix) else \
            sp.csr_array(other)
        product = sp.csr_array(self.to_csr(max_bytes) @ right)
        if max_bytes is not None and csr_bytes(product.nnz, product.shape[0],
                                               self.dtype.itemsize) > max_bytes:
            raise CompileError(f"the product of two layers has {product.nnz:,} non-zeros, "
                               f"above the limit of {max_bytes / 2**20:,.0f} MiB")
        return StructuredMatrix.from_csr(product)

    def with_parts(self, parts) -> "StructuredMatrix":
        return StructuredMatrix(self.shape, tuple(parts), self.dtype)


# ---------------------------------------------------------------------- the parts' rules
@dataclass(frozen=True)
class _Triples:
    """(rows, columns, values) as a part, for the CSR fallback."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    def to_coo(self):
        return self.rows, self.cols, self.values


def as_csr_rows(part, n_in: int) -> CsrRows:
    """Any part (anything with ``to_coo``) as CSR rows over ``n_in`` columns: the
    fallback, exact."""
    rows, cols, values = part.to_coo()
    distinct, inverse = np.unique(rows, return_inverse=True)
    matrix = sp.coo_array((values, (inverse, cols)), shape=(len(distinct), n_in)).tocsr()
    matrix.sum_duplicates()
    return CsrRows(distinct.astype(INDEX), matrix)


def select_part(part: Part, new_of_old: np.ndarray, n_in: int) -> list[Part]:
    if isinstance(part, ProductGroup):
        kept = new_of_old[part.rows] >= 0                      # (n_k, n_b)
        kernels, bases = kept.any(axis=1), kept.any(axis=0)
        if not kept.any():
            return []
        if np.array_equal(kept, np.outer(kernels, bases)):   # a product of selections
            return [ProductGroup(part.kernels[kernels], part.offsets, part.bases[bases],
                                 new_of_old[part.rows[np.ix_(kernels, bases)]],
                                 part.shifts[kernels])]
    elif isinstance(part, CsrRows):
        kept = new_of_old[part.rows] >= 0
        return [CsrRows(new_of_old[part.rows[kept]], part.matrix[kept])] if kept.any() else []
    rows, cols, values = part.to_coo()
    kept = new_of_old[rows] >= 0
    if not kept.any():
        return []
    return [as_csr_rows(_Triples(new_of_old[rows[kept]], cols[kept], values[kept]), n_in)]


def scale_part_rows(part: Part, scale: np.ndarray, n_in: int) -> Part:
    if isinstance(part, ProductGroup):
        per_pair = scale[part.rows]                              # (n_k, n_b)
        if np.all(per_pair == per_pair[:, :1]):                  # one scale a kernel
            return replace(part, kernels=part.kernels * per_pair[:, :1].astype(
                part.kernels.dtype))
    elif isinstance(part, CopyRuns):
        starts = np.cumsum(part.lengths) - part.lengths
        per_value = scale[np.repeat(part.rows, part.lengths)
                          + np.arange(part.nnz) - np.repeat(starts, part.lengths)]
        first = np.repeat(scale[part.rows], part.lengths)
        if np.all(per_value == first):                           # one scale a run
            return replace(part, weights=part.weights * scale[part.rows].astype(
                part.weights.dtype))
    elif isinstance(part, CsrRows):
        factor = scale[part.rows].astype(part.matrix.dtype)
        return CsrRows(part.rows, sp.csr_array(sp.diags_array(factor) @ part.matrix))
    return scale_part_rows(as_csr_rows(part, n_in), scale, n_in)


def scale_part_columns(part: Part, scale: np.ndarray) -> Part:
    if isinstance(part, ProductGroup):
        per_weight = scale[part.columns()]                       # (n_k, n_b, taps)
        if np.all(per_weight == per_weight[:, :1, :]):           # one scale a (kernel, tap)
            return replace(part, kernels=part.kernels * per_weight[:, 0, :].astype(
                part.kernels.dtype))
    elif isinstance(part, CopyRuns):
        rows, cols, _ = part.to_coo()
        per_value = scale[cols]
        if np.all(per_value == np.repeat(scale[part.columns], part.lengths)):
            return replace(part, weights=part.weights * scale[part.columns].astype(
                part.weights.dtype))
    elif isinstance(part, CsrRows):
        width = part.matrix.shape[1]
        factor = scale[:width].astype(part.matrix.dtype)
        return CsrRows(part.rows, sp.csr_array(part.matrix @ sp.diags_array(factor)))
    return scale_part_columns(as_csr_rows(part, len(scale)), scale)


def remap_part(part: Part, new_of_old: np.ndarray, n_in: int) -> list[Part]:
    if isinstance(part, ProductGroup):
        columns = new_of_old[part.columns()]                     # (n_k, n_b, taps)
        shifts = columns[:, 0, 0] - columns[0, 0, 0]
        bases = columns[0, :, 0]
        offsets = columns[0, 0, :] - columns[0, 0, 0]
        if np.array_equal(columns, shifts[:, None, None] + bases[None, :, None]
                          + offsets[None, None, :]):
            return [ProductGroup(part.kernels, offsets, bases, part.rows, shifts)]
    elif isinstance(part, CsrRows):
        coo = part.matrix.tocoo()
        matrix = sp.coo_array((coo.data, (coo.row, new_of_old[coo.col])),
                              shape=(part.matrix.shape[0], n_in)).tocsr()
        return [CsrRows(part.rows, matrix)]
    rows, cols, values = part.to_coo()
    return [as_csr_rows(_Triples(rows, new_of_old[cols], values), n_in)]


# ---------------------------------------------------------------------- convolutions
def conv_structured(kernel: np.ndarray, bias: np.ndarray | None, in_shape, strides, pads,
                    dilations, group: int, dtype=np.float32):
    """A convolution's matrix as product groups, its bias and its output shape: the
    same matrix as ``conv_matrix`` builds in CSR (rows (o, p), columns (c, pixel)), in
    O(parameters + positions). Positions whose windows lie wholly inside the input form
    one group per convolution group; border positions, grouped by which taps they keep,
    form smaller ones."""
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
    base = pixel[np.arange(n_pos), np.argmax(inside, axis=1)] - relative[np.argmax(inside,
                                                                                   axis=1)]
    flat_kernels = np.asarray(kernel, dtype).reshape(n_out, c_group * n_off)
    rows_of = (np.arange(n_out, dtype=INDEX)[:, None] * n_pos)  # row of (o, position 0)
    patterns, which = np.unique(inside, axis=0, return_inverse=True)
    parts = []
    for index, mask in enumerate(patterns):
        taps_u = np.flatnonzero(mask)
        if not len(taps_u):
            continue
        positions = np.flatnonzero(which.ravel() == index).astype(INDEX)
        taps = (np.arange(c_group)[:, None] * n_off + taps_u[None, :]).ravel()
        offsets = (np.arange(c_group, dtype=INDEX)[:, None] * n_pix
                   + relative[taps_u][None, :]).ravel()
        shifts = (np.arange(n_out, dtype=INDEX) // per_group) * (c_group * n_pix)
        parts.append(ProductGroup(flat_kernels[:, taps], offsets, base[positions],
                                  rows_of + positions[None, :], shifts))
    out_bias = None if bias is None else np.repeat(np.asarray(bias, dtype), n_pos)
    matrix = StructuredMatrix((n_out * n_pos, c_in * n_pix), tuple(parts), np.dtype(dtype))
    return matrix, out_bias, (n_out,) + out_spatial


def window_relative(axes, spatial) -> np.ndarray:
    """Each kernel offset's flat input displacement from the window's origin."""
    strides = np.cumprod((1,) + tuple(spatial[::-1]))[:-1][::-1]   # row-major pixel strides
    grids = np.meshgrid(*[np.arange(ax.kernel) * ax.dilation for ax in axes], indexing="ij")
    return sum(g.ravel().astype(INDEX) * s for g, s in zip(grids, strides))
