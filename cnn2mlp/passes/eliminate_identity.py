from __future__ import annotations

from ..ir import Graph
from .base import Pass, PassContext, register_pass


@register_pass
class EliminateIdentity(Pass):
    """Removes Identity nodes (ONNX Identity, Dropout and Cast at inference) and reshapes
    to the shape the value already has.

    Preserves: the function exactly; the graph output keeps its shape.
    """

    name = "eliminate-identity"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            same_shape = graph.shape(node.input) == graph.shape(node.output)
            if node.op == "Identity" or (node.op == "Reshape" and same_shape):
                graph.bypass(node)
                count += 1
        return count
