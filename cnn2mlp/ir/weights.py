"""A Dense node's weight, whatever it is stored as: a scipy CSR array, a numpy array, or a
:class:`~cnn2mlp.ir.structured.StructuredMatrix`. The one place the passes, the
interpreter and the MLP ask for what they need of a weight: its non-zeros, its product
with a batch, its rows or columns, a sum, a stack, a product of two. Operations on a
structured weight keep its structure where ``structured_rules.py`` can (a light factor, a
row selection, a column placement); anything else asks for CSR explicitly (``as_csr``),
under the materialize limit. Two CSR weights give what scipy gives, as before.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .index_runs import stored_bytes as index_bytes
from .structured_rules import (abs_row_sums as rules_abs_row_sums,
                               column_counts as rules_column_counts, compact_rows, map_values,
                               part_arrays, part_values, row_counts as rules_row_counts,
                               shift_columns as rules_shift_columns, vstack as rules_vstack)
from .structured import INDEX, CsrRows, ProductGroup, StructuredMatrix


def is_structured(w) -> bool:
    return isinstance(w, StructuredMatrix)


def as_csr(w) -> sp.csr_array:
    """The weight as CSR: a structured one materialized, under the materialize limit."""
    if isinstance(w, StructuredMatrix):
        return w.to_csr()
    return w if isinstance(w, sp.csr_array) else sp.csr_array(w)


def as_structured(w) -> StructuredMatrix:
    return w if isinstance(w, StructuredMatrix) else StructuredMatrix.from_csr(as_csr(w))


def nnz(w) -> int:
    if isinstance(w, StructuredMatrix) or sp.issparse(w):
        return int(w.nnz)
    return int(np.count_nonzero(w))


def csr_bytes(w) -> int:
    """What the weight takes as CSR (int32 indices where they fit, as the writers do)."""
    if sp.issparse(w) and not isinstance(w, StructuredMatrix):
        m = as_csr(w)
        return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    n = nnz(w)
    index = 4 if max(n, w.shape[1]) < 2**31 - 1 else 8
    return n * (np.dtype(w.dtype).itemsize + index) + (w.shape[0] + 1) * index


def stored_bytes(w) -> int:
    """What the weight takes as it is stored (a structured one: its parts)."""
    if isinstance(w, StructuredMatrix):
        return w.stored_bytes
    return csr_bytes(w) if sp.issparse(w) else np.asarray(w).nbytes


def file_bytes(w: StructuredMatrix) -> int:
    """What a structured weight's parts take in a file (int32 indices, or arithmetic runs
    where those take less, as the writers store them), each array its parts share once."""
    arrays = {id(a): a for p in w.parts for a in part_arrays(p)}
    return sum(index_bytes(a) if a.dtype.kind in "iu" else a.nbytes for a in arrays.values())


def compact(w):
    """The weight in the form a writer stores in least: a structured weight with its CSR
    rows' runs of copies and repeated patterns as parts (``compact_rows``); a CSR weight
    as such parts where they take at most 0.8 of its CSR; else as it is."""
    if isinstance(w, StructuredMatrix):
        return compact_rows(w)
    if not sp.issparse(w):
        return w
    m = as_csr(w)
    whole = StructuredMatrix(m.shape, (CsrRows(np.arange(m.shape[0], dtype=INDEX), m),),
                             np.dtype(m.dtype))
    parts = compact_rows(whole)
    return parts if file_bytes(parts) < 0.8 * csr_bytes(m) else w


def weight_values(w) -> np.ndarray:
    """Every stored weight value (for checks: NaN, infinities)."""
    if isinstance(w, StructuredMatrix):  # a kernel array its groups share, once
        arrays = {id(v): np.ravel(v) for v in map(part_values, w.parts)}
        return np.concatenate(list(arrays.values()) or [np.zeros(0, w.dtype)])
    return w.data if sp.issparse(w) else np.asarray(w)


def weight_arrays(w):
    """Every array a weight is stored as, each part's kind as bytes before its arrays
    (what a digest of the weight hashes)."""
    if not isinstance(w, StructuredMatrix):
        m = as_csr(w)
        yield from (m.data, m.indices, m.indptr)
        return
    for part in w.parts:
        yield np.frombuffer(type(part).__name__.encode(), np.uint8)
        yield from part_arrays(part)


def astype(w, dtype):
    dtype = np.dtype(dtype)
    if isinstance(w, StructuredMatrix):
        return w if w.dtype == dtype else map_values(w, lambda a: a.astype(dtype), dtype)
    return w.astype(dtype, copy=False)


def matvec(w, x: np.ndarray) -> np.ndarray:
    """``x @ W.T`` for a batch x (B, n_in), in x's precision where W is structured."""
    if isinstance(w, StructuredMatrix):
        return w.apply(np.ascontiguousarray(x.T)).T
    if sp.issparse(w):
        return np.asarray((w @ x.T).T)
    return x @ w.T


def signed(w):
    """(positive weights, negative weights)."""
    if isinstance(w, StructuredMatrix):
        return (map_values(w, lambda a: np.maximum(a, 0)),
                map_values(w, lambda a: np.minimum(a, 0)))
    if sp.issparse(w):
        w = sp.csr_array(w)
        return w.multiply(w > 0).tocsr(), w.multiply(w < 0).tocsr()
    return np.maximum(w, 0), np.minimum(w, 0)


def abs_row_sums(w) -> np.ndarray:
    if isinstance(w, StructuredMatrix):
        return rules_abs_row_sums(w)
    return np.asarray(abs(w).sum(axis=1)).ravel()


def row_counts(w) -> np.ndarray:
    if isinstance(w, StructuredMatrix):
        return rules_row_counts(w)
    return np.diff(as_csr(w).indptr).astype(np.int64)


def column_counts(w) -> np.ndarray:
    if isinstance(w, StructuredMatrix):
        return rules_column_counts(w)
    if sp.issparse(w):
        return np.bincount(as_csr(w).indices, minlength=w.shape[1])
    return np.count_nonzero(w, axis=0)


def is_light(w) -> bool:
    """Reads at most one entry a row (a selection, placement or scaling), or None."""
    if w is None:
        return True
    counts = row_counts(w)
    return not len(counts) or int(counts.max()) <= 1


def select_rows(w, keep: np.ndarray):
    if isinstance(w, StructuredMatrix):
        return w.select_rows(keep)
    return w[keep] if isinstance(w, np.ndarray) else sp.csr_array(as_csr(w)[keep])


def select_columns(w, keep: np.ndarray, offset: int = 0, width: int | None = None):
    """``W[:, keep]`` placed at ``offset`` in a ``width``-wide input (default: its own)."""
    width = len(keep) + offset if width is None else width
    if isinstance(w, StructuredMatrix):
        new_of_old = np.full(w.shape[1], -1, INDEX)
        new_of_old[np.asarray(keep, INDEX)] = offset + np.arange(len(keep), dtype=INDEX)
        return w.remap_columns(new_of_old, width)
    sub = as_csr(w)[:, keep]
    return shift_columns(sub, offset, width)


def shift_columns(w, offset: int, width: int):
    """``W`` with every column moved right by ``offset``, in a matrix ``width`` wide."""
    if isinstance(w, StructuredMatrix):
        return rules_shift_columns(w, offset, width)
    m = as_csr(w)
    dt = np.int32 if max(width, m.nnz) < 2**31 - 1 else np.int64
    return sp.csr_array((m.data, m.indices.astype(dt) + dt(offset), m.indptr.astype(dt)),
                        shape=(m.shape[0], width))


def scaled(w, factor: float):
    if isinstance(w, StructuredMatrix):
        return w if factor == 1.0 else map_values(w, lambda a: a * a.dtype.type(factor))
    return w if factor == 1.0 else w * w.dtype.type(factor)


def add(a, b):
    """``a + b``: a structured sum keeps both as parts (rows that both write add up)."""
    if not (isinstance(a, StructuredMatrix) or isinstance(b, StructuredMatrix)):
        return sp.csr_array(as_csr(a) + as_csr(b))
    a, b = as_structured(a), as_structured(b)
    if a.shape != b.shape:
        raise ValueError(f"adding a {a.shape} weight to a {b.shape} one")
    return a.with_parts(a.parts + b.parts, dtype=np.result_type(a.dtype, b.dtype))


def vstack(ws: list, dtype):
    """The weights' rows one after another."""
    if not any(isinstance(w, StructuredMatrix) for w in ws):
        return sp.vstack([as_csr(w) for w in ws], format="csr").astype(dtype)
    width = ws[0].shape[1]
    return rules_vstack([astype(as_structured(w), dtype) for w in ws], width, dtype)


def sample_entries(w, budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, how many entries each stands for) of about ``budget`` of the
    weight's entries, never materializing more (a picture of a big layer)."""
    if not isinstance(w, StructuredMatrix):
        coo = as_csr(w).tocoo()
        keep = max(1, coo.nnz // budget)
        return coo.row[::keep], coo.col[::keep], np.full(len(coo.row[::keep]), keep)
    triples = []
    for part in w.parts:
        step = max(1, part.nnz * len(w.parts) // budget)
        if isinstance(part, ProductGroup) and step > 1:
            part = ProductGroup(part.kernels, part.taps, part.offsets, part.bases[::step],
                                part.shifts, part.kernel_rows, part.base_rows[::step])
        else:
            step = 1
        rows, cols, _ = part.to_coo()
        triples.append((rows, cols, np.full(len(rows), step)))
    if not triples:
        return np.zeros(0, INDEX), np.zeros(0, INDEX), np.zeros(0, INDEX)
    return tuple(np.concatenate([t[i] for t in triples]) for i in range(3))


def light_entries(w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a light CSR: (rows that hold an entry, its column, its value)."""
    m = as_csr(w)
    rows = np.flatnonzero(np.diff(m.indptr))
    return rows, m.indices[m.indptr[rows]].astype(INDEX), m.data[m.indptr[rows]]


def moves(n: int, old: np.ndarray, new: np.ndarray, values: np.ndarray):
    """(where each of ``n`` rows or columns goes, -1 where none; the scale it takes)."""
    new_of_old = np.full(n, -1, INDEX)
    new_of_old[old] = new
    scale = np.zeros(n)
    scale[old] = values
    return new_of_old, scale


def product(a, b, dtype):
    """``a @ b``, rounded once to ``dtype``. Two CSR weights multiply in float64 as
    before; a structured factor keeps its structure when the other is light (a selection,
    a placement, a scaling) and is materialized under the limit otherwise."""
    if isinstance(b, StructuredMatrix) and not isinstance(a, StructuredMatrix) and is_light(a):
        rows, cols, values = light_entries(a)
        if len(np.unique(cols)) == len(cols):       # each row of b lands on one row
            new_of_old, scale = moves(b.shape[0], cols, rows, values)
            kept = b if np.all(values == 1.0) else b.scale_rows(scale)
            return astype(kept.relabel_rows(new_of_old, a.shape[0]), dtype)
    if isinstance(a, StructuredMatrix) and not isinstance(b, StructuredMatrix) and is_light(b):
        # a's column k moves to column cols[k] of the product, scaled by values[k] (two
        # columns landing on one add up; a column b does not read is dropped)
        rows, cols, values = light_entries(b)
        new_of_old, scale = moves(a.shape[1], rows, cols, values)
        kept = a if np.all(values == 1.0) else a.scale_columns(scale)
        return astype(kept.remap_columns(new_of_old, b.shape[1]), dtype)
    out = sp.csr_array(as_csr(a).astype(np.float64) @ as_csr(b).astype(np.float64))
    out.sum_duplicates()
    return out.astype(dtype)
