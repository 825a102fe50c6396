"""How each kind of part of a :class:`~cnn2mlp.ir.structured.StructuredMatrix` takes the
operations the passes need: row relabelling (a selection, a stride, a Concat's placement),
row and column scaling, column remapping (a layout change, a placement among a layer's
inputs), signs, counts and stacking. A product group stays a group where the result is
still every (kernel, position) pair of some kernels and positions with affine columns and
rows; otherwise that part alone falls back to CSR rows, exactly, under the materialize
limit. Kernels shared by a convolution's groups stay shared (``Shared``).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from typing import TYPE_CHECKING

from .structured_parts import (INDEX, CopyRuns, CsrRows, Part, ProductGroup, check_materialize,
                               csr_parts, pattern_groups)

if TYPE_CHECKING:  # the matrix module imports these rules
    from .structured import StructuredMatrix


class Shared:
    """One new array per shared kernel array (by identity) within an operation."""

    def __init__(self, make) -> None:
        self.make, self.done = make, {}

    def __call__(self, kernels: np.ndarray) -> np.ndarray:
        key = id(kernels)
        if key not in self.done:
            self.done[key] = (kernels, self.make(kernels))  # keep the key's array alive
        return self.done[key][1]


def as_csr_rows(part: Part, n_in: int, triples=None) -> CsrRows:
    """A part (or its ``triples``) as CSR rows over ``n_in`` columns: the fallback, exact,
    refused above the materialize limit before the triples are built."""
    if triples is None:
        check_materialize(part.nnz, (part.nnz, n_in), 12)
        triples = part.to_coo()
    rows, cols, values = triples
    distinct, inverse = np.unique(rows, return_inverse=True)
    matrix = sp.coo_array((values, (inverse, cols)), shape=(len(distinct), n_in)).tocsr()
    matrix.sum_duplicates()
    return CsrRows(distinct.astype(INDEX), matrix)


# ------------------------------------------------------------------------------ rows
def select_rows(m: StructuredMatrix, keep) -> StructuredMatrix:
    keep = np.asarray(keep, INDEX)
    if len(np.unique(keep)) != len(keep):
        raise ValueError("select_rows takes distinct rows")
    new_of_old = np.full(m.shape[0], -1, INDEX)
    new_of_old[keep] = np.arange(len(keep), dtype=INDEX)
    return relabel_rows(m, new_of_old, len(keep))


def relabel_rows(m: StructuredMatrix, new_of_old, n_out: int) -> StructuredMatrix:
    new_of_old = np.asarray(new_of_old, INDEX)
    parts: list[Part] = []
    for part in m.parts:
        parts += relabel_part(part, new_of_old, m.shape[1])
    return m.with_parts(parts, shape=(n_out, m.shape[1]))


def factored(rows: np.ndarray):
    """(kernel_rows, base_rows) with ``rows = kernel_rows[:, None] + base_rows[None, :]``,
    or None."""
    kernel_rows, base_rows = rows[:, 0] - rows[0, 0], rows[0, :].copy()
    if np.array_equal(rows, kernel_rows[:, None] + base_rows[None, :]):
        return kernel_rows, base_rows
    return None


def relabel_part(part: Part, new_of_old: np.ndarray, n_in: int) -> list[Part]:
    if isinstance(part, ProductGroup):
        new = new_of_old[part.rows]                              # (n_k, n_b)
        kept = new >= 0
        if not kept.any():
            return []
        kernels, bases = kept.any(axis=1), kept.any(axis=0)
        if np.array_equal(kept, np.outer(kernels, bases)):     # a product of selections
            rows = factored(new[np.ix_(kernels, bases)])
            if rows is not None:
                keep_k = kernels.all()
                return [ProductGroup(part.kernels if keep_k else part.kernels[kernels],
                                     part.taps, part.offsets, part.bases[bases],
                                     part.shifts[kernels], rows[0], rows[1])]
    elif isinstance(part, CsrRows):
        new = new_of_old[part.rows]
        kept = new >= 0
        return [CsrRows(new[kept], part.matrix[kept])] if kept.any() else []
    elif isinstance(part, CopyRuns):
        rows, cols, values = part.to_coo()
        new = new_of_old[rows]
        firsts = np.repeat(new[np.cumsum(part.lengths) - part.lengths], part.lengths)
        if np.all(new >= 0) and np.array_equal(new - firsts, rows - np.repeat(part.rows,
                                                                              part.lengths)):
            return [replace(part, rows=firsts[np.cumsum(part.lengths) - part.lengths])]
        kept = new >= 0                                          # a run moved whole, or CSR
        return [as_csr_rows(part, n_in, (new[kept], cols[kept], values[kept]))] \
            if kept.any() else []
    check_materialize(part.nnz, (part.nnz, n_in), 12)
    rows, cols, values = part.to_coo()
    new = new_of_old[rows]
    kept = new >= 0
    return [as_csr_rows(part, n_in, (new[kept], cols[kept], values[kept]))] if kept.any() \
        else []


def scale_rows(m: StructuredMatrix, scale: np.ndarray) -> StructuredMatrix:
    shared: dict[tuple, np.ndarray] = {}

    def group(part: ProductGroup) -> ProductGroup | None:
        per_pair = scale[part.rows]                              # (n_k, n_b)
        if not np.all(per_pair == per_pair[:, :1]):              # one scale a kernel
            return None
        factor = per_pair[:, 0]
        key = (id(part.kernels), factor.tobytes())               # shared kernels stay shared
        if key not in shared:
            shared[key] = part.kernels * factor[:, None].astype(part.kernels.dtype)
        return replace(part, kernels=shared[key])

    def csr(part: CsrRows) -> CsrRows:
        factor = scale[part.rows].astype(part.matrix.dtype)
        return CsrRows(part.rows, sp.csr_array(sp.diags_array(factor) @ part.matrix))

    return scale_parts(m, group, lambda runs: scaled_runs(runs, scale, runs.rows,
                                                          runs.to_coo()[0]), csr)


# ------------------------------------------------------------------------------ columns
def scale_columns(m: StructuredMatrix, scale: np.ndarray) -> StructuredMatrix:
    def group(part: ProductGroup) -> ProductGroup | None:
        factor = group_column_factor(part, scale)                # one scale a (kernel, tap)
        if factor is None:
            return None
        return replace(part, kernels=part.weights * factor.astype(part.kernels.dtype),
                       taps=np.arange(len(part.taps), dtype=INDEX))

    def csr(part: CsrRows) -> CsrRows:
        factor = scale[:part.matrix.shape[1]].astype(part.matrix.dtype)
        return CsrRows(part.rows, sp.csr_array(part.matrix @ sp.diags_array(factor)))

    return scale_parts(m, group, lambda runs: scaled_runs(runs, scale, runs.columns,
                                                          runs.to_coo()[1]), csr)


def scale_parts(m: StructuredMatrix, group, runs, csr) -> StructuredMatrix:
    """Each part scaled by its kind's rule (``group``, ``runs``: None when the scale breaks
    the part's structure), or as CSR rows (``csr``) where it does."""
    parts = []
    for part in m.parts:
        done = group(part) if isinstance(part, ProductGroup) else \
            runs(part) if isinstance(part, CopyRuns) else None
        if done is None:
            done = csr(part if isinstance(part, CsrRows) else as_csr_rows(part, m.shape[1]))
        parts.append(done)
    return m.with_parts(parts)


def scaled_runs(part: CopyRuns, scale: np.ndarray, firsts: np.ndarray,
                entries: np.ndarray) -> CopyRuns | None:
    """The runs with each weight times the scale of its run, when every entry of a run
    has the scale of the run's first (``firsts``: the first row or column of each run,
    ``entries``: every entry's); else None."""
    if not np.all(scale[entries] == np.repeat(scale[firsts], part.lengths)):
        return None
    return replace(part, weights=part.weights * scale[firsts].astype(part.weights.dtype))

def group_column_factor(part: ProductGroup, scale: np.ndarray) -> np.ndarray | None:
    """(n_k, t): the scale of each (kernel, tap), when every position agrees; else None."""
    factor = np.empty((len(part.kernels), len(part.taps)), scale.dtype)
    for which, shift in part.by_shift():
        per_weight = scale[part.columns_at(shift)]              # (n_b, t)
        if not np.all(per_weight == per_weight[:1]):
            return None
        factor[which] = per_weight[0]
    return factor


def remap_columns(m: StructuredMatrix, new_of_old: np.ndarray, n_in: int) -> StructuredMatrix:
    parts = []
    for part in m.parts:
        parts += remap_part(part, new_of_old, n_in)
    return m.with_parts(parts, shape=(m.shape[0], n_in))


def remap_part(part: Part, new_of_old: np.ndarray, n_in: int) -> list[Part]:
    if isinstance(part, ProductGroup):
        group = remap_group(part, new_of_old)
        if group is not False:
            return [] if group is None else [group]
    if isinstance(part, CsrRows):
        coo = part.matrix.tocoo()
        cols = new_of_old[coo.col]
        kept = cols >= 0
        matrix = sp.coo_array((coo.data[kept], (coo.row[kept], cols[kept])),
                              shape=(part.matrix.shape[0], n_in)).tocsr()
        return [CsrRows(part.rows, matrix)]
    if not isinstance(part, CopyRuns):
        check_materialize(part.nnz, (part.nnz, n_in), 12)
    rows, cols, values = part.to_coo()
    cols = new_of_old[cols]
    kept = cols >= 0
    return [as_csr_rows(part, n_in, (rows[kept], cols[kept], values[kept]))] if kept.any() \
        else []


def remap_group(part: ProductGroup, new_of_old: np.ndarray):
    """The group reading remapped columns (taps whose every column is dropped go), None
    when nothing is left, False when the remapped columns are not affine any more."""
    mapped = [(which, new_of_old[part.columns_at(shift)]) for which, shift in part.by_shift()]
    kept_taps = mapped[0][1][0] >= 0
    for _, columns in mapped:
        if not np.all((columns >= 0) == kept_taps[None, :]):
            return False
    if not kept_taps.any():
        return None
    first = mapped[0][1][:, kept_taps]
    bases = first[:, 0].copy()
    offsets = first[0, :] - first[0, 0]
    shifts = np.empty(len(part.kernels), INDEX)
    for which, columns in mapped:
        columns = columns[:, kept_taps]
        shift = columns[0, 0] - first[0, 0]
        if not np.array_equal(columns, shift + bases[:, None] + offsets[None, :]):
            return False
        shifts[which] = shift
    return replace(part, taps=part.taps[kept_taps], offsets=offsets, bases=bases,
                   shifts=shifts)


def shift_columns(m: StructuredMatrix, offset: int, width: int) -> StructuredMatrix:
    """The matrix with every column moved right by ``offset`` in a ``width``-wide input:
    O(stored), whatever the parts."""
    parts = []
    for part in m.parts:
        if isinstance(part, ProductGroup):
            parts.append(replace(part, bases=part.bases + offset))
        elif isinstance(part, CopyRuns):
            parts.append(replace(part, columns=part.columns + offset))
        else:
            matrix = part.matrix
            parts.append(CsrRows(part.rows, sp.csr_array(
                (matrix.data, matrix.indices.astype(INDEX) + offset, matrix.indptr),
                shape=(matrix.shape[0], width))))
    return m.with_parts(parts, shape=(m.shape[0], width))


# ------------------------------------------------------------------------------ values
def map_values(m: StructuredMatrix, fn, dtype=None) -> StructuredMatrix:
    """Every weight through the element-wise ``fn`` (with fn(0) == 0): signs, a scalar
    factor, a precision."""
    kernels = Shared(fn)
    parts = []
    for part in m.parts:
        if isinstance(part, ProductGroup):
            parts.append(replace(part, kernels=kernels(part.kernels)))
        elif isinstance(part, CopyRuns):
            parts.append(replace(part, weights=fn(part.weights)))
        else:
            matrix = part.matrix
            parts.append(CsrRows(part.rows, sp.csr_array((fn(matrix.data), matrix.indices,
                                                          matrix.indptr), shape=matrix.shape)))
    return m.with_parts(parts, dtype=dtype)


def part_values(part: Part) -> np.ndarray:
    """The values a part stores (a group's whole kernel array, shared with its siblings)."""
    if isinstance(part, ProductGroup):
        return part.kernels
    return part.weights if isinstance(part, CopyRuns) else part.matrix.data


def part_arrays(part: Part) -> tuple[np.ndarray, ...]:
    """The arrays that define a part, in a fixed order (a group's whole kernels)."""
    if isinstance(part, ProductGroup):
        return (part.kernels, part.taps, part.offsets, part.bases, part.shifts,
                part.kernel_rows, part.base_rows)
    if isinstance(part, CopyRuns):
        return (part.rows, part.columns, part.lengths, part.weights, part.steps)
    m = part.matrix
    return (part.rows, m.data, m.indices, m.indptr, np.array(m.shape, INDEX))


def row_counts(m: StructuredMatrix) -> np.ndarray:
    """Non-zeros each row holds (a row two parts write counts both)."""
    counts = np.zeros(m.shape[0], INDEX)
    for part in m.parts:
        if isinstance(part, ProductGroup):
            counts[part.rows] += len(part.taps)
        elif isinstance(part, CopyRuns):
            counts[part.to_coo()[0]] += 1
        else:
            counts[part.rows] += np.diff(part.matrix.indptr)
    return counts


def column_counts(m: StructuredMatrix) -> np.ndarray:
    """Non-zeros each column holds, in O(distinct shifts × positions × taps) memory."""
    counts = np.zeros(m.shape[1], INDEX)
    for part in m.parts:
        if isinstance(part, ProductGroup):
            for which, shift in part.by_shift():
                counts += len(which) * np.bincount(part.columns_at(shift).ravel(),
                                                   minlength=m.shape[1])
        elif isinstance(part, CopyRuns):
            counts += np.bincount(part.to_coo()[1], minlength=m.shape[1])
        else:
            counts += np.bincount(part.matrix.indices, minlength=m.shape[1])
    return counts


def abs_row_sums(m: StructuredMatrix) -> np.ndarray:
    sums = np.zeros(m.shape[0])
    for part in m.parts:
        if isinstance(part, ProductGroup):
            sums[part.rows] += np.abs(part.weights).sum(axis=1)[:, None]
        elif isinstance(part, CopyRuns):
            rows, _, values = part.to_coo()
            np.add.at(sums, rows, np.abs(values))
        else:
            sums[part.rows] += np.asarray(abs(part.matrix).sum(axis=1)).ravel()
    return sums


def vstack(matrices: list[StructuredMatrix], width: int, dtype) -> StructuredMatrix:
    """The matrices' rows one after another (every part's rows moved down)."""
    parts, start = [], 0
    for m in matrices:
        for part in m.parts:
            if isinstance(part, ProductGroup):
                parts.append(replace(part, kernel_rows=part.kernel_rows + start))
            else:
                parts.append(replace(part, rows=part.rows + start))
        start += m.shape[0]
    return matrices[0].with_parts(parts, shape=(start, width), dtype=dtype)


def compact_rows(m: StructuredMatrix) -> StructuredMatrix:
    """The matrix with its CSR rows stored in less where they can be: runs of copies as
    copy runs (a carried value or a strided shortcut that a sum or a placement left as CSR
    rows), rows of a repeated pattern as one-kernel groups (a max pool's tournament, an
    average pool: ``pattern_groups``), the rest as CSR rows."""
    parts: list[Part] = []
    for part in m.parts:
        if not isinstance(part, CsrRows):
            parts.append(part)
            continue
        found: list[Part] = []
        for piece in csr_parts(placed_rows(part, m.shape)):
            found += patterns_of(piece) if isinstance(piece, CsrRows) else [piece]
        parts.extend(found if any(not isinstance(f, CsrRows) for f in found) else (part,))
    return m.with_parts(parts)


def placed_rows(part: CsrRows, shape: tuple[int, int]) -> sp.csr_array:
    """The CSR rows at their rows of the whole matrix (the runs of copies are found along
    its rows); the part's own matrix when it holds every row in order (a CSR layer)."""
    if len(part.rows) == shape[0] and np.array_equal(part.rows, np.arange(shape[0])):
        return part.matrix
    coo = part.matrix.tocoo()
    return sp.coo_array((coo.data, (part.rows[coo.row], coo.col)), shape=shape).tocsr()


def patterns_of(part: CsrRows) -> list[Part]:
    """The CSR rows' repeated patterns as groups, and the other rows."""
    groups, grouped = pattern_groups(part.matrix)
    found: list[Part] = [replace(g, base_rows=part.rows[g.base_rows]) for g in groups]
    left = np.flatnonzero(~grouped & (np.diff(part.matrix.indptr) > 0))  # empty rows go
    if len(left):
        found.append(CsrRows(part.rows[left], sp.csr_array(part.matrix[left])))
    return found

