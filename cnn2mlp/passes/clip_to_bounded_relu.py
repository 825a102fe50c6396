from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .base import Pass, PassContext, register_pass
from .clip_to_relu import lower_clip


@register_pass
class ClipToBoundedRelu(Pass):
    """Rewrites Clip (ReLU6, ONNX Clip, HardSigmoid's clip, Keras ``ReLU(max_value)``) as
    one element-wise activation a value, for targets that apply any activation per neuron
    (csr, c):

    - both bounds: ``clip(x, a, b) = a + bounded_relu(x - a)`` with ``bounded_relu(z) =
      min(max(z, 0), b - a)``: one neuron, where ReLUs need two (clip-to-relu) and the next
      layer would read both;
    - only a lower bound: ``a + relu(x - a)``; only an upper one: ``b - relu(b - x)``;
      ``b <= a``: the constant ``b``.

    The shifts are biases: linearize-dag folds them into the matrices. ReLU6 (a = 0) is
    ``bounded_relu`` with no shift at all. Preserves: the function exactly.
    """

    name = "clip-to-bounded-relu"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            if node.op == "Clip":
                lower_clip_to_one(graph, node)
                count += 1
        return count


def lower_clip_to_one(graph: Graph, node: Node) -> None:
    low, high = node.attrs.get("low"), node.attrs.get("high")
    if low is None or high is None or high <= low:
        lower_clip(graph, node)  # one ReLU (or none): already one neuron a value
        return
    x = node.input
    n = graph.shape(x)
    moved = x if low == 0 else shifted_input(graph, node, x, n, -low)
    bounded = graph.add_node("BoundedRelu", [moved], {"alpha": float(high - low)},
                             name=f"{node.name}_bounded")
    if low == 0:
        node.op, node.attrs, node.inputs = "Identity", {}, [bounded.output]
        return
    node.op, node.attrs = "AddConst", {"const": np.full(n, float(low))}
    node.inputs = [bounded.output]


def shifted_input(graph: Graph, node: Node, x: str, shape, shift: float) -> str:
    return graph.add_node("AddConst", [x], {"const": np.full(shape, shift)},
                          name=f"{node.name}_shift").output
