"""Add, Sub, Mul, Div with a constant operand, and of two computed tensors (joins of
a DAG); Sum, Mean, Max and Min."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .registry import converter

if TYPE_CHECKING:
    from .importer import OnnxImporter


@converter("Add", "Sub", "Mul", "Div")
def convert_arithmetic(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    a_const, b_const = (imp.is_const(i) for i in node.input[:2])
    if not (a_const or b_const):
        join(imp, node)
        return
    data_index = 1 if a_const else 0
    x = imp.data(node, data_index)
    c = np.asarray(imp.const(node, 1 - data_index), np.float64)
    x = grow_to_constant(imp, node, x, c)
    c = broadcast_const(imp, node, c, x)
    op = node.op_type
    if op == "Div" and data_index == 1:
        imp.refuse(node, QUOTIENT)
    if op == "Sub" and data_index == 1:  # c - x
        x = imp.emit(node, "MulConst", [x], {"const": -np.ones_like(c)})
        op = "Add"
    elif op == "Sub":
        c, op = -c, "Add"
    elif op == "Div":
        with np.errstate(divide="ignore"):  # a zero divisor is refused, naming the node
            c, op = 1.0 / c, "Mul"
    imp.emit(node, "AddConst" if op == "Add" else "MulConst", [x], {"const": c},
             output=node.output[0])


def grow_to_constant(imp: OnnxImporter, node: onnx.NodeProto, x: str, c: np.ndarray) -> str:
    """``x`` copied (a selection) to the shape it broadcasts to with a constant of larger
    per-sample shape, as in ``v + C`` with v of shape (N, 1, 3) and C of shape (4, 3)."""
    sample = imp.graph.shape(x)
    if c.ndim > len(sample) + 1:
        return x  # it would put axes before the batch: broadcast_const refuses it
    c_sample = c.shape[1:] if c.ndim == len(sample) + 1 else c.shape
    try:
        out = np.broadcast_shapes(c_sample, sample)
    except ValueError:
        return x  # broadcast_const names the mismatch
    return x if out == sample else broadcast_value(imp, node, x, sample, out)


def broadcast_const(imp: OnnxImporter, node: onnx.NodeProto, c: np.ndarray, x: str) -> np.ndarray:
    """A constant operand as an array that broadcasts to the sample shape of ``x``."""
    sample = imp.graph.shape(x)
    if c.ndim == len(sample) + 1:
        if c.shape[0] != 1:
            imp.fail(node, f"constant of shape {c.shape} varies along the batch axis")
        c = c[0]
    try:
        if np.broadcast_shapes(c.shape, sample) != sample:
            raise ValueError
    except ValueError:
        imp.fail(node, f"constant of shape {c.shape} would change the shape (N,{sample})")
    return c


#: why a product of computed values is refused (``imp.refuse`` adds the way out)
PRODUCT = ("multiplies two values computed from the input (as squeeze-and-excitation, "
           "attention or gating do)")
QUOTIENT = "divides by a value computed from the input"


def join(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Add or Sub of two computed tensors (a residual join); Mul and Div are refused."""
    if node.op_type == "Mul":
        swish = swish_operand(imp, node)
        if swish is not None:  # x * sigmoid(x): one activation, not a product
            imp.emit(node, "Swish", [swish], output=node.output[0])
            return
    if node.op_type in ("Mul", "Div"):
        imp.refuse(node, PRODUCT if node.op_type == "Mul" else QUOTIENT)
    a, b = broadcast_all(imp, node, [imp.data(node, 0), imp.data(node, 1)])
    coeffs = (1.0, -1.0) if node.op_type == "Sub" else (1.0, 1.0)
    imp.emit(node, "Sum", [a, b], {"coeffs": coeffs}, output=node.output[0])


def swish_operand(imp: OnnxImporter, node: onnx.NodeProto) -> str | None:
    """``x`` when the node is ``x * sigmoid(x)`` (either order), else None."""
    a, b = node.input[0], node.input[1]
    for x, gate in ((a, b), (b, a)):
        producer = imp.graph.producer(gate)
        if producer is not None and producer.op == "Sigmoid" and producer.input == x:
            return x
    return None


def broadcast_all(imp: OnnxImporter, node: onnx.NodeProto, values: list[str]) -> list[str]:
    """Computed tensors broadcast to one per-sample shape (ONNX multidirectional
    broadcasting, with every tensor keeping its batch axis): a smaller one is copied by a
    selection, a linear map."""
    shapes = [imp.graph.shape(v) for v in values]
    if len({len(s) for s in shapes}) != 1:
        imp.fail(node, f"operands of shapes {['(N,' + str(s)[1:] for s in shapes]} have "
                       "different ranks: broadcasting would mix the batch axis with others")
    try:
        out = np.broadcast_shapes(*shapes)
    except ValueError:
        imp.fail(node, f"operand shapes {shapes} do not broadcast")
    return [v if s == out else broadcast_value(imp, node, v, s, out)
            for v, s in zip(values, shapes)]


def broadcast_value(imp: OnnxImporter, node: onnx.NodeProto, value: str, shape, out) -> str:
    imp.check_values(node, math.prod(out), f"broadcasting to {tuple(out)}")
    n = int(np.prod(shape))
    indices = np.broadcast_to(np.arange(n).reshape(shape), out).ravel()
    return imp.emit(node, "Select", [value], {"indices": indices, "out_shape": tuple(out)})


@converter("Sum", "Mean")
def convert_sum(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    names = [i for i in node.input if i]
    computed = [i for i in names if not imp.is_const(i)]
    weight = 1.0 / len(names) if node.op_type == "Mean" else 1.0
    values = broadcast_all(imp, node, [imp.data_by_name(node, i) for i in computed])
    consts = [np.asarray(imp.const(node, k), np.float64) for k, i in enumerate(node.input)
              if i and imp.is_const(i)]
    out = node.output[0]
    total = imp.emit(node, "Sum", values, {"coeffs": (weight,) * len(values)},
                     output=None if consts else out)
    if consts:
        c = broadcast_const(imp, node, weight * sum(consts), total)
        imp.emit(node, "AddConst", [total], {"const": c}, output=out)


@converter("Max", "Min")
def convert_extremum(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Of computed tensors: Maximum/Minimum (ReLU tournaments later). With constants:
    ``max(x, c) = c + relu(x - c)`` and ``min(x, c) = c - relu(c - x)``, per element."""
    names = [i for i in node.input if i]
    computed = [i for i in names if not imp.is_const(i)]
    consts = [np.asarray(imp.const(node, k), np.float64) for k, i in enumerate(node.input)
              if i and imp.is_const(i)]
    values = broadcast_all(imp, node, [imp.data_by_name(node, i) for i in computed])
    out = node.output[0]
    is_max = node.op_type == "Max"
    op = "Maximum" if is_max else "Minimum"
    x = values[0] if len(values) == 1 else imp.emit(node, op, values,
                                                    output=None if consts else out)
    if not consts:
        if len(values) == 1:
            imp.alias(node, x)
        return
    reduce = np.maximum if is_max else np.minimum
    c = consts[0]
    for other in consts[1:]:
        c = reduce(c, other)
    c = broadcast_const(imp, node, c, x)
    sign = 1.0 if is_max else -1.0
    # max: c + relu(x - c); min: c - relu(c - x) = c + (-1) * relu(-x + c)
    shifted = imp.emit(node, "MulConst", [x], {"const": np.full_like(c, sign)})
    shifted = imp.emit(node, "AddConst", [shifted], {"const": -sign * c})
    relu = imp.emit(node, "Relu", [shifted])
    back = imp.emit(node, "MulConst", [relu], {"const": np.full_like(c, sign)})
    imp.emit(node, "AddConst", [back], {"const": c}, output=out)


@converter("Pow")
def convert_pow(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """``x ** 1`` is ``x``; any other power of a computed value is refused as what it is."""
    if not imp.is_const(node.input[1]):
        imp.refuse(node, "raises to a power computed from the input (an exponential)")
    x = imp.data(node)
    exponent = np.unique(np.asarray(imp.const(node, 1), np.float64))
    if exponent.size == 1 and exponent[0] == 1:
        imp.alias(node, x)
        return
    p = float(exponent[0]) if exponent.size == 1 else None
    if p is not None and p == round(p) and p >= 2:
        imp.refuse(node, f"raises a computed value to the power {p:g} (a product of computed "
                         "values)")
    if p == 0.5:
        imp.refuse(node, "takes the square root of a computed value (a function no MLP target "
                         "has as an activation)")
    power = "several powers" if p is None else f"the power {p:g}"
    imp.refuse(node, f"raises a computed value to {power} (a function no MLP target has as "
                     "an activation)")
