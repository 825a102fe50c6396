"""Product groups arranged for the C code (``c_layers.py``): groups that write the same
rows made one, and a group's kernels matched to those of a group stored already, so that
their weights are stored once."""
from __future__ import annotations

from functools import cached_property

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
    flat = np.asarray(kernels).ravel()
    order = np.argsort(flat)  # not np.unique's stable sort: a lone weight's place is one
    ordered = flat[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    counts = np.diff(np.append(starts, len(ordered)))
    return ordered[starts], np.where(counts == 1, order[starts] // kernels.shape[1], -1)


def tap_bytes(kernels: np.ndarray) -> list[bytes]:
    """Each tap's weights over the blocked kernels of ``kernels`` (n_k, taps), as bytes."""
    blocked = len(kernels) - len(kernels) % LANES
    return [tap.tobytes() for tap in np.ascontiguousarray(np.asarray(kernels)[:blocked].T)]


def tap_columns(kernels: np.ndarray) -> dict[bytes, int]:
    """Each tap's weights over the blocked kernels (bytes), to the tap: what
    ``kernels_within`` finds a group's taps by."""
    index: dict[bytes, int] = {}
    for t, tap in enumerate(tap_bytes(kernels)):
        index.setdefault(tap, t)
    return index


class KernelIndex:
    """A stored group's kernels, indexed for ``kernels_within``: each tap's weights to the
    tap (``tap_columns``) and each weight's owner (``kernel_owners``), each computed when
    first asked. Most stored groups (a 1x1 convolution's, a map's interior where no border
    has as many kernels) are never asked: indexing them all was a quarter of
    DenseNet121's source generation."""

    def __init__(self, kernels: np.ndarray) -> None:
        self.kernels = np.asarray(kernels)

    @cached_property
    def columns(self) -> dict[bytes, int]:
        return tap_columns(self.kernels)

    @cached_property
    def owners(self) -> tuple[np.ndarray, np.ndarray]:
        return kernel_owners(self.kernels)


#: taps of each kernel whose weights' owners match it first: almost every weight of a
#: kernel is its own (random-like floats), so a few name it, and the taps' bytes then check
#: every weight of the blocked kernels
SAMPLE_TAPS = 4


def weight_owners(kernels: np.ndarray, owners: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """For each weight of ``kernels``, the one kernel of the index (``kernel_owners``)
    that has it, -1 where several do or none."""
    values, owner = owners
    at = np.minimum(np.searchsorted(values, kernels), len(values) - 1)
    return np.where(values[at] == kernels, owner[at], -1)


def matched_kernels(kernels: np.ndarray, owners: tuple[np.ndarray, np.ndarray],
                    taps: slice = slice(None)) -> np.ndarray | None:
    """For each kernel, the index's kernel whose weights its weights at ``taps`` are (a
    weight several kernels have counts for any), or None where one has none of them or
    another kernel's."""
    if not len(kernels):
        return np.zeros(0, np.int64)
    weight_owner = weight_owners(kernels[:, taps], owners)
    match = weight_owner.max(axis=1)
    if (match < 0).any() or not ((weight_owner == match[:, None]) | (weight_owner < 0)).all():
        return None
    return match


def kernels_within(g: ProductGroup, index: KernelIndex
                   ) -> tuple[ProductGroup, np.ndarray] | None:
    """``g`` with its kernels in the order of ``index``'s, and for each of its taps the tap
    of ``index`` with the same weights in every kernel; None unless every kernel of ``g``
    is one of the index's with some of its taps. Kernels are matched by the weights that
    one kernel of the index alone has; the taps' bytes then check every weight of the
    blocked kernels (the kernels left over have every weight matched)."""
    kernels = np.asarray(g.kernels)
    n_k = len(kernels)
    if len(index.kernels) != n_k or n_k < LANES:
        return None
    blocked = n_k - n_k % LANES
    # a few taps name a blocked kernel (every tap where they do not); the bytes below
    # check every weight of those, as matching every weight would have
    match = matched_kernels(kernels[:blocked], index.owners, slice(SAMPLE_TAPS))
    if match is None:
        match = matched_kernels(kernels[:blocked], index.owners)
    left = matched_kernels(kernels[blocked:], index.owners)
    if match is None or left is None:
        return None
    match = np.concatenate([match, left])
    if len(np.unique(match)) != n_k:
        return None
    order = np.argsort(match)
    kernels = kernels[order]
    columns = index.columns
    taps = [columns.get(tap) for tap in tap_bytes(kernels)]
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
