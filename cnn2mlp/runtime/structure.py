"""Structure in a CSR matrix that dense kernels can run: row groups and copies.

A convolution's matrix is made of rows that read one column pattern up to an offset with
one of a few weight vectors: row ``(o, p)`` reads the columns ``base(p) + offset(t)`` (the
kernel's taps, in the interior of the map) with the weights of output channel ``o``. A
*group* is a set of such rows that is exactly every (kernel, position) pair::

    out[rows[k, b]] = sum_t kernels[k, t] * h[shifts[k] + bases[b] + offsets[t]]

``shifts`` is 0 for a convolution, whose kernels all read every position; a depthwise or
grouped convolution gives each kernel (or each conv group's kernels) its own channels: the
same positions moved by a shift of its own. Border rows make smaller groups of their own
(fewer taps), and anything else stays CSR. A row with one non-zero is a *copy* (a carried
value, a shortcut), and runs of consecutive rows that copy consecutive columns with one
weight are copied as blocks.

A layer of a DAG reads several sources side by side (its input *blocks*: a convolution's
channels, a carried shortcut, another branch), and one row may read several of them (a
convolution plus its residual). Rows are grouped whole first; the rows that form no group
are then split by input block, and each block's part is grouped on its own: such a row is
the sum of its parts.

Found from the matrix alone (and the input blocks the file records), at load time: the file
stays a plain CSR MLP. numpy only: the standalone kernel module embeds this source.
"""
from __future__ import annotations

import numpy as np

#: groups smaller than this many rows, or with fewer weights (kernels × taps: a max pool's
#: pairs have two), are not worth a dense kernel: their rows stay CSR, one call for all
MIN_GROUP_ROWS = 8
MIN_GROUP_WEIGHTS = 8
#: runs of copies shorter than this stay CSR rows
MIN_COPY_RUN = 8


class ProductGroup:
    """kernels (n_k, taps): the weight vectors; offsets (taps,): columns relative to a
    position's base; bases (n_b,): the first column of each position; shifts (n_k,): each
    kernel's own shift of the bases (0 for a convolution); rows (n_k, n_b): the matrix row
    of each pair."""

    def __init__(self, kernels, offsets, bases, rows, shifts=None):
        self.kernels, self.offsets, self.bases, self.rows = kernels, offsets, bases, rows
        self.shifts = np.zeros(len(kernels), np.int64) if shifts is None else shifts

    @property
    def shifted(self) -> bool:
        return bool(len(self.shifts)) and bool(np.any(self.shifts != self.shifts[0]))


class Part:
    """The rows of a layer that one kind of kernel computes from one range of columns:
    ``groups`` (ProductGroup), ``copies`` (rows, columns, lengths, weights, steps: runs
    where ``out[rows + i] = weights * h[columns + i * steps]``; a step other than 1 reads
    a channels-last map channel by channel), and ``csr`` rows (``rest_rows`` with
    their ``(data, indices, indptr)``)."""

    def __init__(self, groups, copies, rest_rows, rest):
        self.groups, self.copies, self.rest_rows, self.rest = groups, copies, rest_rows, rest


def find_parts(data, indices, indptr, n_in, blocks=None, groups=True):
    """The parts of a CSR matrix, and for each row how many parts write it (a row written
    by several parts is their sum). Rows are grouped whole; when the layer reads several
    input blocks, splitting its rows by block is tried too, and wins when it puts more
    rows in groups, or as many in fewer groups (a convolution plus a shortcut whose column
    depends on the output channel, or a projection of a map of another size, make one
    small group a position whole, or none). ``groups=False`` looks for copies alone (the
    rows a structured layer left as CSR, whose groups the compiler already has)."""
    split = blocks is not None and len(blocks) > 2
    whole = parts_found(data, indices, indptr, np.arange(len(indptr) - 1), None, groups)
    if not split:
        return whole
    by_block = parts_found(data, indices, indptr, np.arange(len(indptr) - 1), blocks)
    return by_block if score(by_block[0]) > score(whole[0]) else whole


def score(parts):
    """Better parts: more rows in groups, then fewer groups (each a kernel call)."""
    return (sum(g.rows.size for part in parts for g in part.groups),
            -sum(len(part.groups) for part in parts))


def parts_found(data, indices, indptr, rows, blocks, search_groups=True):
    """Groups, copies and CSR rows of ``rows``, split by input block first if ``blocks``."""
    n_out = len(indptr) - 1
    touched = np.zeros(n_out, np.int64)
    pieces = split_by_blocks(data, indices, indptr, rows, blocks) if blocks is not None \
        else [(rows,) + rows_of(data, indices, indptr, rows)]
    result = []
    for block_rows, d, i, p in pieces:
        groups, rest = find_groups(d, i, p) if search_groups else \
            ([], np.arange(len(p) - 1))
        for g in groups:
            g.rows = block_rows[g.rows]
            touched[g.rows.ravel()] += 1
        rows_left = block_rows[rest]
        d, i, p = rows_of(d, i, p, rest)
        copies, csr_rows = find_copies(d, i, p, rows_left)
        for start, _, length, *_ in zip(*copies):
            touched[start:start + length] += 1
        touched[rows_left[csr_rows]] += 1
        d, i, p = rows_of(d, i, p, csr_rows)
        result.append(Part(groups, copies, rows_left[csr_rows], (d, i, p)))
    return result, touched


def rows_of(data, indices, indptr, rows):
    """The CSR arrays of a subset of rows."""
    rows = np.asarray(rows, np.int64)
    lengths = np.diff(indptr)[rows]
    firsts = np.repeat(indptr[rows], lengths)
    take = firsts + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return data[take], indices[take], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def split_by_blocks(data, indices, indptr, rows, blocks):
    """For each input block that the rows read: (the rows that read it, their entries in
    it as CSR)."""
    d, i, p = rows_of(data, indices, indptr, rows)
    block_of = np.searchsorted(blocks, i, side="right") - 1
    row_of = np.repeat(np.arange(len(rows)), np.diff(p))
    out = []
    for block in np.unique(block_of):
        mine = block_of == block
        who, counts = np.unique(row_of[mine], return_counts=True)
        out.append((rows[who], d[mine], i[mine],
                    np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)))
    return out


def find_copies(data, indices, indptr, rows):
    """Rows with one non-zero, in runs of consecutive rows reading consecutive columns
    with one weight: (copies, the positions of the other rows). ``copies`` is (first
    row, first column, length, weight, column step: 1) of each run of at least
    MIN_COPY_RUN."""
    counts = np.diff(indptr)
    single = np.flatnonzero(counts == 1)
    empty = np.zeros(0, np.int64)
    if len(single) < MIN_COPY_RUN:
        return (empty, empty, empty, np.zeros(0), empty), np.arange(len(rows))
    r, c, w = rows[single], indices[indptr[single]], data[indptr[single]]
    breaks = np.flatnonzero((np.diff(r) != 1) | (np.diff(c) != 1) | (w[1:] != w[:-1])) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [len(single)]]))
    keep = lengths >= MIN_COPY_RUN
    in_run = np.repeat(keep, lengths)
    copies = (r[starts[keep]].astype(np.int64), c[starts[keep]].astype(np.int64),
              lengths[keep].astype(np.int64), w[starts[keep]].astype(np.float64),
              np.ones(int(keep.sum()), np.int64))
    copied = np.zeros(len(rows), bool)  # (np.setdiff1d sorted every index: 14 of the 37 s
    copied[single[in_run]] = True       # DenseNet121's C source took at 224x224)
    return copies, np.flatnonzero(~copied)


def find_groups(data_all, indices, indptr):
    """(groups, rows in no group) of a CSR matrix given by its arrays. Groups of one
    column pattern whose kernels read the same positions moved by a shift (depthwise and
    grouped convolutions) are merged into one shifted group."""
    counts = np.diff(indptr)
    in_group = np.zeros(len(counts), bool)
    groups = []
    for taps in np.unique(counts[counts > 1]):
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
            if len(members) < 2:
                continue
            found = []
            for part in split_by_kernels(data[members], bases[members]):
                group = product_group(rows[members[part]], bases[members[part]],
                                      data[members[part]], relative[first])
                if group is not None:
                    found.append(group)
            for group in merge_shifted(found):
                if group.rows.size >= MIN_GROUP_ROWS and \
                        group.kernels.size >= MIN_GROUP_WEIGHTS:
                    groups.append(group)
                    in_group[group.rows.ravel()] = True
    return groups, np.flatnonzero(~in_group)


def row_keys(matrix, chunk=4096):
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


def group_equal_rows(matrix):
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


def split_by_kernels(data, bases):
    """Rows of one column pattern, split by the set of weight vectors their base uses (a
    convolution's top and bottom borders share a pattern but not the kernel rows)."""
    kernel_of, _ = group_equal_rows(data)
    signature = {}
    for base, kernel in zip(bases.tolist(), kernel_of.tolist()):
        signature.setdefault(base, []).append(kernel)
    classes = {}
    for base, kernels in signature.items():
        classes.setdefault(tuple(sorted(kernels)), []).append(base)
    return [np.flatnonzero(np.isin(bases, members)) for members in classes.values()]


def product_group(rows, bases, data, offsets):
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
    return ProductGroup(np.ascontiguousarray(kernels), offsets.astype(np.int64),
                        unique_bases.astype(np.int64), table)


def merge_shifted(groups):
    """Groups of one column pattern with as many kernels and positions, whose positions
    are the same up to a shift (the channels of a depthwise or grouped convolution), as one
    group with a shift per kernel."""
    by_positions = {}
    for group in groups:
        key = (len(group.kernels), (group.bases - group.bases[0]).tobytes())
        by_positions.setdefault(key, []).append(group)
    merged = []
    for members in by_positions.values():
        if len(members) == 1:
            merged.append(members[0])
            continue
        first = members[0]
        merged.append(ProductGroup(
            np.ascontiguousarray(np.concatenate([g.kernels for g in members])),
            first.offsets, first.bases - first.bases[0],
            np.concatenate([g.rows for g in members]),
            np.repeat(np.array([g.bases[0] for g in members], np.int64),
                      [len(g.kernels) for g in members])))
    return merged


def group_patches(group, h):
    """``h[shifts[k] + bases[b] + offsets[t]]`` for h (n_in × B): (taps, n_b × B) when the
    group has one shift, else (n_k, taps, n_b × B)."""
    index = group.bases[None, :] + group.offsets[:, None]
    if not group.shifted:
        return np.take(h, (index + group.shifts[0]).ravel(), axis=0).reshape(
            len(group.offsets), -1)
    full = group.shifts[:, None, None] + index[None]
    return np.take(h, full.ravel(), axis=0).reshape(len(group.kernels), len(group.offsets), -1)


def run_group(group, h, out, add=False):
    """``out[rows] = K @ patches`` (or ``+=``) for h (n_in × B): im2col and a GEMM, or one
    small product per kernel for a shifted group."""
    batch = h.shape[1]
    patches = group_patches(group, h)
    if patches.ndim == 2:
        product = group.kernels @ patches
    else:
        product = np.einsum("kt,ktn->kn", group.kernels, patches)
    rows = group.rows.ravel()
    values = product.reshape(-1, batch)
    if add:
        out[rows] += values
    else:
        out[rows] = values


def run_copies(copies, h, out, add=False):
    """The copy runs of a part: ``out[row + i] (+)= weight * h[column + i * step]``."""
    for row, column, length, weight, step in zip(*copies):
        values = h[column:column + (length - 1) * step + 1:step] * h.dtype.type(weight)
        if add:
            out[row:row + length] += values
        else:
            out[row:row + length] = values


#: the numpy-only part, embedded in the standalone kernel module
EMBEDDED = (ProductGroup, Part, find_parts, score, parts_found, rows_of, split_by_blocks,
            find_copies, find_groups, row_keys, group_equal_rows, split_by_kernels,
            product_group, merge_shifted, group_patches, run_group, run_copies)


def embedded_source():
    import inspect

    return (f"MIN_GROUP_ROWS = {MIN_GROUP_ROWS}\nMIN_GROUP_WEIGHTS = {MIN_GROUP_WEIGHTS}\n"
            f"MIN_COPY_RUN = {MIN_COPY_RUN}\n\n\n"
            + "\n\n".join(inspect.getsource(obj) for obj in EMBEDDED))
