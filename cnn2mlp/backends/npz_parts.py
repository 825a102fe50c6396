"""A structured layer in the ``.npz`` (format version 4, 5 with runs): its parts as the arrays that
generate them, and the reader that checks every index before a part is built.

Members of layer ``i`` (besides ``layer{i}.shape`` and ``layer{i}.bias``):

- ``layer{i}.parts`` (str per part): ``group``, ``copies`` or ``csr``;
- ``layer{i}.kernels{k}`` (the layer's dtype, 2-D): the kernel arrays its groups share;
- a group ``j``: ``layer{i}.part{j}.kernel_set`` (which kernel array), ``.taps``,
  ``.offsets``, ``.bases``, ``.shifts``, ``.kernel_rows``, ``.base_rows`` (integers);
- copies: ``.rows``, ``.columns``, ``.lengths``, optionally ``.steps`` (integers: a run's
  column step, 1 when absent) and ``.weights``;
- CSR rows: ``.rows``, ``.data``, ``.indices``, ``.indptr``;
- an integer member of a part may be stored as arithmetic runs instead (format version 5):
  ``<member>.runs``, rows of (start, step, length), where that takes less
  (``cnn2mlp.ir.index_runs``; a group's positions and rows, a CSR part's row pointers);
- the bias as ``layer{i}.bias``, or as runs of equal values (a convolution's bias is one
  value a channel, a carried neuron's 0): ``layer{i}.bias_values``, ``layer{i}.bias_lengths``.

Out-of-range indices, rows a group writes twice and arrays that do not fit together are
refused by member name (a forged file must not make a runtime read or write outside its
arrays).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..ir.structured import INDEX, CopyRuns, CsrRows, ProductGroup, StructuredMatrix
from ..ir.index_runs import encode
from .npz_reader import RUNS, SafeNpz

KINDS = {ProductGroup: "group", CopyRuns: "copies", CsrRows: "csr"}
GROUP_FIELDS = ("taps", "offsets", "bases", "shifts", "kernel_rows", "base_rows")


def smallest_int(a: np.ndarray) -> np.ndarray:
    """int32 where every value fits (half the bytes of the file's indices), else int64."""
    a = np.asarray(a)
    if a.size and (a.min() < -2**31 or a.max() >= 2**31):
        return a.astype(np.int64)
    return a.astype(np.int32)


def index_members(name: str, a: np.ndarray) -> dict[str, np.ndarray]:
    """An index array as arithmetic runs (``name.runs``) where they take less, else as
    :func:`smallest_int`."""
    runs = encode(a)
    return {name: smallest_int(a)} if runs is None else {f"{name}{RUNS}": smallest_int(runs)}


def structured_members(key: str, w: StructuredMatrix, dtype) -> dict[str, np.ndarray]:
    out = {f"{key}.parts": np.array([KINDS[type(p)] for p in w.parts], dtype="U6")}
    kernel_sets: dict[int, int] = {}
    for j, part in enumerate(w.parts):
        name = f"{key}.part{j}"
        if isinstance(part, ProductGroup):
            if id(part.kernels) not in kernel_sets:
                kernel_sets[id(part.kernels)] = len(kernel_sets)
                out[f"{key}.kernels{kernel_sets[id(part.kernels)]}"] = np.asarray(
                    part.kernels, dtype)
            out[f"{name}.kernel_set"] = np.array(kernel_sets[id(part.kernels)], np.int64)
            for field in GROUP_FIELDS:
                out.update(index_members(f"{name}.{field}", getattr(part, field)))
        elif isinstance(part, CopyRuns):
            for field in ("rows", "columns", "lengths"):
                out.update(index_members(f"{name}.{field}", getattr(part, field)))
            if np.any(part.steps != 1):
                out.update(index_members(f"{name}.steps", part.steps))
            out[f"{name}.weights"] = np.asarray(part.weights, dtype)
        else:
            m = part.matrix
            out.update(index_members(f"{name}.rows", part.rows))
            out[f"{name}.data"] = np.asarray(m.data, dtype)
            out.update(index_members(f"{name}.indices", m.indices))
            out.update(index_members(f"{name}.indptr", m.indptr))
    return out


def bias_members(key: str, bias: np.ndarray, dtype) -> dict[str, np.ndarray]:
    """The bias as runs of equal values where that takes less than a quarter of it."""
    bias = np.asarray(bias, dtype)
    starts = np.flatnonzero(np.concatenate([[True], bias[1:] != bias[:-1]])) if len(bias) \
        else np.zeros(0, np.int64)
    if 4 * len(starts) >= len(bias):
        return {f"{key}.bias": bias}
    lengths = np.diff(np.concatenate([starts, [len(bias)]]))
    return {f"{key}.bias_values": bias[starts], f"{key}.bias_lengths": smallest_int(lengths)}


def read_bias(npz: SafeNpz, key: str, n_out: int, dtype) -> np.ndarray:
    if f"{key}.bias_values" not in npz:
        bias = npz.array(f"{key}.bias", "f", ndim=1).astype(dtype, copy=False)
        if len(bias) != n_out:
            raise npz.fail(f"{key}.bias", f"holds {len(bias)} values for {n_out} rows")
        return bias
    values = npz.array(f"{key}.bias_values", "f", ndim=1).astype(dtype, copy=False)
    lengths = ints(npz, f"{key}.bias_lengths")
    if len(lengths) != len(values) or (len(lengths) and lengths.min() < 1) or \
            int(lengths.sum()) != n_out:
        raise npz.fail(f"{key}.bias_lengths", f"do not give one value to each of {n_out} rows")
    return np.repeat(values, lengths)


def read_structured(npz: SafeNpz, key: str, shape: tuple[int, int],
                    dtype) -> StructuredMatrix:
    kinds = npz.array(f"{key}.parts", "U", ndim=1)
    kernel_sets: dict[int, np.ndarray] = {}
    parts = []
    for j, kind in enumerate(kinds):
        name = f"{key}.part{j}"
        if kind == "group":
            parts.append(read_group(npz, key, name, shape, dtype, kernel_sets))
        elif kind == "copies":
            parts.append(read_copies(npz, name, shape, dtype))
        elif kind == "csr":
            parts.append(read_csr_rows(npz, name, shape, dtype))
        else:
            raise npz.fail(f"{key}.parts", f"names an unknown part kind {str(kind)[:20]!r}")
    return StructuredMatrix(shape, tuple(parts), np.dtype(dtype))


def ints(npz: SafeNpz, name: str) -> np.ndarray:
    return npz.integers(name, ndim=1).astype(INDEX, copy=False)


def check_range(npz: SafeNpz, name: str, low: int, high: int, n: int, what: str) -> None:
    """``low..high`` (the smallest and largest index a part forms) within ``0..n-1``."""
    if low < 0 or high >= n:
        raise npz.fail(name, f"reaches {what} {low if low < 0 else high}, outside 0..{n - 1}")


def distinct(values: np.ndarray, n: int) -> bool:
    """Whether values in 0..n-1 are distinct, in O(len + n) (a hash-based unique of
    millions of rows took seconds)."""
    return not len(values) or int(np.bincount(values, minlength=n).max()) <= 1


def sums_distinct(kernel_rows: np.ndarray, base_rows: np.ndarray, n: int) -> bool:
    """Whether every ``kernel_rows[k] + base_rows[b]`` is a row of its own: at once when
    the kernels' rows lie further apart than the positions' rows spread (a convolution's
    channels), else by counting."""
    k, b = np.sort(kernel_rows), np.sort(base_rows)
    spread = int(b[-1] - b[0]) if len(b) else 0
    if distinct(b - b[0], spread + 1) and (len(k) < 2 or int(np.diff(k).min()) > spread):
        return True
    return distinct((kernel_rows[:, None] + base_rows[None, :]).ravel(), n)


def read_group(npz, key, name, shape, dtype, kernel_sets) -> ProductGroup:
    which = int(npz.integers(f"{name}.kernel_set", ndim=0))
    if which not in kernel_sets:
        member = f"{key}.kernels{which}"
        if member not in npz:
            raise npz.fail(f"{name}.kernel_set", f"names a kernel array {member} the file "
                                                 "does not hold")
        kernels = npz.array(member, "f", ndim=2).astype(dtype, copy=False)
        kernel_sets[which] = np.ascontiguousarray(kernels)
    kernels = kernel_sets[which]
    fields = {field: ints(npz, f"{name}.{field}") for field in GROUP_FIELDS}
    n_k = len(kernels)
    if len(fields["taps"]) != len(fields["offsets"]) or len(fields["shifts"]) != n_k or \
            len(fields["kernel_rows"]) != n_k or len(fields["bases"]) != len(fields["base_rows"]):
        raise npz.fail(name, "arrays do not fit together: " + ", ".join(
            f"{f} {len(v)}" for f, v in fields.items()) + f", {n_k} kernels")
    taps = fields["taps"]
    if len(taps) and (taps.min() < 0 or taps.max() >= kernels.shape[1]):
        raise npz.fail(f"{name}.taps", f"holds a tap outside 0..{kernels.shape[1] - 1}")
    extremes = [(f, v.min(), v.max()) if len(v) else (f, 0, 0) for f, v in fields.items()]
    lo = {f: a for f, a, _ in extremes}
    hi = {f: b for f, _, b in extremes}
    if len(taps) and len(fields["bases"]) and n_k:
        check_range(npz, f"{name}.bases", lo["shifts"] + lo["bases"] + lo["offsets"],
                    hi["shifts"] + hi["bases"] + hi["offsets"], shape[1], "column")
        check_range(npz, f"{name}.base_rows", lo["kernel_rows"] + lo["base_rows"],
                    hi["kernel_rows"] + hi["base_rows"], shape[0], "row")
        if not sums_distinct(fields["kernel_rows"], fields["base_rows"], shape[0]):
            raise npz.fail(f"{name}.base_rows", "writes a row twice")
    return ProductGroup(kernels, **fields)


def read_copies(npz, name, shape, dtype) -> CopyRuns:
    rows, columns, lengths = (ints(npz, f"{name}.{f}") for f in ("rows", "columns", "lengths"))
    steps = ints(npz, f"{name}.steps") if f"{name}.steps" in npz else np.ones(len(rows), INDEX)
    weights = npz.array(f"{name}.weights", "f", ndim=1).astype(dtype, copy=False)
    if not len(rows) == len(columns) == len(lengths) == len(weights) == len(steps):
        raise npz.fail(name, "arrays do not fit together")
    if len(lengths):
        if lengths.min() < 1:
            raise npz.fail(f"{name}.lengths", "holds a run shorter than one")
        check_range(npz, f"{name}.rows", int(rows.min()), int((rows + lengths).max()) - 1,
                    shape[0], "row")
        last = columns + steps * (lengths - 1)
        check_range(npz, f"{name}.columns", int(np.minimum(columns, last).min()),
                    int(np.maximum(columns, last).max()), shape[1], "column")
        covered = np.repeat(rows, lengths) + np.arange(int(lengths.sum())) - np.repeat(
            np.cumsum(lengths) - lengths, lengths)
        if not distinct(covered, shape[0]):
            raise npz.fail(f"{name}.rows", "writes a row twice")
    return CopyRuns(rows, columns, lengths, weights, steps)


def read_csr_rows(npz, name, shape, dtype) -> CsrRows:
    rows, indices, indptr = (ints(npz, f"{name}.{f}") for f in ("rows", "indices", "indptr"))
    data = npz.array(f"{name}.data", "f", ndim=1).astype(dtype, copy=False)
    if len(indptr) != len(rows) + 1 or len(indices) != len(data) or indptr[0] != 0 or \
            indptr[-1] != len(data) or np.any(np.diff(indptr) < 0):
        raise npz.fail(name, "arrays do not form CSR rows")
    if len(rows):
        check_range(npz, f"{name}.rows", int(rows.min()), int(rows.max()), shape[0], "row")
        if not distinct(rows, shape[0]):
            raise npz.fail(f"{name}.rows", "writes a row twice")
    if len(indices):
        check_range(npz, f"{name}.indices", int(indices.min()), int(indices.max()), shape[1],
                    "column")
    matrix = sp.csr_array((data, indices, indptr), shape=(len(rows), shape[1]))
    return CsrRows(rows, matrix)
