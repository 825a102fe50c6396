"""The loop over a product group's positions for one sample, in the C code
(``c_layers.py``): a block of sixteen kernels' sums in vectors of the machine's width."""
from __future__ import annotations

import re

from .c_groups import LANES
from .c_indices import PairIndex

#: positions the AVX2 loop runs at once (``wide_loop``), on maps of at least
#: ``WIDE_MAPS`` positions: measured, ResNet50 at 224x224, one sample, 120 -> 108 ms; at
#: 32x32, whose maps are smaller, no faster, and more code to build
WIDE_POSITIONS, WIDE_MAPS = 6, 128
#: smaller maps from this many positions run six at a time where that leaves fewer than
#: the four-position loop takes (a 7x7 map, 8 x 6 + 1: that loop's code is not written);
#: measured, MobileNetV2 at 224x224 11.3 -> 10.8 ms and ResNet50 97.5 -> 94 ms with the
#: panels below (``c_position_panels``); on the 8x8 maps of a 32x32 network (64 = 10 x 6
#: + 4) it would add code and no speed (DenseNet121's first build 15.3 -> 15.6 s)
SMALLEST_WIDE = 48


def wide_map(positions: int) -> bool:
    """Whether a group's map of ``positions`` runs six positions at a time."""
    return positions >= WIDE_MAPS or (positions >= SMALLEST_WIDE
                                      and positions % WIDE_POSITIONS < 4)


#: the kernels a half block computes together: the eight a 24-channel projection leaves
#: over a block of sixteen (MobileNetV2's, each on its own at one sample, were 15 % of
#: its time at 224x224)
HALF = 8


def vector_sums(real: str, width: int, offsets: str, bases: str, shift: str, taps: int,
                n_b: int, index: str | None, rows: PairIndex, start: str = "0",
                end: str | int | None = None, lanes: int = LANES) -> list[str]:
    """The loop over positions with the sixteen sums of a position as vectors of
    ``width`` bytes: with two vectors a position (AVX2), on a big map, six positions at
    a time (``wide_loop``); as many positions at a time as make eight vectors of sums;
    then the positions left, together where their count is known (``few``), else one at
    a time, each sum in partial sums over every few taps
    (still eight vectors: one chain of dependent multiply-adds waits on each one's
    latency; measured, ResNet18 at batch 1, whose small maps leave one to four
    positions a group: 1.9-2.1 -> 1.4 ms in all, AVX-512). ``index``: the array of
    each tap's row of weights, or None (the tap's own); ``rows``: where the block's
    pairs store, past the pointer ``o``; ``start`` and ``end``: the positions to run
    (C expressions: a tile's), all ``n_b`` unless given; ``lanes``: the kernels of a
    block (sixteen, or ``HALF``)."""
    r = real
    per = width // (8 if r == "double" else 4)
    vectors = range(lanes // per)
    together = max(1, 8 // len(vectors))

    def weights(tap: str) -> str:
        return f"w + {tap if index is None else f'(long){index}[{tap}]'} * {lanes}"

    def stores(positions: range, sums: str) -> list[str]:
        """Each sum's lanes added to their rows: a loop the compiler unrolls."""
        return [f"            UNROLL_LANES for (l = 0; l < {per}; l++) "
                f"z[{rows.at('o', f'l + {v * per}', f'j + {q}')}] += "
                f"{sums.format(q=q, v=v)}[l];" for q in positions for v in vectors]

    def loop(count: int, step: str) -> list[str]:
        positions = range(count)
        sums = [f"s{q}_{v}" for q in positions for v in vectors]
        return [
            f"        for (; {step}; j += {count}) {{",
            *[f"            const {r} *restrict x{q} = h + {shift} + {bases}[j + {q}];"
              for q in positions],
            "            vector_sum " + ", ".join(f"{s} = {{0}}" for s in sums) + ", wt;",
            f"            for (t = 0; t < {taps}; t++) {{",
            f"                const int32_t at = {offsets}[t];",
            *[f"                memcpy(&wt, {weights('t')} + {v * per}, sizeof wt); "
              "IN_REGISTER(wt); "
              + " ".join(f"s{q}_{v} += wt * x{q}[at];" for q in positions)
              for v in vectors],
            "            }",
            *stores(positions, "s{q}_{v}"),
            "        }"]

    def wide_loop(count: int, step: str) -> list[str]:
        """``count`` positions with both vectors of a tap's weights in registers, one
        input at a time: twelve sums for six positions, the two weights and the input
        are fifteen of AVX2's sixteen registers (an input kept for both vectors would
        take six)."""
        positions = range(count)
        sums = [f"s{q}_{v}" for q in positions for v in vectors]
        return [
            f"        for (; {step}; j += {count}) {{",
            *[f"            const {r} *restrict x{q} = h + {shift} + {bases}[j + {q}];"
              for q in positions],
            "            vector_sum " + ", ".join(f"{s} = {{0}}" for s in sums) + ", "
            + ", ".join(f"w{v}" for v in vectors) + ";",
            f"            for (t = 0; t < {taps}; t++) {{",
            f"                const int32_t at = {offsets}[t];",
            "                " + " ".join(f"memcpy(&w{v}, {weights('t')} + {v * per}, sizeof w{v}); "
                                         f"IN_REGISTER(w{v});" for v in vectors),
            *[f"                {{ const {r} xq = x{q}[at]; "
              + " ".join(f"s{q}_{v} += w{v} * xq;" for v in vectors) + " }" for q in positions],
            "            }",
            *stores(positions, "s{q}_{v}"),
            "        }"]

    def few(count: int, partial: int) -> list[str]:
        """``count`` positions at a time (one: to the end), tap ``t`` into the partial
        sums ``p{t % partial}``, each tap's weights read once for them all."""
        chains, positions = range(partial), range(count)
        sums = [f"p{c}_{q}_{v}" for c in chains for q in positions for v in vectors]
        step = [f"                {{ const long u = t + {c}; const int32_t at = {offsets}[u]; "
                + " ".join(f"memcpy(&wt, {weights('u')} + {v * per}, sizeof wt); "
                           + " ".join(f"p{c}_{q}_{v} += wt * x{q}[at];" for q in positions)
                           for v in vectors) + " }"
                for c in chains]
        head = (f"for (; j < {end}; j++)" if count == 1 else
                f"for (; j + {count} <= {end}; j += {count})")
        return [
            f"        {head} {{",
            *[f"            const {r} *restrict x{q} = h + {shift} + {bases}[j + {q}];"
              for q in positions],
            "            vector_sum " + ", ".join(f"{s} = {{0}}" for s in sums) + ", wt;",
            f"            for (t = 0; t + {partial} <= {taps}; t += {partial}) {{",
            *step,
            "            }",
            f"            for (; t < {taps}; t++) {{",
            f"                const long u = t; const int32_t at = {offsets}[u]; "
            + " ".join(f"memcpy(&wt, {weights('u')} + {v * per}, sizeof wt); "
                       + " ".join(f"p0_{q}_{v} += wt * x{q}[at];" for q in positions)
                       for v in vectors),
            "            }",
            *[f"            p0_{q}_{v} = " + " + ".join(f"p{c}_{q}_{v}" for c in chains) + ";"
              for q in positions for v in vectors],
            *stores(positions, "p0_{q}_{v}"),
            "        }"]

    # a tile's positions (``end`` a C expression) are a multiple of eight, not of six
    count = n_b if end is None or isinstance(end, int) else None
    end = n_b if end is None else end
    lines = [f"        j = {start};"]
    # AVX2's multiply-add takes five cycles and two start a cycle: ten sums must be in
    # flight to keep it busy, and four positions of two vectors are eight
    # (with 32-byte vectors only, where it was measured: AVX-512's doubles would also
    # make two vectors a position)
    wide = WIDE_POSITIONS if width == 32 and len(vectors) == 2 and wide_map(n_b) else 0
    if wide:
        lines += wide_loop(wide, f"j + {wide} <= {end}")
    # the positions left: as many as each next loop can run (no loop that never runs:
    # less to compile)
    left = n_b if not wide else None if count is None else count % wide
    if together > 1 and (left is None or left >= together):
        lines += loop(together, f"j + {together} <= {end}")
    # ``left`` counts the positions past the wide loop: ``start`` is 0, or past the
    # panels of six that a wide map's positions fill (``c_position_panels``)
    rest = None if left is None else left % together
    if together > 1 and rest == 0:
        return lines
    if rest is not None and rest > 1:
        # the few positions a map leaves (a 2x2 map's four, with AVX-512's one vector a
        # position) together, in fewer partial sums each: one at a time read the
        # block's weights once for each (measured: Keras's MobileNet at 32x32, one
        # sample, its 2x2 maps' 1x1 convolutions at 14 GB/s of weights, the dense
        # layers beside them at 28-36)
        return lines + few(rest, -(-8 // (rest * len(vectors))))
    return lines + few(1, max(1, 8 // len(vectors)))


def half_block(name: str, real: str, transposed: str, offsets: str, bases: str,
               rows: PairIndex, shift: str, taps: int, n_b: int, fallback: list[str]) -> str:
    """A function computing ``HALF`` kernels that read the same positions, their weights
    ``transposed`` (a tap's eight together), as ``kernels_in_lanes`` computes sixteen:
    where the machine's vectors hold eight values or fewer (one AVX2 vector of floats);
    with wider ones (AVX-512's floats) or none, the ``fallback`` statements."""
    widths = (32, 16) if real == "float" else (64, 32, 16)
    sums = [line for k, width in enumerate(widths) for line in (
        f"#{'if' if k == 0 else 'elif'} VECTOR_BYTES == {width}",
        *vector_sums(real, width, offsets, bases, shift, taps, n_b, None, rows,
                     lanes=HALF))]
    body = [f"#if defined(VECTOR_BYTES) && VECTOR_BYTES <= {widths[0]}",
            "    {",
            f"        const {real} *restrict w = {transposed};",
            "        " + rows.pointer("o", "0"),
            *sums, "#endif",
            "    }",
            "#else",
            *fallback,
            "#endif"]
    # each branch reads arrays of its own: where the function is shared (c_sharing.py),
    # they are its parameters, and the other branch's would be unused
    arrays = sorted(set(re.findall(r"\bL\d+_\w+\b", "\n".join(body))))
    return "\n".join([
        f"static NO_LOOP_VECTORIZE void {name}(const {real} *restrict h, {real} *restrict z)",
        "{", "    int i, j, t, l;", "    (void)i; (void)j; (void)t; (void)l;",
        "    " + " ".join(f"(void){a};" for a in arrays), *body, "}"])
