from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import CompileError
from ..ir import Graph, Node
from ..ir import activations
from ..ir.activations import ALPHA_OPS
from ..ir.analysis import interval_bounds
from ..ir.cost import BYTES_PER_NNZ
from ..ir import weights
from ..ir.precision import real
from ._dag_plan import KEEPING, Affine, Plan, is_chain, plan_layers
from .base import Pass, PassContext, register_pass

#: the identity activation's op: the neurons that carry values on any target that has it
IDENTITY = activations.IDENTITY.op


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
        self.mode = ctx.options.carry
        self.uniform = ctx.options.uniform
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
            weight = weights.vstack([b.weight for b in blocks], real())
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
                "weight": weights.astype(weight, real()), "bias": bias.astype(real()),
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
        self.bytes += sum(stored_size(b.weight) + b.weight.shape[0] * 8 for b in blocks)
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
        if self.mode == activations.IDENTITY.name or not carried:
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
        if self.mode == activations.IDENTITY.name or op not in ("Relu", "LeakyRelu") or \
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
            weight = part if weight is None else weights.add(weight, part)
        if weight is None:
            weight = sp.csr_array((affine.size, width), dtype=real())
        bias = np.zeros(affine.size) if affine.bias is None else np.asarray(affine.bias)
        return weight, bias


def stored_size(w) -> int:
    """Bytes a block's weight takes: a structured one its parts, a CSR one its entries."""
    return weights.stored_bytes(w) if weights.is_structured(w) else w.nnz * BYTES_PER_NNZ


def place(m, read, width: int):
    """``m @ R``: ``m`` reads a source that the layer holds as the pieces of ``read`` (a
    column shift and a scaling; a structured ``m`` stays structured)."""
    out = None
    for offset, coeff, subset in read[1]:
        sub = weights.shift_columns(m, offset, width) if subset is None else \
            weights.select_columns(m, subset, offset, width)
        sub = weights.scaled(sub, coeff)
        out = sub if out is None else weights.add(out, sub)
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
