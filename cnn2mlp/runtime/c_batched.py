"""The C code of one planned layer for sixteen samples at once, for batches.

The single-sample code (``c_layers.py``) reads each weight once per sample. Here the
samples' values of a neuron lie next to each other (``h[i * 16 + l]`` for sample ``l``), so
every step of a part is one weight times sixteen contiguous values: a weight is read once
for sixteen samples, in one to four vector operations (measured: sixteen samples 1.1-1.9x
faster a sample than eight, with AVX-512, AVX2 and SSE alike). The sums are values of the
vector extension, as wide as the machine's (``VECTOR_BYTES``), wherever the compiler has
it; else sixteen scalar statements, written out. The layer reads the arrays the
single-sample code declared, from the records ``LayerWriter`` left (``records``): no weight
is stored twice.

Each output's sum runs over its terms in the order of the single-sample code's scalar
form; its vector form and its depthwise positions split some sums into partial sums: both
paths agree up to float rounding. A layer whose rows each one part writes, with one clamp,
has its parts store ``clamp(sum + bias)`` (``c_activation.stored_clamp``) instead of adding
to a bias written first and clamping after.
"""
from __future__ import annotations

from .c_activation import activation_loop
from .c_build import SAMPLES
from .c_groups import LANES, position_tile
from .c_indices import BiasFill, PairIndex, run_row_lines
from .c_literals import c_number
from .c_packed import kernels_at_once, packed_kernels

#: rows of a dense layer computed together
DENSE_ROWS = 4
#: kernels of a convolution block computed together without the vector extension, each
#: with every sample's sum
KERNELS = 8
def lanes(statement: str, sums: str) -> str:
    """The prelude's lane statement ``statement`` (``LANE_…``) for each of the sixteen
    samples' sums ``sums{l}``, written out by the preprocessor (``EACH_LANE``)."""
    return f"EACH_LANE({statement}, {sums})"


class BatchedLayerWriter:
    """``layer{k}_batch(h, z)``: the layer of ``records`` on interleaved samples.

    The products run in helper functions of their own, their sums in vectors (or, with no
    vector extension, one accumulator variable per sample and kernel, written out), and
    GCC's loop vectorizer off: it would vectorize across a kernel's taps with shuffles
    (measured: 1.6x slower than single samples)."""

    def __init__(self, index: int, records: list[tuple[str, dict]], real: str) -> None:
        self.k, self.records, self.real = index, records, real
        self.lines: list[str] = []
        self.helpers: list[str] = []
        #: for a layer whose parts store its rows (``c_activation.stored_clamp``): the clamp's
        #: (lo, scale, hi) as C constants; else None (parts add to the bias)
        self.stored: tuple[str, str, str] | None = None

    def emit(self) -> str:
        r = self.real
        self.lines = [f"LAYER void layer{self.k}_batch(const {r} *restrict h, {r} *restrict z)",
                      "{", "    long i, j;", "    int l;", "    (void)i; (void)j; (void)l;"]
        for kind, part in self.records:
            getattr(self, kind)(**part)
        self.lines.append("}")
        return "\n\n".join(self.helpers + ["\n".join(self.lines)])

    def helper(self, body: list[str]) -> None:
        """A product part as a function of its own, called from the layer."""
        r = self.real
        name = f"layer{self.k}_batch_part{len(self.helpers)}"
        self.helpers.append("\n".join([
            f"static NO_LOOP_VECTORIZE void {name}(const {r} *restrict h, {r} *restrict z)",
            "{", "    long i, j, t;", "    (void)h; (void)z; (void)i; (void)j; (void)t;",
            *self.clamp_constants(), *body, "}"]))
        self.lines.append(f"    {name}(h, z);")

    def clamp_constants(self) -> list[str]:
        """The clamp's bounds and scale as constants a part's stores name, when it stores."""
        if self.stored is None:
            return []
        lo, sc, hi = self.stored
        return [f"    const {self.real} clamp_lo = {lo}, clamp_scale = {sc}, clamp_hi = {hi};",
                "    (void)clamp_lo; (void)clamp_scale; (void)clamp_hi;"]

    @staticmethod
    def accumulators(names: str) -> str:
        """``names0`` to ``names15``, one sum a sample, at zero."""
        return lanes("LANE_ZERO", names)

    def lane_stores(self, sums: str, bias: str) -> str:
        """The samples' sums ``sums{l}`` to the row at ``zk``, as ``store`` does."""
        if self.stored is None:
            return lanes("LANE_ADD_TO_SAMPLE", sums)
        return f"{{ const {self.real} b = {bias}; " + lanes("LANE_STORE_TO_SAMPLE", sums) + " }"

    def bias(self, fill: BiasFill, clamp) -> None:
        """The layer's start: its bias in every row, or nothing when its parts store the
        rows (bias and clamp as they store: one pass over the output, not three; measured:
        MobileNetV2 at batch 16, its 1x1 16 -> 96 expansion 724 -> 582 us)."""
        if clamp is not None:
            self.stored = tuple(c_number(v, self.real) for v in clamp)
            return
        self.lines += fill.lines(self.real, f"for (l = 0; l < {SAMPLES}; l++) "
                                            f"z[i * {SAMPLES} + l] = v;")

    def store(self, target: str, value: str, bias: str) -> str:
        """``target = value`` with the row's bias (a C expression) and clamp when the parts
        store, else ``target += value``."""
        if self.stored is None:
            return f"{target} += {value};"
        return f"{target} = clamp_value({value} + {bias}, CLAMP);"

    @staticmethod
    def bias_at(bias: PairIndex | None, name: str, lane, position: str) -> str:
        """A pair's bias past the pointer ``name`` (``bias.pointer``), when the parts store."""
        return "0" if bias is None else bias.at(name, lane, position)

    def bias_pointer(self, bias: PairIndex | None, name: str, kernel: str,
                     indent: str) -> list[str]:
        """Declares the pointer ``name`` to kernel ``kernel``'s biases, when the parts store."""
        return [] if bias is None else [indent + bias.pointer(name, kernel, self.real)]

    def dense(self, w: str, n_out: int, n_in: int) -> None:
        """A dense layer: with the vector extension, DENSE_ROWS rows at a time, each
        sample's sums in vectors, every weight read once for the sixteen samples (row by
        row, a row's sums wait on the multiply-add's latency at every term; measured:
        MobileNetV2's 320 -> 1280 layer at batch 16, 502 us so, 258 us so); else row by
        row."""
        r = self.real
        size = 8 if r == "double" else 4
        together = n_out - n_out % (2 * DENSE_ROWS)
        body = ["#ifdef VECTOR_BYTES",
                f"#if VECTOR_BYTES == {SAMPLES * size}",
                *self.dense_rows(w, n_in, together, 1, 2 * DENSE_ROWS),
                f"#elif VECTOR_BYTES * 2 == {SAMPLES * size}",
                *self.dense_rows(w, n_in, together, 2, DENSE_ROWS),
                "#else",
                *self.dense_rows(w, n_in, together, 1, DENSE_ROWS),
                "#endif",
                "#endif"]
        if together:
            self.helper(body)
        self.row_sums(n_out, "i", f"j = 0; j < {n_in}; j++", f"{w}[i * {n_in} + j]", "j", "0",
                      vector_first=together)

    def dense_rows(self, w: str, n_in: int, together: int, vectors: int,
                   n_rows: int) -> list[str]:
        """Rows ``[0, together)`` DENSE_ROWS at a time, a sample's sums in ``vectors``
        vectors at once (two: a weight read once for all sixteen samples; else the
        samples in turns of as many vectors)."""
        r, rows, parts = self.real, range(n_rows), range(vectors)
        sums = [f"s{q}_{v}" for q in rows for v in parts]
        return [
            f"    for (i = 0; i < {together}; i += {n_rows}) {{",
            "        long v;",
            f"        for (v = 0; v < {SAMPLES}; v += {vectors} * VECTOR_LANES) {{",
            "            vector_sum " + ", ".join(f"x{p}" for p in parts) + ", "
            + ", ".join(f"{s} = {{0}}" for s in sums) + ";",
            f"            for (j = 0; j < {n_in}; j++) {{",
            "                " + " ".join(f"memcpy(&x{p}, h + j * {SAMPLES} + v + {p} * VECTOR_LANES, "
                                        f"sizeof x{p}); IN_REGISTER(x{p});" for p in parts),
            *[f"                {{ const {r} wq = {w}[(i + {q}) * {n_in} + j]; "
              + " ".join(f"s{q}_{p} += x{p} * wq;" for p in parts) + " }" for q in rows],
            "            }",
            *[f"            {{ {r} *restrict zq = z + (i + {q}) * {SAMPLES} + v + {p} * VECTOR_LANES; "
              f"vector_sum u; memcpy(&u, zq, sizeof u); u += s{q}_{p}; "
              "memcpy(zq, &u, sizeof u); }" for q in rows for p in parts],
            "        }", "    }"]

    def row_sums(self, n: int, row: str, terms: str, weight: str, column: str, bias: str,
                 vector_first: int = 0) -> None:
        """For each of ``n`` rows, ``z[row] += weight * h[column]`` over the loop ``terms``
        (C expressions of ``i``, the row's index, and ``j``, the term's), every sample, the
        row's bias ``bias`` when the parts store; with the vector extension, from row
        ``vector_first`` (the rows before, done already)."""
        r = self.real
        self.helper([
            "#ifdef VECTOR_BYTES",
            f"    for (i = {vector_first}; i < {n}; i++) {{",
            "#else",
            f"    for (i = 0; i < {n}; i++) {{",
            "#endif",
            f"        {r} *restrict zi = z + (long)({row}) * {SAMPLES};",
            *self.sample_sums(8, terms, weight, f"h + (long)({column}) * {SAMPLES}", "zi", bias),
            "    }"])

    def sample_sums(self, indent: int, terms: str, weight: str, inputs: str, target: str,
                    bias: str) -> list[str]:
        """Every sample's sum over the loop ``terms`` of ``weight`` times the sample's value
        at ``inputs`` (both C expressions of the loop's variables), stored to ``target`` (a
        row's sixteen values, its bias ``bias``) as ``store`` says: with the vector extension, the
        sums in vectors; else one accumulator a sample (GCC 12 left those scalar: sixteen
        scalar multiply-adds a term, measured in the assembly with AVX-512)."""
        r, pad = self.real, " " * indent
        scalar = [pad + self.accumulators("a"),
                  f"{pad}for ({terms}) {{",
                  f"{pad}    const {r} v = {weight};",
                  f"{pad}    const {r} *restrict x = {inputs};",
                  pad + "    " + lanes("LANE_SAMPLE_TIMES_WEIGHT", "a"), pad + "}",
                  f"{pad}{{ {r} *restrict zk = {target}; {self.lane_stores('a', bias)} }}"]
        lines = []
        for keyword, width in (("#if", 64), ("#elif", 32), ("#elif", 16)):
            per = width // (8 if r == "double" else 4)
            vectors = range(SAMPLES // per)
            lines += [
                f"{keyword} defined(VECTOR_BYTES) && VECTOR_BYTES == {width}",
                f"{pad}{{",
                f"{pad}vector_sum " + ", ".join(f"a{v} = {{0}}" for v in vectors) + ", "
                + ", ".join(f"y{v}" for v in vectors) + ", u;",
                f"{pad}for ({terms}) {{",
                f"{pad}    const {r} v = {weight};",
                f"{pad}    const {r} *restrict x = {inputs};",
                pad + "    " + " ".join(f"memcpy(&y{v}, x + {v * per}, sizeof y{v}); a{v} += y{v} * v;"
                                      for v in vectors),
                pad + "}",
                pad + " ".join(self.vector_store(f"{target} + {v * per}", f"a{v}", bias)
                               for v in vectors),
                f"{pad}}}"]
        return lines + ["#else", *scalar, "#endif"]

    def kernels(self, w: str, offsets: str, bases: str, rows: PairIndex,
                bias: PairIndex | None, blocks: int, taps: int, n_b: int, shift: str,
                stored: int, tap: str) -> None:
        """Blocks of sixteen kernels with transposed weights (``w[block][tap][16]``), as the
        single-sample code stores them, a few kernels at a time with every sample's sum.

        With the vector extension, a kernel's sixteen sums are vectors, and as many kernels
        go together as leave the accumulators in registers with room for the inputs (16
        vector registers: 4 kernels of two 32-byte vectors, 2 of four 16-byte ones; with 8,
        the assembly showed every multiply-add reading and writing the stack); else scalar
        sums, which GCC's SLP vectorizer packs. With 32-byte vectors a position's inputs
        are packed once for a group of blocks (``c_packed.packed_kernels``)."""
        r = self.real
        tile = position_tile(n_b, taps * SAMPLES * (8 if r == "double" else 4), 1)
        positions = ("0", n_b) if tile is None else ("jt", "end")
        block = [f"        const {r} *restrict w = {w} + i * {stored * LANES};",
                 "        " + rows.pointer("o", f"i * {LANES}"),
                 *self.bias_pointer(bias, "ob", f"i * {LANES}", "        ")]
        position = f"            const {r} *restrict x = h + ({shift} + {bases}[j]) * {SAMPLES};"
        head = [f"    for (i = 0; i < {blocks}; i++) {{", *block,
                f"        for (j = {positions[0]}; j < {positions[1]}; j++) {{", position,
                "            int q;"]
        body = ([] if tile is None else [
            "    long jt, end;",
            f"    for (jt = 0; jt < {n_b}; jt += {tile}) {{",
            f"    end = jt + {tile} < {n_b} ? jt + {tile} : {n_b};"])
        body += ["#if defined(VECTOR_BYTES) && VECTOR_BYTES == 32",
                 *packed_kernels(self, offsets, rows, bias, blocks, taps, tap, block,
                                 shift, bases, positions),
                 "#else", *head,
                 "#if defined(VECTOR_BYTES) && VECTOR_BYTES == 64",
                 *self.vector_kernels(64, offsets, rows, bias, taps, tap),
                 "#elif defined(VECTOR_BYTES)",
                 *self.vector_kernels(16, offsets, rows, bias, taps, tap),
                 "#else", *self.scalar_kernels(offsets, rows, bias, taps, tap), "#endif",
                 "        }", "    }", "#endif", *([] if tile is None else ["    }"])]
        self.helper(body)

    def vector_kernels(self, width: int, offsets: str, rows: PairIndex,
                       bias: PairIndex | None, taps: int, tap: str) -> list[str]:
        r = self.real
        per = width // (8 if r == "double" else 4)
        vectors = range(SAMPLES // per)
        count = kernels_at_once(width, len(vectors))
        weight, row = (f"w + {tap} * {LANES} + q", 1), rows.at("o", "q + {k}", "j")
        row_bias = self.bias_at(bias, "ob", "q + {k}", "j")
        return [f"            for (q = 0; q < {LANES}; q += {count})",
                *self.kernel_block(count, per, len(vectors), taps, offsets, weight, row,
                                   row_bias)]

    def vector_store(self, target: str, value: str, bias: str) -> str:
        """The vector ``value`` added to the values at ``target``, or stored there with the
        row's bias (a C expression) and clamp when the parts store."""
        if self.stored is None:
            return (f"memcpy(&u, {target}, sizeof u); u += {value}; "
                    f"memcpy({target}, &u, sizeof u);")
        return f"u = clamp_vector({value} + {bias}, CLAMP); memcpy({target}, &u, sizeof u);"

    def scalar_kernels(self, offsets: str, rows: PairIndex, bias: PairIndex | None, taps: int,
                       tap: str) -> list[str]:
        r = self.real
        sums = range(KERNELS)
        lines = [f"            for (q = 0; q < {LANES}; q += {KERNELS}) {{"]
        lines += ["                " + self.accumulators(f"s{k}_") for k in sums]
        lines += [
            f"                for (t = 0; t < {taps}; t++) {{",
            f"                    const {r} *restrict xt = x + (long){offsets}[t] * {SAMPLES};",
            f"                    const {r} *restrict wt = w + {tap} * {LANES} + q;"]
        lines += [f"                    {{ const {r} wk = wt[{k}]; "
                  + lanes("LANE_WEIGHT_TIMES_SAMPLE", f"s{k}_") + " }" for k in sums]
        lines.append("                }")
        lines += [f"                {{ {r} *restrict zk = z + (long){rows.at('o', f'q + {k}', 'j')} * "
                  f"{SAMPLES}; "
                  + self.lane_stores(f"s{k}_", self.bias_at(bias, "ob", f"q + {k}", "j")) + " }"
                  for k in sums]
        lines.append("            }")
        return lines

    def positions(self, w: str, offsets: str, shifts: str, run_start: str, run_length: str,
                  run_base: str, run_step: str, run_rows: list[str], rows: PairIndex,
                  bias: PairIndex | None, n_k: int, taps: int, n_b: int, runs: int,
                  same_positions: bool) -> None:
        """Kernels that read positions of their own (depthwise): each kernel, position by
        position, every sample at a time. Kernels that read the same positions (the ones a
        convolution's blocks of sixteen leave over) go a few at a time instead, each input
        read once for them all, with the vector extension (measured: MobileNetV2's 1x1
        projections to 24 channels, 16 in a block and 8 so: 178 -> 69 us at batch 16,
        AVX-512)."""
        r = self.real
        head = [
            f"        for (j = 0; j < {runs}; j++) {{",
            f"            const long first = {run_start}[j], n = {run_length}[j];",
            f"            const long step = {run_step}[j];",
            *run_row_lines(run_rows, "            "),
            "            long p;"]
        each = [
            f"    for (i = 0; i < {n_k}; i++) {{",
            f"        const {r} *restrict wi = {w} + i * {taps};",
            "        " + rows.pointer("o", "i"),
            *self.bias_pointer(bias, "ob", "i", "        "),
            *head,
            f"            const long base = {shifts}[i] + (long){run_base}[j];",
            "            for (p = 0; p < n; p++) {",
            f"                const {r} *restrict xp = h + (base + p * step) * {SAMPLES};",
            f"                {r} *restrict zp = z + (long){rows.at('o', 0, 'first + p')} * {SAMPLES};",
            *self.sample_sums(16, f"t = 0; t < {taps}; t++", "wi[t]",
                              f"xp + (long){offsets}[t] * {SAMPLES}", "zp",
                              self.bias_at(bias, "ob", 0, "first + p")),
            "            }", "        }", "    }"]
        if not same_positions or n_k < 2:
            self.helper(each)
            return
        together = [
            "#ifdef VECTOR_BYTES",
            *head,
            f"            const long base = {shifts}[0] + (long){run_base}[j];",
            "            for (p = 0; p < n; p++) {",
            f"                const {r} *restrict x = h + (base + p * step) * {SAMPLES};",
            "                const long at = first + p;",
            "                int q;"]
        weight = (f"{w} + q * {taps} + t", taps)  # w[kernel][tap]
        row = rows.at(rows.base, "q + {k}", "at")
        row_bias = self.bias_at(bias, "" if bias is None else bias.base, "q + {k}", "at")
        for keyword, width in (("#if", 64), ("#elif", 32), ("#else", 16)):
            per = width // (8 if r == "double" else 4)
            vectors = SAMPLES // per
            block = kernels_at_once(width, vectors)
            together += [keyword if width == 16 else f"{keyword} VECTOR_BYTES == {width}",
                         f"                for (q = 0; q + {block} <= {n_k}; q += {block})",
                         *self.kernel_block(block, per, vectors, taps, offsets, weight, row,
                                            row_bias)]
            if n_k % block:
                together += [f"                q = {n_k - n_k % block};",
                             *self.kernel_block(n_k % block, per, vectors, taps, offsets,
                                                weight, row, row_bias)]
        self.helper(together + ["#endif", "            }", "        }", "#else", *each, "#endif"])

    def kernel_block(self, count: int, per: int, vectors: int, taps: int, offsets: str,
                     weight: tuple[str, int], row: str, bias: str,
                     kept: tuple[str, str, str] | None = None,
                     inputs: str | None = None) -> list[str]:
        """``count`` kernels from ``q`` at the position ``x`` (their inputs at ``offsets``),
        each sample's sums in ``vectors`` vectors of ``per`` values, stored to their rows:
        ``weight`` is (kernel ``q``'s weight at tap ``t``, a C pointer expression; the step
        to the next kernel's), ``row`` a C expression of kernel ``{k}``. With ``kept``
        (first, end), the taps of a block, from the sums kept in the array ``kept`` back
        to it, or to the rows after the last block.
        ``inputs``: where tap ``t``'s inputs are, if not at ``x`` and ``offsets``."""
        first_weight, weight_step = weight
        r, kernels, parts = self.real, range(count), range(vectors)
        sums = [f"s{k}_{v}" for k in kernels for v in parts]
        slot = {f"s{k}_{v}": f"kq[{k * vectors + v}]" for k in kernels for v in parts}
        stores = [f"                    {{ {r} *restrict zk = z + (long){row.format(k=k)} * "
                  f"{SAMPLES}; "
                  + " ".join(self.vector_store(f"zk + {v * per}", f"s{k}_{v}", bias.format(k=k))
                             for v in parts) + " }" for k in kernels]
        first, end, array = ("0", taps, "") if kept is None else kept
        return [
            "                {",
            *([] if kept is None else
              [f"                    vector_sum *restrict kq = {array} + q * {vectors};"]),
            "                    vector_sum " + ", ".join(
                f"{s} = {'{0}' if kept is None else slot[s]}" for s in sums) + ", "
            + ", ".join(f"x{v}" for v in parts) + ", u;",
            f"                    for (t = {first}; t < {end}; t++) {{",
            f"                        const {r} *restrict xt = "
            f"{inputs or f'x + (long){offsets}[t] * {SAMPLES}'};",
            "                        " + " ".join(f"memcpy(&x{v}, xt + {v * per}, sizeof x{v}); "
                                                f"IN_REGISTER(x{v});" for v in parts),
            f"                        const {r} *restrict wq = {first_weight};",
            *[f"                        {{ const {r} wk = wq[{k * weight_step}]; "
              + " ".join(f"s{k}_{v} += x{v} * wk;" for v in parts) + " }" for k in kernels],
            "                    }",
            *(stores if kept is None else [
                f"                    if ({end} < {taps}) {{ "
                + " ".join(f"{slot[s]} = {s};" for s in sums) + " } else {", *stores,
                "                    }"]),
            "                }"]

    def copies(self, rows: str, cols: str, lengths: str, w: str, n: int,
               bias: str | None, steps: str | None) -> None:
        """Copy runs (carried values): ``z[rows[i] + k] += w[i] * h[cols[i] + k * step]``
        for every sample, or stored with the row's bias and clamp. With the vector
        extension, a vector of samples at a time: the helpers' loop vectorizer is off,
        and GCC had left the loop scalar, one sample a multiply-add (DenseNet121's
        carried values, a tenth of its time at batch 16)."""
        r = self.real
        row_bias = "0" if bias is None else f"{bias}[i]"
        stored = self.store("zo[j]", "wi * hi[j]", row_bias)
        vector = ("{ vector_sum y, u; memcpy(&y, hi + j, sizeof y); "
                  + self.vector_store("zo + j", "wi * y", row_bias) + " }")

        def each(count: str) -> list[str]:
            """``zo[j]`` from ``hi[j]`` for ``j`` below ``count``."""
            return ["#ifdef VECTOR_BYTES",
                    f"        for (j = 0; j < {count}; j += VECTOR_LANES) {vector}",
                    "#else", f"        for (j = 0; j < {count}; j++) {stored}", "#endif"]

        if steps is not None:  # a column step: each value's sixteen samples at a time
            self.helper([
                f"    for (i = 0; i < {n}; i++) {{",
                f"        const long step = (long){steps}[i] * {SAMPLES};",
                f"        const {r} wi = {w}[i];",
                "        long k;",
                f"        for (k = 0; k < {lengths}[i]; k++) {{",
                f"            {r} *restrict zo = z + ((long){rows}[i] + k) * {SAMPLES};",
                f"            const {r} *restrict hi = h + (long){cols}[i] * {SAMPLES} + k * step;",
                *[line if line.startswith("#") else "    " + line
                  for line in each(str(SAMPLES))],
                "        }", "    }"])
            return
        self.helper([
            f"    for (i = 0; i < {n}; i++) {{",
            f"        {r} *restrict zo = z + (long){rows}[i] * {SAMPLES};",
            f"        const {r} *restrict hi = h + (long){cols}[i] * {SAMPLES};",
            f"        const {r} wi = {w}[i];",
            *each(f"(long){lengths}[i] * {SAMPLES}"),
            "    }"])

    def csr(self, row: str, value: str, cols: str, head: list[str], begin: str, end: str,
            bias: str | None) -> None:
        """CSR rows: the loop ``head`` over them (``c_layers.LayerWriter.csr``, two
        blocks); ``row``, ``begin``, ``end`` and ``bias`` are C expressions of ``i`` (and
        a run's fields), ``value`` one of ``j``."""
        r = self.real
        self.helper([
            *head,
            f"            {r} *restrict zi = z + (long)({row}) * {SAMPLES};",
            *self.sample_sums(12, f"j = {begin}; j < {end}; j++", value,
                              f"h + (long)({cols}[j]) * {SAMPLES}", "zi",
                              "0" if bias is None else bias),
            "        }", "    }"])

    def activation(self, start: int, stop: int, name: str, alpha: float) -> None:
        if self.stored is not None:  # applied as the parts stored
            return
        self.lines += activation_loop(self.real, start * SAMPLES, stop * SAMPLES, name, alpha)
