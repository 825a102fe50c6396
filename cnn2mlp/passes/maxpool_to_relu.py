from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..ir import Graph, Node
from ..ir.analysis import interval_bounds
from ..ir.geometry import window_axes
from ..ir.linear import selection, window_members
from ..ir.precision import real
from .base import Pass, PassContext, register_pass


@register_pass
class MaxPoolToRelu(Pass):
    """Rewrites MaxPool (and GlobalMaxPool, which the frontend makes a MaxPool) as Dense +
    ReLU layers through ``max(a, b) = b + relu(a - b)``.

    Each window's valid cells (padding is ignored, not zero) are reduced by a tournament of
    ceil(log2 k) ReLU layers. A step computes ``relu(a - b)`` and passes ``b`` through as
    ``relu(b)`` when the interval analysis proves ``b >= 0`` for every input, else as
    ``relu(b) - relu(-b)``; pairs shared by overlapping windows are computed once. A 2-D
    pool may instead reduce one axis after the other (a 3×3 pool as the 3×1 maxima of 1×3
    maxima, whose pairs stride-1 windows share) where that takes fewer non-zeros in as
    many layers: whichever plan is smaller is emitted. The
    recombination matrix of each step is multiplied into the next step's matrix, so a step
    costs one ReLU layer; the last one is a linear map that fuse-dense folds into the
    following layer or, where that would double the layer's reads, keeps.

    Preserves: the function exactly, for every input. Records the neurons it adds in
    ``ctx.stats["maxpool-to-relu"]``.
    """

    name = "maxpool-to-relu"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        pools = [n for n in graph.nodes if n.op == "MaxPool"]
        if not pools:
            return 0
        bounds = interval_bounds(graph, keep={node.input for node in pools})
        stats = ctx.stats.setdefault(self.name, {"neurons": 0, "relu_layers": 0})
        for node in pools:
            nonneg = (bounds[node.input][0] >= 0).ravel()
            plan = plan_pool(graph.shape(node.input), node.attrs, nonneg)
            emit(graph, node, plan)
            stats["neurons"] += sum(d.shape[0] for d in plan.steps)
            stats["relu_layers"] += len(plan.steps)
        return len(pools)


@dataclass
class Tournament:
    steps: list[sp.csr_array]   # pre-activation of each ReLU layer, from the layer before
    final: sp.csr_array         # the pool output, from the last ReLU layer (or the input)


def plan_pool(in_shape: tuple[int, ...], attrs: dict, nonneg: np.ndarray) -> Tournament:
    """The smaller of the direct tournament over each whole window and the separable one
    (axis by axis), when the separable one takes no more layers."""
    plans = [plan_tournament(window_members(in_shape, attrs), nonneg)]
    axes = [a for a, k in enumerate(attrs["kernel_shape"]) if k > 1]
    levels = lambda k: math.ceil(math.log2(k)) if k > 1 else 0
    if len(axes) > 1 and sum(levels(attrs["kernel_shape"][a]) for a in axes) == levels(
            math.prod(attrs["kernel_shape"])):
        plans.append(plan_separable(in_shape, attrs, nonneg, axes))
    return min(plans, key=lambda t: sum(m.nnz for m in t.steps) + t.final.nnz)


def one_axis(attrs: dict, axis: int) -> dict:
    """The pool's attributes restricted to one spatial axis (a window of 1 on the others)."""
    nd = len(attrs["kernel_shape"])
    keep = lambda values, other: [v if a == axis else other for a, v in enumerate(values)]
    pads = attrs["pads"]
    return {**attrs, "kernel_shape": keep(attrs["kernel_shape"], 1),
            "strides": keep(attrs["strides"], 1),
            "dilations": keep(attrs.get("dilations") or [1] * nd, 1),
            "pads": keep(pads[:nd], 0) + keep(pads[nd:], 0)}


def plan_separable(in_shape: tuple[int, ...], attrs: dict, nonneg: np.ndarray,
                   axes: list[int]) -> Tournament:
    """Reduce one axis after the other: a window's valid cells are the product of each
    axis' valid cells (padding and ceil mode are per axis), so the max over the window is
    the max over one axis of the maxima over the others."""
    steps: list[sp.csr_array] = []
    final: sp.csr_array | None = None   # the current stage's input from the last layer
    shape = tuple(in_shape)
    for axis in axes:
        stage = one_axis(attrs, axis)
        members = window_members(shape, stage)
        plan = plan_tournament(members, nonneg)
        if final is None:
            steps += plan.steps
        else:
            steps += [sp.csr_array(plan.steps[0] @ final)] + plan.steps[1:]
        final = plan.final
        nonneg = ((members >= 0) & nonneg[np.maximum(members, 0)]).any(axis=1)
        axis_out = window_axes(shape[1:], stage["kernel_shape"], stage["strides"],
                               stage["dilations"], stage["pads"],
                               stage.get("ceil_mode", False))[axis].size_out
        shape = shape[:axis + 1] + (axis_out,) + shape[axis + 2:]
    return Tournament(steps, final)


def plan_tournament(members: np.ndarray, nonneg: np.ndarray) -> Tournament:
    """Matrices of the reduction: ``members`` (n_out, k) are input indices, -1 = padding."""
    if np.any(members[:, 0] < 0):
        raise ValueError("a MaxPool window lies entirely in the padding")
    candidates, n_values = members, len(nonneg)
    carry: sp.csr_array | None = None  # values of this level as a function of the last layer
    steps = []
    while candidates.shape[1] > 1:
        step = pair_up(candidates, n_values, nonneg)
        steps.append(step.pre if carry is None else sp.csr_array(step.pre @ carry))
        carry, candidates, nonneg, n_values = step.post, step.candidates, step.nonneg, step.n_items
    final = selection(candidates[:, 0], n_values)
    return Tournament(steps, final if carry is None else sp.csr_array(final @ carry))


@dataclass
class Step:
    pre: sp.csr_array        # hidden units from the current values
    post: sp.csr_array       # next values from the hidden units
    candidates: np.ndarray   # next candidates (indices into the next values, -1 = none)
    nonneg: np.ndarray       # next values proven >= 0
    n_items: int


def pair_up(candidates: np.ndarray, n_values: int, nonneg: np.ndarray) -> Step:
    if candidates.shape[1] % 2:
        candidates = np.pad(candidates, ((0, 0), (0, 1)), constant_values=-1)
    a, b = candidates[:, 0::2], candidates[:, 1::2]
    present = a >= 0
    base = n_values + 1
    # An item is a pair max(a, b), or a lone a passed on; items shared by windows dedupe.
    keys = np.where(b >= 0, a * base + b + 1, a * base)
    items, inverse = np.unique(keys[present], return_inverse=True)
    ia, ib = items // base, items % base - 1
    is_pair = ib >= 0
    passed = np.where(is_pair, ib, ia)
    pass_values, pass_of_item = np.unique(passed, return_inverse=True)
    needs_neg = ~nonneg[pass_values]

    n_pairs, n_pass, n_neg = int(is_pair.sum()), len(pass_values), int(needs_neg.sum())
    pair_rank = np.cumsum(is_pair) - 1
    neg_rank = np.cumsum(needs_neg) - 1
    # Hidden units: [relu(a - b) per pair] [relu(v) per passed v] [relu(-v) where v may be < 0]
    pre = sp.coo_array((
        np.concatenate([np.ones(n_pairs), -np.ones(n_pairs), np.ones(n_pass), -np.ones(n_neg)]),
        (np.concatenate([np.arange(n_pairs), np.arange(n_pairs), n_pairs + np.arange(n_pass),
                         n_pairs + n_pass + np.arange(n_neg)]),
         np.concatenate([ia[is_pair], ib[is_pair], pass_values, pass_values[needs_neg]]))),
        shape=(n_pairs + n_pass + n_neg, n_values)).tocsr()
    # Next value of an item: relu(b) [- relu(-b)] [+ relu(a - b)]
    n_items = len(items)
    item = np.arange(n_items)
    neg_item = needs_neg[pass_of_item]
    post = sp.coo_array((
        np.concatenate([np.ones(n_items), np.ones(n_pairs), -np.ones(int(neg_item.sum()))]),
        (np.concatenate([item, item[is_pair], item[neg_item]]),
         np.concatenate([n_pairs + pass_of_item, pair_rank[is_pair],
                         n_pairs + n_pass + neg_rank[pass_of_item[neg_item]]]))),
        shape=(n_items, n_pairs + n_pass + n_neg)).tocsr()
    next_candidates = np.full(a.shape, -1, dtype=np.int64)
    next_candidates[present] = inverse
    next_nonneg = nonneg[ia] | np.where(is_pair, nonneg[np.maximum(ib, 0)], False)
    return Step(pre.astype(real()), post.astype(real()), next_candidates, next_nonneg,
                n_items)


def emit(graph: Graph, node: Node, plan: Tournament) -> None:
    current = node.input
    for i, pre in enumerate(plan.steps):
        dense = graph.insert_node_before(node, "Dense", [current],
                                         {"weight": pre, "bias": None},
                                         name=f"{node.name}_max{i}")
        relu = graph.insert_node_before(node, "Relu", [dense.output], name=f"{node.name}_relu{i}")
        current = relu.output
    out_shape = graph.shape(node.output)
    node.op, node.inputs = "Dense", [current]
    # The recombination of the last step: fused into the next linear layer, or a layer
    # of its own where the size model says so (fuse-dense, linearize-dag)
    node.attrs = {"weight": plan.final, "bias": None, "out_shape": out_shape}
