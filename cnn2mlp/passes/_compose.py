"""Helpers shared by the passes that merge linear maps into Dense nodes."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..ir import Graph, Node
from ..ir import weights
from ..ir.linear import LinearMap
from ..ir.precision import real


def nnz(w) -> int:
    return weights.nnz(w)


def fusion_is_cheap(first, second) -> bool:
    """The cost model: fuse when the product's non-zeros (bounded) do not exceed the two
    factors' together, and a structured factor keeps its structure (a product that would
    turn a convolution's kernels into CSR stores one copy a position: never cheaper)."""
    if materializes(second, first):
        return False
    return product_nnz_bound(second, first) <= nnz(first) + nnz(second)


def materializes(a, b) -> bool:
    """Whether ``a @ b`` would be built as CSR from a structured factor (what
    ``weights.product`` keeps structured: a structured factor times a light CSR one)."""
    if weights.is_structured(a) and weights.is_structured(b):
        return True
    if weights.is_structured(a):
        return not weights.is_light(b)
    if weights.is_structured(b):
        return not weights.is_light(a)
    return False


def product_nnz_bound(w2, w1) -> int:
    """Upper bound on nnz(w2 @ w1): sum over k of nnz(column k of w2) * nnz(row k of w1)."""
    rows1 = weights.row_counts(w1).astype(np.int64)
    cols2 = weights.column_counts(w2).astype(np.int64)
    return int(cols2 @ rows1)


def compose(first: LinearMap, second: LinearMap) -> LinearMap:
    """``second ∘ first``: ``W2 (W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)``."""
    w1, b1 = first
    w2, b2 = second
    # Multiply in float64 and round once: float32 products drift by ~1e-5 on wide sums
    # (a structured factor times a light one keeps its structure: one product a weight).
    w = weights.product(w2, w1, real())
    bias = None
    if b1 is not None:
        b1 = np.asarray(b1, np.float64)[None, :]
        bias = weights.matvec(weights.astype(w2, np.float64), b1)[0]
    if b2 is not None:
        bias = np.asarray(b2, np.float64) if bias is None else bias + b2
    return w, (None if bias is None else bias.astype(real()))


def dense_map(node: Node) -> LinearMap:
    return node.attrs["weight"], node.attrs.get("bias")


def set_dense(node: Node, lin: LinearMap) -> None:
    node.attrs["weight"], node.attrs["bias"] = lin


def fold_into_neighbour(graph: Graph, node: Node, lin: LinearMap,
                        accept: Callable[[Any, Any], bool] | None = None) -> bool:
    """Merge the linear op ``node`` (matrix form ``lin``) into an adjacent Dense node.

    Into the Dense that reads it (as the first factor) or, failing that, into the Dense it
    reads when ``node`` is that Dense's only reader. ``accept(first_weight, second_weight)``
    may veto a product (a cost model). Returns False if nothing was merged.
    """
    accept = accept or (lambda first, second: True)
    reader = graph.single_consumer(node.output)
    if reader is not None and reader.op == "Dense" and accept(lin[0], reader.attrs["weight"]):
        set_dense(reader, compose(lin, dense_map(reader)))
        reader.attrs.pop("input_blocks", None)  # it reads another value now
        reader.inputs = [node.input]
        graph.remove_node(node)
        return True
    source = graph.producer(node.input)
    if source is not None and source.op == "Dense" and \
            graph.single_consumer(node.input) is node and accept(source.attrs["weight"], lin[0]):
        set_dense(source, compose(dense_map(source), lin))
        source.attrs["out_shape"] = graph.shape(node.output)
        graph.values[source.output].shape = graph.shape(node.output)
        graph.replace_uses(node.output, source.output)
        graph.remove_node(node)
        return True
    return False
