"""The C code of a max layer (``max_blocks.py``): each output the max of its window's taps,
for one sample (``layer{k}``) and for sixteen interleaved ones (``layer{k}_batch``).

Each window shape is a loop over its runs of rows (first row, row step, first base, base
step, length: five numbers a run, not an index a row), the taps a constant-count loop over
the shape's offsets. A NaN in a window gives NaN (``v != v``), as the layers it replaces do.
"""
from __future__ import annotations

import numpy as np

from .c_arrays import Arrays
from .c_batched import SAMPLES
from .max_blocks import MaxLayer


class MaxWriter:
    """Writes both functions of a max layer, its runs and offsets in ``arrays``."""

    def __init__(self, index: int, layer: MaxLayer, arrays: Arrays, real: str) -> None:
        self.k, self.real = index, real
        self.shapes = []
        for group in layer.groups:
            runs = group.runs()
            name = arrays.add(f"L{index}_max_runs_{len(arrays.items)}", runs.astype(np.int32))
            offsets = arrays.add(f"L{index}_max_offsets_{len(arrays.items)}",
                                 group.offsets.astype(np.int32))
            self.shapes.append((name, len(runs), offsets, len(group.offsets)))

    def emit(self) -> str:
        r = self.real
        lines = [f"LAYER void layer{self.k}(const {r} *restrict h, {r} *restrict z)", "{",
                 "    long i, p, t, row, base;", "    (void)t;"]
        for runs, n_runs, offsets, n_taps in self.shapes:
            lines += [
                *self.run_loop(runs, n_runs),
                f"            const {r} *restrict x = h + base;",
                f"            {r} m = x[{offsets}[0]];",
                f"            for (t = 1; t < {n_taps}; t++) {{",
                f"                const {r} v = x[{offsets}[t]];",
                "                m = ((v > m) | (v != v)) ? v : m;",
                "            }",
                "            z[row] = m;", "        }", "    }"]
        return "\n".join(lines + ["}"])

    def emit_batched(self) -> str:
        """Sixteen samples a row, in vectors where the compiler has them (GCC's loop
        vectorizer left the select with a NaN test scalar, a branch a lane)."""
        r, s = self.real, SAMPLES
        lines = [f"LAYER void layer{self.k}_batch(const {r} *restrict h, {r} *restrict z)",
                 "{", "    long i, p, t, row, base;", "    int l;", "    (void)t;"]
        for runs, n_runs, offsets, n_taps in self.shapes:
            lines += [
                *self.run_loop(runs, n_runs),
                f"            const {r} *restrict x = h + base * {s};",
                "#ifdef VECTOR_BYTES",
                f"            for (l = 0; l < {s}; l += VECTOR_LANES) {{",
                "                vector_sum m, u;",
                f"                memcpy(&m, x + (long){offsets}[0] * {s} + l, sizeof m);",
                f"                for (t = 1; t < {n_taps}; t++) {{",
                f"                    memcpy(&u, x + (long){offsets}[t] * {s} + l, sizeof u);",
                "                    m = max_vector(m, u);",
                "                }",
                f"                memcpy(z + row * {s} + l, &m, sizeof m);",
                "            }",
                "#else",
                f"            for (l = 0; l < {s}; l++) {{",
                f"                {r} m = x[(long){offsets}[0] * {s} + l];",
                f"                for (t = 1; t < {n_taps}; t++) {{",
                f"                    const {r} v = x[(long){offsets}[t] * {s} + l];",
                "                    m = ((v > m) | (v != v)) ? v : m;",
                "                }",
                f"                z[row * {s} + l] = m;",
                "            }",
                "#endif",
                "        }", "    }"]
        return "\n".join(lines + ["}"])

    @staticmethod
    def run_loop(runs: str, n_runs: int) -> list[str]:
        return [f"    for (i = 0; i < {n_runs}; i++) {{",
                f"        const int32_t *q = {runs} + 5 * i;",
                "        row = q[0]; base = q[2];",
                "        for (p = 0; p < q[4]; p++, row += q[1], base += q[3]) {"]
