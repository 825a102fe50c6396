from __future__ import annotations

from ..ir import Graph
from .base import Pass, PassContext, register_pass


@register_pass
class DropFinalSoftmax(Pass):
    """Removes a Softmax that produces the graph output: the MLP returns logits.

    Preserves: the argmax of every output (softmax is monotonic), not the values; the
    report says so.
    """

    name = "drop-final-softmax"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        node = graph.producer(graph.output)
        if node is None or node.op != "Softmax":
            return 0
        # The checker compares against this tensor of the source model.
        graph.meta.logits = node.input
        graph.bypass(node)
        graph.notes.append("final Softmax dropped: the MLP outputs logits (argmax unchanged)")
        return 1
