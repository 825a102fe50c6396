from __future__ import annotations

from ..ir import Graph, get_op
from ..ir.linear import linear_map
from .base import Pass, PassContext, register_pass
from .layout_to_permutation import FLAT_READERS

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
            elif node.op == "Reshape" and node.output != graph.output and all(
                    r.op in FLAT_READERS or get_op(r.op).activation
                    for r in graph.consumers(node.output)):
                graph.bypass(node)  # (a reshape before a Concat or Sum keeps its meaning)
                count += 1
        return count
