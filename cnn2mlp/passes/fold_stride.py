from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ir.linear import selection
from ..ir.weights import select_rows
from ._compose import compose, dense_map, set_dense
from .base import Pass, PassContext, register_pass


@register_pass
class FoldStride(Pass):
    """Folds a Select (the row selection of a strided op, or the permutation of a layout op)
    into the neighbouring Dense: ``S (W x + b) = (S W) x + S b`` keeps the selected rows of
    the Dense before it, O(kept non-zeros); otherwise ``W2 S`` remaps the columns of the
    Dense after it.

    Preserves: the function exactly (no arithmetic on the weights).
    """

    name = "fold-stride"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            if node.op == "Select" and (fold_into_rows(graph, node) or fold_into_columns(graph, node)):
                count += 1
        return count


def fold_into_rows(graph: Graph, select: Node) -> bool:
    source = graph.producer(select.input)
    if source is None or source.op != "Dense" or graph.single_consumer(select.input) is not select:
        return False
    idx = select.attrs["indices"]
    w, b = dense_map(source)
    source.attrs["weight"] = select_rows(w, idx)
    source.attrs["bias"] = None if b is None else b[idx]
    source.attrs["out_shape"] = graph.shape(select.output)
    graph.values[source.output].shape = graph.shape(select.output)
    graph.replace_uses(select.output, source.output)
    graph.remove_node(select)
    return True


def fold_into_columns(graph: Graph, select: Node) -> bool:
    reader = graph.single_consumer(select.output)
    if reader is None or reader.op != "Dense":
        return False
    n_in = int(np.prod(graph.shape(select.input)))
    set_dense(reader, compose((selection(select.attrs["indices"], n_in), None), dense_map(reader)))
    reader.inputs = [select.input]
    graph.remove_node(select)
    return True
