"""Structure in a CSR matrix that a dense GEMM can run: rows that read the same column
pattern up to an offset, with one of a few weight vectors each.

A convolution's matrix is made of such rows: row ``(o, p)`` reads the columns
``base(p) + rel`` (the kernel's taps, in the interior of the map) with the weights of
output channel ``o``. When a group of rows is exactly every (weight vector, base) pair,
it is a product: gathering the patches ``X[t, p] = h[base(p) + rel(t)]`` (im2col) and one
GEMM ``K @ X`` computes all its rows at BLAS speed. Border rows, and anything else, stay
CSR. Found from the matrix alone, at load time: the file stays a plain CSR MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: groups smaller than this many rows are not worth a GEMM
MIN_GROUP_ROWS = 8


class ProductGroup:
    """kernels (n_kernels, taps): the weight vectors; offsets (taps,): columns relative to
    a row's base; bases (n_bases,): the first column of each position; rows (n_kernels,
    n_bases): the matrix row of each pair."""

    def __init__(self, kernels, offsets, bases, rows):
        self.kernels, self.offsets, self.bases, self.rows = kernels, offsets, bases, rows


@dataclass
class Structure:
    groups: list[ProductGroup]
    rest_rows: np.ndarray            # rows not in any group
    rest: sp.csr_array               # those rows, as CSR (len(rest_rows) × n_in)

    @property
    def covered(self) -> int:
        return sum(g.rows.size for g in self.groups)


def find_structure(w: sp.csr_array) -> Structure:
    groups, rest_rows = find_groups(w.data, w.indices, w.indptr)
    return Structure(groups, rest_rows, sp.csr_array(w[rest_rows]))


# The functions below use numpy alone: the standalone kernel module (--kernel-py) embeds
# their source, so that both runtimes find the same groups.
def find_groups(data_all, indices, indptr):
    """(groups, rows in no group) of a CSR matrix given by its arrays."""
    counts = np.diff(indptr)
    in_group = np.zeros(len(counts), bool)
    groups = []
    for taps in np.unique(counts[counts > 0]):
        rows = np.flatnonzero(counts == taps)
        if len(rows) < MIN_GROUP_ROWS:
            continue
        starts = indptr[rows]
        cols = indices[starts[:, None] + np.arange(taps)[None, :]].astype(np.int64)
        data = data_all[starts[:, None] + np.arange(taps)[None, :]]
        bases = cols[:, 0]
        relative = cols - bases[:, None]
        del cols
        pattern_of, firsts = group_equal_rows(relative)
        for p, first in enumerate(firsts):
            members = np.flatnonzero(pattern_of == p)
            if len(members) < MIN_GROUP_ROWS:
                continue
            for part in split_by_kernels(data[members], bases[members]):
                group = product_group(rows[members[part]], bases[members[part]],
                                      data[members[part]], relative[first])
                if group is not None:
                    groups.append(group)
                    in_group[group.rows.ravel()] = True
    return groups, np.flatnonzero(~in_group)


def row_keys(matrix: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """A 64-bit key per row: a random linear hash of its bits, in chunks of rows."""
    bits = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
    words = matrix.view(bits[matrix.dtype]) if matrix.dtype in bits else matrix
    weights = np.random.default_rng(20261126).integers(1, 2**62, words.shape[1],
                                                        dtype=np.uint64)
    keys = np.empty(len(words), np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(words), chunk):
            block = words[start:start + chunk].astype(np.uint64)
            keys[start:start + chunk] = (block * weights).sum(axis=1)
    return keys


def group_equal_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, first row of each group) for rows that are equal, found by
    hashing and then checked entry by entry (a hash collision splits, never merges)."""
    _, first, group_of = np.unique(row_keys(matrix), return_index=True, return_inverse=True)
    group_of = group_of.ravel()
    same = np.ones(len(matrix), bool)
    for start in range(0, len(matrix), 4096):
        stop = start + 4096
        same[start:stop] = (matrix[start:stop] == matrix[first[group_of[start:stop]]]).all(1)
    if not same.all():  # a collision: give the odd rows groups of their own
        odd = np.flatnonzero(~same)
        group_of[odd] = len(first) + np.arange(len(odd))
        first = np.concatenate([first, odd])
    return group_of, first


def split_by_kernels(data: np.ndarray, bases: np.ndarray) -> list[np.ndarray]:
    """Rows of one column pattern, split by the set of weight vectors their base uses (a
    convolution's top and bottom borders share a pattern but not the kernel rows)."""
    kernel_of, _ = group_equal_rows(data)
    signature: dict[int, list[int]] = {}
    for base, kernel in zip(bases.tolist(), kernel_of.tolist()):
        signature.setdefault(base, []).append(kernel)
    classes: dict[tuple, list[int]] = {}
    for base, kernels in signature.items():
        classes.setdefault(tuple(sorted(kernels)), []).append(base)
    parts = []
    for members in classes.values():
        chosen = np.isin(bases, members)
        if chosen.sum() >= MIN_GROUP_ROWS:
            parts.append(np.flatnonzero(chosen))
    return parts


def product_group(rows, bases, data, offsets) -> ProductGroup | None:
    """The rows as every (weight vector, base) pair exactly once, or None."""
    kernel_of, firsts = group_equal_rows(data)
    kernels = data[firsts]
    unique_bases, base_of = np.unique(bases, return_inverse=True)
    n_k, n_b = len(kernels), len(unique_bases)
    if n_k * n_b != len(rows):
        return None
    table = np.full((n_k, n_b), -1, np.int64)
    table[kernel_of.ravel(), base_of.ravel()] = rows
    if (table < 0).any():  # a pair twice, another missing
        return None
    return ProductGroup(np.ascontiguousarray(kernels), offsets.astype(np.int64), unique_bases,
                        table)



def run_group(group: ProductGroup, h: np.ndarray, out: np.ndarray) -> None:
    """``out[rows] = K @ patches`` for h (n_in × B): im2col and one GEMM."""
    batch = h.shape[1]
    # np.take gathers whole rows twice as fast as fancy indexing
    patches = np.take(h, (group.bases[None, :] + group.offsets[:, None]).ravel(), axis=0)
    product = group.kernels @ patches.reshape(len(group.offsets), -1)
    out[group.rows.ravel()] = product.reshape(-1, batch)


#: the numpy-only part, embedded in the standalone kernel module
EMBEDDED = (ProductGroup, row_keys, group_equal_rows, split_by_kernels, product_group,
            find_groups, run_group)


def embedded_source() -> str:
    import inspect

    return f"MIN_GROUP_ROWS = {MIN_GROUP_ROWS}\n\n\n" + "\n\n".join(
        inspect.getsource(obj) for obj in EMBEDDED)
