from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from ..errors import CompileError
from ..ir import Graph, Node, get_op
from ..ir.activations import ALPHA_OPS
from ..ir.analysis import interval_bounds
from ..ir.cost import BYTES_PER_NNZ
from ..ir.linear import index_dtype, selection, to_csr
from ..ir.ops import sum_coeffs
from ..ir.precision import real
from ._compose import nnz, product_nnz_bound
from .base import Pass, PassContext, register_pass

#: ops that are linear maps of their inputs once the chain passes ran
LINEAR_OPS = {"Dense", "Sum", "Concat", "Select", "Reshape", "Identity"}
#: activation ops that can carry a value with their own neurons (op → neurons per value)
IDENTITY = "Identity"


@register_pass
class LinearizeDag(Pass):
    """Lowers a DAG (residual Add, Concat, branches, values read by several nodes) to a
    chain of layers ``h_k = f_k(W_k h_{k-1} + b_k)``.

    Run after the single-input passes, when the graph holds only linear nodes (Dense, Sum,
    Concat, Select, Reshape) and element-wise activations. Every activation output is a
    *source*; every linear value is an affine function of sources, composed exactly. An
    activation's *depth* is one more than the deepest source its input reads; layer k holds
    the activations of depth k, plus every source that a deeper layer (or the output) still
    needs, *carried* through layer k:

    - through a ReLU layer: ``relu(v)`` (one neuron) where the interval analysis proves
      ``v >= 0`` for every input, else ``relu(v)`` and ``relu(-v)``, read back as their
      difference;
    - through a LeakyReLU layer (slope a != -1): ``(lrelu(v) - lrelu(-v)) / (1 + a)``;
    - otherwise (tanh, sigmoid, mixed layers, or option ``linearize-dag.carry=identity``):
      one neuron with the identity activation: the layer gets a per-neuron activation
      (``MixedActivation``). Targets that need one activation per layer set
      ``linearize-dag.uniform`` and such a layer is an error naming it.

    A join (Add of two branches) is the sum of two matrices on the same layer, a Concat a
    stack of rows. Records per layer how many neurons carry values (``ctx.stats``, and
    ``carried`` on each Dense). A graph that is already a chain is left alone.

    Preserves: the function exactly (carrying is exact; matrices are composed in float64).
    """

    name = "linearize-dag"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        if is_chain(graph):
            return 0
        plan = plan_layers(graph, keep=KEEPING[ctx.fusion])
        Emitter(graph, ctx, plan).emit()
        stats = ctx.stats.setdefault(self.name, {})
        stats["kept"] = len(plan.kept)
        return 1


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
        terms = {s: matrix if m is None else product(matrix, m) for s, m in self.terms.items()}
        bias = None if self.bias is None else matrix @ np.asarray(self.bias, np.float64)
        return Affine(terms, bias, matrix.shape[0])


def product(a: sp.csr_array, b: sp.csr_array) -> sp.csr_array:
    out = sp.csr_array(a.astype(np.float64) @ b.astype(np.float64))
    out.sum_duplicates()
    return out.astype(real())


def add_affines(parts: list[tuple[sp.csr_array, Affine]], size: int) -> Affine:
    """``sum_i P_i a_i`` for matrices ``P_i`` (size × a_i.size)."""
    terms: dict[str, sp.csr_array] = {}
    bias = None
    for matrix, affine in parts:
        mapped = affine.map(matrix)
        for s, m in mapped.terms.items():
            terms[s] = m if s not in terms else sp.csr_array(terms[s] + m)
        if mapped.bias is not None:
            bias = mapped.bias if bias is None else bias + mapped.bias
    return Affine(terms, bias, size)


def linear_affine(graph: Graph, node: Node, args: list[Affine]) -> Affine:
    size = graph.values[node.output].size
    if node.op == "Dense":
        w = to_csr(node.attrs["weight"]).astype(real(), copy=False)
        out = args[0].map(w)
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
            part = keep(graph, out, memo[out], depth, sizes, live_ids) if keep else None
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


def is_light(m: sp.csr_array | None) -> bool:
    """A term that reads at most one source entry per value (a selection, placement or
    scaling): reading it costs a reader no more than reading the value itself."""
    return m is None or not m.nnz or int(np.diff(m.indptr).max()) <= 1


def split_terms(affine: Affine) -> tuple[dict, dict]:
    """(the heavy terms, the light terms) of an affine form."""
    heavy = {s: m for s, m in affine.terms.items() if not is_light(m)}
    light = {s: m for s, m in affine.terms.items() if is_light(m)}
    return heavy, light


def heavy_row_index(heavy: dict) -> np.ndarray:
    """The entries of a value that some heavy term reaches."""
    reached = None
    for m in heavy.values():
        rows = np.diff(m.indptr) > 0
        reached = rows if reached is None else reached | rows
    return np.flatnonzero(reached)


def heavy_rows(affine: Affine, name: str) -> tuple[Affine, Affine]:
    """(the kept part: the heavy terms on the entries they reach, with those entries'
    bias; the value read back: the kept part placed on its entries, plus the light terms
    and the rest of the bias)."""
    heavy, light = split_terms(affine)
    rows = heavy_row_index(heavy)
    bias = None if affine.bias is None else np.asarray(affine.bias, np.float64)
    kept = Affine({s: sp.csr_array(m[rows]) for s, m in heavy.items()},
                  None if bias is None else bias[rows], len(rows))
    rest_bias = None
    if bias is not None:
        rest_bias = bias.copy()
        rest_bias[rows] = 0.0
    placement = sp.csr_array((np.ones(len(rows), real()), (rows, np.arange(len(rows)))),
                             shape=(affine.size, len(rows)))
    return kept, Affine({**light, name: placement}, rest_bias, affine.size)


def every_dense(graph: Graph, value: str, affine: Affine, depth: dict[str, int],
                sizes: dict[str, int], live_ids: set[int]) -> str | None:
    """The unfused lowering: every Dense output that something reads is a layer."""
    producer = graph.producer(value)
    if producer is not None and producer.op == "Dense" and value != graph.output and \
            any(id(c) in live_ids for c in graph.consumers(value)):
        return "whole"
    return None


def worth_keeping(graph: Graph, value: str, affine: Affine, depth: dict[str, int],
                  sizes: dict[str, int], live_ids: set[int]) -> str | None:
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
    several later layers (a DenseNet feature) is computed once. Ties go to composing
    (fewer layers).
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

    def composed(terms) -> int:  # what the readers take with these terms composed in
        total = 0
        for reader, uses in readers:
            if reader.op == "Dense":
                w = reader.attrs["weight"]
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

    costs = [(composed(affine.terms), None),
             (own(affine.terms) + read(None) + carried(affine.terms), "whole")]
    if light:
        rows = heavy_row_index(heavy)
        costs.append((own(heavy) + read(rows) + composed(light) + carried(heavy), "heavy"))
    return min(costs, key=lambda c: c[0])[1]


def column_counts(w) -> np.ndarray:
    """Non-zeros in each column of a weight (sparse or dense)."""
    if sp.issparse(w):
        w = to_csr(w)
        return np.bincount(w.indices, minlength=w.shape[1])
    return np.count_nonzero(w, axis=0)


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


# ----------------------------------------------------------------------------- emitting
@dataclass
class Block:
    """A run of neurons of one layer: rows of W and b, and one activation."""

    weight: sp.csr_array
    bias: np.ndarray
    op: str
    alpha: float
    carried: bool


#: how a source is read back from a layer's neurons: pieces (column offset, coefficient,
#: the source entries those columns hold, or None for all of them, in order)
Piece = tuple[int, float, "np.ndarray | None"]


class Emitter:
    """Builds the chain layer by layer. Memory stays near the final arrays: weights stay
    float32, the old graph is dropped before the layers are built, each pre-activation is
    freed once its layer exists, and placing a matrix on a layer's neurons is a column
    shift, not a sparse product."""

    def __init__(self, graph: Graph, ctx: PassContext, plan: Plan) -> None:
        self.graph, self.ctx, self.plan = graph, ctx, plan
        self.mode = ctx.options.get("linearize-dag.carry", "activation")
        self.uniform = bool(ctx.options.get("linearize-dag.uniform", False))
        self.nonneg: dict[str, np.ndarray] = {}
        self.bytes = 0  # what the layers built so far take

    name = LinearizeDag.name

    def emit(self) -> None:
        plan, graph = self.plan, self.graph
        self.prove_signs()
        out_shape = graph.shape(graph.output)
        for node in list(graph.nodes):  # everything needed is in the plan now
            graph.remove_node(node)
        n_in = graph.values[graph.input].size
        reads: dict[str, tuple[int, list[Piece]]] = {graph.input: (n_in, [(0, 1.0, None)])}
        width = n_in
        stats = self.ctx.stats.setdefault(self.name, {"layers": 0, "carried": []})
        current = graph.input
        input_blocks = (0, n_in)  # where the sources a layer reads begin and end
        for k in range(1, plan.layers + 1):
            blocks, placed = self.layer_blocks(k, reads, width)
            self.count_bytes(blocks, k)
            reads, width = self.reconstruction(blocks, placed)
            weight = sp.vstack([b.weight for b in blocks], format="csr").astype(real())
            bias = np.concatenate([b.bias for b in blocks]).astype(real())
            rows = np.concatenate([np.full(b.weight.shape[0], b.carried) for b in blocks])
            segs = segments(blocks)
            boundaries = block_boundaries(blocks)
            del blocks
            dense = graph.add_node("Dense", [current], {
                "weight": weight, "bias": bias, "carried": int(rows.sum()),
                "carried_rows": rows, "input_blocks": input_blocks}, name=f"layer{k}")
            current = self.activation_node(dense, segs, k).output
            input_blocks = boundaries
            stats["carried"].append(int(rows.sum()))
        stats["layers"] = plan.layers
        if plan.final_linear:
            weight, bias = self.combine(plan.output, reads, width)
            current = graph.add_node("Dense", [current], {
                "weight": weight.astype(real()), "bias": bias.astype(real()),
                "out_shape": out_shape, "input_blocks": input_blocks}, name="output").output
        elif graph.shape(current) != out_shape:
            current = graph.add_node("Reshape", [current], {"shape": out_shape}).output
        graph.output = current
        live = {graph.input} | {o for node in graph.nodes for o in node.outputs}
        graph.values = {k: v for k, v in graph.values.items() if k in live}

    def count_bytes(self, blocks: list[Block], k: int) -> None:
        """Add layer k to the bytes the chain takes, and stop before building it when the
        total would pass --max-bytes (carried values grow with depth: a 300-layer
        staircase whose every value a final Sum reads carries 22 million neurons)."""
        self.bytes += sum(b.weight.nnz * BYTES_PER_NNZ + b.weight.shape[0] * 8 for b in blocks)
        limit = self.ctx.max_bytes
        if limit is not None and self.bytes > limit:
            carried = sum(b.weight.shape[0] for b in blocks if b.carried)
            raise CompileError(f"{self.name}: at layer {k}, the chain form already takes "
                               f"{self.bytes / 2**20:,.0f} MiB ({carried:,} neurons of this "
                               "layer carry values for later layers), above --max-bytes "
                               f"{limit / 2**20:,.0f} MiB; raise --max-bytes if the machine "
                               "has the memory")

    def prove_signs(self) -> None:
        """Which entries of the sources carried through ReLU layers are >= 0 for every
        input (interval analysis on the graph before it is replaced)."""
        plan = self.plan
        carried = [s for s, last in plan.last_use.items() if last > plan.depth[s]]
        if self.mode == "identity" or not carried:
            return
        bounds = interval_bounds(self.graph)
        # a kept part of a value is not a graph value: nothing is proven of its sign
        self.nonneg = {s: (bounds[s][0] >= 0).ravel() if s in bounds else
                       np.zeros(plan.pre[s].size, bool) for s in carried}

    def activation_node(self, dense: Node, segs, k: int) -> Node:
        if len(segs) == 1:
            _, _, op, alpha = segs[0]
            attrs = {"alpha": alpha} if op in ALPHA_OPS else {}
            return self.graph.add_node(op, [dense.output], attrs, name=f"layer{k}_{op.lower()}")
        return self.graph.add_node("MixedActivation", [dense.output], {"segments": segs},
                                   name=f"layer{k}_mixed")

    # -- one layer --------------------------------------------------------------------------
    def layer_blocks(self, k: int, reads, width: int):
        plan = self.plan
        blocks: list[Block] = []
        placed: list[tuple[str, list[Piece]]] = []  # source → (block, coefficient, subset)
        for out in [o for o in plan.activations if plan.depth[o] == k]:
            node = plan.activations[out]
            weight, bias = self.combine(plan.pre.pop(out), reads, width)
            op, alpha = node.op, float(node.attrs.get("alpha", 0.0))
            if op == "MixedActivation":
                raise CompileError(f"node {node.name!r}: a per-neuron activation before "
                                   "linearize-dag; run it once")
            blocks.append(Block(weight, bias, op, alpha, carried=False))
            placed.append((out, [(len(blocks) - 1, 1.0, None)]))
        kinds = {(b.op, b.alpha) for b in blocks}
        carried = [s for s, last in plan.last_use.items() if plan.depth[s] < k <= last]
        for s in sorted(carried, key=lambda s: plan.depth[s]):
            placed.append((s, self.carry(s, reads[s], width, kinds, k, blocks)))
        # neurons of one activation side by side: fewer runs in a mixed layer
        order = sorted(range(len(blocks)), key=lambda i: (blocks[i].op, blocks[i].alpha))
        new_index = {old: new for new, old in enumerate(order)}
        placed = [(s, [(new_index[b], c, sub) for b, c, sub in pieces]) for s, pieces in placed]
        return [blocks[i] for i in order], placed

    def carry(self, s: str, read, width: int, kinds, k: int, blocks: list[Block]):
        """Blocks that carry source ``s`` through layer k; returns the pieces (block,
        coefficient, entries) whose sum gives ``s`` back."""
        n = read[0]
        rows = read_matrix(read, width)
        zero = np.zeros(n)
        (op, alpha), = kinds if len(kinds) == 1 else ((None, 0.0),)
        if self.mode == "identity" or op not in ("Relu", "LeakyRelu") or \
                (op == "LeakyRelu" and alpha == -1.0):
            if self.uniform:
                shown = ", ".join(sorted(kind[0] for kind in kinds))
                raise CompileError(f"a value must be carried through layer {k}, whose "
                                   f"activation ({shown}) cannot carry it exactly and the "
                                   "target needs one activation per layer; use --target csr")
            blocks.append(Block(rows, zero, IDENTITY, 0.0, carried=True))
            return [(len(blocks) - 1, 1.0, None)]
        if op == "Relu":
            signed = np.flatnonzero(~self.nonneg[s])
            blocks.append(Block(rows, zero, "Relu", 0.0, carried=True))
            pieces = [(len(blocks) - 1, 1.0, None)]
            if len(signed):
                blocks.append(Block(sp.csr_array(-rows[signed]), zero[signed], "Relu", 0.0,
                                    carried=True))
                pieces.append((len(blocks) - 1, -1.0, signed))
            return pieces
        blocks.append(Block(rows, zero, "LeakyRelu", alpha, carried=True))
        blocks.append(Block(sp.csr_array(-rows), zero, "LeakyRelu", alpha, carried=True))
        scale = 1.0 / (1.0 + alpha)
        return [(len(blocks) - 2, scale, None), (len(blocks) - 1, -scale, None)]

    def reconstruction(self, blocks: list[Block], placed):
        """For each source in this layer, how to read it back from the neurons."""
        offsets = np.cumsum([0] + [b.weight.shape[0] for b in blocks])
        reads = {}
        for s, pieces in placed:
            n = blocks[pieces[0][0]].weight.shape[0]
            reads[s] = (n, [(int(offsets[b]), c, sub) for b, c, sub in pieces])
        return reads, int(offsets[-1])

    def combine(self, affine: Affine, reads, width: int):
        """``affine`` as a matrix on the previous layer's neurons, and its bias."""
        weight = None
        for s, m in affine.terms.items():
            part = read_matrix(reads[s], width) if m is None else place(m, reads[s], width)
            weight = part if weight is None else sp.csr_array(weight + part)
        if weight is None:
            weight = sp.csr_array((affine.size, width), dtype=real())
        bias = np.zeros(affine.size) if affine.bias is None else np.asarray(affine.bias)
        return weight, bias


def shift_columns(m: sp.csr_array, offset: int, width: int) -> sp.csr_array:
    """``m`` with every column moved right by ``offset``, in a matrix ``width`` wide."""
    m = to_csr(m)
    dt = index_dtype(width, m.nnz)
    return sp.csr_array((m.data, m.indices.astype(dt) + dt(offset), m.indptr.astype(dt)),
                        shape=(m.shape[0], width))


def place(m: sp.csr_array, read, width: int) -> sp.csr_array:
    """``m @ R``: ``m`` reads a source that the layer holds as the pieces of ``read``."""
    parts = []
    for offset, coeff, subset in read[1]:
        sub = to_csr(m) if subset is None else sp.csr_array(to_csr(m)[:, subset])
        if coeff != 1.0:
            sub = sub * real().type(coeff)
        parts.append(shift_columns(sub, offset, width))
    out = parts[0]
    for part in parts[1:]:
        out = sp.csr_array(out + part)
    return out


def read_matrix(read, width: int) -> sp.csr_array:
    """The reconstruction itself (n_s × width): the source's entries from the neurons."""
    n, pieces = read
    rows, cols, vals = [], [], []
    for offset, coeff, subset in pieces:
        entries = np.arange(n) if subset is None else subset
        rows.append(entries)
        cols.append(offset + np.arange(len(entries)))
        vals.append(np.full(len(entries), coeff, real()))
    return sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n, width))


def block_boundaries(blocks: list[Block]) -> tuple[int, ...]:
    """Where each block of a layer's neurons begins, and where the last ends: the input
    blocks of the next layer (a hint for the runtime's structure finder)."""
    offsets = np.cumsum([0] + [b.weight.shape[0] for b in blocks])
    return tuple(int(o) for o in np.unique(offsets))


def segments(blocks: list[Block]) -> list[tuple[int, int, str, float]]:
    """Runs of neurons with one activation, merging neighbours of the same kind."""
    runs: list[tuple[int, int, str, float]] = []
    start = 0
    for b in blocks:
        stop = start + b.weight.shape[0]
        if runs and runs[-1][2:] == (b.op, b.alpha):
            runs[-1] = (runs[-1][0], stop, b.op, b.alpha)
        elif stop > start:
            runs.append((start, stop, b.op, b.alpha))
        start = stop
    return runs or [(0, 0, IDENTITY, 0.0)]
