"""A convolution's kernels at one sample on a big map: positions in vectors, in the C code.

At one sample a convolution's blocks ran sixteen kernels in the lanes of two vectors, a
few positions at a time (``c_positions.vector_sums``): each tap's input is a single value,
and each position's sixteen sums are added to their rows one lane at a time, since a
channel-first map puts a position's channels a map apart. With few taps that store is as
much work as the sums: MobileNetV2's expansions at 224x224 (sixteen to twenty-four taps)
ran at 15 G multiply-adds/s.

Along a stretch of positions whose inputs and rows step alike (a 1x1 convolution's whole
map; a stride-1 map's interior, row after row) a tap's inputs for consecutive positions
are next to each other, and so are the rows of a kernel's sums. Here four kernels run
together, three vectors of positions at a time: a tap loads three vectors of inputs and
four weights (each broadcast), twelve multiply-adds, and the sums are added to their rows
a vector at a time. An interior's gaps (the border positions between its rows, another
group's) are computed too and not stored: a mask keeps their rows' bits. A stretch's last
positions that fill no vector are computed in a vector that ends at its end, whose first
lanes (stored already) are not stored again. Each sum starts at zero and adds its taps in
order, as ``vector_sums`` does; the inputs a gap reads lie between the group's own.

A stretch is cut into chunks whose inputs fit in a share of the L2 cache: four kernels'
weights are read once for a chunk. Positions in no stretch (a strided convolution's, a
map's edges) stay with the code they had, and so do groups with many taps or few
positions, where it was measured to be no faster (below).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .c_blocks import BlockGroup, each_block
from .c_groups import LANES
from .c_indices import factored_rows

#: kernels a tile computes together, and vectors of positions: twelve sums, three
#: inputs and a broadcast weight are AVX2's sixteen registers
KERNELS, VECTORS = 4, 3
#: a stretch shorter than this keeps the code it had (the widest vector, AVX-512's
#: floats, must fit in one)
SHORTEST_RUN = 16
#: positions in such stretches take this form when they are at least this share of a
#: group's and this many (MobileNetV2 at 224x224, one sample: 12.6 ms so, 13.0 ms when a
#: 7x7 map's 49 positions take it too: its inputs, read again for every four kernels,
#: leave the L1 cache)
COVERED_SHARE, FEWEST_POSITIONS = 0.5, 128
#: a group with more taps keeps the code it had: its stores, a position's sixteen sums
#: once for all its taps, weigh little, and a tap's inputs for three vectors of positions
#: were read from the L2 cache (ResNet50 at 224x224, one sample: 112 ms with every group
#: in this form, 106 ms so, 107 ms without it)
MOST_TAPS = 192
#: a stretch whose gaps are more than this share of it keeps the code it had
DENSITY = 0.75
#: a chunk's inputs (taps x positions) at most: a share of the L2 cache
CHUNK_BYTES = 96 * 1024
#: a chunk's runs are cut at multiples of this many positions: the three vectors of any
#: width (4, 8 or 16 lanes) fill each piece but the run's last
PIECE = 48


@dataclass(frozen=True)
class Pieces:
    """Stretches of positions cut into pieces: each piece's input offset, first row, length
    (positions) and first mask entry, each chunk's end (pieces), and the mask (an entry a
    position of every piece: -1 a position of the group's, 0 one between them), or None
    where no stretch has a gap."""

    base: np.ndarray
    row: np.ndarray
    length: np.ndarray
    mask_at: np.ndarray
    chunk_ends: np.ndarray
    mask: np.ndarray | None
    rest: np.ndarray  # the group's positions in no piece


def stretches(bases: np.ndarray, position_rows: np.ndarray) -> list[tuple[int, int]]:
    """The group's positions (first, past the last) along which a position's input and
    row step alike: each next position ``d`` further in both. A stride-1 map's interior
    is one stretch: its rows' ends and the next rows' starts are ``d`` apart in the map's
    input and in its output (the border positions between are the gaps)."""
    steps = np.diff(bases)
    alike = (steps == np.diff(position_rows)) & (steps > 0)
    cuts = np.flatnonzero(~alike) + 1
    starts = np.r_[0, cuts]
    return list(zip(starts.tolist(), np.r_[cuts, len(bases)].tolist()))


def vector_runs(b: BlockGroup, size: int) -> tuple[np.ndarray, Pieces] | None:
    """The kernel rows and pieces of ``b`` this form runs, or None where it does not pay:
    rows not factored, a shift a block of its own (a grouped convolution), or too few
    positions in dense stretches. ``size``: a value's bytes."""
    g = b.group
    factors = factored_rows(g.rows)
    if (factors is None or "[i]" in b.shift or len(g.kernels) % KERNELS
            or b.taps > MOST_TAPS):
        return None
    bases, position_rows = np.asarray(g.bases, np.int64), factors[1]
    kept = [(first, end) for first, end in stretches(bases, position_rows)
            if end - first >= SHORTEST_RUN
            and end - first >= DENSITY * (bases[end - 1] - bases[first] + 1)]
    covered = sum(end - first for first, end in kept)
    if covered < max(COVERED_SHARE * len(bases), FEWEST_POSITIONS):
        return None
    per_chunk = max(PIECE, CHUNK_BYTES // (b.taps * size) // PIECE * PIECE)
    found = {"base": [], "row": [], "length": [], "mask_at": [], "chunk_ends": []}
    masks, held, masked = [], 0, 0  # masked: the mask's entries so far
    for first, end in kept:
        span = int(bases[end - 1] - bases[first] + 1)
        mask = np.zeros(span, np.int32)
        mask[bases[first:end] - bases[first]] = -1
        for cut in range(0, span, per_chunk):
            n = min(per_chunk, span - cut)
            if held and held + n > per_chunk:
                found["chunk_ends"].append(len(found["base"]))
                held = 0
            found["mask_at"].append(masked + cut)
            found["base"].append(bases[first] + cut)
            found["row"].append(position_rows[first] + cut)
            found["length"].append(n)
            held += n
        masks.append(mask)
        masked += span
    found["chunk_ends"].append(len(found["base"]))
    covered = np.zeros(len(bases), bool)
    for first, end in kept:
        covered[first:end] = True
    mask = np.concatenate(masks)
    return factors[0], Pieces(**{k: np.array(v) for k, v in found.items()},
                              mask=None if mask.all() else mask,
                              rest=np.flatnonzero(~covered))


def tile_lines(real: str, b: BlockGroup, vectors: int, lanes: int = LANES) -> list[str]:
    """Four kernels' sums ``a{q}_{v}`` over ``vectors`` vectors of positions from ``p``
    on, tap by tap (the caller adds or stores them); a tap's weights are ``lanes`` apart."""
    tap = "t" if b.index is None else f"(long){b.index}[t]"
    sums = [f"a{q}_{v}" for q in range(KERNELS) for v in range(vectors)]
    return [
        "                vector_sum " + ", ".join(f"{s} = {{0}}" for s in sums) + ", "
        + ", ".join(f"x{v}" for v in range(vectors)) + ";",
        f"                for (t = 0; t < {b.taps}; t++) {{",
        f"                    const {real} *restrict xt = x + {b.offsets}[t] + p;",
        f"                    const {real} *restrict wt = w + {tap} * {lanes};",
        *[f"                    memcpy(&x{v}, xt + {v} * VECTOR_LANES, sizeof x{v});"
          for v in range(vectors)],
        # a vector times a scalar: the scalar broadcast (``{0} + w`` would be an add:
        # -0.0 + 0 is +0.0)
        *[f"                    {{ const {real} wq = wt[{q}]; "
          + " ".join(f"a{q}_{v} += x{v} * wq;" for v in range(vectors)) + " }"
          for q in range(KERNELS)],
        "                }"]


def add_vector(q: int, v: int, at: str, masked: bool, stores: bool = False) -> str:
    """Sum ``a{q}_{v}`` added to kernel q's rows from position ``at`` on, a vector; where
    ``masked``, only at the positions the mask ``mk`` holds (the others keep their bits);
    where it ``stores``, stored with the kernel's bias ``b{q}`` and the clamp instead."""
    if stores:
        return (f"{{ const vector_sum u = clamp_vector(a{q}_{v} + b{q}, CLAMP); "
                f"memcpy(z{q} + {at}, &u, sizeof u); }}")
    if not masked:
        return (f"{{ vector_sum u; memcpy(&u, z{q} + {at}, sizeof u); u += a{q}_{v}; "
                f"memcpy(z{q} + {at}, &u, sizeof u); }}")
    return (f"{{ vector_sum u, s, f; vector_mask m; memcpy(&u, z{q} + {at}, sizeof u); "
            f"memcpy(&f, mk + {at}, sizeof f); m = f != 0; s = u + a{q}_{v}; "
            "u = (vector_sum)((m & (vector_mask)s) | (~m & (vector_mask)u)); "
            f"memcpy(z{q} + {at}, &u, sizeof u); }}")


def vector_lines(real: str, b: BlockGroup, weights: str, stored: int, names: dict[str, str],
                 chunks: int, lanes: int = LANES) -> list[str]:
    """The loops over chunks, four kernels, a chunk's pieces and tiles of positions (the
    weights in blocks of ``lanes`` kernels, a tap's together)."""
    r, masked, stores = real, "mask" in names, "bias" in names
    whole = [f"                    {add_vector(q, v, f'p + {v} * VECTOR_LANES', masked, stores)}"
             for q in range(KERNELS) for v in range(VECTORS)]
    one = [f"                    {add_vector(q, 0, 'p', masked, stores)}"
           for q in range(KERNELS)]
    # the piece's last positions, in a vector ending at its end: its lanes from ``skip`` on
    keep = " if (mk[p + l] != 0)" if masked else ""
    last = [f"                    for (l = skip; l < VECTOR_LANES; l++){keep} "
            + (f"z{q}[p + l] = clamp_value(a{q}_0[l] + b{q}, CLAMP);" if stores else
               f"z{q}[p + l] += a{q}_0[l];") for q in range(KERNELS)]
    return [
        f"    for (c = 0; c < {chunks}; c++) {{",
        f"        for (k = 0; k < {len(b.group.kernels)}; k += {KERNELS}) {{",
        f"            const {r} *restrict w = {weights} + (long)(k / {lanes}) * {stored * lanes}"
        f" + k % {lanes};",
        f"            for (j = c ? {names['ends']}[c - 1] : 0; j < {names['ends']}[c]; j++) {{",
        f"                const int n = {names['length']}[j];",
        f"                const {r} *restrict x = h + {b.shift} + {names['base']}[j];",
        *([f"                const {r} *restrict mk = {names['mask']} + {names['mask_at']}[j];"]
          if masked else []),
        *[f"                {r} *z{q} = z + {names['kernel_rows']}[k + {q}] + {names['row']}[j];"
          for q in range(KERNELS)],
        *([f"                const {r} " + ", ".join(f"b{q} = {names['bias']}[k + {q}]"
                                                     for q in range(KERNELS)) + ";"]
          if stores else []),
        "                int p = 0, skip;",
        f"                for (; p + {VECTORS} * VECTOR_LANES <= n; p += {VECTORS} * VECTOR_LANES) {{",
        *tile_lines(r, b, VECTORS, lanes), *whole, "                }",
        "                for (; p + VECTOR_LANES <= n; p += VECTOR_LANES) {",
        *tile_lines(r, b, 1, lanes), *one, "                }",
        # (a piece shorter than a vector, a stretch's last, starts its vector in the
        # stretch's piece before: every stretch is at least SHORTEST_RUN long)
        "                if (p < n) {",
        "                    skip = VECTOR_LANES - (n - p);",
        "                    p = n - VECTOR_LANES;",
        *tile_lines(r, b, 1, lanes), *last, "                }",
        "            }", "        }", "    }"]


def blocks_lines(real: str, b: BlockGroup, weights: str, stored: int,
                 stores: tuple[dict[str, str], int] | None = None) -> list[str]:
    """``b``'s blocks as ``c_blocks`` runs them: sixteen kernels in lanes. ``stores``:
    the arrays' names and the pieces of a group that stores its layer's rows (each kernel's
    rows start from its bias, and take the clamp after)."""
    blocks = each_block(real, b, weights, stored)
    if stores is None:
        return blocks
    names, pieces = stores

    def each_row(statement: str) -> list[str]:
        return [f"    for (k = 0; k < {len(b.group.kernels)}; k++)",
                f"        for (j = 0; j < {pieces}; j++)",
                f"            for (l = 0; l < {names['length']}[j]; l++) {{",
                f"                {real} *zr = z + {names['kernel_rows']}[k] + "
                f"{names['row']}[j] + l;", f"                {statement}", "            }"]

    return (each_row(f"*zr = {names['bias']}[k];") + blocks
            + each_row("*zr = clamp_value(*zr, CLAMP);"))


def vectors_function(name: str, real: str, weights: str, stored: int, b: BlockGroup,
                     array: Callable[[str, np.ndarray], str],
                     rest: Callable[[np.ndarray], BlockGroup] | None,
                     store: tuple[Callable[[], str], tuple[str, str, str]] | None = None,
                     lanes: int = LANES, fallback: list[str] | None = None,
                     ) -> tuple[str | None, bool]:
    """The function computing ``b`` (its weights ``weights``, ``stored`` taps a kernel)
    with its long runs of positions in vectors and the rest as before (``rest`` makes the
    group of the positions given), or None where this form does not pay; and whether it
    stores. ``array`` adds an index array. Without vectors (no ``VECTOR_BYTES``) the
    function runs as before. ``store``: where ``b`` writes each of its layer's rows once,
    its kernels' biases (a function adding their array) and the clamp (lo, scale, hi):
    where one stretch without gaps takes every position, the sums are stored with them,
    and the layer writes no bias first and no activation after. ``lanes``: kernels a
    block of the weights holds (a convolution's eight left over from its blocks, one
    block); with ``fallback``, the statements that compute ``b`` without vectors, and
    ``b`` takes this form only where its stretches have every position (no ``rest``)."""
    size = 8 if real == "double" else 4
    found = vector_runs(b, size)
    if found is None or fallback is not None and len(found[1].rest):
        return None, False
    kernel_rows, pieces = found
    stores = store is not None and not len(pieces.rest) and pieces.mask is None
    names = {"kernel_rows": array("kernel_rows", kernel_rows),
             "base": array("piece_base", pieces.base), "row": array("piece_row", pieces.row),
             "length": array("piece_length", pieces.length),
             "ends": array("chunk_ends", pieces.chunk_ends)}
    if pieces.mask is not None:  # 1 a position of the group's, 0 a gap's
        names["mask"] = array("piece_mask", pieces.mask != 0,
                              np.float64 if real == "double" else np.float32)
        names["mask_at"] = array("piece_mask_at", pieces.mask_at)
    clamp = []
    if stores:
        names["bias"] = store[0]()
        lo, scale, hi = store[1]
        clamp = [f"    const {real} clamp_lo = {lo}, clamp_scale = {scale}, clamp_hi = {hi};"]
    left = blocks_lines(real, rest(pieces.rest), weights, stored) if len(pieces.rest) else []
    without = fallback if fallback is not None else [*clamp, *blocks_lines(
        real, b, weights, stored, (names, len(pieces.base)) if stores else None)]
    body = ["#ifdef VECTOR_BYTES", *clamp,
            *vector_lines(real, b, weights, stored, names, len(pieces.chunk_ends), lanes),
            *left, "#else", *without, "#endif"]
    # each branch reads arrays of its own: where the function is shared (c_sharing.py),
    # they are its parameters, and the other branch's would be unused
    arrays = sorted(set(re.findall(r"\bL\d+_\w+\b", "\n".join(body))))
    return "\n".join([
        f"static NO_LOOP_VECTORIZE void {name}(const {real} *restrict h, {real} *restrict z)",
        "{", "    int i, j, t, l, c, k;",
        "    (void)i; (void)j; (void)t; (void)l; (void)c; (void)k;",
        "    " + " ".join(f"(void){a};" for a in arrays), *body, "}"]), stores
