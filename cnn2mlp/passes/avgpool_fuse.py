from __future__ import annotations

from ..ir import Graph, Node
from ..ir.linear import avgpool_matrix
from ._compose import fold_into_neighbour, fusion_is_cheap
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
        if ctx.fusion == "never":
            return 0
        count = 0
        for node in graph:
            if node.op == "AveragePool" and fuse_pool(graph, node, ctx.fusion == "always"):
                count += 1
        return count


def fuse_pool(graph: Graph, node: Node, always: bool) -> bool:
    pool = avgpool_matrix(graph.shape(node.input), node.attrs)
    return fold_into_neighbour(graph, node, (pool, None), None if always else fusion_is_cheap)
