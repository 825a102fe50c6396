"""A dense layer at one sample, in the C code (``c_layers.py``): ``z[i] += W[i] . h``.

A row's sum is two vectors of partial sums (C forbids the compiler to reorder a float
sum, so it would leave the plain loop scalar: MobileNetV2's 320 -> 1280 layer took 293 us
so, 27 us in vectors), then their lanes in order, then the columns past the last pair of
vectors. One row at a time, that is two chains of dependent multiply-adds: the loop
waited on their latency (MobileNetV2's last two layers, 1.6 and 1.2 MB of weights, ran at
about 30 GB/s, a tenth of its time at batch 1). ``ROWS`` rows go together, each with its
own two sums in the same order, sharing the loads of ``h``: the same bits.
"""
from __future__ import annotations

#: rows computed together: eight chains of multiply-adds, with ``h``'s two vectors and a
#: row's, eleven of AVX2's sixteen registers
ROWS = 4


def dense_lines(real: str, weights: str, n_out: int, n_in: int) -> list[str]:
    """The statements adding ``weights`` (``n_out`` x ``n_in``, row-major) times ``h`` to
    ``z``, inside a layer function that declares ``int i, j, t``."""
    together = range(ROWS)
    return [
        "    i = 0;",
        *([] if n_out < ROWS else [
            f"    for (; i + {ROWS} <= {n_out}; i += {ROWS}) {{",
            *[f"        const {real} *restrict row{q} = {weights} + (long)(i + {q}) * {n_in};"
              for q in together],
            f"        {real} " + ", ".join(f"acc{q} = 0" for q in together) + ";",
            "#ifdef VECTOR_BYTES",
            "        {",
            "            vector_sum " + ", ".join(f"s{q}_0 = {{0}}, s{q}_1 = {{0}}" for q in together)
            + ", u, v, x;",
            f"            for (j = 0; j + 2 * VECTOR_LANES <= {n_in}; j += 2 * VECTOR_LANES) {{",
            "                memcpy(&v, h + j, sizeof v); memcpy(&x, h + j + VECTOR_LANES, sizeof x);",
            *[f"                memcpy(&u, row{q} + j, sizeof u); s{q}_0 += u * v; "
              f"memcpy(&u, row{q} + j + VECTOR_LANES, sizeof u); s{q}_1 += u * x;"
              for q in together],
            "            }",
            *[f"            s{q}_0 += s{q}_1;" for q in together],
            "            for (t = 0; t < VECTOR_LANES; t++) {"
            + " ".join(f"acc{q} += s{q}_0[t];" for q in together) + " }",
            "        }",
            "#else",
            "        j = 0;",
            "#endif",
            f"        for (; j < {n_in}; j++) {{"
            + " ".join(f"acc{q} += row{q}[j] * h[j];" for q in together) + " }",
            *[f"        z[i + {q}] += acc{q};" for q in together],
            "    }"]),
        *([] if n_out % ROWS == 0 else [
            f"    for (; i < {n_out}; i++) {{",
            f"        const {real} *restrict row = {weights} + (long)i * {n_in};",
            f"        {real} acc = 0;",
            "#ifdef VECTOR_BYTES",
            "        {",
            "            vector_sum s0 = {0}, s1 = {0}, u, v;",
            f"            for (j = 0; j + 2 * VECTOR_LANES <= {n_in}; j += 2 * VECTOR_LANES) {{",
            "                memcpy(&u, row + j, sizeof u); memcpy(&v, h + j, sizeof v); s0 += u * v;",
            "                memcpy(&u, row + j + VECTOR_LANES, sizeof u);",
            "                memcpy(&v, h + j + VECTOR_LANES, sizeof v); s1 += u * v;",
            "            }",
            "            s0 += s1;",
            "            for (t = 0; t < VECTOR_LANES; t++) acc += s0[t];",
            "        }",
            "#else",
            "        j = 0;",
            "#endif",
            f"        for (; j < {n_in}; j++) acc += row[j] * h[j];",
            "        z[i] += acc;", "    }"])]
