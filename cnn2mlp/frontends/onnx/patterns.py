"""Multi-node ONNX patterns that are one element-wise activation, fused before import.

Exporters spell some activations as small graphs: ``where(x > θ, x, 0)`` (Keras'
``ReLU(threshold=θ)``, through tf2onnx's SelectV2 expansion or as ``x * cast(x > θ)``) is
ThresholdedRelu; ``x * 0.5 * (1 + erf(x / √2))`` (PyTorch's and Hugging Face's GELU before
opset 20) is Gelu. Node by node they contain a comparison (a jump) or a product of two
computed values, which the importer refuses; as a whole they are one activation. Each
fusion replaces the pattern's last node by standard ONNX nodes with the same output, so the
rest of the graph is untouched and the pattern's inner nodes become dead (the importer
converts only what the output needs).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
from onnx import helper

#: |k·√2 - 1| allowed for the Erf argument's scale (a float32 √2 or 1/√2 in the file)
ERF_SCALE_TOLERANCE = 1e-6


class PatternGraph:
    """The nodes with producer lookups and the scalar value of constant tensors."""

    def __init__(self, nodes: list[onnx.NodeProto], scalar: Callable[[str], float | None]):
        self.nodes = nodes
        self.scalar = scalar
        self.producer = {out: node for node in nodes for out in node.output if out}

    def made_by(self, name: str, *ops: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type in ops else None

    def scale_chain(self, name: str) -> list[tuple[float, str]]:
        """``name`` as ``scale · base`` at each depth, looking through Mul and Div by scalar
        constants: [(1, name), (c, base1), ...]."""
        chain = [(1.0, name)]
        while True:
            scale, name = chain[-1]
            node = self.made_by(name, "Mul", "Div")
            if node is None or len(node.input) != 2:
                return chain
            a, b = node.input
            cb, ca = self.scalar(b), self.scalar(a)
            if cb is not None and cb != 0:
                chain.append((scale * (cb if node.op_type == "Mul" else 1.0 / cb), a))
            elif ca is not None and node.op_type == "Mul":
                chain.append((scale * ca, b))
            else:
                return chain


def fuse_patterns(nodes: list[onnx.NodeProto],
                  scalar: Callable[[str], float | None]) -> list[onnx.NodeProto]:
    """``nodes`` with every recognised pattern replaced by its activation."""
    graph = PatternGraph(nodes, scalar)
    out: list[onnx.NodeProto] = []
    for node in nodes:
        replacement = fuse_thresholded_relu(graph, node) or fuse_erf_gelu(graph, node)
        out.extend(replacement or [node])
    return out


# -- where(x > θ, x, 0) --------------------------------------------------------------------
def comparison_operand(graph: PatternGraph, name: str) -> tuple[str, float] | None:
    """(x, θ) when ``name`` is ``x > θ`` (Greater(x, θ) or Less(θ, x)), θ a scalar."""
    node = graph.made_by(name, "Greater", "Less")
    if node is None:
        return None
    x, c = node.input if node.op_type == "Greater" else node.input[::-1]
    theta = graph.scalar(c)
    return None if theta is None or graph.scalar(x) is not None else (x, theta)


def gated_value(graph: PatternGraph, name: str) -> tuple[str, float, str] | None:
    """(x, θ, mask) when ``name`` is ``x · cast(x > θ)`` (either order)."""
    node = graph.made_by(name, "Mul")
    if node is None:
        return None
    for value, mask in (node.input, node.input[::-1]):
        cast = graph.made_by(mask, "Cast")
        compared = cast and comparison_operand(graph, cast.input[0])
        if compared and compared[0] == value:
            return value, compared[1], cast.input[0]
    return None


def is_zero_branch(graph: PatternGraph, name: str, mask: str) -> bool:
    """``0 · cast(not mask)``: the other branch of tf2onnx's SelectV2 with a zero."""
    node = graph.made_by(name, "Mul")
    if node is None:
        return False
    for const, other in (node.input, node.input[::-1]):
        cast = graph.made_by(other, "Cast")
        negated = cast and graph.made_by(cast.input[0], "Not")
        if graph.scalar(const) == 0.0 and negated and negated.input[0] == mask:
            return True
    return False


def fuse_thresholded_relu(graph: PatternGraph, node: onnx.NodeProto):
    """Where(x > θ, x, 0), x · cast(x > θ), and tf2onnx's
    ``x · cast(x > θ) + 0 · cast(not(x > θ))`` → ThresholdedRelu(alpha=θ)."""
    found = None
    if node.op_type == "Where" and len(node.input) == 3:
        compared = comparison_operand(graph, node.input[0])
        if compared and compared[0] == node.input[1] and graph.scalar(node.input[2]) == 0.0:
            found = compared
    elif node.op_type == "Mul":
        gated = gated_value(graph, node.output[0])
        found = gated and gated[:2]
    elif node.op_type == "Add" and len(node.input) == 2:
        for a, b in (node.input, node.input[::-1]):
            gated = gated_value(graph, a)
            if gated and is_zero_branch(graph, b, gated[2]):
                found = gated[:2]
                break
    if not found:
        return None
    x, theta = found
    return [helper.make_node("ThresholdedRelu", [x], [node.output[0]], alpha=float(theta),
                             name=(node.name or node.output[0]) + "_thresholded_relu")]


# -- x · ½(1 + erf(x/√2)) ------------------------------------------------------------------
def erf_term(graph: PatternGraph, name: str) -> tuple[float, set[str]]:
    """(s, {x...}) when ``name`` is ``s (1 + erf(x / √2))`` (Add in either order, Div or
    Mul by scalars): every x whose scaling into the Erf is 1/√2; else (0, empty)."""
    for scale, term in graph.scale_chain(name):
        node = graph.made_by(term, "Add")
        if node is None or len(node.input) != 2:
            continue
        for one, other in (node.input, node.input[::-1]):
            erf = graph.made_by(other, "Erf")
            if graph.scalar(one) == 1.0 and erf is not None:
                xs = {x for k, x in graph.scale_chain(erf.input[0])
                      if abs(k * math.sqrt(2.0) - 1.0) <= ERF_SCALE_TOLERANCE}
                if xs:
                    return scale, xs
    return 0.0, set()


def fuse_erf_gelu(graph: PatternGraph, node: onnx.NodeProto):
    """``(s1 x) · (s2 (1 + erf(x/√2)))`` = ``2 s1 s2 · Gelu(x)``; a Gelu node, then a Mul by
    the constant when it is not 1."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    for side, other in (node.input, node.input[::-1]):
        s2, xs = erf_term(graph, other)
        match = next(((s1, x) for s1, x in graph.scale_chain(side) if x in xs), None)
        if match is None:
            continue
        value, factor = match[1], 2.0 * match[0] * s2
        name = node.name or node.output[0]
        if factor == 1.0:
            return [helper.make_node("Gelu", [value], [node.output[0]], name=name + "_gelu")]
        gelu, scale = name + "_gelu_out", name + "_gelu_scale"
        return [helper.make_node("Gelu", [value], [gelu], name=name + "_gelu"),
                helper.make_node("Constant", [], [scale], name=scale,
                                 value=onnx.numpy_helper.from_array(
                                     np.array(factor, np.float32))),
                helper.make_node("Mul", [gelu, scale], [node.output[0]], name=name)]
    return None
