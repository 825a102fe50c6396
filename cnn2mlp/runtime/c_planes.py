"""A depthwise convolution at one sample as padded planes, in the C code.

The compiler lowers a depthwise convolution to product groups: its interior positions,
and each edge and corner with the taps that stay inside the map. The one-sample C code ran
each group position by position, in runs along a map's row; on the small maps of a 32×32
network the runs are 1 to 14 positions and the sums were scalar: MobileNetV2's depthwise
layers took a quarter of its time at batch 1, at about 2.6 G multiply-adds/s.

Here the groups of one such convolution are found whole (``find_planes``): the geometry
(kernel, dilation, stride, padding, the map's size) is read from the interior group's
offsets and the positions' rows and columns, then checked against every (kernel,
position, tap) of every group, each weight equal to the interior kernel's. The C code
(``plane_lines``) copies a channel's map into a zero-padded plane, its columns split by
the stride's phase (a stride-2 row then reads contiguous values), and computes each output
row as vectors of positions, one multiply-add a tap over the whole kernel. A tap a border
position lacks reads the plane's zero: ``w * 0`` adds nothing (the kernels are checked
finite), so every sum is its group's sum, in its order, with zeros between.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .c_indices import float_bits, indexed

#: stride candidates tried along each axis
MAX_STRIDE = 4
#: vectors of positions a loop computes at once (then fewer, for the rest): a tap's
#: multiply-add waits on the last one's result; eight chains (AVX2) start about as many
#: multiply-adds as the loads feed
IN_FLIGHT = (8, 4, 1)
#: the widest vector's lanes for a float (64 bytes): a plane's row has room for its overrun
WIDEST_LANES = 16


@dataclass(frozen=True)
class Planes:
    """A depthwise convolution: kernel ``k`` (``kernels[k, u]``, tap ``u = dy * kw + dx``)
    reads the map whose pixel (iy, ix) is column ``shifts[k] + origin + iy * width + ix``
    and writes its output position (y, x) to row ``rows[k] + y * out_w + x``."""

    kernels: np.ndarray
    shifts: np.ndarray
    rows: np.ndarray
    kh: int
    kw: int
    dilation: int
    stride_y: int
    stride_x: int
    height: int
    width: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int
    origin: int

    @property
    def padded_h(self) -> int:
        return max(self.pad_top + self.height,
                   (self.out_h - 1) * self.stride_y + (self.kh - 1) * self.dilation + 1)

    @property
    def padded_w(self) -> int:
        return max(self.pad_left + self.width,
                   (self.out_w - 1) * self.stride_x + (self.kw - 1) * self.dilation + 1)

    @property
    def pitch(self) -> int:
        """A phase row's length: room for the widest vectors' reads past the map."""
        vectors = -(-self.out_w // WIDEST_LANES)
        return max(-(-self.padded_w // self.stride_x),
                   vectors * WIDEST_LANES + (self.kw - 1) * self.dilation // self.stride_x)

    @property
    def floats(self) -> int:
        """Values of the plane (its scratch)."""
        return self.padded_h * self.stride_x * self.pitch

    def tap_offset(self, u: int) -> int:
        """Where tap ``u`` reads in the plane, from output position (0, 0)."""
        dy, dx = divmod(u, self.kw)
        row, column = dy * self.dilation, dx * self.dilation
        return (row * self.stride_x + column % self.stride_x) * self.pitch + \
            column // self.stride_x

    def inside(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """How many taps of output positions (y, x) fall inside the map."""
        return taps_inside(self, y, x)


def taps_inside(p, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """How many taps of a convolution's output positions (y, x) fall inside its map (a
    channel's): ``p`` has the map's ``height`` and ``width``, the kernel's ``kh``, ``kw``
    and ``dilation``, the strides and the top and left padding (``Planes``,
    ``c_padded_maps.PaddedMap``)."""
    def along(first, size, n):
        taps = first[:, None] + np.arange(n) * p.dilation
        return ((taps >= 0) & (taps < size)).sum(axis=1)
    return along(y * p.stride_y - p.pad_top, p.height, p.kh) * \
        along(x * p.stride_x - p.pad_left, p.width, p.kw)


def find_planes(groups: list, n_in: int) -> list[tuple[Planes, list]]:
    """The depthwise convolutions among ``groups`` (the runtime's product groups of one
    layer, reading ``n_in`` columns), each as planes with the groups it replaces. Groups
    join when their kernels have the same shifts (one convolution's interior, edges and
    corners)."""
    clusters: dict[bytes, list] = {}
    for g in groups:
        if g.shifted:
            clusters.setdefault(np.asarray(g.shifts, np.int64).tobytes(), []).append(g)
    found = []
    for same in clusters.values():
        planes = planes_of(same, n_in)
        if planes is not None:
            found.append((planes, same))
    return found


def planes_of(same: list, n_in: int) -> Planes | None:
    """The convolution ``same`` computes, verified, or None."""
    ordered = position_order(same)
    if ordered is None:
        return None
    first, positions = ordered
    n_pos = sum(len(q) for q in positions)
    interior = max(range(len(same)), key=lambda i: len(same[i].offsets))
    g = same[interior]
    kernels = np.asarray(g.kernels)
    if not np.isfinite(kernels).all():
        return None
    order = np.argsort(np.asarray(g.offsets, np.int64), kind="stable")
    offsets = np.asarray(g.offsets, np.int64)[order]
    corner = np.asarray(g.bases, np.int64) + offsets[0]  # tap 0's column, each position
    shifts = np.asarray(same[0].shifts, np.int64)
    for kh, kw, dilation, width in kernel_shapes(offsets - offsets[0]):
        for out_w, sy, sx, start in strides(positions[interior], corner, n_pos, width):
            for pad_top, pad_left, height in paddings(kh, kw, dilation, n_pos // out_w, sy):
                origin = start + pad_top * width + pad_left
                if shifts.min() + origin < 0 or \
                        shifts.max() + origin + height * width > n_in:
                    continue
                planes = Planes(np.ascontiguousarray(kernels[:, order]), shifts, first, kh,
                                kw, dilation, sy, sx, height, width, pad_top, pad_left,
                                n_pos // out_w, out_w, int(origin))
                if all(matches(planes, grp, q) for grp, q in zip(same, positions)):
                    return planes
    return None


def position_order(groups: list) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Each kernel's first row, and each group's positions' output indices (``row -
    first[k]``, the same for every kernel), together every index from 0 once; None if
    not so (the groups are not one convolution's)."""
    rows = [np.asarray(g.rows, np.int64) for g in groups]
    first = np.min([r.min(axis=1) for r in rows], axis=0)
    positions = []
    for r in rows:
        q = r - first[:, None]
        if not (q == q[:1]).all():
            return None
        positions.append(q[0])
    n_pos = sum(len(q) for q in positions)
    if not np.array_equal(np.sort(np.concatenate(positions)), np.arange(n_pos)):
        return None
    return first, positions


def kernel_shapes(relative: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """(kh, kw, dilation, width) that lay out the taps' columns ``relative`` (sorted, from
    the first) as a kh×kw window of a map ``width`` columns wide: both sides at least 2."""
    taps = len(relative)
    u = np.arange(taps)
    for kw in range(2, taps // 2 + 1):
        if taps % kw or relative[1] < 1:
            continue
        dilation = int(relative[1])
        if relative[kw] % dilation:
            continue
        width = int(relative[kw]) // dilation
        if width <= (kw - 1) * dilation:
            continue
        if np.array_equal(relative, (u // kw) * dilation * width + (u % kw) * dilation):
            yield taps // kw, kw, dilation, width


def strides(q: np.ndarray, corner: np.ndarray, n_pos: int,
            width: int) -> Iterator[tuple[int, int, int, int]]:
    """(out_w, stride_y, stride_x, start) with ``corner = start + y * sy * width + x * sx``
    at every interior position ``q = y * out_w + x``."""
    for out_w in (d for d in range(1, n_pos + 1) if n_pos % d == 0):
        y, x = np.divmod(q, out_w)
        for sy in range(1, MAX_STRIDE + 1):
            for sx in range(1, MAX_STRIDE + 1):
                start = corner - (y * sy * width + x * sx)
                if (start == start[0]).all():
                    yield out_w, sy, sx, int(start[0])


def paddings(kh: int, kw: int, dilation: int, out_h: int,
             sy: int) -> Iterator[tuple[int, int, int]]:
    """(pad_top, pad_left, height): the map's last row read by the last output row's
    window, at one of its taps."""
    for pad_top in range((kh - 1) * dilation + 1):
        for pad_left in range((kw - 1) * dilation + 1):
            last = (out_h - 1) * sy - pad_top
            for height in range(max(1, last + 1), last + (kh - 1) * dilation + 2):
                yield pad_top, pad_left, height


def matches(p: Planes, g, q: np.ndarray) -> bool:
    """Whether group ``g`` (at output positions ``q``) computes what ``p`` computes there:
    each (position, tap) reads the pixel of one kernel tap inside the map, the same tap at
    every position, with the interior kernel's weights, and every tap inside is read."""
    y, x = np.divmod(q, p.out_w)
    columns = np.asarray(g.bases, np.int64)[:, None] + np.asarray(g.offsets, np.int64)[None]
    iy, ix = np.divmod(columns - p.origin, p.width)
    dy = iy - (y * p.stride_y - p.pad_top)[:, None]
    dx = ix - (x * p.stride_x - p.pad_left)[:, None]
    d = p.dilation
    if (dy % d).any() or (dx % d).any() or (iy < 0).any() or (iy >= p.height).any():
        return False
    dy, dx = dy // d, dx // d
    if (dy < 0).any() or (dy >= p.kh).any() or (dx < 0).any() or (dx >= p.kw).any():
        return False
    u = dy * p.kw + dx
    if not (u == u[:1]).all() or len(np.unique(u[0])) != len(u[0]):
        return False
    if not (p.inside(y, x) == len(u[0])).all():
        return False
    return bool(np.array_equal(np.asarray(g.kernels), p.kernels[:, u[0]]))


def stored_biases(found: list[Planes],
                  bias: np.ndarray) -> tuple[list[np.ndarray], int, int] | None:
    """Each of ``found``'s kernels' bias, and the rows ``a`` to ``b`` the planes write, where
    they write each of those once and each kernel's map has one bias (bit for bit); else
    None."""
    rows = [np.asarray(p.rows, np.int64)[:, None] + np.arange(p.out_h * p.out_w)
            for p in found]
    every = np.sort(np.concatenate([r.ravel() for r in rows])) if rows else np.empty(0)
    if not len(every) or not np.array_equal(every, np.arange(every[0], every[0] + len(every))):
        return None
    biases = [np.asarray(bias)[r] for r in rows]
    if any(not (float_bits(b) == float_bits(b[:, :1])).all() for b in biases):
        return None
    return [b[:, 0] for b in biases], int(every[0]), int(every[0]) + len(every)


def planes_store(found: list[Planes], plan) -> tuple | None:
    """(Each plane's kernels' biases, the clamp (lo, scale, hi), the rows ``(a, b)``) where
    ``found`` may store their rows (``stored_biases``): rows of a layer (its ``LayerPlan``)
    without a dense part that no other part writes, with one clamp; else None."""
    biases = stored_biases(found, plan.bias) if found and plan.dense is None else None
    if biases is None:
        return None
    a, b = biases[1:]
    copies = [part.copies for part in plan.parts if part.copies is not None]
    rest = np.concatenate([np.asarray(part.rest_rows, np.int64) for part in plan.parts])
    if any(((np.asarray(c[0]) < b) & (np.asarray(c[0]) + np.asarray(c[2]) > a)).any()
           for c in copies) or ((rest >= a) & (rest < b)).any() or (
            (plan.finish >= a) & (plan.finish < b)).any():
        return None
    clamp = [np.unique(v[a:b]) for v in (plan.lo, plan.scale, plan.hi)]
    if any(len(c) != 1 for c in clamp):
        return None
    return biases[0], tuple(float(c[0]) for c in clamp), (a, b)


def plane_lines(p: Planes, real: str, scratch: str, add_index: Callable, add_real: Callable,
                store: tuple[str, tuple[str, str, str]] | None = None) -> list[str]:
    """The C statements of ``p`` at one sample, inside a layer function whose input is
    ``h`` and output ``z``; ``scratch``: a C expression for ``p.floats`` free values.
    ``store``: where the planes write each of their layer's rows once (``stored_biases``),
    the array of each kernel's bias and the layer's clamp (lo, scale, hi): each sum is
    stored as ``clamp(sum + bias)``, the same bits as the bias written first, the sum
    added and the clamp applied after, in one pass instead of three (MobileNetV2's
    depthwise layers at 224x224 spent a quarter to two fifths of their time in the other
    two)."""
    kernels = add_real("plane_kernels", p.kernels)
    shift = indexed(p.shifts, "plane_shifts", add_index).format(i="i")
    row = indexed(p.rows, "plane_rows", add_index).format(i="i")
    taps = p.kh * p.kw
    sx, pitch = p.stride_x, p.pitch
    row_step = p.stride_y * sx * pitch  # from one output row to the next, in the plane
    offsets = [p.tap_offset(u) for u in range(taps)]

    def at(j: str) -> str:  # vector j's first value in the plane, and in the output
        return f"(j{j} / nv) * {row_step} + (j{j} % nv) * VECTOR_LANES"

    def block(count: int) -> list[str]:
        js = range(count)
        return [
            f"            for (; j + {count} <= {p.out_h} * nv; j += {count}) {{",
            *[f"                const int j{a} = j + {a};" for a in js],
            *[f"                const {real} *restrict p{a} = plane + {at(str(a))};" for a in js],
            "                vector_sum " + ", ".join(f"s{a} = {{0}}" for a in js) + ", v;",
            *[f"                memcpy(&v, p{a} + {off}, sizeof v); s{a} += w[{u}] * v;"
              for u, off in enumerate(offsets) for a in js],
            *[line for a in js for line in (
                f"                {{ const int yy = j{a} / nv, xx = (j{a} % nv) * VECTOR_LANES;",
                f"                  const int n = {p.out_w} - xx < VECTOR_LANES ? "
                f"{p.out_w} - xx : VECTOR_LANES;",
                # a whole vector of the row added as one (lane by lane, the stores were
                # as much work as a 3x3 kernel's nine multiply-adds); the row's last few
                # lane by lane
                f"                  if (n == VECTOR_LANES) {{ {add_vector(a)} }}",
                f"                  else {{ {partial(a)} }} }}")],
            "            }"]

    def add_vector(a: int) -> str:
        at = f"out + yy * {p.out_w} + xx"
        if store:
            return (f"const vector_sum u = layer_clamp_vector(s{a} + b, CLAMP); "
                    f"memcpy({at}, &u, sizeof u);")
        return f"vector_sum u; memcpy(&u, {at}, sizeof u); u += s{a}; memcpy({at}, &u, sizeof u);"

    def add_value(to: str, value: str) -> str:
        return f"{to} = layer_clamp_value({value} + b, CLAMP);" if store else f"{to} += {value};"

    def partial(a: int) -> str:  # the row's last few lanes: clamped as one vector
        to = f"out[yy * {p.out_w} + xx + l]"
        lanes = "UNROLL_LANES for (l = 0; l < VECTOR_LANES; l++) if (l < n) "
        if store:
            return (f"const vector_sum u = layer_clamp_vector(s{a} + b, CLAMP); "
                    f"{lanes}{to} = u[l];")
        return f"{lanes}{to} += s{a}[l];"

    copy = ([f"            memcpy(plane + (long)(y + {p.pad_top}) * {pitch} + {p.pad_left}, "
             f"src + (long)y * {p.width}, sizeof({real}) * {p.width});"] if sx == 1 else [
        # the columns of one phase: a strided read the compiler vectorizes
        line for r in range(min(sx, p.width)) for line in (
            f"            {{ {real} *restrict to = plane + ((long)(y + {p.pad_top}) * {sx} + "
            f"{(r + p.pad_left) % sx}) * {pitch} + {(r + p.pad_left) // sx};",
            f"              for (x = 0; x < {-(-(p.width - r) // sx)}; x++) "
            f"to[x] = src[(long)y * {p.width} + x * {sx} + {r}]; }}")])
    return [
        f"    {{  /* a depthwise {p.kh}x{p.kw} convolution (stride {p.stride_y}x{sx}, dilation"
        f" {p.dilation}) of {len(p.kernels)} {p.height}x{p.width} maps, as padded planes */",
        f"        {real} *restrict plane = {scratch};",
        "        int x, y, l;", "        (void)x; (void)y; (void)l;",
        *([f"        const {real} clamp_lo = {store[1][0]}, clamp_scale = {store[1][1]}, "
           f"clamp_hi = {store[1][2]};"] if store else []),
        f"        memset(plane, 0, sizeof({real}) * {p.floats});",
        f"        for (i = 0; i < {len(p.kernels)}; i++) {{",
        f"            const {real} *restrict src = h + {shift} + {p.origin}L;",
        f"            const {real} *restrict w = {kernels} + (long)i * {taps};",
        f"            {real} *restrict out = z + {row};",
        *([f"            const {real} b = {store[0]}[i];"] if store else []),
        f"            for (y = 0; y < {p.height}; y++) {{", *copy, "            }",
        "#ifdef VECTOR_BYTES",
        "            {",
        f"            const int nv = ({p.out_w} + VECTOR_LANES - 1) / VECTOR_LANES;",
        "            int j = 0;",
        *[line for count in IN_FLIGHT for line in block(count)],
        "            }",
        "#else",
        f"            for (y = 0; y < {p.out_h}; y++)",
        f"                for (x = 0; x < {p.out_w}; x++) {{",
        f"                    const {real} *restrict at = plane + (long)y * {row_step} + x;",
        f"                    {real} sum = 0;",
        *[f"                    sum += w[{u}] * at[{off}];" for u, off in enumerate(offsets)],
        f"                    {add_value(f'out[y * {p.out_w} + x]', 'sum')}",
        "                }",
        "#endif",
        "        }", "    }"]


def plane_floats(planes: list[Planes]) -> int:
    """The scratch a layer's planes need (they run one after another)."""
    return max((p.floats for p in planes), default=0)

