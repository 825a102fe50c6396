"""Product groups arranged for the C code (``c_layers.py``): groups that write the same
rows made one, and a group's kernels matched to those of a group stored already, so that
their weights are stored once."""
from __future__ import annotations

import numpy as np

from .structure import ProductGroup

#: kernels computed together by a convolution's loop (two AVX vectors of float)
LANES = 16


def merge_same_rows(groups: list[ProductGroup]) -> list[ProductGroup]:
    """The groups, those that write the same rows from positions the same distance apart
    (each kernel with the same shift) made one, whose kernels have the taps of all (each
    group's offsets moved by its distance from the first's positions): the sum of their
    products is that one product. A ShuffleNet's 1x1 convolution after a channel shuffle
    reads the carried blocks of several earlier units, a group each (five to eight, of the
    same rows): one function and one pass over the rows instead."""
    merged: dict[tuple, list[ProductGroup]] = {}
    for g in groups:
        rows, shifts, bases = np.asarray(g.rows), np.asarray(g.shifts), np.asarray(g.bases)
        if not rows.size:
            merged[id(g), ] = [g]
            continue
        order = np.argsort(rows[:, 0], kind="stable")
        g = ProductGroup(np.asarray(g.kernels)[order], np.asarray(g.offsets), bases,
                         rows[order], shifts[order])
        key = (rows.shape, g.rows.tobytes(), (bases - bases[0]).tobytes(),
               g.shifts.tobytes())
        merged.setdefault(key, []).append(g)
    return [same[0] if len(same) == 1 else one_group(same) for same in merged.values()]


def one_group(same: list[ProductGroup]) -> ProductGroup:
    """Groups of the same rows, positions and shifts, as one group reading the first's
    positions (their offsets moved by how far their positions are from the first's)."""
    first = same[0]
    offsets = [np.asarray(g.offsets, np.int64) + (int(g.bases[0]) - int(first.bases[0]))
               for g in same]
    return ProductGroup(np.concatenate([g.kernels for g in same], axis=1),
                        np.concatenate(offsets), first.bases, first.rows, first.shifts)


def kernel_owners(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct weights of ``kernels`` (n_k, taps), sorted, and for each the one
    kernel that has it, or -1 where several do."""
    values, first, counts = np.unique(np.asarray(kernels).ravel(), return_index=True,
                                      return_counts=True)
    return values, np.where(counts == 1, first // kernels.shape[1], -1)


def tap_columns(kernels: np.ndarray) -> dict[bytes, int]:
    """Each tap's weights over the blocked kernels (bytes), to the tap: what
    ``kernels_within`` finds a group's taps by."""
    kernels = np.asarray(kernels)
    blocked = len(kernels) - len(kernels) % LANES
    index: dict[bytes, int] = {}
    for t in range(kernels.shape[1]):
        index.setdefault(np.ascontiguousarray(kernels[:blocked, t]).tobytes(), t)
    return index


def kernels_within(g: ProductGroup, source: ProductGroup, columns: dict[bytes, int],
                   owners: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[ProductGroup, np.ndarray] | None:
    """``g`` with its kernels in ``source``'s order, and for each of its taps the tap of
    ``source`` with the same weights in every kernel (``columns``: a tap's weights over
    ``source``'s blocked kernels, as bytes, to the tap); None unless every kernel of ``g``
    is one of ``source``'s with some of its taps. Kernels are matched by the weights that
    one kernel of ``source`` alone has (``owners``: ``kernel_owners`` of its kernels,
    computed unless given); the columns' bytes then check every weight."""
    kernels, theirs = np.asarray(g.kernels), np.asarray(source.kernels)
    n_k = len(kernels)
    if len(theirs) != n_k or n_k < LANES:
        return None
    values, owner = kernel_owners(theirs) if owners is None else owners
    at = np.minimum(np.searchsorted(values, kernels), len(values) - 1)
    weight_owner = np.where(values[at] == kernels, owner[at], -1)  # each of g's weights'
    match = weight_owner.max(axis=1)
    if (match < 0).any() or not ((weight_owner == match[:, None]) | (weight_owner < 0)).all():
        return None
    if len(np.unique(match)) != n_k:
        return None
    order = np.argsort(match)
    kernels = kernels[order]
    blocked = n_k - n_k % LANES
    taps = [columns.get(np.ascontiguousarray(kernels[:blocked, t]).tobytes())
            for t in range(kernels.shape[1])]
    if None in taps:
        return None
    shifts = np.asarray(g.shifts)[order]
    per_block = shifts[:blocked].reshape(-1, LANES)
    if not (per_block == per_block[:, :1]).all():  # a block reads one shift's positions
        return None
    ordered = ProductGroup(kernels, g.offsets, g.bases, np.asarray(g.rows)[order], shifts)
    return ordered, np.asarray(taps)


#: how much input a convolution's loop reads for a tile of positions, in bytes: on a big
#: map the loop takes its positions in tiles, each run by every block of kernels, so that
#: a tile's inputs come from the cache for every block after the first, where the whole
#: map's came from memory once a block
TILE_BYTES = 256 * 1024


def position_tile(positions: int, bytes_per_position: int, multiple: int) -> int | None:
    """The positions of a tile (a multiple of ``multiple``), or None where one tile would
    hold them all (a map whose inputs fit in ``TILE_BYTES``: the loop as it was)."""
    if positions * bytes_per_position <= TILE_BYTES:
        return None
    tile = max(multiple, TILE_BYTES // bytes_per_position // multiple * multiple)
    return tile if tile < positions else None
