"""A convolution's blocks of sixteen kernels at one sample, in the C code.

A convolution's groups (its interior, each edge and corner of its map) read one stored
array of transposed weights (``LayerWriter.share_weights``; on a map too small for an
interior, such as a 2×2 map's four corners, the union of the corners' taps, ``union_of``).
Each group ran as a function of its own over every block of kernels, so a block's weights
were read once a group: at one sample a small map's convolution is a matrix-vector
product bound by reading its weights, and ResNet18's 2×2 maps at 32×32 read 16/9 of a
3×3 convolution's weights (each corner its four taps, from four arrays) where onnxruntime
reads them once. Here the groups that share an array, on maps small enough to need no
tiles, run as one function, blocks outermost: a block's weights (16 kernels × their taps)
come from memory once for all its groups, then from the cache. Every row gets the same sums
in the same order as before (a row is one group's, one block's).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.structure import ProductGroup
from .c_groups import LANES
from .c_indices import PairIndex
from .c_positions import vector_sums


@dataclass
class BlockGroup:
    """A group's blocks as the C code reads them: its arrays' names, and ``w``'s tap
    index (None: the tap's own row)."""

    group: ProductGroup
    offsets: str
    bases: str
    rows: PairIndex
    shift: str
    index: str | None

    @property
    def taps(self) -> int:
        return self.group.kernels.shape[1]

    @property
    def positions(self) -> int:
        return len(self.group.bases)

    @property
    def blocks(self) -> int:
        return len(self.group.kernels) // LANES


def union_of(groups: list[ProductGroup]) -> list[tuple[np.ndarray, list[ProductGroup]]]:
    """For each convolution among ``groups`` none of whose groups has every tap (a 2×2
    map's corners: each has four of a 3×3 kernel's nine), kernels with every tap any of
    its groups has, in the first group's order: stored once, each group reads its taps
    there (``kernels_within`` checks every weight), with the groups. Groups are one
    convolution's when they have as many kernels, the same shifts and the same rows
    apart from a position's."""
    convolutions: dict[tuple, list[ProductGroup]] = {}
    for g in groups:
        rows = np.asarray(g.rows)
        if len(g.kernels) < LANES or not rows.size:
            continue
        key = (len(g.kernels), (rows[:, 0] - rows[0, 0]).tobytes(),
               np.asarray(g.shifts).tobytes())
        convolutions.setdefault(key, []).append(g)
    found = []
    for same in convolutions.values():
        union = stored_union(same)
        if union is None:  # the usual case: one group has every tap
            continue
        parts = sharing_taps(same)  # one convolution's groups, or several's?
        found += [(union, same)] if len(parts) == 1 else [
            (u, part) for part in parts for u in [stored_union(part)] if u is not None]
    return found


def stored_union(same: list[ProductGroup]) -> np.ndarray | None:
    """The kernels with every tap of ``same``'s groups, where none has every tap and they
    store less so; else None."""
    if len(same) < 2:
        return None
    columns = np.concatenate([np.asarray(g.kernels, np.float64) for g in same], axis=1)
    widest = max(g.kernels.shape[1] for g in same)
    # a random projection of each tap's weights counts the taps at least once (it may
    # round two equal columns apart): no more than the widest group's, and one group
    # has them all; else they are compared exactly (the projection had kept two copies
    # of a tap)
    keys = np.random.default_rng(0).standard_normal(len(columns)) @ columns
    if len(np.unique(keys)) <= widest:
        return None
    _, distinct = np.unique(columns.T, axis=0, return_index=True)
    if not widest < len(distinct) < columns.shape[1]:
        return None
    union = np.concatenate([np.asarray(g.kernels) for g in same], axis=1)
    return np.ascontiguousarray(union[:, np.sort(distinct)])


def sharing_taps(groups: list[ProductGroup]) -> list[list[ProductGroup]]:
    """``groups`` in sets that share taps (a column of weights), one way or another: a
    convolution's edges and corners share taps with each other, and not with another
    convolution's groups that write rows alike (SqueezeNet's 1x1 and 3x3 expansions,
    whose union had stored each 3x3 interior kernel with a 1x1 kernel's taps)."""
    columns = [np.ascontiguousarray(np.asarray(g.kernels, np.float64).T) for g in groups]
    seen: dict[bytes, int] = {}
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, taps in enumerate(columns):
        for tap in taps:
            j = seen.setdefault(tap.tobytes(), i)
            parent[root(i)] = root(j)
    sets: dict[int, list[ProductGroup]] = {}
    for i, g in enumerate(groups):
        sets.setdefault(root(i), []).append(g)
    return list(sets.values())


def block_lines(real: str, b: BlockGroup, start: str, end: str | int) -> list[str]:
    """Block ``i``'s sums over ``b``'s positions ``start`` to ``end``, its weights ``w``:
    the sixteen sums as values of GCC's and clang's vector extension (measured: 1.6-1.7x
    faster at batch 1 than sixteen scalar sums, which GCC 12 leaves scalar: its SLP
    vectorizer finds no contiguous store to start from), a few positions at once;
    elsewhere one accumulator variable a lane, written out."""
    tap = "t" if b.index is None else f"(long){b.index}[t]"  # the tap's row of weights
    sums = (b.offsets, b.bases, b.shift, b.taps, b.positions, b.index, b.rows, start, end)
    return [
        "        " + b.rows.pointer("o", f"i * {LANES}"),
        "#if defined(VECTOR_BYTES) && VECTOR_BYTES == 64",
        *vector_sums(real, 64, *sums),
        "#elif defined(VECTOR_BYTES) && VECTOR_BYTES == 32",
        *vector_sums(real, 32, *sums),
        "#elif defined(VECTOR_BYTES)",
        *vector_sums(real, 16, *sums),
        "#else",
        f"        for (j = {start}; j < {end}; j++) {{",
        f"            const {real} *restrict x = h + {b.shift} + {b.bases}[j];",
        "            EACH_LANE(LANE_ZERO, a)",
        f"            for (t = 0; t < {b.taps}; t++) {{",
        f"                const {real} xt = x[{b.offsets}[t]];",
        f"                const {real} *restrict wt = w + {tap} * {LANES};",
        "                EACH_LANE(LANE_WEIGHT_TIMES_INPUT, a)",
        "            }",
        f"#define LANE_ROW(l) {b.rows.at('o', 'l', 'j')}",
        "            EACH_LANE(LANE_ADD_TO_ROW, a)",
        "#undef LANE_ROW",
        "        }",
        "#endif"]


def each_block(real: str, b: BlockGroup, weights: str, stored: int) -> list[str]:
    """A loop over ``b``'s blocks, their weights ``weights`` (``stored`` taps a kernel),
    each block over all of ``b``'s positions (``block_lines``): the code of a form that
    takes ``b`` where its own does not apply."""
    return [f"    for (i = 0; i < {b.blocks}; i++) {{",
            f"        const {real} *restrict w = {weights} + (long)i * {stored * LANES};",
            *block_lines(real, b, "0", b.positions), "    }"]


def blocks_function(name: str, real: str, transposed: str, stored: int,
                    members: list[BlockGroup], tile: int | None = None) -> str:
    """The function computing ``members`` (groups of the same blocks of kernels, their
    weights ``transposed``, ``stored`` taps a kernel), blocks outermost; a lone member's
    map may run in tiles of ``tile`` positions (then tiles outermost). The loop
    vectorizer stays off: it would gather across taps instead."""
    assert tile is None or len(members) == 1, "tiles are a lone group's"
    assert len({m.blocks for m in members}) == 1, "the members' blocks differ"
    n_b = members[0].positions
    together = len(members) > 1
    return "\n".join([
        f"static NO_LOOP_VECTORIZE void {name}(const {real} *restrict h, {real} *restrict z)",
        "{", "    int i, j, t, l, jt = 0, end;", "    (void)l; (void)jt; (void)end;",
        *([] if tile is None else [
            f"    for (jt = 0; jt < {n_b}; jt += {tile}) {{",
            f"    end = jt + {tile} < {n_b} ? jt + {tile} : {n_b};"]),
        f"    for (i = 0; i < {members[0].blocks}; i++) {{",
        f"        const {real} *restrict w = {transposed} + (long)i * {stored * LANES};",
        *[line for m in members for line in (
            ["        {"] * together
            + block_lines(real, m, "0" if tile is None else "jt",
                          m.positions if tile is None else "end")
            + ["        }"] * together)],
        "    }", *([] if tile is None else ["    }"]), "}"])
