"""The loop over a product group's positions for one sample, in the C code
(``c_layers.py``): a block of sixteen kernels' sums in vectors of the machine's width."""
from __future__ import annotations

from .c_groups import LANES
from .c_indices import PairIndex


def vector_sums(real: str, width: int, offsets: str, bases: str, shift: str, taps: int,
                n_b: int, index: str | None, rows: PairIndex, start: str = "0",
                end: str | int | None = None) -> list[str]:
    """The loop over positions with the sixteen sums of a position as vectors of
    ``width`` bytes: as many positions at a time as make eight vectors of sums, then
    the positions left one at a time, each sum in partial sums over every few taps
    (still eight vectors: one chain of dependent multiply-adds waits on each one's
    latency; measured, ResNet18 at batch 1, whose small maps leave one to four
    positions a group: 1.9-2.1 -> 1.4 ms in all, AVX-512). ``index``: the array of
    each tap's row of weights, or None (the tap's own); ``rows``: where the block's
    pairs store, past the pointer ``o``; ``start`` and ``end``: the positions to run
    (C expressions: a tile's), all ``n_b`` unless given."""
    r = real
    per = width // (8 if r == "double" else 4)
    vectors = range(LANES // per)
    together = max(1, 8 // len(vectors))

    def weights(tap: str) -> str:
        return f"w + {tap if index is None else f'(long){index}[{tap}]'} * {LANES}"

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

    def single(partial: int) -> list[str]:
        """One position at a time, tap ``t`` into the partial sums ``p{t % partial}``."""
        chains = range(partial)
        sums = [f"p{c}_{v}" for c in chains for v in vectors]
        step = [f"                {{ const long u = t + {c}; const int32_t at = {offsets}[u]; "
                + " ".join(f"memcpy(&wt, {weights('u')} + {v * per}, sizeof wt); "
                           f"p{c}_{v} += wt * x0[at];" for v in vectors) + " }"
                for c in chains]
        return [
            f"        for (; j < {end}; j++) {{",
            f"            const {r} *restrict x0 = h + {shift} + {bases}[j];",
            "            vector_sum " + ", ".join(f"{s} = {{0}}" for s in sums) + ", wt;",
            f"            for (t = 0; t + {partial} <= {taps}; t += {partial}) {{",
            *step,
            "            }",
            f"            for (; t < {taps}; t++) {{",
            f"                const long u = t; const int32_t at = {offsets}[u]; "
            + " ".join(f"memcpy(&wt, {weights('u')} + {v * per}, sizeof wt); "
                       f"p0_{v} += wt * x0[at];" for v in vectors),
            "            }",
            *[f"            p0_{v} = " + " + ".join(f"p{c}_{v}" for c in chains) + ";"
              for v in vectors],
            *stores(range(1), "p0_{v}"),
            "        }"]

    end = n_b if end is None else end
    lines = [f"        j = {start};"]
    if together > 1 and n_b >= together:  # (no loop that never runs: less to compile)
        lines += loop(together, f"j + {together} <= {end}")
    if together > 1 and n_b % together == 0:
        return lines
    return lines + single(max(1, 8 // len(vectors)))
