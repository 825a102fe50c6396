from __future__ import annotations

from ..ir import Graph, get_op
from ..ir.linear import transpose_indices
from .base import Pass, PassContext, register_pass

# Readers that see only the flat vector, so a reshape in front of them changes nothing.
FLAT_READERS = {"Dense", "Select", "Softmax", "Reshape"}


@register_pass
class LayoutToPermutation(Pass):
    """Flatten/Reshape/Squeeze/Unsqueeze leave the row-major vector unchanged: removed when
    every reader sees only the flat vector. Transpose permutes the vector: it becomes a
    Select(permutation), which fold-stride merges into a neighbouring matrix for free.

    Preserves: the function exactly. Run after the structured ops (Conv, pools) are lowered.
    """

    name = "layout-to-permutation"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            if node.op == "Transpose":
                shape = graph.shape(node.input)
                node.op = "Select"
                node.attrs = {"indices": transpose_indices(shape, node.attrs["perm"]),
                              "out_shape": graph.shape(node.output)}
                count += 1
            elif node.op == "Reshape" and node.output != graph.output and all(
                    r.op in FLAT_READERS or get_op(r.op).activation
                    for r in graph.consumers(node.output)):
                graph.bypass(node)
                count += 1
        return count
