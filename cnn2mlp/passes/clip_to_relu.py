from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .base import Pass, PassContext, register_pass


@register_pass
class ClipToRelu(Pass):
    """Rewrites Clip (ReLU6, ONNX Clip, Keras ``ReLU(max_value)``) with ReLUs, one layer:

    - both bounds: ``clip(x, a, b) = a + relu(x - a) - relu(x - b)`` (two neurons a value,
      side by side in one layer, for a < b; a == b is the constant a);
    - only a lower bound: ``a + relu(x - a)``; only an upper one: ``b - relu(b - x)``.

    The two ReLUs read the same value: linearize-dag puts them in one layer. Preserves: the
    function exactly, for every input.
    """

    name = "clip-to-relu"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            if node.op == "Clip":
                lower_clip(graph, node)
                count += 1
        return count


def shifted_relu(graph: Graph, node: Node, x: str, sign: float, shift: float, tag: str) -> str:
    """``relu(sign * x + shift)``."""
    n = graph.shape(x)
    scaled = graph.add_node("MulConst", [x], {"const": np.full(n, sign)}, name=f"{node.name}_{tag}s")
    moved = graph.add_node("AddConst", [scaled.output], {"const": np.full(n, shift)},
                           name=f"{node.name}_{tag}t")
    return graph.add_node("Relu", [moved.output], name=f"{node.name}_{tag}").output


def lower_clip(graph: Graph, node: Node) -> None:
    x = node.input
    low, high = node.attrs.get("low"), node.attrs.get("high")
    n = graph.shape(x)
    if low is not None and high is not None and high <= low:
        # ONNX: min(max(x, a), b) with b <= a is the constant b
        zero = graph.add_node("MulConst", [x], {"const": np.zeros(n)}, name=f"{node.name}_zero")
        node.op, node.attrs = "AddConst", {"const": np.full(n, float(high))}
        node.inputs = [zero.output]
        return
    if low is None and high is None:  # no bounds: the identity
        node.op, node.attrs = "Identity", {}
        return
    if high is None:  # a + relu(x - a)
        terms, coeffs, offset = [shifted_relu(graph, node, x, 1.0, -low, "lo")], (1.0,), low
    elif low is None:  # b - relu(b - x)
        terms, coeffs, offset = [shifted_relu(graph, node, x, -1.0, high, "hi")], (-1.0,), high
    else:
        terms = [shifted_relu(graph, node, x, 1.0, -low, "lo"),
                 shifted_relu(graph, node, x, 1.0, -high, "hi")]
        coeffs, offset = (1.0, -1.0), low
    total = graph.add_node("Sum", terms, {"coeffs": coeffs}, name=f"{node.name}_sum")
    node.op, node.attrs = "AddConst", {"const": np.full(n, float(offset))}
    node.inputs = [total.output]
