"""How an MLP runs, planned once when it loads, the same for every engine.

For each layer ``h = f(W h + b)`` the plan holds the parts that compute ``W h`` (row groups,
copies, CSR rows: ``structure.py``), or a dense matrix for a layer that is mostly
non-zeros, and how each row is finished:

- a row that one part writes takes its bias and its activation as that part stores it,
  when the activation is a clamp ``v = z if z > lo else scale * z``, then ``min(v, hi)``
  (identity, ReLU, leaky ReLU, bounded ReLU: the common ones); other activations are
  applied afterwards, in one pass over those rows;
- a row that several parts write (a convolution plus its shortcut from another input
  block) is zeroed first, every part adds to it, and the pass afterwards adds the bias and
  applies the activation; so is a row that no part writes (its bias alone).

Before that, a layer whose equal columns pay to merge is preceded by the layer that sums
them (``columns.py``). The engines (``numba_engine.py``, ``scipy_engine.py``) run the plan.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..ir.activations import BY_CODE, BY_NAME, CATALOGUE
from ..ir.mlp import MlpLayer
from ..ir.structured import CopyRuns, ProductGroup, StructuredMatrix
from ..ir.weights import as_csr, astype, is_structured
from .columns import runtime_layers
from .max_blocks import MaxLayer, with_max_layers
from .structure import (MIN_COPY_RUN, MIN_GROUP_ROWS, Part, find_parts,
                        rows_of)
from .structure import ProductGroup as RuntimeGroup

#: layers with more non-zeros than this fraction of their entries run as dense products
#: (measured in benchmarks/bench_runtime.py: CSR loses to a dense kernel above a third)
DENSE_THRESHOLD = 0.3
#: ...unless the dense copy would exceed this many bytes, or row groups hold at least
#: this share of the non-zeros (a 3×3 convolution on a 3×3 map is 36 % dense, but nine
#: groups of rows that each read all their columns: a dense product would do 2.8x the work)
DENSE_LIMIT = 256 * 2**20
GROUPED_ENOUGH = 0.9
#: layers this dense run as dense products without looking for groups
ALL_DENSE = 0.9

#: activations the kernels apply as they store: (lo, scale, hi) of the clamp, from alpha
CLAMPS = {a.name: a.clamp for a in CATALOGUE if a.clamp is not None}
CLAMP_CODES = [BY_NAME[name].code for name in CLAMPS]


@dataclass
class LayerPlan:
    """One layer as the engines run it (arrays in the working precision)."""

    source: MlpLayer
    weight: "sp.csr_array | StructuredMatrix"
    bias: np.ndarray
    codes: np.ndarray            # activation code per row (the catalogue's)
    alphas: np.ndarray
    dense: np.ndarray | None     # the whole matrix, for a layer mostly non-zeros
    parts: list[Part]
    shared: np.ndarray           # rows several parts write, or none: zeroed, finished after
    #: per row: the store of its only part adds this bias and applies the clamp below
    store_bias: np.ndarray
    lo: np.ndarray
    scale: np.ndarray
    hi: np.ndarray
    #: per row: 1 when parts add to it (a shared row), 0 when its part stores it
    accumulate: np.ndarray
    finish: np.ndarray           # rows finished after the parts: bias and/or activation
    finish_bias: np.ndarray      # the bias the finishing pass adds (0 where it was stored)

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def uniform(self) -> int | None:
        """The activation code every row has, if one."""
        codes = self.codes
        return int(codes[0]) if len(codes) and (codes == codes[0]).all() else None


def row_activations(layer: MlpLayer) -> tuple[np.ndarray, np.ndarray]:
    codes = np.empty(layer.n_out, np.int8)
    alphas = np.empty(layer.n_out, np.float64)
    runs = layer.segments or ((0, layer.n_out, layer.activation, layer.alpha),)
    for start, stop, name, alpha in runs:
        codes[start:stop] = BY_NAME[name].code
        alphas[start:stop] = alpha
    return codes, alphas


def plan_layer(layer: MlpLayer, dtype) -> LayerPlan:
    dtype = np.dtype(dtype)
    w = astype(layer.weight, dtype)
    n_out, n_in = w.shape
    codes, alphas = row_activations(layer)
    bias = np.asarray(layer.bias, dtype)
    dense = None
    density = w.nnz / max(1, n_out * n_in)
    fits = n_out * n_in * dtype.itemsize <= DENSE_LIMIT
    parts, touched = [], np.ones(n_out, np.int64)
    if is_structured(w):  # the parts the compiler kept: no search
        parts, touched = structured_parts(w)
    elif density < ALL_DENSE or not fits:
        blocks = None if layer.input_blocks is None else np.asarray(layer.input_blocks)
        parts, touched = find_parts(w.data, w.indices.astype(np.int64),
                                    w.indptr.astype(np.int64), n_in, blocks)
    if fits and density > DENSE_THRESHOLD and (density >= ALL_DENSE or
                                               grouped_share(parts, w.nnz) < GROUPED_ENOUGH):
        dense = np.ascontiguousarray(as_csr(w).toarray())
        parts, touched = [], np.ones(n_out, np.int64)
    shared = touched != 1
    clamped = np.isin(codes, CLAMP_CODES)
    lo, scale, hi = store_clamps(codes, alphas, clamped)
    stored = ~shared  # the row's only part stores it, with the bias
    store_bias = np.where(stored, bias, 0).astype(dtype)
    finish = np.flatnonzero(shared | ~clamped)
    finish_bias = np.where(stored, 0, bias).astype(dtype)
    return LayerPlan(layer, w, bias, codes, alphas.astype(dtype), dense, parts,
                     np.flatnonzero(shared), store_bias, lo.astype(dtype),
                     scale.astype(dtype), hi.astype(dtype), shared.astype(np.uint8),
                     finish, finish_bias)


def structured_parts(w: StructuredMatrix) -> tuple[list[Part], np.ndarray]:
    """The runtime's parts of a structured weight, read from its own parts: its product
    groups and copy runs, strided ones too, as they are (those too small for a kernel of
    their own join the CSR rows; a group of few weights, a max pool's pairs, is kept: the
    engines run it position by position), the CSR rows searched for copies alone: the
    compiler had their groups. ``touched``: how many parts write each row."""
    groups, copies, rest = [], [], []
    for part in w.parts:
        if isinstance(part, ProductGroup) and len(part.kernels) * len(part.bases) >= \
                MIN_GROUP_ROWS:
            groups.append(RuntimeGroup(np.ascontiguousarray(part.weights), part.offsets,
                                       part.bases, pair_rows(part.rows, w.shape[0]),
                                       part.shifts))
        elif isinstance(part, CopyRuns) and np.all(part.lengths >= MIN_COPY_RUN):
            copies.append(part)
        else:
            rest.append(part)
    copy_arrays = tuple(np.concatenate([getattr(c, k) for c in copies] or [np.zeros(0)])
                        .astype(np.int64 if k != "weights" else np.float64)
                        for k in ("rows", "columns", "lengths", "weights", "steps"))
    parts = [Part(groups, copy_arrays, np.zeros(0, np.int64),
                  (np.zeros(0, w.dtype), np.zeros(0, np.int64), np.zeros(1, np.int64)))]
    if rest:
        matrix = w.with_parts(rest).to_csr()
        found, _ = find_parts(matrix.data, matrix.indices.astype(np.int64),
                              matrix.indptr.astype(np.int64), w.shape[1], groups=False)
        parts += [without_empty_rows(part) for part in found]
    touched = np.zeros(w.shape[0], np.int64)
    for part in parts:
        for group in part.groups:
            touched[group.rows.ravel()] += 1
        for start, length in zip(part.copies[0], part.copies[2]):
            touched[start:start + length] += 1
        touched[part.rest_rows] += 1
    return parts, touched


def pair_rows(rows: np.ndarray, n_out: int) -> np.ndarray:
    """A group's (kernel, position) rows as int32 where they fit: an entry a grouped
    neuron, kept for every layer (DenseNet121 at 224×224: 68 -> 34 MB)."""
    return rows.astype(np.int32) if n_out < 2**31 else rows


def without_empty_rows(part: Part) -> Part:
    """The part without the CSR rows it holds no entry of (rows other parts write: the
    rest's CSR spans every row of the layer)."""
    data, indices, indptr = part.rest
    keep = np.flatnonzero(np.diff(indptr) > 0)
    return Part(part.groups, part.copies, part.rest_rows[keep],
                rows_of(data, indices, indptr, keep))


def grouped_share(parts: list[Part], nnz: int) -> float:
    """The share of a layer's non-zeros that its row groups compute."""
    grouped = sum(g.rows.size * len(g.offsets) for part in parts for g in part.groups)
    return grouped / max(1, nnz)


def store_clamps(codes, alphas, clamped):
    """Per row, the clamp its store applies: the activation's, or the identity for rows
    whose activation comes after (not a clamp) or that several parts write."""
    n = len(codes)
    lo, scale, hi = np.full(n, -np.inf), np.ones(n), np.full(n, np.inf)
    for code in np.unique(codes):
        name = BY_CODE[int(code)].name
        if name not in CLAMPS:
            continue
        rows = np.flatnonzero((codes == code) & clamped)
        for alpha in np.unique(alphas[rows]):
            chosen = rows[alphas[rows] == alpha]
            lo[chosen], scale[chosen], hi[chosen] = CLAMPS[name](float(alpha))
    return lo, scale, hi


def iter_plans(layers: list[MlpLayer], dtype,
               max_layers: bool = True) -> Iterator["LayerPlan | MaxLayer"]:
    """Every layer's plan, the summing layers of merged equal columns included, and each
    run of layers that computes a max pool as its MaxLayer (``max_blocks.py``; with
    ``max_layers``, else the layers as they are), one at a time: an engine that keeps less
    than a plan (its per-row store rules take about 30 bytes a neuron) never holds every
    layer's at once."""
    planned = runtime_layers(layers)
    for layer in with_max_layers(planned) if max_layers else planned:
        yield layer if isinstance(layer, MaxLayer) else plan_layer(layer, dtype)
