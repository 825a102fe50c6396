from __future__ import annotations

from ..ir import Graph, Node
from ..ir.linear import avgpool_matrix
from ._compose import compose, dense_map, nnz, product_nnz_bound
from .base import Pass, PassContext, register_pass


@register_pass
class AvgPoolFuse(Pass):
    """Folds AveragePool, a linear map ``P`` (count_include_pad, ceil_mode, pads, strides and
    dilations in its weights), into the Dense that reads it (``W2 P``), or into the Dense
    that feeds it when no activation lies between (``P W1``).

    Cost-aware like fuse-dense: with ``ctx.fusion == "cost"`` it fuses only when the
    non-zeros do not grow; ``"always"`` fuses whenever a neighbour exists. A pool left
    alone stays an AveragePool for avgpool-linearize or lower-linear.
    Preserves: the function exactly.
    """

    name = "avgpool-fuse"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            if node.op == "AveragePool" and fuse_pool(graph, node, ctx.fusion == "always"):
                count += 1
        return count


def fuse_pool(graph: Graph, node: Node, always: bool) -> bool:
    pool = avgpool_matrix(graph.shape(node.input), node.attrs)
    reader = graph.single_consumer(node.output)
    if reader is not None and reader.op == "Dense" and (
            always or cheap(pool, reader.attrs["weight"])):
        reader.attrs["weight"], reader.attrs["bias"] = compose((pool, None), dense_map(reader))
        reader.inputs = [node.input]
        graph.remove_node(node)
        return True
    source = graph.producer(node.input)
    if source is not None and source.op == "Dense" and \
            graph.single_consumer(node.input) is node and (
                always or cheap(source.attrs["weight"], pool)):
        source.attrs["weight"], source.attrs["bias"] = compose(dense_map(source), (pool, None))
        source.attrs["out_shape"] = graph.shape(node.output)
        graph.values[source.output].shape = graph.shape(node.output)
        graph.replace_uses(node.output, source.output)
        graph.remove_node(node)
        return True
    return False


def cheap(first, second) -> bool:
    return product_nnz_bound(second, first) <= nnz(first) + nnz(second)
