"""Analyses over the IR: element-wise interval bounds and Lipschitz constants.

``interval_bounds`` propagates a box ``[low, high]`` on the input through every op: monotone
ops map the two corners, affine ops ``W x + b`` give ``W+ low + W- high + b`` and
``W+ high + W- low + b`` (no centre-radius form: with an unbounded input it would cancel
huge numbers). The bounds are sound (up to float64 rounding) and are what the passes use to
prove a value is ≥ 0, and what targets use to shift an output into an activation's range.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .activations import BY_OP, CATALOGUE
from .graph import Graph, Node
from .ops import get_op
from .weights import abs_row_sums, signed, weight_values

#: stands for an unbounded input; big enough to dominate, small enough to stay finite
UNBOUNDED = 1e30

MONOTONE = {"MaxPool", "AveragePool", "Reshape", "Transpose", "Select", "Pad",
            "MixedActivation", "Clip"} | {a.op for a in CATALOGUE if a.shape == "monotone"}
#: multi-input ops monotone in every input: the box maps corner to corner
MONOTONE_JOINT = {"Concat", "Maximum", "Minimum"}
AFFINE = {"Conv", "Dense", "AddConst", "MulConst", "BatchNorm"}

Bounds = dict[str, tuple[np.ndarray, np.ndarray]]


def interval_bounds(graph: Graph, low: float | np.ndarray = -UNBOUNDED,
                    high: float | np.ndarray = UNBOUNDED,
                    keep: set[str] | None = None) -> Bounds:
    """Lower and upper bound of every value, per element, for inputs in ``[low, high]``;
    with ``keep``, only those values' bounds are returned, the others freed as soon as no
    node reads them (float64 bounds of every value of DenseNet121 at 224×224 take GBs)."""
    uses = Counter(i for node in graph.nodes for i in node.inputs)
    shape = graph.shape(graph.input)
    lo = np.broadcast_to(np.asarray(low, np.float64), shape).astype(np.float64)
    hi = np.broadcast_to(np.asarray(high, np.float64), shape).astype(np.float64)
    bounds: Bounds = {graph.input: (lo, hi)}
    for node in graph.nodes:
        if node.op in MONOTONE_JOINT:
            op = get_op(node.op)
            low = op.evaluate(node, [bounds[i][0][None] for i in node.inputs])[0][0]
            high = op.evaluate(node, [bounds[i][1][None] for i in node.inputs])[0][0]
            bounds[node.output] = (low, high)
        elif node.op == "Sum":
            bounds[node.output] = sum_bounds(node, [bounds[i] for i in node.inputs])
        else:
            lo, hi = bounds[node.input]
            bounds[node.output] = node_bounds(node, lo, hi)
        if keep is not None:
            for name in [*node.inputs, node.output]:
                uses[name] -= name in node.inputs
                if uses[name] <= 0 and name not in keep:
                    bounds.pop(name, None)
    return bounds if keep is None else {k: v for k, v in bounds.items() if k in keep}


def sum_bounds(node: Node, boxes: list[tuple[np.ndarray, np.ndarray]]):
    from .ops import sum_coeffs

    low = high = 0.0
    for c, (lo, hi) in zip(sum_coeffs(node), boxes):
        low = low + (c * lo if c >= 0 else c * hi)
        high = high + (c * hi if c >= 0 else c * lo)
    return np.asarray(low, np.float64), np.asarray(high, np.float64)


def node_bounds(node: Node, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    op = get_op(node.op)
    entry = BY_OP.get(node.op)
    if entry is not None and entry.shape == "unimodal":
        # max at an end; min at an end, or at the minimum if inside
        both = op.evaluate(node, [np.stack([lo, hi])])[0]
        x_min = np.full((1,) + lo.shape, entry.minimum_at)
        f_min = op.evaluate(node, [x_min])[0][0]
        inside = (lo <= entry.minimum_at) & (entry.minimum_at <= hi)
        low = np.where(inside, np.minimum(f_min, both.min(axis=0)), both.min(axis=0))
        # a small margin for the rounding of f_min
        return low - 1e-9 * (1 + np.abs(low)), both.max(axis=0)
    if entry is not None and entry.shape == "thresholded":
        # values are 0 or x > alpha: within [min(0, lo), max(0, hi)]
        return np.minimum(0.0, lo), np.maximum(0.0, hi)
    if node.op in MONOTONE:
        both = op.evaluate(node, [np.stack([lo, hi])])[0]
        return both[0], both[1]
    if node.op == "Softmax":
        return np.zeros_like(lo), np.ones_like(hi)
    if node.op in AFFINE:
        constant = op.evaluate(node, [np.zeros((1,) + lo.shape)])[0][0]
        pos, neg = signed_parts(node, lo.ndim)
        run_pos = lambda v: get_op(pos.op).evaluate(pos, [v[None]])[0][0]  # noqa: E731
        run_neg = lambda v: get_op(neg.op).evaluate(neg, [v[None]])[0][0]  # noqa: E731
        return (run_pos(lo) + run_neg(hi) + constant, run_pos(hi) + run_neg(lo) + constant)
    raise ValueError(f"no interval rule for {node.op}")


def signed_parts(node: Node, rank: int) -> tuple[Node, Node]:
    """The linear part of an affine node split into its positive and negative weights."""
    a: dict[str, Any] = dict(node.attrs)

    def with_weights(op: str, key: str, pos, neg, **extra) -> tuple[Node, Node]:
        make = lambda w: Node(op, node.inputs, node.outputs, {**a, **extra, key: w},  # noqa
                              node.name)
        return make(pos), make(neg)

    if node.op == "Conv":
        k = a["kernel"]
        return with_weights("Conv", "kernel", np.maximum(k, 0), np.minimum(k, 0), bias=None)
    if node.op == "Dense":
        return with_weights("Dense", "weight", *signed(a["weight"]), bias=None)
    if node.op == "AddConst":
        a = {}
        return with_weights("MulConst", "const", np.ones(()), np.zeros(()))
    if node.op == "MulConst":
        c = np.asarray(a["const"], np.float64)
        return with_weights("MulConst", "const", np.maximum(c, 0), np.minimum(c, 0))
    if node.op == "BatchNorm":
        from .ops import batchnorm_affine

        scale = batchnorm_affine(a)[0].reshape((-1,) + (1,) * (rank - 1))
        a = {}
        return with_weights("MulConst", "const", np.maximum(scale, 0), np.minimum(scale, 0))
    raise ValueError(f"{node.op} is not affine")


def nonnegative(graph: Graph, value: str, bounds: Bounds | None = None) -> np.ndarray:
    """Mask of the entries of ``value`` proven ≥ 0 for every input."""
    bounds = bounds or interval_bounds(graph)
    return bounds[value][0] >= 0


#: Lipschitz constants of the non-activation ops that have one
LIPSCHITZ = {"MaxPool": 1.0, "AveragePool": 1.0, "Reshape": 1.0, "Transpose": 1.0,
             "Select": 1.0, "Pad": 1.0, "Softmax": 1.0, "AddConst": 1.0, "Clip": 1.0}


def lipschitz_inf(graph: Graph, start: str) -> float:
    """A bound L with ``|out(v + e) - out(v)|_inf <= L |e|_inf`` for changes ``e`` of the
    value ``start``, along every path from ``start`` to the output (DAGs included)."""
    from .ops import sum_coeffs

    sensitivity = {start: 1.0}
    for node in graph.nodes:
        reached = [sensitivity.get(i, 0.0) for i in node.inputs]
        if not any(reached):
            continue
        if node.op == "Sum":
            value = sum(abs(c) * s for c, s in zip(sum_coeffs(node), reached))
        elif node.op in MONOTONE_JOINT:  # each output reads one input entry (max: 1-Lipschitz)
            value = max(reached)
        else:
            value = node_lipschitz(node) * reached[0]
        for out in node.outputs:
            sensitivity[out] = value
    return sensitivity.get(graph.output, 0.0)


def node_lipschitz(node: Node) -> float:
    entry = BY_OP.get(node.op)
    if entry is not None:
        return entry.lipschitz_for(node.attrs.get("alpha", entry.alpha or 0.0))
    if node.op == "MixedActivation":  # the steepest of its activations
        return max(BY_OP[op].lipschitz_for(alpha) for _, _, op, alpha in node.attrs["segments"])
    if node.op in LIPSCHITZ:
        return LIPSCHITZ[node.op]
    if node.op == "Dense":
        return float(np.max(abs_row_sums(node.attrs["weight"]), initial=0.0))
    if node.op == "Conv":
        k = np.abs(node.attrs["kernel"])
        return float(k.reshape(len(k), -1).sum(axis=1).max(initial=0.0))
    if node.op == "MulConst":
        return float(np.max(np.abs(node.attrs["const"]), initial=0.0))
    if node.op == "BatchNorm":
        from .ops import batchnorm_affine

        return float(np.max(np.abs(batchnorm_affine(node.attrs)[0]), initial=0.0))
    raise ValueError(f"no Lipschitz rule for {node.op}")


def non_finite_constants(graph: Graph) -> list[tuple[Node, str]]:
    """Nodes whose constants, as the op uses them, hold NaN or Inf: a BatchNorm whose
    variance plus epsilon is negative, a division by zero folded into a MulConst, an
    overflow in a fused matrix. ``(node, what)`` for each."""
    from .ops import batchnorm_affine

    found = []
    for node in graph.nodes:
        arrays: dict[str, Any] = {k: v for k, v in node.attrs.items()
                                  if k in ("kernel", "bias", "weight", "const")}
        if node.op == "BatchNorm":
            with np.errstate(invalid="ignore", divide="ignore"):
                arrays["scale and shift"] = np.concatenate(batchnorm_affine(node.attrs))
        if "alpha" in node.attrs:  # an activation's parameter (LeakyRelu's slope)
            arrays["alpha"] = np.asarray(node.attrs["alpha"], np.float64)
        if "segments" in node.attrs:
            arrays["alpha"] = np.array([a for *_, a in node.attrs["segments"]], np.float64)
        for bound in ("low", "high", "value"):  # a clip's bounds may be infinite, not NaN
            if node.attrs.get(bound) is not None and np.isnan(node.attrs[bound]).any():
                found.append((node, bound))
        for what, value in arrays.items():
            data = weight_values(value) if what == "weight" else value
            if data is not None and np.asarray(data).dtype.kind == "f" and \
                    not np.isfinite(data).all():
                found.append((node, what))
    return found
