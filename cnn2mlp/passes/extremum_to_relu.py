from __future__ import annotations

from ..ir import Graph, Node
from .base import Pass, PassContext, register_pass


@register_pass
class ExtremumToRelu(Pass):
    """Rewrites Maximum and Minimum of computed tensors (ONNX Max/Min, Keras Maximum/
    Minimum) with ReLU: ``max(a, b) = b + relu(a - b)`` and ``min(a, b) = a - relu(a - b)``,
    as Sum → Relu → Sum nodes. More than two inputs reduce as a tournament: ceil(log2 k)
    ReLU layers, as max pooling does. ``b`` (``a``) is read again after the ReLU, so
    linearize-dag carries it through that layer.

    Preserves: the function exactly, for every input.
    """

    name = "extremum-to-relu"

    def run(self, graph: Graph, ctx: PassContext) -> int:
        count = 0
        for node in graph:
            if node.op in ("Maximum", "Minimum"):
                lower_extremum(graph, node)
                count += 1
        return count


def lower_extremum(graph: Graph, node: Node) -> None:
    values = list(node.inputs)
    level = 0
    while len(values) > 2:
        paired = [pair(graph, node, values[i], values[i + 1], f"{level}_{i}")
                  for i in range(0, len(values) - 1, 2)]
        values = paired + values[len(values) - len(values) % 2:]
        level += 1
    if len(values) == 1:
        node.op, node.attrs, node.inputs = "Identity", {}, values
        return
    a, b = values
    diff = graph.add_node("Sum", [a, b], {"coeffs": (1.0, -1.0)}, name=f"{node.name}_diff")
    relu = graph.add_node("Relu", [diff.output], name=f"{node.name}_relu")
    keep, sign = (b, 1.0) if node.op == "Maximum" else (a, -1.0)
    node.op, node.attrs = "Sum", {"coeffs": (1.0, sign)}
    node.inputs = [keep, relu.output]


def pair(graph: Graph, node: Node, a: str, b: str, tag: str) -> str:
    diff = graph.add_node("Sum", [a, b], {"coeffs": (1.0, -1.0)}, name=f"{node.name}_diff{tag}")
    relu = graph.add_node("Relu", [diff.output], name=f"{node.name}_relu{tag}")
    sign = 1.0 if node.op == "Maximum" else -1.0
    keep = b if node.op == "Maximum" else a
    return graph.add_node("Sum", [keep, relu.output], {"coeffs": (1.0, sign)},
                          name=f"{node.name}_{tag}").output
