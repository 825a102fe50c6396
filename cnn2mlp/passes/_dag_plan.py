"""How linearize-dag plans a DAG's layers (helpers of ``linearize_dag.py``, not a pass):
every linear value as an affine form of *sources* (activation outputs and the input),
composed exactly in sparse float64; each source's depth and last use; and the size model
that decides which linear values are worth keeping as layers of their own."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from ..ir import Graph, Node, get_op
from ..errors import CompileError
from ..ir.activations import IDENTITY as IDENTITY_NEURON
from ..ir import weights
from ..ir.linear import selection
from ..ir.ops import sum_coeffs
from ..ir.precision import real
from ._compose import materializes, nnz, product_nnz_bound

#: ops that are linear maps of their inputs once the chain passes ran
LINEAR_OPS = {"Dense", "Sum", "Concat", "Select", "Reshape", "Identity"}
IDENTITY = IDENTITY_NEURON.op


def is_chain(graph: Graph) -> bool:
    """Dense and activation nodes one after another: nothing to linearize."""
    current = graph.input
    for node in graph.nodes:
        if list(node.inputs) != [current] or len(graph.consumers(current)) != 1 or \
                node.op not in ("Dense", "Reshape") and not get_op(node.op).activation:
            return False
        current = node.output
    return current == graph.output


# ----------------------------------------------------------------------------- affine forms
class Affine:
    """``sum_s M_s s + bias`` over sources ``s``; ``M_s`` is None for the identity."""

    __slots__ = ("terms", "bias", "size")

    def __init__(self, terms: dict[str, sp.csr_array | None], bias: np.ndarray | None,
                 size: int) -> None:
        self.terms, self.bias, self.size = terms, bias, size

    @classmethod
    def source(cls, name: str, size: int) -> "Affine":
        return cls({name: None}, None, size)

    def map(self, matrix: sp.csr_array) -> "Affine":
        """``matrix @ self``: a product of two weight matrices is formed in float64 and
        rounded once; an identity term shares ``matrix`` (no copy)."""
        terms = {s: matrix if m is None else weights.product(matrix, m, real())
                 for s, m in self.terms.items()}
        bias = None
        if self.bias is not None:
            bias = weights.matvec(weights.astype(matrix, np.float64),
                                  np.asarray(self.bias, np.float64)[None, :])[0]
        return Affine(terms, bias, matrix.shape[0])


def add_affines(parts: list[tuple[sp.csr_array, Affine]], size: int) -> Affine:
    """``sum_i P_i a_i`` for matrices ``P_i`` (size × a_i.size)."""
    terms: dict[str, sp.csr_array] = {}
    bias = None
    for matrix, affine in parts:
        mapped = affine.map(matrix)
        for s, m in mapped.terms.items():
            terms[s] = m if s not in terms else weights.add(terms[s], m)
        if mapped.bias is not None:
            bias = mapped.bias if bias is None else bias + mapped.bias
    return Affine(terms, bias, size)


def linear_affine(graph: Graph, node: Node, args: list[Affine]) -> Affine:
    size = graph.values[node.output].size
    if node.op == "Dense":
        w = node.attrs["weight"]  # a dense array is read as CSR here (counts, sums)
        w = w if weights.is_structured(w) else weights.as_csr(w)
        out = args[0].map(weights.astype(w, real()))
        b = node.attrs.get("bias")
        if b is not None:
            out.bias = np.asarray(b, np.float64) + (0 if out.bias is None else out.bias)
        return out
    if node.op == "Sum":
        return add_affines([(sp.identity(a.size, real(), "csr") * real().type(c), a)
                            for c, a in zip(sum_coeffs(node), args)], size)
    if node.op == "Concat":
        return add_affines(list(zip(concat_placements(graph, node), args)), size)
    if node.op == "Select":
        return args[0].map(selection(node.attrs["indices"], args[0].size))
    return args[0]  # Reshape, Identity: the flat vector is unchanged


def concat_placements(graph: Graph, node: Node) -> list[sp.csr_array]:
    """For each input, the 0/1 matrix that puts its entries where Concat puts them."""
    axis = node.attrs["axis"]
    shapes = [graph.shape(i) for i in node.inputs]
    out_shape = graph.shape(node.output)
    n_out = int(np.prod(out_shape))
    grid = np.arange(n_out).reshape(out_shape)
    placements, start = [], 0
    for shape in shapes:
        index = [slice(None)] * len(out_shape)
        index[axis] = slice(start, start + shape[axis])
        rows = grid[tuple(index)].ravel()
        n_in = len(rows)
        placements.append(sp.csr_array((np.ones(n_in, real()), (rows, np.arange(n_in))),
                                       shape=(n_out, n_in)))
        start += shape[axis]
    return placements


# ----------------------------------------------------------------------------- planning
@dataclass
class Plan:
    pre: dict[str, Affine]           # activation output → its pre-activation
    depth: dict[str, int]            # source → depth (input 0)
    activations: dict[str, Node]     # activation output → node
    output: Affine                   # the graph output over sources
    last_use: dict[str, int]         # source → the last layer that must hold it
    layers: int                      # L: layers of activations
    final_linear: bool               # a linear output layer L + 1 follows
    kept: list[str]                  # linear values kept as layers of identity neurons


def plan_layers(graph: Graph, keep: Callable | None = None) -> Plan:
    """Every linear value as an affine form of sources, composed exactly. ``keep(graph,
    value, affine, depth, live)`` may *keep* a linear value, or its part of heavy terms
    (see :func:`worth_keeping`, the size model): that part becomes a source of its own, a
    layer of identity neurons (targets that can hold one), and readers read it instead of
    composing its matrices into theirs."""
    memo: dict[str, Affine] = {graph.input: Affine.source(graph.input,
                                                          graph.values[graph.input].size)}
    kept: list[str] = []
    live_ids = live_nodes(graph)
    remaining = {name: sum(1 for c in graph.consumers(name) if id(c) in live_ids)
                 for name in graph.values}
    pre: dict[str, Affine] = {}
    activations: dict[str, Node] = {}
    depth = {graph.input: 0}
    sizes = {graph.input: graph.values[graph.input].size}  # of every source
    levels = value_levels(graph, live_ids)
    for node in graph.nodes:
        if id(node) not in live_ids:  # nodes the output does not need get no neurons
            continue
        args = [memo[i] for i in node.inputs]
        op = get_op(node.op)
        if op.activation and node.op != IDENTITY:
            out = node.output
            pre[out] = args[0]
            activations[out] = node
            depth[out] = 1 + max((depth[s] for s in args[0].terms), default=0)
            sizes[out] = graph.values[out].size
            memo[out] = Affine.source(out, sizes[out])
        elif node.op in LINEAR_OPS:
            out = node.output
            memo[out] = linear_affine(graph, node, args)
            part = keep(graph, out, memo[out], depth, sizes, live_ids, levels) if keep \
                else None
            if part is not None:  # the kept part becomes a source; the rest stays composed
                name = out if part == "whole" else f"{out}.kept"
                kept_part, rest = (memo[out], None) if part == "whole" else \
                    heavy_rows(memo[out], name)
                pre[name] = kept_part
                activations[name] = Node(IDENTITY, [out], [name], {}, f"{node.name}_kept")
                depth[name] = 1 + max((depth[s] for s in kept_part.terms), default=0)
                memo[out] = Affine({name: None}, None, kept_part.size) if rest is None else \
                    rest
                sizes[name] = kept_part.size
                kept.append(name)
        else:
            raise CompileError(f"node {node.name!r} ({node.op}) is neither linear nor an "
                               "element-wise activation; it must be lowered before "
                               "linearize-dag (check --passes)")
        for i in set(node.inputs):  # free affine forms nobody else reads
            remaining[i] -= 1
            if remaining[i] == 0 and i != graph.output and i in memo and i not in activations:
                del memo[i]
    output = memo[graph.output]
    layers = max(depth.values())
    final_linear = not (graph.output in activations and depth[graph.output] == layers)
    last_use: dict[str, int] = {}
    for out, affine in pre.items():
        for s in affine.terms:
            last_use[s] = max(last_use.get(s, 0), depth[out] - 1)
    if final_linear:
        for s in output.terms:
            last_use[s] = max(last_use.get(s, 0), layers)
    return Plan(pre, depth, activations, output, last_use, layers, final_linear, kept)


def is_light(m) -> bool:
    """A term that reads at most one source entry per value (a selection, placement or
    scaling): reading it costs a reader no more than reading the value itself."""
    return weights.is_light(m)


def split_terms(affine: Affine) -> tuple[dict, dict]:
    """(the heavy terms, the light terms) of an affine form."""
    heavy = {s: m for s, m in affine.terms.items() if not is_light(m)}
    light = {s: m for s, m in affine.terms.items() if is_light(m)}
    return heavy, light


def heavy_row_index(heavy: dict) -> np.ndarray:
    """The entries of a value that some heavy term reaches."""
    reached = None
    for m in heavy.values():
        rows = weights.row_counts(m) > 0
        reached = rows if reached is None else reached | rows
    return np.flatnonzero(reached)


def heavy_rows(affine: Affine, name: str) -> tuple[Affine, Affine]:
    """(the kept part: the heavy terms on the entries they reach, with those entries'
    bias; the value read back: the kept part placed on its entries, plus the light terms
    and the rest of the bias)."""
    heavy, light = split_terms(affine)
    rows = heavy_row_index(heavy)
    bias = None if affine.bias is None else np.asarray(affine.bias, np.float64)
    kept = Affine({s: weights.select_rows(m, rows) for s, m in heavy.items()},
                  None if bias is None else bias[rows], len(rows))
    rest_bias = None
    if bias is not None:
        rest_bias = bias.copy()
        rest_bias[rows] = 0.0
    placement = sp.csr_array((np.ones(len(rows), real()), (rows, np.arange(len(rows)))),
                             shape=(affine.size, len(rows)))
    return kept, Affine({**light, name: placement}, rest_bias, affine.size)


def value_levels(graph: Graph, live_ids: set[int]) -> dict[str, int]:
    """For each value, the most activations on a path from the input to it: its layer
    before any linear value is kept, which says how much deeper a join's other inputs
    are than one of its inputs."""
    levels = {graph.input: 0}
    for node in graph.nodes:
        if id(node) not in live_ids:
            continue
        level = max((levels.get(i, 0) for i in node.inputs), default=0)
        if get_op(node.op).activation and node.op != IDENTITY:
            level += 1
        for out in node.outputs:
            levels[out] = level
    return levels


def every_dense(graph: Graph, value: str, affine: Affine, depth: dict[str, int],
                sizes: dict[str, int], live_ids: set[int],
                levels: dict[str, int]) -> str | None:
    """The unfused lowering: every Dense output that something reads is a layer."""
    producer = graph.producer(value)
    if producer is not None and producer.op == "Dense" and value != graph.output and \
            any(id(c) in live_ids for c in graph.consumers(value)):
        return "whole"
    return None


def worth_keeping(graph: Graph, value: str, affine: Affine, depth: dict[str, int],
                  sizes: dict[str, int], live_ids: set[int],
                  levels: dict[str, int]) -> str | None:
    """The size model: whether to keep ``value`` ("whole"), its heavy part ("heavy"), or
    nothing (None: compose it into its readers), whichever takes the fewest non-zeros.

    Composed, a Dense reader ``W`` costs (a bound on) ``nnz(W M_s)`` for each of the
    value's matrices ``M_s``, and any other reader (a join, a concatenation, an
    activation) copies the value's matrices. Kept whole, the value costs its matrices
    once and each reader reads it (``nnz(W)``, or one non-zero a value), plus the sources
    it needs carried to its layer. Keeping the heavy part (the terms that read more than
    one source entry per value, on the entries they reach) leaves the light terms
    composed, and its layer can come earlier. So a linear bottleneck (1×1 projection, a
    residual join, the next 1×1 expansion) is not multiplied out, and a value read by
    several later layers (a DenseNet feature) is computed once. A Concat whose other
    inputs are deeper than the value (a DenseNet feature, which the next dense layers'
    outputs join) holds what it reads until their layer: composed, the value's sources are
    carried those layers; kept, the value alone is. Ties go to composing (fewer layers).
    """
    readers = [(c, sum(1 for i in c.inputs if i == value)) for c in graph.consumers(value)
               if id(c) in live_ids]
    if not readers or value == graph.output:
        return None
    heavy, light = split_terms(affine)
    if not heavy:
        return None
    size = affine.size

    def own(terms) -> int:
        return sum(size if m is None else m.nnz for m in terms.values())

    def composed(terms) -> float:  # what the readers take with these terms composed in
        total = 0
        for reader, uses in readers:
            if reader.op == "Dense":
                w = reader.attrs["weight"]
                if any(m is not None and materializes(w, m) for m in terms.values()):
                    return float("inf")  # a convolution's kernels copied a position
                total += uses * sum(nnz(w) if m is None else product_nnz_bound(w, m)
                                    for m in terms.values())
            else:
                total += uses * own(terms)
        return total

    def read(entries: np.ndarray | None) -> int:  # the readers reading the kept entries
        total = 0
        for reader, uses in readers:
            if reader.op != "Dense":
                total += uses * (size if entries is None else len(entries))
                continue
            counts = column_counts(reader.attrs["weight"])
            total += uses * int(counts.sum() if entries is None else counts[entries].sum())
        return total

    def carried(terms) -> int:  # sources held in layers until the kept value's layer
        top = 1 + max((depth[s] for s in terms), default=0)
        return sum(sizes[s] * max(0, top - 1 - depth[s]) for s in terms)

    # layers a Concat reader holds the value (or its sources) for its deeper inputs
    joined = sum(uses * max(0, max(levels[i] for i in reader.inputs) - levels[value])
                 for reader, uses in readers if reader.op == "Concat")

    def held(terms) -> int:  # the sources, carried those layers
        return joined * sum(sizes[s] for s in terms)

    costs = [(composed(affine.terms) + held(affine.terms), None),
             (own(affine.terms) + read(None) + carried(affine.terms) + joined * size,
              "whole")]
    if light:
        rows = heavy_row_index(heavy)
        costs.append((own(heavy) + read(rows) + composed(light) + carried(heavy) +
                      joined * len(rows) + held(light), "heavy"))
    return min(costs, key=lambda c: c[0])[1]


def column_counts(w) -> np.ndarray:
    """Non-zeros in each column of a weight (sparse, dense or structured)."""
    return weights.column_counts(w)


#: which linear values each fusion policy keeps as layers
KEEPING = {"cost": worth_keeping, "always": None, "never": every_dense}


def live_nodes(graph: Graph) -> set[int]:
    """ids of the nodes the graph output depends on."""
    live, stack = set(), [graph.output]
    while stack:
        node = graph.producer(stack.pop())
        if node is not None and id(node) not in live:
            live.add(id(node))
            stack.extend(node.inputs)
    return live
