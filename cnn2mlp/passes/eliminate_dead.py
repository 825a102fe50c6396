from __future__ import annotations

from ..ir import Graph
from .base import Pass, PassContext, register_pass


@register_pass
class EliminateDead(Pass):
    """Removes nodes none of whose outputs reach the graph output, and their values.

    Preserves: the function exactly.
    """

    name = "eliminate-dead"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        live = {graph.output}
        keep = []
        for node in reversed(graph.nodes):
            if any(o in live for o in node.outputs):
                keep.append(node)
                live.update(node.inputs)
                live.update(node.outputs)
        removed = len(graph.nodes) - len(keep)
        graph.nodes = list(reversed(keep))
        live.add(graph.input)
        graph.values = {k: v for k, v in graph.values.items() if k in live}
        return removed
