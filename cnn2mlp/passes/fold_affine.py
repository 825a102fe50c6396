from __future__ import annotations

from ..ir import Graph
from ..ir.linear import linear_map
from ._compose import fold_into_neighbour
from .base import Pass, PassContext, register_pass

AFFINE_OPS = ("AddConst", "MulConst", "BatchNorm")


@register_pass
class FoldAffine(Pass):
    """Folds element-wise affine ops (input normalization ``(x - mean) / std`` as Sub/Div/
    Mul/Add by constants, a BatchNorm with no Conv before it) into the Dense that reads
    them, or else into the Dense that feeds them: a diagonal factor, so the non-zeros
    never grow. Run after conv-to-dense, so that padding is already explicit in the matrix
    and the fold stays exact at the borders.

    Preserves: the function exactly (biases in float64, rounded once).
    """

    name = "fold-affine"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        # Last first: in (x - m) / s before a Dense, the Div folds into the Dense, and then
        # the Sub finds the Dense right behind it.
        for node in reversed(list(graph.nodes)):
            if node.op in AFFINE_OPS and fold_into_neighbour(graph, node, linear_map(graph, node)):
                count += 1
        return count
