"""How the C code finds a planned part's output rows and their biases without an entry per
neuron.

A convolution's group writes row ``rows[k, b]`` for kernel ``k`` at position ``b``; in the
matrix's usual layouts that is ``kernel_rows[k] + base_rows[b]`` (an output channel's first
row plus the position's place in the map). Stored so, a group takes ``n_k + n_b`` indices,
not ``n_k · n_b``: at 224×224 the per-pair rows and biases were 54 of MobileNetV2's 68 MB
of C. A bias is usually one value per output channel: the C code fills a layer's bias from
runs of equal values, and a part that stores its rows with their bias reads it per kernel
(per copy run, per CSR row). Whatever does not factor keeps an entry per pair, as before:
the code computes the same sums either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir.index_runs import run_bounds, run_steps

#: a bias is filled from runs when they take at most this share of its entries
RUNS_SHARE = 0.25


def base_runs(bases: np.ndarray, position_rows: np.ndarray | None = None) -> np.ndarray:
    """Maximal runs of evenly spaced bases, as rows (first index, length, first base,
    step): a feature map's row of positions is one run (step 1, or the stride). With
    ``position_rows``, runs along which those step evenly too, each row followed by (first
    row, row step): the C code then computes a position's row, keeping no entry a
    position (DenseNet121 at 224×224: 6.6 MB of its C)."""
    bases = np.asarray(bases, np.int64)
    columns = bases[:, None] if position_rows is None else np.stack(
        [bases, np.asarray(position_rows, np.int64)], axis=1)
    starts, lengths = run_bounds(columns)
    # keep runs increasing: a run whose bases do not increase is lone bases
    falling = run_steps(bases, starts, lengths) <= 0
    if falling.any():
        spread = np.where(falling, lengths, 1)
        starts = np.repeat(starts, spread) + np.arange(int(spread.sum())) - np.repeat(
            np.cumsum(spread) - spread, spread)
        lengths = np.repeat(np.where(falling, 1, lengths), spread)
    found = [starts, lengths, bases[starts], run_steps(bases, starts, lengths)]
    if position_rows is not None:
        rows = columns[:, 1]
        found += [rows[starts], run_steps(rows, starts, lengths, single=0)]
    return np.stack(found, axis=1).reshape(-1, len(found))


@dataclass(frozen=True)
class PairIndex:
    """A value per (kernel, position) pair of a group, as C arrays: ``full[k * n_b + b]``,
    or ``by_kernel[k] + by_position[b]``, or ``by_kernel[k]`` alone (``by_position`` None:
    the same value at every position)."""

    full: str | None
    by_kernel: str | None
    by_position: str | None
    n_b: int
    #: ``by_kernel[k]`` plus the position's row computed in its run of positions: the
    #: code declares ``first`` (the run's first position), ``row0`` and ``row_step``
    by_run: bool = False

    @property
    def base(self) -> str:
        """The array that a pointer to kernel 0's entries points into."""
        return self.full if self.full is not None else self.by_kernel

    def pointer(self, name: str, kernel: str, ctype: str = "int32_t") -> str:
        """Declares ``name``, of C type ``ctype``: the entries of kernel ``kernel`` (a C
        expression) onwards."""
        step = f" * {self.n_b}" if self.full is not None else ""
        return f"const {ctype} *restrict {name} = {self.base} + (long)({kernel}){step};"

    def at(self, name: str, lane, position: str) -> str:
        """The entry of kernel ``lane`` (an int or a C expression) past the pointer
        ``name``, at the position ``position`` (a C expression)."""
        if self.full is not None:
            first = lane * self.n_b if isinstance(lane, int) else f"({lane}) * {self.n_b}"
            return f"{name}[{first} + {position}]"
        if self.by_run:
            return f"({name}[{lane}] + row0 + ((long)({position}) - first) * row_step)"
        if self.by_position is None:
            return f"{name}[{lane}]"
        return f"({name}[{lane}] + {self.by_position}[{position}])"


Add = Callable[[str, np.ndarray], str]


def row_index(rows: np.ndarray, add_index: Add) -> PairIndex:
    """A group's rows (n_k, n_b), factored as kernel row + position row where they are."""
    rows = np.asarray(rows, np.int64)
    factors = factored_rows(rows)
    if factors is not None:
        return PairIndex(None, add_index("kernel_rows", factors[0]),
                         add_index("base_rows", factors[1]), rows.shape[1])
    return PairIndex(add_index("rows", rows), None, None, rows.shape[1])


def position_index(bases: np.ndarray, rows: np.ndarray,
                   add_index: Add) -> tuple[PairIndex, np.ndarray]:
    """The rows of a group run position by position, and its runs of positions
    (``base_runs``): where the position rows step evenly along the runs of bases (at most
    twice as many runs), computed in each run (``PairIndex.by_run``: six entries a run,
    none a position), else as ``row_index``."""
    runs = base_runs(bases)
    factors = factored_rows(rows)
    if factors is not None:
        joint = base_runs(bases, factors[1])
        if len(joint) <= 2 * len(runs):
            return PairIndex(None, add_index("kernel_rows", factors[0]), None,
                             np.asarray(rows).shape[1], by_run=True), joint
    return row_index(rows, add_index), runs


def indexed(values: np.ndarray, name: str, add_index: Add) -> str:
    """``values[{i}]`` as a C expression template (``{i}``: the index, a C expression):
    arithmetic where the values step evenly (a CSR part's rows and row pointers mostly do:
    no array then), else an array's entry."""
    values = np.asarray(values, np.int64)
    if len(values) > 1:
        step = int(values[1] - values[0])
        if np.array_equal(values, values[0] + step * np.arange(len(values))):
            return f"({int(values[0])}L + (long)({{i}}) * {step})"
    return f"{add_index(name, values)}[{{i}}]"


def factored_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A group's rows (n_k, n_b) as (kernel rows, position rows) whose sums they are, or
    None."""
    rows = np.asarray(rows, np.int64)
    if not rows.size:
        return None
    by_kernel, by_position = rows[:, 0], rows[0] - rows[0, 0]
    if np.array_equal(rows, by_kernel[:, None] + by_position[None, :]):
        return by_kernel, by_position
    return None


def pair_bias(bias: np.ndarray, rows: np.ndarray, add_real: Add) -> PairIndex:
    """The bias of a group's rows: one value a kernel where it is the same at every
    position (bit for bit: a -0.0 bias would change a -0.0 sum's sign), else one a pair."""
    values = np.asarray(bias)[np.asarray(rows, np.int64)]
    n_b = values.shape[1] if values.ndim == 2 else 0
    if values.size and same_along_rows(values):
        return PairIndex(None, add_real("kernel_bias", values[:, 0]), None, n_b)
    return PairIndex(add_real("pair_bias", values), None, None, n_b)


def same_along_rows(values: np.ndarray) -> bool:
    bits = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), values.shape[1], -1)
    return bool((bits == bits[:, :1]).all())


def run_bias(bias: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """Each copy run's bias, where every row of every run has its run's (bit for bit)."""
    bias = np.ascontiguousarray(bias)
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    first = bias[starts]
    expanded = np.repeat(first, lengths)
    run_first = np.cumsum(lengths) - lengths  # each run's first place in the expansion
    rows = np.arange(int(lengths.sum())) + np.repeat(starts - run_first, lengths)
    return first if np.array_equal(bias[rows].view(np.uint8),
                                   expanded.view(np.uint8)) else None


@dataclass(frozen=True)
class BiasFill:
    """The C loop that writes a layer's bias into its output: from runs of equal values
    (``values``, each run's end in ``ends``) or from one entry a row (``plain``)."""

    plain: str | None
    values: str | None
    ends: str | None
    n_runs: int
    n_out: int

    def lines(self, real: str, target: str) -> list[str]:
        """The loop, ``target`` the C statement that writes row ``i``'s bias ``v`` (the
        function declares ``i`` and ``j``)."""
        if self.plain is not None:
            return [f"    for (i = 0; i < {self.n_out}; i++) {{",
                    f"        const {real} v = {self.plain}[i];",
                    "        " + target, "    }"]
        return ["    i = 0;",
                f"    for (j = 0; j < {self.n_runs}; j++) {{",
                f"        const {real} v = {self.values}[j];",
                f"        for (; i < {self.ends}[j]; i++) " + target, "    }"]


def float_bits(values: np.ndarray) -> np.ndarray:
    """A float32 or float64 array's values as integers of their bits (-0.0 is not 0.0, a
    NaN equals itself): one comparison a value."""
    values = np.ascontiguousarray(values)
    return values.view(np.int64 if values.itemsize == 8 else np.int32)


def bias_fill(bias: np.ndarray, add_index: Add, add_real: Add) -> BiasFill:
    """The fill of ``bias``: from runs where they take at most RUNS_SHARE of its entries."""
    bias = np.ascontiguousarray(bias)
    n = len(bias)
    bits = float_bits(bias)
    starts = np.flatnonzero(np.r_[True, bits[1:] != bits[:-1]]) if n else \
        np.zeros(0, np.int64)
    if n and len(starts) <= RUNS_SHARE * n:
        ends = np.r_[starts[1:], n]
        return BiasFill(None, add_real("bias_values", bias[starts]),
                        add_index("bias_ends", ends), len(starts), n)
    return BiasFill(add_real("bias", bias), None, None, 0, n)


def fill_ranges(fill: BiasFill, bias: np.ndarray, ranges: list[tuple[int, int]],
                add_index: Add, add_real: Add, real: str) -> list[str]:
    """The bias written first in the rows of ``ranges`` only (the others stored with their
    bias by a part); the arrays of ``fill``, the whole layer's (the batched code's), unused
    here."""
    unused = [x for x in (fill.plain, fill.values, fill.ends) if x is not None]
    lines = ["    " + " ".join(f"(void){x};" for x in unused)]
    for start, stop in ranges:
        lines += bias_fill(bias[start:stop], add_index, add_real).lines(
            real, f"z[{start} + i] = v;")
    return lines


#: CSR rows run in runs (``csr_runs``) when there are at most this share of them
CSR_RUNS_SHARE = 0.125
#: what a run of CSR rows holds: its first row, length, first output row and step, first
#: entry, entries a row
CSR_RUN_FIELDS = ("first", "n", "row0", "row_step", "ptr0", "count")


def csr_runs(rows: np.ndarray, indptr: np.ndarray) -> np.ndarray | None:
    """The CSR rows as runs along which the output rows step evenly and each row holds as
    many entries (a tournament's rows between its map rows' ends), when there are more
    than one and at most CSR_RUNS_SHARE of the rows; else None."""
    rows, indptr = np.asarray(rows, np.int64), np.asarray(indptr, np.int64)
    if len(rows) < 2:
        return None
    counts = np.diff(indptr)  # one count a run: its rows' entries begin count apart
    bounds = run_bounds(np.stack([rows, indptr[:-1]], axis=1),
                        most=int(CSR_RUNS_SHARE * len(rows)), constant=counts)
    if bounds is None or len(bounds[0]) < 2:
        return None
    first, n = bounds
    return np.stack([first, n, rows[first], run_steps(rows, first, n, single=0),
                     indptr[first], counts[first]], axis=1)


def run_lines(add_index, runs: np.ndarray, indent: str) -> list[str]:
    """Declares run ``t``'s fields (CSR_RUN_FIELDS), each from an array of the runs."""
    return [f"{indent}const long {field} = {add_index(f'csr_run_{field}', column)}[t];"
            for field, column in zip(CSR_RUN_FIELDS, runs.T)]


def run_row_lines(run_rows: list[str], indent: str) -> list[str]:
    """Declares a run's first row and row step (``PairIndex.by_run``), when it has them."""
    if not run_rows:
        return []
    return [f"{indent}const long row0 = {run_rows[0]}[j], row_step = {run_rows[1]}[j];"]


#: partial sums of a CSR row at one sample: one sum waits on each multiply-add's latency
#: (ShuffleNetV2 at 32x32: its 1x1 stage's shuffled 464-row layers, 116-232 entries a
#: row, ran at 1.35 G multiply-adds/s in one sum)
CSR_SUMS = 4
#: the row's sum of its partial sums, in the order every form of the row adds them
CSR_TOTAL = "(a0 + a1) + (a2 + a3)"


def csr_row_sum(real: str, value: str, cols: str, begin: str, end: str) -> list[str]:
    """A CSR row's terms ``value * h[cols[j]]`` for ``j`` in [begin, end) (C expressions;
    ``value`` an entry ``[j]`` of an array) into ``a0`` to ``a3``, term ``j`` into
    ``a{(j - begin) % 4}``: the row's sum is ``CSR_TOTAL``. (Measured side by
    side on ShuffleNetV2 at 32x32, batch 1, against this form: stepping ``j`` term by term
    2-3 % slower; the last terms as three ``if (j + k < end)`` statements 1.8x slower, GCC
    vectorizing them differently.)"""
    sums = range(CSR_SUMS)

    def term(k: int) -> str:
        return f"a{k} += {value.replace('[j]', f'[j + {k}]')} * h[{cols}[j + {k}]];"

    return [f"            {real} " + ", ".join(f"a{k} = 0" for k in sums) + ";",
            f"            for (j = {begin}; j + {CSR_SUMS} <= {end}; j += {CSR_SUMS}) {{ "
            + " ".join(term(k) for k in sums) + " }",
            f"            {{ int k = 0; for (; j < {end}; j++, k++) {{ const {real} v = {value} * "
            f"h[{cols}[j]]; if (k == 0) a0 += v; else if (k == 1) a1 += v; else a2 += v; }} }}"]
