"""The batching rule of each ONNX op (see ``batch_axis.py``): how a node is rewritten when
every value computed from the input gains a leading batch axis. ``b`` is the
``BatchAxisAdder`` that holds the rewritten model."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

if TYPE_CHECKING:
    from .batch_axis import BatchAxisAdder

UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Elu",
         "Selu", "Celu", "Softplus", "Softsign", "HardSigmoid", "HardSwish", "Mish", "Gelu",
         "Erf", "ThresholdedRelu", "Shrink", "Identity", "Dropout", "Cast", "Sign", "Floor",
         "Ceil", "Round", "Not", "Reciprocal", "IsNaN", "IsInf", "Sin", "Cos", "Clip"}
BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where",
                "PRelu", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And",
                "Or", "Xor", "CastLike", "Mod"}
AXIS_ATTR = {"Concat", "Split", "Softmax", "LogSoftmax", "Hardmax", "Gather", "ArgMax",
             "ArgMin", "LayerNormalization"}
REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
          "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
SAMPLE_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
              "GlobalMaxPool", "BatchNormalization", "InstanceNormalization", "LRN",
              "DepthToSpace", "SpaceToDepth", "Resize", "Upsample", "LpPool"}
#: ops whose axes moved into an input at this opset
AXES_INPUT_SINCE = {"Squeeze": 13, "Unsqueeze": 13, "ReduceSum": 13, "Split": 13}
INT64_MAX = 2**63 - 1


def shifted(axes) -> list[int]:
    """Axes of a sample as axes of the batch: non-negative ones move past the batch axis."""
    return [int(a) + 1 if int(a) >= 0 else int(a) for a in np.ravel(axes)]


def copy_node(node: onnx.NodeProto, inputs=None, **changed_attrs) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    if inputs is not None:
        del new.input[:]
        new.input.extend(inputs)
    for name, value in changed_attrs.items():
        for a in list(new.attribute):
            if a.name == name:
                new.attribute.remove(a)
        if value is not None:
            new.attribute.append(helper.make_attribute(name, value))
    return new


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def rewrite_unary(b: BatchAxisAdder, node) -> None:
    b.nodes.append(node)


def rewrite_broadcasting(b: BatchAxisAdder, node) -> None:
    ranks = [b.rank(node, i) for i in node.input if i]
    top = max(ranks)
    inputs = []
    for name in node.input:
        if name and name in b.batched:
            r = b.rank(node, name)
            name = b.unsqueeze(name, list(range(1, 1 + top - r)))
        inputs.append(name)
    b.nodes.append(copy_node(node, inputs))


def rewrite_axis_attr(b: BatchAxisAdder, node) -> None:
    if node.op_type in ("Softmax", "LogSoftmax", "Hardmax"):
        default = -1 if b.opset >= 13 else 1
    else:
        default = -1 if node.op_type == "LayerNormalization" else 0
    if node.op_type == "Gather" and node.input[1] in b.batched:
        b.refuse(node, "the indices are computed")
    axis = attribute(node, "axis", default)
    b.nodes.append(copy_node(node, None, axis=shifted([axis])[0]))


def axes_of(b: BatchAxisAdder, node, index: int) -> tuple[list[int] | None, bool]:
    """(axes, given as an input) of Squeeze/Unsqueeze/Reduce*/Split at this opset."""
    since = AXES_INPUT_SINCE.get(node.op_type, 18 if node.op_type in REDUCE else 99)
    if b.opset >= since:
        value = b.value(node, index)
        return (None if value is None else [int(a) for a in np.ravel(value)]), True
    value = attribute(node, "axes")
    return (None if value is None else list(value)), False


def with_axes(b: BatchAxisAdder, node, index: int, axes: list[int], as_input: bool):
    if as_input:
        inputs = list(node.input) + [""] * (index + 1 - len(node.input))
        inputs[index] = b.const(np.array(axes, np.int64), "axes")
        return copy_node(node, inputs)
    return copy_node(node, None, axes=axes)


def rewrite_squeeze(b: BatchAxisAdder, node) -> None:
    axes, as_input = axes_of(b, node, 1)
    if axes is None:  # every size-1 axis of the sample
        axes = [a for a, d in enumerate(b.shape(node, node.input[0])) if d == 1]
    b.nodes.append(with_axes(b, node, 1, shifted(axes), as_input))


def rewrite_unsqueeze(b: BatchAxisAdder, node) -> None:
    axes, as_input = axes_of(b, node, 1)
    b.nodes.append(with_axes(b, node, 1, shifted(axes), as_input))


def rewrite_reduce(b: BatchAxisAdder, node) -> None:
    axes, as_input = axes_of(b, node, 1)
    if not axes:
        if attribute(node, "noop_with_empty_axes", 0):
            b.nodes.append(node)
            return
        axes = list(range(b.rank(node, node.input[0])))
    b.nodes.append(with_axes(b, node, 1, shifted(axes), as_input))


def rewrite_transpose(b: BatchAxisAdder, node) -> None:
    rank = b.rank(node, node.input[0])
    perm = attribute(node, "perm", list(reversed(range(rank))))
    b.nodes.append(copy_node(node, None, perm=[0] + [int(p) + 1 for p in perm]))


def rewrite_reshape(b: BatchAxisAdder, node) -> None:
    if attribute(node, "allowzero", 0):
        b.refuse(node, "allowzero=1")
    if node.input[1] in b.batched:
        b.refuse(node, "the target shape is computed from the data")
    target = b.emit("Concat", [b.const(np.array([0], np.int64), "keep_batch"), node.input[1]],
                    axis=0)
    b.nodes.append(copy_node(node, [node.input[0], target]))


def rewrite_flatten(b: BatchAxisAdder, node) -> None:
    shape = b.shape(node, node.input[0])
    axis = attribute(node, "axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    outer, inner = int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))
    b.emit("Reshape", [node.input[0], b.const(np.array([0, outer, inner], np.int64), "shape")],
           [node.output[0]])


def rewrite_shape(b: BatchAxisAdder, node) -> None:
    """Shapes are static in a batch-less model: the sample's shape, as a constant."""
    shape = np.array(b.shape(node, node.input[0]), np.int64)
    if node.op_type == "Size":
        value = np.array(int(np.prod(shape)), np.int64)
    else:
        start, end = attribute(node, "start", 0), attribute(node, "end", None)
        value = shape[start:end]
    b.consts[node.output[0]] = value
    b.emit("Constant", [], [node.output[0]], value=numpy_helper.from_array(value))


def rewrite_matmul(b: BatchAxisAdder, node) -> None:
    """With one side constant, the batch must be a batch dimension of the product: a vector
    operand (rank 1) gains its matrix axis, and both sides reach the same rank."""
    a, c = node.input
    if a in b.batched and c in b.batched:
        b.nodes.append(node)  # a product of two computed values: the importer refuses it
        return
    computed, const_rank = (a, b.rank(node, c)) if a in b.batched else (c, b.rank(node, a))
    rank = b.rank(node, computed)
    out = node.output[0]
    if rank == 1:  # x @ W: (k) → (N, 1, k); W @ x: (k) → (N, k, 1); squeeze it back
        axis = -2 if computed == a else -1
        x = b.unsqueeze(computed, [rank + 1 + axis + 1])
        x = b.unsqueeze(x, list(range(1, 1 + max(0, const_rank - 2))))
        inputs = [x, c] if computed == a else [a, x]
        product = b.emit("MatMul", inputs)
        b.squeeze(product, [axis], out)
        return
    x = b.unsqueeze(computed, list(range(1, 1 + max(0, const_rank - rank))))
    b.emit("MatMul", [x, c] if computed == a else [a, x], [out])


def rewrite_gemm(b: BatchAxisAdder, node) -> None:
    """alpha · op(A) op(B) + beta · C as MatMul, Mul and Add, so the batch can ride along."""
    a, c = node.input[0], node.input[1]
    if attribute(node, "transA", 0):
        a = transposed(b, node, a)
    if attribute(node, "transB", 0):
        c = transposed(b, node, c)
    alpha, beta = attribute(node, "alpha", 1.0), attribute(node, "beta", 1.0)
    elem = b.consts[node.input[1]].dtype if node.input[1] in b.consts else np.float32
    mm = helper.make_node("MatMul", [a, c], [b.fresh("gemm_product")], name=node.name)
    rewrite_matmul(b, mm)
    y = mm.output[0]
    if alpha != 1.0:
        y = b.emit("Mul", [y, b.const(np.array(alpha, elem), "alpha")])
    if len(node.input) > 2 and node.input[2]:
        bias = node.input[2]
        if beta != 1.0:
            bias = b.emit("Mul", [bias, b.const(np.array(beta, elem), "beta")])
        y = b.emit("Add", [y, bias])
    b.emit("Identity", [y], [node.output[0]])


def transposed(b: BatchAxisAdder, node, name: str) -> str:
    """A Gemm operand transposed: the batch stays in front of a computed one."""
    out = b.emit("Transpose", [name], perm=[0, 2, 1] if name in b.batched else [1, 0])
    b.shapes[out] = b.shape(node, name)[::-1]
    if name in b.batched:
        b.batched.add(out)
    return out


def rewrite_slice(b: BatchAxisAdder, node) -> None:
    if b.opset < 10:
        axes = attribute(node, "axes", list(range(len(attribute(node, "starts", [])))))
        b.nodes.append(copy_node(node, None, axes=shifted(axes)))
        return
    starts = b.value(node, 1)
    axes = b.value(node, 3)
    axes = list(range(len(np.ravel(starts)))) if axes is None else axes
    inputs = list(node.input) + [""] * (4 - len(node.input))
    inputs[3] = b.const(np.array(shifted(axes), np.int64), "axes")
    b.nodes.append(copy_node(node, inputs))


def rewrite_pad(b: BatchAxisAdder, node) -> None:
    if b.opset < 11:
        pads = list(attribute(node, "pads"))
        half = len(pads) // 2
        b.nodes.append(copy_node(node, None, pads=[0] + pads[:half] + [0] + pads[half:]))
        return
    inputs = list(node.input)
    if len(inputs) > 3 and inputs[3]:  # opset 18 axes
        inputs[3] = b.const(np.array(shifted(b.value(node, 3)), np.int64), "axes")
    else:
        pads = [int(p) for p in np.ravel(b.value(node, 1))]
        half = len(pads) // 2
        inputs[1] = b.const(np.array([0] + pads[:half] + [0] + pads[half:], np.int64), "pads")
    b.nodes.append(copy_node(node, inputs))


def rewrite_tile(b: BatchAxisAdder, node) -> None:
    repeats = np.concatenate([[1], np.ravel(b.value(node, 1))]).astype(np.int64)
    b.nodes.append(copy_node(node, [node.input[0], b.const(repeats, "repeats")]))


def rewrite_expand(b: BatchAxisAdder, node) -> None:
    target = np.ravel(b.value(node, 1))
    x = b.unsqueeze(node.input[0], list(range(1, 1 + max(0, len(target)
                                                         - b.rank(node, node.input[0])))))
    b.nodes.append(copy_node(node, [x, node.input[1]]))


def rewrite_sample_op(b: BatchAxisAdder, node) -> None:
    """Conv-like ops read (n, C, ...): with n = 1 the batch takes n's place."""
    shape = b.shape(node, node.input[0])
    if not shape or shape[0] != 1:
        b.refuse(node, f"its input {shape} has a first axis of {shape[0] if shape else '?'}, "
                       "not 1")
    x = b.squeeze(node.input[0], [1])
    inner = copy_node(node, [x] + list(node.input[1:]))
    del inner.output[:]
    inner.output.extend([b.fresh("sample_out")] + [""] * (len(node.output) - 1))
    b.nodes.append(inner)
    out = b.unsqueeze(inner.output[0], [1])
    b.emit("Identity", [out], [node.output[0]])


def rewrite_einsum(b: BatchAxisAdder, node) -> None:
    from .linear import einsum_terms

    equation = attribute(node, "equation", b"")
    equation = equation.decode() if isinstance(equation, bytes) else str(equation)
    terms, output = einsum_terms(equation)
    if terms is None:
        b.refuse(node, f"equation {equation!r} cannot be read")
    letter = next(ch for ch in "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA"
                  if ch not in equation)
    terms = [letter + t if name in b.batched else t for t, name in zip(terms, node.input)]
    b.nodes.append(copy_node(node, None, equation=",".join(terms) + "->" + letter + output))


def rewrite_gather_elements(b: BatchAxisAdder, node) -> None:
    """Constant indices pick fixed entries: a Gather of flat positions on the flattened
    sample, whatever the axis."""
    if node.input[1] in b.batched:
        b.refuse(node, "the indices are computed")
    shape = b.shape(node, node.input[0])
    axis = attribute(node, "axis", 0) % len(shape)
    index = np.asarray(b.value(node, 1), np.int64)
    index = np.where(index < 0, index + shape[axis], index)
    grids = np.indices(index.shape)
    grids[axis] = index
    flat = np.ravel_multi_index(tuple(grids), shape)
    rows = b.emit("Reshape", [node.input[0], b.const(np.array([0, -1], np.int64), "shape")])
    b.emit("Gather", [rows, b.const(flat.astype(np.int64), "positions")], [node.output[0]],
           axis=1)


RULES = {"GatherElements": rewrite_gather_elements, "Squeeze": rewrite_squeeze, "Unsqueeze": rewrite_unsqueeze,
         "Transpose": rewrite_transpose, "Reshape": rewrite_reshape, "Flatten": rewrite_flatten,
         "Shape": rewrite_shape, "Size": rewrite_shape, "MatMul": rewrite_matmul,
         "Gemm": rewrite_gemm, "Slice": rewrite_slice, "Pad": rewrite_pad, "Tile": rewrite_tile,
         "Expand": rewrite_expand, "Einsum": rewrite_einsum}


def rule_for(op: str) -> Callable[["BatchAxisAdder", onnx.NodeProto], None] | None:
    """The batching rule of an op, or None when it has none."""
    rule = RULES.get(op)
    if rule is not None:
        return rule
    for ops, family_rule in ((UNARY, rewrite_unary), (BROADCASTING, rewrite_broadcasting),
                             (AXIS_ATTR, rewrite_axis_attr), (REDUCE, rewrite_reduce),
                             (SAMPLE_OPS, rewrite_sample_op)):
        if op in ops:
            return family_rule
    return None
