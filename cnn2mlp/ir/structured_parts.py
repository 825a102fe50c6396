"""The parts a :class:`~cnn2mlp.ir.structured.StructuredMatrix` is made of (a leaf: the
matrix and the rules that act on its parts both import it): product groups, copy runs and
CSR rows, each able to apply itself to a batch and to list its entries; and the byte
limit under which anything is materialized as CSR. See ``structured.py``.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import CompileError

INDEX = np.int64

#: the bytes a materialized CSR may take (None: no limit); the pipeline sets --max-bytes
_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("materialize_limit",
                                                                    default=None)


@contextlib.contextmanager
def materialize_limit(max_bytes: int | None):
    """Within this block, a structured matrix (or part) turned into CSR is refused with a
    CompileError when it would take more than ``max_bytes``."""
    token = _LIMIT.set(max_bytes)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def csr_bytes_bound(nnz: int, n_rows: int, itemsize: int) -> int:
    """What a CSR of ``nnz`` entries takes (int64 indices: the worst case)."""
    return nnz * (itemsize + 8) + (n_rows + 1) * 8


def check_materialize(nnz: int, shape: tuple[int, int], itemsize: int,
                      max_bytes: int | None = None) -> None:
    limit = _LIMIT.get() if max_bytes is None else max_bytes
    need = csr_bytes_bound(nnz, shape[0], itemsize)
    if limit is not None and need > limit:
        raise CompileError(f"materializing a {shape[0]:,}x{shape[1]:,} matrix of {nnz:,} "
                           f"non-zeros takes {need / 2**20:,.0f} MiB, above the limit of "
                           f"{limit / 2**20:,.0f} MiB (--max-bytes)")


@dataclass(frozen=True, eq=False)
class ProductGroup:
    """kernels (n_k, T): every kernel's weights, shared by the groups of one convolution;
    taps (t,): the kernel columns this group uses; offsets (t,): their columns relative to
    a position's base; bases (n_b,): each position's base column; shifts (n_k,): each
    kernel's own shift of the bases; kernel_rows (n_k,) + base_rows (n_b,): the output row
    of each (kernel, position) pair."""

    kernels: np.ndarray
    taps: np.ndarray
    offsets: np.ndarray
    bases: np.ndarray
    shifts: np.ndarray
    kernel_rows: np.ndarray
    base_rows: np.ndarray

    @property
    def nnz(self) -> int:
        return len(self.kernels) * len(self.taps) * len(self.bases)

    @property
    def weights(self) -> np.ndarray:
        """(n_k, t): the weights this group applies (the kernels themselves, not a copy,
        when it uses every tap in order: a convolution's interior)."""
        if len(self.taps) == self.kernels.shape[1] and \
                np.array_equal(self.taps, np.arange(len(self.taps))):
            return self.kernels
        return self.kernels[:, self.taps]

    @property
    def rows(self) -> np.ndarray:
        """(n_k, n_b): the output row of each pair."""
        return self.kernel_rows[:, None] + self.base_rows[None, :]

    def by_shift(self):
        """(kernel indices, shift) for each distinct shift: a conv has one, a depthwise
        conv one a kernel. The columns of one shift are (n_b, t), never (n_k, n_b, t)."""
        if len(self.shifts) and np.all(self.shifts == self.shifts[0]):
            yield np.arange(len(self.shifts)), int(self.shifts[0])
            return
        for shift in np.unique(self.shifts):
            yield np.flatnonzero(self.shifts == shift), int(shift)

    def columns_at(self, shift: int) -> np.ndarray:
        """(n_b, t): the columns the group's kernels with this shift read."""
        return shift + self.bases[:, None] + self.offsets[None, :]

    def apply(self, h: np.ndarray, out: np.ndarray) -> None:
        """``out[rows] += weights @ patches`` for h (n_in, B), by kernel shift."""
        weights = self.weights.astype(h.dtype, copy=False)
        for which, shift in self.by_shift():
            patches = np.take(h, self.columns_at(shift).T.ravel(), axis=0)  # (t*n_b, B)
            patches = patches.reshape(len(self.taps), -1)                    # (t, n_b*B)
            product = (weights[which] @ patches).reshape(len(which), len(self.bases), -1)
            rows = self.kernel_rows[which][:, None] + self.base_rows[None, :]
            out[rows] += product  # a group's rows are distinct

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, columns, values) of every weight: O(nnz), for CSR and checks."""
        n_k, t, n_b = len(self.kernels), len(self.taps), len(self.bases)
        rows = np.broadcast_to(self.rows[:, :, None], (n_k, n_b, t)).ravel()
        values = np.broadcast_to(self.weights[:, None, :], (n_k, n_b, t)).ravel()
        columns = (self.shifts[:, None, None] + self.bases[None, :, None]
                   + self.offsets[None, None, :])
        return rows, columns.ravel(), values


@dataclass(frozen=True, eq=False)
class CopyRuns:
    """``out[rows[i] + j] += weights[i] * h[columns[i] + steps[i] * j]`` for ``j <
    lengths[i]``: a run copies consecutive columns (step 1: a carried value, a shortcut)
    or every ``steps[i]``-th one (a channel of a channels-last map, a stride)."""

    rows: np.ndarray
    columns: np.ndarray
    lengths: np.ndarray
    weights: np.ndarray
    steps: np.ndarray | None = None   # None: every run's step is 1

    def __post_init__(self) -> None:
        if self.steps is None:
            object.__setattr__(self, "steps", np.ones(len(self.rows), INDEX))

    @property
    def nnz(self) -> int:
        return int(self.lengths.sum())

    def apply(self, h: np.ndarray, out: np.ndarray) -> None:
        rows, cols, values = self.to_coo()
        out[rows] += values.astype(h.dtype)[:, None] * h[cols]  # a run's rows are distinct

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        step = np.arange(self.nnz) - np.repeat(np.cumsum(self.lengths) - self.lengths,
                                                self.lengths)
        return (np.repeat(self.rows, self.lengths) + step,
                np.repeat(self.columns, self.lengths) + np.repeat(self.steps, self.lengths) * step,
                np.repeat(self.weights, self.lengths))


@dataclass(frozen=True, eq=False)
class CsrRows:
    """``out[rows] += matrix @ h``: rows (n_r,) distinct, matrix (n_r, n_in) CSR."""

    rows: np.ndarray
    matrix: sp.csr_array

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def apply(self, h: np.ndarray, out: np.ndarray) -> None:
        out[self.rows] += self.matrix.astype(h.dtype, copy=False) @ h

    def to_coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coo = self.matrix.tocoo()
        return self.rows[coo.row], coo.col.astype(INDEX), coo.data


Part = ProductGroup | CopyRuns | CsrRows


#: runs of copies shorter than this stay CSR rows (a run costs four numbers)
MIN_COPY_RUN = 8


def csr_parts(matrix: sp.csr_array) -> tuple[Part, ...]:
    counts = np.diff(matrix.indptr)
    single = np.flatnonzero(counts == 1)
    rows, cols = single.astype(INDEX), matrix.indices[matrix.indptr[single]].astype(INDEX)
    values = matrix.data[matrix.indptr[single]]
    starts, lengths, steps = copy_runs(rows, cols, values)
    keep = lengths >= MIN_COPY_RUN
    if not keep.any():
        return (CsrRows(np.arange(matrix.shape[0], dtype=INDEX), matrix),)
    copies = CopyRuns(rows[starts[keep]], cols[starts[keep]], lengths[keep],
                      values[starts[keep]], steps[keep])
    in_run = np.zeros(matrix.shape[0], bool)
    in_run[rows[np.repeat(keep, lengths)]] = True
    others = np.flatnonzero(~in_run & (counts > 0)).astype(INDEX)
    parts: list[Part] = [copies]
    if len(others):
        parts.append(CsrRows(others, sp.csr_array(matrix[others])))
    return tuple(parts)


def copy_runs(rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
    """(start, length, step) of each run of single entries (sorted by row): consecutive
    rows, one weight, columns a constant step apart. A run breaks before entry k when the
    link k-1 -> k does not continue it, or when its step is not that of the link before
    (if that one linked): every link inside a run then has the run's step."""
    if not len(rows):
        empty = np.zeros(0, INDEX)
        return empty, empty, empty
    link_step = np.diff(cols)
    linked = (np.diff(rows) == 1) & (values[1:] == values[:-1])
    changed = np.concatenate([[False], linked[:-1] & (link_step[1:] != link_step[:-1])])
    breaks = np.flatnonzero(~linked | changed) + 1
    starts = np.concatenate([[0], breaks]).astype(INDEX)
    lengths = np.diff(np.concatenate([starts, [len(rows)]])).astype(INDEX)
    steps = np.ones(len(starts), INDEX)
    longer = lengths > 1
    steps[longer] = link_step[starts[longer]]
    return starts, lengths, steps


#: rows of at most this many entries are grouped by their pattern (columns relative to the
#: first, and weights): a max pool's tournament, an average pool's windows
PATTERN_TAPS = 9
#: a pattern fewer rows share stays CSR rows
MIN_PATTERN_ROWS = 64
#: the patterns a matrix keeps as groups at most, those of the most rows (each is a loop
#: of its own in the C code; a tournament's later levels have a pattern per map row)
MAX_PATTERNS = 16


def pattern_groups(matrix: sp.csr_array) -> tuple[list[ProductGroup], np.ndarray]:
    """The rows of ``matrix`` (2 to PATTERN_TAPS entries) that share their pattern with at
    least MIN_PATTERN_ROWS others, each pattern a one-kernel product group (its bases the
    rows' first columns); and a mask of the rows grouped. Only rows whose weights are
    equal up to sign: the rows of a max pool's tournament (``b + relu(a - b)``) and of an
    average pool are a few patterns repeated at every position, stored as groups in two
    numbers a row, not CSR's entries; a convolution's rows left as CSR keep their kernels
    together for the runtime's search."""
    matrix = sp.csr_array(matrix)
    if not matrix.has_sorted_indices:  # a copy: the caller's matrix is left as it is
        matrix = matrix.sorted_indices()
    counts = np.diff(matrix.indptr)
    grouped = np.zeros(matrix.shape[0], bool)
    groups: list[ProductGroup] = []
    left = MAX_PATTERNS
    for taps in range(2, PATTERN_TAPS + 1):
        rows = np.flatnonzero(counts == taps).astype(INDEX)
        if len(rows) < MIN_PATTERN_ROWS:
            continue
        at = matrix.indptr[rows][:, None] + np.arange(taps)[None, :]
        even = np.all(np.abs(matrix.data[at]) == np.abs(matrix.data[at[:, :1]]), axis=1)
        rows, at = rows[even], at[even]
        if len(rows) < MIN_PATTERN_ROWS:
            continue
        columns = matrix.indices[at].astype(INDEX)
        values = matrix.data[at]
        relative = columns - columns[:, :1]
        bits = np.ascontiguousarray(values).view(np.uint8).reshape(len(rows), -1)
        keys = np.concatenate([relative.view(np.uint8).reshape(len(rows), -1), bits], axis=1)
        _, first, inverse, sizes = np.unique(keys, axis=0, return_index=True,
                                             return_inverse=True, return_counts=True)
        order = np.argsort(inverse.ravel(), kind="stable")  # each pattern's rows in order
        ends = np.cumsum(sizes)
        largest = np.argsort(-sizes, kind="stable")[:left]
        for pattern in np.sort(largest[sizes[largest] >= MIN_PATTERN_ROWS]):
            left -= 1
            members = order[ends[pattern] - sizes[pattern]:ends[pattern]]
            one = first[pattern]
            groups.append(ProductGroup(
                values[one][None, :].copy(), np.arange(taps, dtype=INDEX), relative[one].copy(),
                columns[members, 0].copy(), np.zeros(1, INDEX), np.zeros(1, INDEX),
                rows[members].copy()))
            grouped[rows[members]] = True
    return groups, grouped
