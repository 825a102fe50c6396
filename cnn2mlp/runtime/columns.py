"""Equal columns: a layer that reads two inputs with the same weights reads their sum.

Max pooling compiles to ``max(a, b) = b + relu(a - b)``: the next layer reads both neurons
of each pair with the same weights, so a convolution after a 2×2 max pool does twice its
multiply-adds. When columns ``c`` and ``d`` of ``W`` are equal, ``W h = W' (S h)``, where
``W'`` keeps one column per class of equal columns and ``S`` sums each class. The runtime
inserts ``S`` as a layer of its own (identity activation, no bias: ones only) and runs
``W'``: exact up to float rounding (``w a + w b`` becomes ``w (a + b)``). Found from the
matrix alone, at load time; the file is not changed.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from ..ir.activations import IDENTITY
from ..ir.mlp import MlpLayer
from ..ir.structured import CsrRows, ProductGroup
from ..ir.weights import as_csr, is_structured

#: merge only when it saves this share of the layer's non-zeros...
MIN_SAVED_SHARE = 0.2
#: ...and this many times the multiply-adds of the summing layer
MIN_SAVED_OVER_COST = 4


def merge_equal_columns(layer: MlpLayer) -> tuple[MlpLayer, MlpLayer] | None:
    """(summing layer, the layer on the sums) when merging pays, else None."""
    w = layer.weight
    if is_structured(w) and mostly_csr_rows(w):
        w = as_csr(w)  # CSR rows and a few copies, stored so to take less room
    if not sp.issparse(w):  # groups: the parts are kept as the compiler made them
        return None
    found = merged_columns(w.data, w.indices, w.indptr, w.shape[1])
    if found is None:
        return None
    class_of, first = found
    summing = sp.csr_array((np.ones(len(class_of), w.dtype), (class_of, np.arange(len(class_of)))),
                           shape=(len(first), len(class_of)))
    summing.sort_indices()
    return (MlpLayer(summing, np.zeros(len(first), w.dtype), IDENTITY.name,
                     input_blocks=layer.input_blocks),
            replace(layer, weight=sp.csr_array(w[:, first]), input_blocks=None))


def mostly_csr_rows(w) -> bool:
    """A structured weight without groups whose CSR rows hold most of its entries (a
    convolution fused with a max pool's recombination): its columns may merge. Layers of
    copies (DenseNet's carried values, millions of rows) are not searched."""
    if any(isinstance(p, ProductGroup) for p in w.parts):
        return False
    return 2 * sum(p.nnz for p in w.parts if isinstance(p, CsrRows)) >= w.nnz


def runtime_layers(layers: list[MlpLayer]) -> list[MlpLayer]:
    """The layers the runtime runs: each one whose equal columns pay to merge is preceded
    by the layer that sums them."""
    out: list[MlpLayer] = []
    for layer in layers:
        merged = merge_equal_columns(layer)
        out.extend(merged if merged is not None else (layer,))
    return out


# The functions below use numpy alone: the standalone kernel module (--kernel-py) embeds
# their source, so that both runtimes merge the same columns.
def merged_columns(data, indices, indptr, n_in):
    """(class of each column, first column of each class) for a CSR matrix whose equal
    columns are worth merging (see MIN_SAVED_SHARE), else None."""
    if len(data) == 0 or not may_have_equal_columns(data, indices, indptr, n_in):
        return None
    class_of = column_classes(data, indices, indptr, n_in)
    n_classes = int(class_of.max()) + 1
    if n_classes == n_in:
        return None
    first = np.full(n_classes, n_in, np.int64)
    np.minimum.at(first, class_of, np.arange(n_in))
    counts = np.bincount(indices, minlength=n_in)
    saved = len(data) - int(counts[first].sum())
    if saved < MIN_SAVED_SHARE * len(data) or saved < MIN_SAVED_OVER_COST * n_in:
        return None
    return class_of, first


def may_have_equal_columns(data, indices, indptr, n_in):
    """False when no two columns share their count, sum of values and sum of row numbers:
    three bincounts, 10-20x cheaper than finding the classes (a 36 M non-zero convolution
    took seconds). Equal columns add the same values in the same row order, so their
    float sums are equal too: this never rules out a pair that is equal."""
    columns = indices.astype(np.intp, copy=False)  # bincount converts on every call
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.float64), np.diff(indptr))
    summary = np.stack([np.bincount(columns, minlength=n_in),
                        np.bincount(columns, weights=data, minlength=n_in),
                        np.bincount(columns, weights=rows, minlength=n_in)], axis=1)
    # the three as one hash of their bits (equal columns' are the same bits: a collision
    # only says "maybe"): np.unique of the rows had sorted them, 0.85 s a 1.2 M-column layer
    bits = np.ascontiguousarray(summary.astype(np.float64)).view(np.uint64)
    with np.errstate(over="ignore"):
        keys = (bits * np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9],
                                np.uint64)).sum(axis=1, dtype=np.uint64)
    return len(np.unique(keys)) < n_in


def column_classes(data, indices, indptr, n_in):
    """The class of each column, numbered by first column: equal columns (the same rows
    with the same values) share one. A hash proposes, an entry-by-entry comparison
    confirms: a collision leaves a column alone, it never merges unequal ones."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((rows, indices))  # column by column, rows ascending: CSC order
    col_rows, col_data = rows[order], data[order]
    counts = np.bincount(indices, minlength=n_in)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    bits = col_data.view({4: np.uint32, 8: np.uint64}[col_data.itemsize]).astype(np.uint64)
    rng = np.random.default_rng(20261126)
    row_weight = rng.integers(1, 2**62, len(indptr) - 1, dtype=np.uint64)
    row_shift = rng.integers(1, 2**62, len(indptr) - 1, dtype=np.uint64)
    keys = np.zeros(n_in, np.uint64)
    with np.errstate(over="ignore"):
        np.add.at(keys, indices[order], (bits + row_shift[col_rows]) * row_weight[col_rows])
        keys = keys * np.uint64(0x9E3779B97F4A7C15) + counts.astype(np.uint64)
    _, first, key_of = np.unique(keys, return_index=True, return_inverse=True)
    representative = first[key_of.ravel()]
    return confirm_equal(col_rows, col_data, starts, counts, representative)


def confirm_equal(col_rows, col_data, starts, counts, representative):
    """Classes from proposed representatives (columns in CSC arrays ``starts``/``counts``):
    a column joins its representative only when every entry matches."""
    columns = np.arange(len(representative))
    candidate = (representative != columns) & (counts == counts[representative])
    members = np.flatnonzero(candidate)
    lengths = counts[members]
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    here = np.repeat(starts[members], lengths) + within
    there = np.repeat(starts[representative[members]], lengths) + within
    same = (col_rows[here] == col_rows[there]) & (col_data[here] == col_data[there])
    mismatched = np.zeros(len(members), bool)
    mismatched[np.repeat(np.arange(len(members)), lengths)[~same]] = True
    confirmed = np.where(candidate, representative, columns)
    confirmed[members[mismatched]] = members[mismatched]
    return np.unique(confirmed, return_inverse=True)[1].ravel()


#: the numpy-only part, embedded in the standalone kernel module
EMBEDDED = (merged_columns, may_have_equal_columns, column_classes, confirm_equal)


def embedded_source() -> str:
    import inspect

    return (f"MIN_SAVED_SHARE = {MIN_SAVED_SHARE}\nMIN_SAVED_OVER_COST = {MIN_SAVED_OVER_COST}"
            "\n\n\n" + "\n\n".join(inspect.getsource(obj) for obj in EMBEDDED))
