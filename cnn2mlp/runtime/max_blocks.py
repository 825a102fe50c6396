"""Max pooling as the runtime's own row form: the MLP's max-pool layers found and run as one
max over each window's taps.

``maxpool-to-relu`` writes a max pool as a tournament of ReLU layers through ``max(a, b) =
b + relu(a - b)`` (and ``b = relu(b) - relu(-b)`` where ``b`` may be negative): each level
is a pass through memory, and the last is a linear map. The file keeps those layers (they
are the MLP); at load, the runtime finds every run of layers that computes, for each of its
outputs, the maximum of a set of the values the run reads, and runs it as that maximum.

Nothing is taken on trust: the sets come from the layers themselves, by a symbolic reading
of what each neuron computes, and a run is taken only where that reading proves it. A
neuron is one of

- ``M(S)``: ``max(S)`` (a value of the run's input is ``M({j})``),
- ``R(S)``: ``relu(max(S))``, for a set not proven ``>= 0``,
- ``N(S)``: ``relu(-max(S))``,
- ``D(S, T)``: ``relu(max(S) - max(T))``,

and a row's sum of them, with weights ±1 and no bias, reduces to a sum of maxima by the
two identities the tournament uses: ``D(S, T) + max(T) = max(S ∪ T)`` and ``R(S) - N(S) =
max(S)``. ``relu(max(S))`` is ``max(S)`` where the run's input is proven ``>= 0`` on all of
``S`` (the layer before is a ReLU, or a clamp at 0). A run ends at a layer whose every row is
an ``M``; any row the reading does not cover (another weight, a bias, another activation,
an unmatched pair) ends the search there, and the layers run as they are.

The maximum is exact where ``b + relu(a - b)`` rounds (``a - b``, then ``+ b``): the row form
is the true maximum, within the MLP's float rounding of it. A NaN in a window gives NaN, as
the layers do; where a window holds infinities and the layers compute ``inf - inf`` (NaN),
the row form gives the maximum.

A row that reads nothing (no weight, no bias) is the constant zero: a padded map's border,
where a max pool follows a zero padding (Keras's ``ZeroPadding2D`` before ResNet50's and
DenseNet121's first pool). An entry that reads it adds an exact zero, and so does one that
reads ``N(S)`` where ``S`` is proven ``>= 0`` (the tournament passes a value it could not
prove ``>= 0`` on as ``relu(v) - relu(-v)``; the run's input may be): the reading skips
both. A border window's ``b + relu(a - 0)`` is then ``b + relu(a)``, which reads as the max
over the window's values of the map, its zeros left out: exact where they are ``>= 0``
(``relu(a)`` is ``R`` otherwise, and a run with an ``R`` left is not taken). A window of
zeros alone is no max of the run's input: a run with one is not taken.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.activations import BY_CODE, BY_NAME
from ..ir.activations import IDENTITY as IDENTITY_ACTIVATION
from ..ir.activations import RELU as RELU_ACTIVATION
from ..ir.index_runs import run_bounds
from ..ir.mlp import MlpLayer
from ..ir.weights import as_csr, is_structured

#: a row of a tournament layer reads a few neurons: rows with more end the search
MAX_ENTRIES = 8
#: windows of more taps than this are not followed (a global pool over a large map)
MAX_TAPS = 256
KIND_M, KIND_R, KIND_N, KIND_D, KIND_X = range(5)
#: an entry that reads a neuron known to be zero (in a row's reading only)
KIND_ZERO = 5
RELU, IDENTITY = RELU_ACTIVATION.code, IDENTITY_ACTIVATION.code
#: the activations a tournament's rows have
TOURNAMENT = {RELU_ACTIVATION.name, IDENTITY_ACTIVATION.name}


@dataclass
class MaxGroup:
    """``out[rows[i]] = max_t h[bases[i] + offsets[t]]``: the rows of one window shape."""

    offsets: np.ndarray  # (t,) int64, ascending, offsets[0] == 0
    rows: np.ndarray     # (m,) int64
    bases: np.ndarray    # (m,) int64

    def runs(self) -> np.ndarray:
        """(r, 5) int64: (first row, row step, first base, base step, length) of the
        greedy runs in which rows and bases both step evenly."""
        starts, lengths = run_bounds(np.column_stack([self.rows, self.bases]))
        following = np.minimum(starts + 1, len(self.rows) - 1)
        row_step = np.where(lengths > 1, self.rows[following] - self.rows[starts], 0)
        base_step = np.where(lengths > 1, self.bases[following] - self.bases[starts], 0)
        return np.column_stack([self.rows[starts], row_step, self.bases[starts], base_step,
                                lengths]).astype(np.int64)


@dataclass
class MaxLayer:
    """A run of the MLP's layers that computes, for each output, the max of some inputs."""

    n_in: int
    n_out: int
    groups: list[MaxGroup]
    replaces: int            # how many of the MLP's layers it runs
    nonneg: np.ndarray       # (n_out,) bool: every value of the window proven >= 0

    def apply(self, h: np.ndarray) -> np.ndarray:
        """h (n_in, B) → (n_out, B), NaN propagating (numpy's maximum)."""
        out = np.empty((self.n_out,) + h.shape[1:], h.dtype)
        for group in self.groups:
            value = h[group.bases + group.offsets[0]]
            for offset in group.offsets[1:]:
                value = np.maximum(value, h[group.bases + offset])
            out[group.rows] = value
        return out


# ---------------------------------------------------------------- the symbolic reading
@dataclass
class Symbols:
    """What each neuron of a layer computes from the run's input (see the module)."""

    kind: np.ndarray    # (n,) int8
    first: np.ndarray   # (n, k) int64: S, sorted, padded with ``pad`` at the end
    second: np.ndarray  # (n, k2) int64: T of a D, padded likewise


def padded(a: np.ndarray, width: int, pad: int) -> np.ndarray:
    if a.shape[1] >= width:
        return a
    return np.concatenate([a, np.full((len(a), width - a.shape[1]), pad, a.dtype)], axis=1)


def same_sets(a: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    width = max(a.shape[1], b.shape[1])
    return (padded(a, width, pad) == padded(b, width, pad)).all(axis=1)


def union(a: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Each row's union of the sets in ``a`` and ``b``, sorted, padded, trimmed."""
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    repeated = np.zeros_like(both, dtype=bool)
    repeated[:, 1:] = both[:, 1:] == both[:, :-1]
    both[repeated] = pad
    both.sort(axis=1)
    width = max(1, int((both != pad).sum(axis=1).max(initial=1)))
    return both[:, :width]


def trimmed(a: np.ndarray, pad: int) -> np.ndarray:
    width = max(1, int((a != pad).sum(axis=1).max(initial=1)))
    return a[:, :width]


@dataclass(eq=False)
class Term:
    """A maximum with a weight, in the rows of one class: its set per row."""

    sets: np.ndarray
    coef: int


class Reader:
    """Reads the layers of a run, one after another, from the run's input."""

    def __init__(self, n_in: int, nonneg: np.ndarray) -> None:
        self.zero, self.pad = zero_and_pad(n_in)
        # the zero is >= 0, and the pad counts as such
        self.nonneg = np.append(nonneg.astype(bool), [True, True])
        identity = np.arange(n_in, dtype=np.int64)[:, None]
        self.symbols = Symbols(np.zeros(n_in, np.int8), identity,
                               np.full((n_in, 1), self.pad, np.int64))

    def step(self, data, indices, indptr, codes) -> Symbols | None:
        """The symbols of the next layer (CSR weights of ±1, no bias, ``codes`` per row),
        or None when a row reads more than MAX_ENTRIES neurons."""
        n_out = len(indptr) - 1
        lengths = np.diff(indptr)
        if n_out == 0 or lengths.max(initial=0) > MAX_ENTRIES:
            return None
        rows = np.repeat(np.arange(n_out), lengths)
        kinds = np.where(self.zero_valued()[indices], KIND_ZERO, self.symbols.kind[indices])
        positive = data > 0
        order = np.lexsort((indices, positive, kinds, rows))
        position = np.arange(len(order)) - indptr[rows]
        width = max(1, int(lengths.max(initial=1)))
        columns = np.full((n_out, width), -1, np.int64)
        columns[rows, position] = indices[order]
        code = np.zeros((n_out, width), np.int64)
        code[rows, position] = kinds[order].astype(np.int64) * 2 + positive[order] + 1
        signature = (code * (16 ** np.arange(width, dtype=np.int64))).sum(axis=1)
        kind = np.full(n_out, KIND_X, np.int8)
        first = np.full((n_out, 1), self.pad, np.int64)
        second = np.full((n_out, 1), self.pad, np.int64)
        for value in np.unique(signature):
            members = np.flatnonzero(signature == value)
            found = self.read_class(columns[members], code[members[0]], codes[members])
            if found is None:
                continue
            k, f, s = found
            kind[members] = k
            first, second = padded(first, f.shape[1], self.pad), padded(second, s.shape[1],
                                                                         self.pad)
            first[members, :f.shape[1]] = f
            second[members, :s.shape[1]] = s
        self.symbols = Symbols(kind, trimmed(first, self.pad), trimmed(second, self.pad))
        return self.symbols

    def zero_valued(self) -> np.ndarray:
        """Per neuron of the last layer read: known to be zero. The constant zero ``M({0})``;
        ``N(S) = relu(-max S)`` where ``S`` is proven >= 0 (a tournament passes a value it
        could not prove >= 0 on as ``relu(v) - relu(-v)``; the run's input may be)."""
        sym = self.symbols
        only_zero = (sym.first[:, 0] == self.zero) & \
            ((sym.first[:, 1:] == self.pad).all(axis=1))
        nonneg_set = self.nonneg[sym.first].all(axis=1)
        return ((sym.kind == KIND_M) & only_zero) | ((sym.kind == KIND_N) & nonneg_set)

    def read_class(self, columns, code, activation):
        """(kind, S, T) for rows whose entries have the same kinds and signs."""
        sym, pad, m = self.symbols, self.pad, len(columns)
        terms, pending_r, pending_n, pending_d = [], [], [], []
        for p, c in enumerate(code):
            if c == 0:
                break
            kind, coef = (c - 1) // 2, 1 if (c - 1) % 2 else -1
            col = columns[:, p]
            if kind == KIND_ZERO:  # adds an exact zero
                continue
            if kind == KIND_M:
                terms.append(Term(sym.first[col], coef))
            elif kind == KIND_R:
                pending_r.append(Term(sym.first[col], coef))
            elif kind == KIND_N:
                pending_n.append(Term(sym.first[col], coef))
            elif kind == KIND_D:
                pending_d.append((sym.first[col], sym.second[col], coef))
            else:
                return None
        for r in pending_r:  # relu(max S) - relu(-max S) = max S
            match = next((n for n in pending_n if n.coef == -r.coef and
                          same_sets(n.sets, r.sets, pad).all()), None)
            if match is None:
                return None
            pending_n.remove(match)
            terms.append(Term(r.sets, r.coef))
        if pending_n:
            return None
        if not terms and not pending_d:  # relu(0) and 0 are the constant zero
            return (np.full(m, KIND_M, np.int8), np.full((m, 1), self.zero, np.int64),
                    np.full((m, 1), pad, np.int64))
        failed = np.zeros(m, bool)
        for s, t, coef in pending_d:  # relu(max S - max T) + max T = max(S ∪ T)
            matched = np.zeros(m, bool)
            for term in terms:
                if term.coef != coef:
                    continue
                ok = ~matched & same_sets(term.sets, t, pad)
                if ok.any():
                    merged = union(s[ok], t[ok], pad)
                    term.sets = padded(term.sets, merged.shape[1], pad)
                    term.sets[ok] = padded(merged, term.sets.shape[1], pad)
                    matched |= ok
            failed |= ~matched
        return self.finish(terms, activation, failed)

    def finish(self, terms, activation, failed):
        pad = self.pad
        m = len(activation)
        kind = np.full(m, KIND_X, np.int8)
        empty = np.full((m, 1), pad, np.int64)
        relu, identity = activation == RELU, activation == IDENTITY
        if len(terms) == 1 and terms[0].coef == 1:
            sets = terms[0].sets
            nonneg = self.nonneg[sets].all(axis=1)
            kind[identity | (relu & nonneg)] = KIND_M
            kind[relu & ~nonneg] = KIND_R
            result = sets, empty
        elif len(terms) == 1:
            kind[relu] = KIND_N
            result = terms[0].sets, empty
        elif len(terms) == 2 and {t.coef for t in terms} == {1, -1}:
            plus, minus = sorted(terms, key=lambda t: -t.coef)
            kind[relu] = KIND_D
            result = plus.sets, minus.sets
        else:
            return None
        kind[failed] = KIND_X
        return kind, result[0], result[1]


def zero_and_pad(n_in: int) -> tuple[int, int]:
    """The indices of the constant zero and of the sets' padding, past a run's ``n_in``
    inputs (the pad last: a set is sorted, padded at its end)."""
    return n_in, n_in + 1


# ---------------------------------------------------------------- finding the runs
def may_be_tournament(layer: MlpLayer) -> bool:
    """Cheap tests first: ReLU or identity rows, no bias, weights of ±1, few a row."""
    if layer.weight.nnz > MAX_ENTRIES * layer.n_out or np.any(layer.bias):
        return False
    names = {layer.activation} if layer.segments is None else \
        {name for _, _, name, _ in layer.segments}
    if not names <= TOURNAMENT:
        return False
    values = [part_weights(p) for p in layer.weight.parts] if is_structured(layer.weight) \
        else [layer.weight.data]
    return all(np.all((v == 1) | (v == -1) | (v == 0)) for v in values)


def part_weights(part) -> np.ndarray:
    if hasattr(part, "kernels"):
        return part.weights
    if hasattr(part, "matrix"):
        return part.matrix.data
    return part.weights


def row_codes(layer: MlpLayer) -> np.ndarray:
    codes = np.empty(layer.n_out, np.int8)
    runs = layer.segments or ((0, layer.n_out, layer.activation, layer.alpha),)
    for start, stop, name, _ in runs:
        codes[start:stop] = BY_NAME[name].code
    return codes


def output_nonneg(item) -> np.ndarray:
    """Per output of a layer (or a max layer): proven >= 0 for every input."""
    if isinstance(item, MaxLayer):
        return item.nonneg
    codes = row_codes(item)
    nonneg = np.zeros(item.n_out, bool)
    for code in np.unique(codes):
        activation = BY_CODE[int(code)]
        if activation.clamp is None:
            continue
        lo, scale, hi = activation.clamp(item.alpha)
        if lo >= 0 and scale == 0 and hi >= 0:
            nonneg[codes == code] = True
    return nonneg


def block_at(layers: list[MlpLayer], start: int, nonneg: np.ndarray):
    """(MaxLayer, the index after it) for the longest run from ``start`` that computes
    maxima, or None."""
    reader = Reader(layers[start].n_in, nonneg)
    best = None
    for index in range(start, len(layers)):
        layer = layers[index]
        if not may_be_tournament(layer):
            break
        w = as_csr(layer.weight)
        w = w[:, :]  # a copy: the explicit zeros go, the indices are sorted
        w.eliminate_zeros()
        w.sort_indices()
        symbols = reader.step(w.data, w.indices.astype(np.int64), w.indptr.astype(np.int64),
                              row_codes(layer))
        if symbols is None or (symbols.kind == KIND_X).any() or \
                symbols.first.shape[1] > MAX_TAPS:
            break
        if (symbols.kind == KIND_M).all() and symbols.first.shape[1] > 1 and \
                not (symbols.first[:, 0] >= reader.zero).any():  # a window of zeros alone
            best = index, symbols.first
    if best is None:
        return None
    end, sets = best
    return max_layer(sets, layers[start].n_in, end - start + 1, reader.nonneg), end + 1


def max_layer(sets: np.ndarray, n_in: int, replaces: int, nonneg: np.ndarray) -> MaxLayer:
    """The max layer of each row's set of taps, rows grouped by the window's shape."""
    pad = zero_and_pad(n_in)[1]
    bases = sets[:, 0]
    relative = np.where(sets != pad, sets - bases[:, None], -1)
    shapes, shape_of = row_classes(relative)
    groups = []
    for s, shape in enumerate(shapes):
        rows = np.flatnonzero(shape_of.ravel() == s)
        groups.append(MaxGroup(shape[shape >= 0].astype(np.int64), rows, bases[rows]))
    window_nonneg = nonneg[sets].all(axis=1)
    return MaxLayer(n_in, len(sets), groups, replaces, window_nonneg)


def row_classes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_inverse=True)`` of an int64 array, the distinct
    rows found by a hash of each (checked: every row equals its class's first, else
    ``np.unique``'s sort of the rows). That sort was most of the search at 224x224
    (0.9 s of a pool's 200,704 windows)."""
    odd = np.random.default_rng(0).integers(1, 2 ** 61, rows.shape[1]) | 1
    keys = (rows * odd).sum(axis=1)  # wraps around: a hash
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    distinct = rows[first]
    if not (distinct[inverse] == rows).all():
        return np.unique(rows, axis=0, return_inverse=True)
    order = np.lexsort(distinct.T[::-1])  # as np.unique orders them
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return distinct[order], rank[inverse]


def with_max_layers(layers: list[MlpLayer]) -> list:
    """The layers, each run of them that computes maxima replaced by its MaxLayer."""
    out: list = []
    index = 0
    while index < len(layers):
        found = None
        if may_be_tournament(layers[index]):
            before = output_nonneg(out[-1]) if out else np.zeros(layers[index].n_in, bool)
            found = block_at(layers, index, before)
        if found is None:
            out.append(layers[index])
            index += 1
        else:
            out.append(found[0])
            index = found[1]
    return out
