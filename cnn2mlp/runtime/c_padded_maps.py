"""A convolution on a small map at one sample, over a zero-padded copy of its input, in
the C code.

The compiler lowers a convolution to product groups: its interior positions with every
tap, and each edge and corner with the taps that stay inside the map. At one sample the
C code ran each group on its own (``c_blocks.py``): the interior four positions at a
time, an edge's or corner's few positions one at a time, reading the interior kernels'
weights through a tap index. On a 32x32 network's 8x8, 4x4 and 2x2 maps the borders are
most positions (28 of an 8x8 map's 64, all of a 2x2 map's); DenseNet121's corners there
ran at about 4 G multiply-adds a second (perf), its interiors at about 33.

Here the groups of one such convolution (the groups that read one stored array) are
found whole (``find_padded``). A geometry is tried, the likeliest first (``candidates``:
the kernel's shape and dilation, the strides, the map's size and channels, its padding),
and kept where it explains every group (``tap_places``): each column a group's position
reads is a pixel inside the map at one kernel tap, the same tap at every position, every
tap inside the map read once, each stored tap one kernel tap. The C code copies the
channels into zero-padded planes (in the one-sample scratch) and runs every position with
every tap, as one group of the blocks of kernels (``c_blocks.blocks_function``). A tap a
border position lacks reads a zero: ``w * 0`` adds nothing, the kernels being checked
finite, so every sum is its group's sum with zeros between (in another order: within
float rounding of it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..runtime.structure import ProductGroup
from .c_arrays import Arrays
from .c_blocks import BlockGroup, blocks_function
from .c_indices import row_index
from .c_planes import position_order, taps_inside

#: output positions a map may have, at most: a bigger map's borders are a small share of
#: it, and its groups keep their forms (the tiles, stretches and panels of big maps)
MOST_POSITIONS = 100
#: a kernel's side, at most, and a map's pixels, at most, the search tries
MOST_SIDE, MOST_PLANE = 7, 4096


@dataclass(frozen=True)
class Member:
    """A group of a convolution's blocks as the padded form reads it: tap ``t`` of kernel
    ``k`` is column ``index[t]`` of the stored kernels (``index`` the identity where the
    group's kernels are the stored ones)."""

    group: ProductGroup
    index: np.ndarray


@dataclass(frozen=True)
class PaddedMap:
    """A convolution of ``channels`` maps (``height`` x ``width``, a channel
    ``channel_step`` columns from the next, pixel (0, 0) of channel 0 at column ``origin``
    past the group's shift), stored tap ``s`` being channel ``c[s]``, kernel row
    ``dy[s]`` and column ``dx[s]``; output position ``q = y * out_w + x`` of kernel ``k``
    is row ``first[k] + q``. ``kernels``: the stored kernels (n_k x taps)."""

    kernels: np.ndarray
    first: np.ndarray
    c: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    channels: int
    channel_step: int
    height: int
    width: int
    origin: int
    kh: int
    kw: int
    dilation: int
    stride_y: int
    stride_x: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int

    @property
    def padded_h(self) -> int:
        return (self.out_h - 1) * self.stride_y + (self.kh - 1) * self.dilation + 1

    @property
    def padded_w(self) -> int:
        return (self.out_w - 1) * self.stride_x + (self.kw - 1) * self.dilation + 1

    @property
    def floats(self) -> int:
        """Values of the padded planes (their scratch)."""
        return self.channels * self.padded_h * self.padded_w

    def group(self) -> ProductGroup:
        """Every position with every stored tap, reading the padded planes."""
        plane = self.padded_h * self.padded_w
        offsets = (self.c * plane + self.dy * self.dilation * self.padded_w
                   + self.dx * self.dilation)
        q = np.arange(self.out_h * self.out_w)
        y, x = np.divmod(q, self.out_w)
        bases = y * self.stride_y * self.padded_w + x * self.stride_x
        rows = self.first[:, None] + q[None, :]
        return ProductGroup(self.kernels, offsets, bases, rows, np.zeros(len(self.kernels)))

    def copy_lines(self, real: str, src: str, plane: str) -> list[str]:
        """C statements copying the maps from ``src`` (the input past the group's shift)
        into ``plane``, zeros around them."""
        rows = min(self.height, self.padded_h - self.pad_top)  # the map's rows read,
        columns = min(self.width, self.padded_w - self.pad_left)  # and columns
        return [
            f"    memset({plane}, 0, sizeof({real}) * {self.floats});",
            f"    for (channel = 0; channel < {self.channels}; channel++)",
            f"        for (row = 0; row < {rows}; row++)",
            f"            memcpy({plane} + (long)channel * {self.padded_h * self.padded_w} + "
            f"(long)(row + {self.pad_top}) * {self.padded_w} + {self.pad_left}, "
            f"{src} + {self.origin}L + (long)channel * {self.channel_step} + (long)row * "
            f"{self.width}, sizeof({real}) * {columns});"]


def find_padded(members: list[Member], n_in: int, shift: int) -> PaddedMap | None:
    """The convolution the groups ``members`` (one stored array's blocks, the same
    kernels) compute, verified, or None: reading columns ``shift`` onwards of ``n_in``."""
    ordered = position_order([m.group for m in members])
    if ordered is None:
        return None
    first, positions = ordered
    n_pos = sum(len(q) for q in positions)
    if n_pos > MOST_POSITIONS:
        return None
    taps = 1 + max(int(m.index.max()) for m in members)
    kernels = kernels_read(members, taps)
    if kernels is None or not np.isfinite(kernels).all():
        return None
    columns = [np.asarray(m.group.bases, np.int64)[:, None]
               + np.asarray(m.group.offsets, np.int64)[None, :] for m in members]
    origin = min(int(c.min()) for c in columns)
    span = max(int(c.max()) for c in columns) - origin + 1
    for p in candidates(taps, span, n_pos):
        p = replace(p, kernels=kernels, first=first, origin=origin)
        if shift + origin < 0 or shift + origin + p.channels * p.channel_step > n_in:
            continue
        found = tap_places(p, members, positions, columns)
        if found is not None:
            c, dy, dx = found
            return replace(p, c=c, dy=dy, dx=dx)
    return None


def candidates(taps: int, span: int, n_pos: int):
    """Convolutions (as ``PaddedMap`` with their geometry only) of ``taps`` stored taps
    whose maps (channel after channel, each ``height * width`` columns) span ``span``
    columns from the first read, with ``n_pos`` output positions: the likeliest first
    (no dilation, stride 1, the kernel centred)."""
    none = np.zeros(0, np.int64)
    for dilation, sy, sx in ((1, 1, 1), (1, 2, 2), (2, 1, 1), (1, 1, 2), (1, 2, 1)):
        for kh in range(1, MOST_SIDE + 1):
            for kw in range(1, MOST_SIDE + 1):
                if kh * kw < 2 or taps % (kh * kw):
                    continue
                channels = taps // (kh * kw)
                low = -(-span // channels)
                high = span if channels == 1 else (span - 1) // (channels - 1)
                for plane in range(low, min(high, MOST_PLANE) + 1):
                    for height, width, out_h, out_w, top, left in layouts(
                            plane, n_pos, kh, kw, dilation, sy, sx):
                        yield PaddedMap(none, none, none, none, none, channels, plane,
                                        height, width, 0, kh, kw, dilation, sy, sx, top,
                                        left, out_h, out_w)


def layouts(plane: int, n_pos: int, kh: int, kw: int, dilation: int, sy: int, sx: int):
    """(height, width, out_h, out_w, pad_top, pad_left) of a map of ``plane`` pixels and
    ``n_pos`` output positions whose windows each start at most a kernel's extent before
    the map and end at most a kernel's extent past it, the centred padding first."""
    for height in (d for d in range(1, plane + 1) if plane % d == 0):
        width = plane // height
        for out_h in (d for d in range(1, n_pos + 1) if n_pos % d == 0):
            out_w = n_pos // out_h
            for top in centred((kh - 1) * dilation):
                for left in centred((kw - 1) * dilation):
                    bottom = (out_h - 1) * sy + (kh - 1) * dilation - top - (height - 1)
                    right = (out_w - 1) * sx + (kw - 1) * dilation - left - (width - 1)
                    if 0 <= bottom <= (kh - 1) * dilation and \
                            0 <= right <= (kw - 1) * dilation:
                        yield height, width, out_h, out_w, top, left


def centred(extent: int) -> list[int]:
    """Paddings 0..extent, half the extent first."""
    return sorted(range(extent + 1), key=lambda p: abs(2 * p - extent))


def tap_places(p: PaddedMap, members: list[Member], positions: list[np.ndarray],
               columns: list[np.ndarray]) -> tuple[np.ndarray, ...] | None:
    """Each stored tap's (channel, kernel row, kernel column) where ``p``'s geometry
    explains every member: each position's taps read pixels inside the map at one kernel
    tap each, the same tap at every position, every tap inside read once, and each stored
    tap one kernel tap; or None."""
    place = np.full(len(p.kernels[0]), -1, np.int64)
    for m, q, cols in zip(members, positions, columns):
        y, x = np.divmod(q, p.out_w)
        channel, pixel = np.divmod(cols - p.origin, p.channel_step)
        iy, ix = np.divmod(pixel, p.width)
        dy = iy - (y * p.stride_y - p.pad_top)[:, None]
        dx = ix - (x * p.stride_x - p.pad_left)[:, None]
        d = p.dilation
        if (dy % d).any() or (dx % d).any():
            return None
        dy, dx = dy // d, dx // d
        if (channel >= p.channels).any() or (dy < 0).any() or (dy >= p.kh).any() or \
                (dx < 0).any() or (dx >= p.kw).any():
            return None
        u = (channel * p.kh + dy) * p.kw + dx
        if not (u == u[:1]).all() or len(np.unique(u[0])) != len(u[0]):
            return None
        if not (taps_inside(p, y, x) * p.channels == len(u[0])).all():
            return None
        known = place[m.index] >= 0
        if not np.array_equal(place[m.index][known], u[0][known]):
            return None
        place[m.index] = u[0]
    if not np.array_equal(np.sort(place), np.arange(len(place))):
        return None
    c, rest = np.divmod(place, p.kh * p.kw)
    return (c, *np.divmod(rest, p.kw))


def kernels_read(members: list[Member], taps: int) -> np.ndarray | None:
    """The stored kernels as the members read them, or None if two read a tap's weights
    differently."""
    kernels = np.zeros((len(members[0].group.kernels), taps))
    filled = np.zeros(taps, bool)
    for m in members:
        k = np.asarray(m.group.kernels, np.float64)
        seen = filled[m.index]
        if not np.array_equal(kernels[:, m.index[seen]], k[:, seen]):
            return None
        kernels[:, m.index] = k
        filled[m.index] = True
    return kernels.astype(np.asarray(members[0].group.kernels).dtype)


def padded_maps(found: list[tuple[BlockGroup, str, int]], arrays: Arrays, n_in: int,
                scratch_floats: int | None) -> list[tuple[PaddedMap, str, int, list[BlockGroup]]]:
    """The small maps' convolutions among the blocks ``found`` (each with its stored
    array and taps a kernel), as padded maps whose planes fit in ``scratch_floats``
    values, each with its array, taps a kernel and the groups it replaces; ``arrays``
    hold the groups' tap indices."""
    clusters: dict[tuple, list[BlockGroup]] = {}
    for b, transposed, stored in found if scratch_floats else []:
        if b.shift.endswith("L") and b.shift[:-1].lstrip("-").isdigit():  # one shift
            clusters.setdefault((transposed, stored, b.blocks, b.shift), []).append(b)
    chosen = []
    for (transposed, stored, _, shift), same in clusters.items():
        if len(same) < 2:  # no borders
            continue
        members = [Member(b.group, np.arange(b.taps) if b.index is None
                          else arrays.named[b.index]) for b in same]
        p = find_padded(members, n_in, int(shift[:-1]))
        if p is not None and p.floats <= scratch_floats:
            chosen.append((p, transposed, stored, same))
    return chosen


def padded_functions(name: str, real: str, p: PaddedMap, shift: str, transposed: str,
                     stored: int, scratch: str, add_index: Callable) -> list[str]:
    """The functions computing ``p`` at one sample: ``name`` copies its maps into padded
    planes at ``scratch`` (a C expression) and calls ``name``_padded, which runs the
    blocks of kernels (weights ``transposed``, ``stored`` taps a kernel) over every
    position and tap of the planes."""
    g = p.group()
    full = BlockGroup(g, add_index("padded_offsets", g.offsets),
                      add_index("padded_bases", g.bases), row_index(g.rows, add_index), "0L",
                      None)
    inner = f"{name}_padded"
    return [blocks_function(inner, real, transposed, stored, [full]), "\n".join([
        f"static void {name}(const {real} *restrict h, {real} *restrict z)", "{",
        f"    {real} *restrict plane = {scratch};", "    int channel, row;",
        *p.copy_lines(real, f"(h + {shift})", "plane"),
        f"    {inner}(plane, z);", "}"])]
