from __future__ import annotations

from ..ir import Graph
from ..ir.linear import linear_map
from .base import Pass, PassContext, register_pass

LOWERED = ("AddConst", "MulConst", "BatchNorm", "Pad", "Transpose", "Select", "AveragePool")


@register_pass
class LowerLinear(Pass):
    """Turns every remaining linear op (element-wise affine, Pad, Transpose, Select, an
    AveragePool that avgpool-fuse left alone)
    into a Dense node with its sparse matrix, so that the graph holds only Dense layers and
    activations. Reshapes between Dense layers and activations are dropped.

    Preserves: the function exactly.
    """

    name = "lower-linear"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            if node.op in LOWERED:
                weight, bias = linear_map(graph, node)
                node.op = "Dense"
                node.attrs = {"weight": weight, "bias": bias,
                              "out_shape": graph.shape(node.output)}
                count += 1
            elif node.op == "Reshape" and node.output != graph.output:
                graph.bypass(node)
                count += 1
        return count
