"""Models without a batch axis: give them one, then import them like any other.

VNN-COMP's nn4sys and test models, and anything written in column-vector form (``W @ x``
with ``x`` of shape ``(n, 1)``), take one sample as their whole input. cnn2mlp's IR carries
a batch axis in front of every value, so such a model is rewritten, ONNX to ONNX, into the
model that maps a batch ``(N, *S)`` of its inputs to the batch of its outputs (what JAX calls
vmap): every value computed from the input gains a leading axis, and each node is rewritten
by its op's batching rule:

- element-wise ops: a batched operand of lower rank than the result gets size-1 axes after
  the batch axis, so that constants keep broadcasting against the sample's own axes;
- axis attributes and inputs (Concat, Split, Softmax, Gather, Squeeze, Unsqueeze, Reduce*,
  Slice, Pad, Tile, Transpose) shift past the batch axis; Reshape targets gain a leading 0
  (copy the batch); Flatten becomes a Reshape that keeps it;
- Shape and Size become constants (every shape is static in a batch-less model);
- MatMul with a constant: ``W @ x`` for a vector ``x`` becomes ``W @ x[..., None]`` so the
  batch stays a batch dimension of the product; Gemm becomes MatMul, Mul and Add;
- Conv, pools, BatchNormalization, Resize and the like read ``(n, C, ...)``: with ``n = 1``
  the batch replaces it (Squeeze before, Unsqueeze after); other ``n`` are refused.

A node no rule covers is refused by name. The rewritten model is only ever imported: the
reference for ``--check`` stays the original file, run one sample at a time.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from ...errors import UnsupportedOpError
from .importer import constant_value, needed_part

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


#: ops that run subgraphs: never run to measure a shape (a Loop may take 10^12 trips)
CONTROL_FLOW = {"Loop", "If", "Scan", "SequenceMap"}


class BatchAxisAdder:
    def __init__(self, model: onnx.ModelProto, source: str, opset: int,
                 output: str | None = None, suggest: bool = True) -> None:
        self.source = source
        # whether a refusal may suggest --batch-axis 0 (not when reading the first axis as
        # the batch was tried and failed)
        self.suggest = suggest
        self.opset = opset
        self.model = model = needed_part(model, output)
        inferred = shape_inference.infer_shapes(model, data_prop=True)
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        g = inferred.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            dims = vi.type.tensor_type.shape.dim
            known = vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value")
                                                                   for d in dims)
            self.shapes[vi.name] = tuple(d.dim_value for d in dims) if known else None
        missing = [o for n in model.graph.node for o in n.output
                   if o and self.shapes.get(o) is None]
        if missing:  # shapes computed from the data (Reshape(x, Shape(x))): run it once
            for node in model.graph.node:
                if node.op_type in CONTROL_FLOW:
                    self.refuse(node, "a control-flow op, which no MLP computes")
            self.shapes.update(measured_shapes(model, missing))
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.batched: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    # -- helpers ----------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}__batch{self._n}"

    def const(self, value, hint: str = "c") -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def emit(self, op: str, inputs: list[str], outputs: list[str] | None = None,
             **attrs) -> str:
        outputs = outputs or [self.fresh(op.lower())]
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    def rank(self, node: onnx.NodeProto, name: str) -> int:
        shape = self.shape(node, name)
        return len(shape)

    def shape(self, node: onnx.NodeProto, name: str) -> tuple[int, ...]:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        shape = self.shapes.get(name)
        if shape is None:
            self.refuse(node, f"the shape of {name!r} cannot be inferred")
        return shape

    def value(self, node: onnx.NodeProto, index: int):
        """A constant input (initializer or Constant node output) as an array, or None."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            self.refuse(node, f"its input {name!r} is computed from the model's input (a "
                              f"{node.op_type} whose parameters depend on the data, which no "
                              "MLP computes)")
        return self.consts[name]

    def refuse(self, node: onnx.NodeProto, why: str):
        hint = " If the first axis is a batch axis, pass --batch-axis 0" if self.suggest else ""
        raise UnsupportedOpError(
            f"{self.source}: node {node.name or node.output[0]!r} ({node.op_type}): {why}; "
            "the model has no batch axis (its whole input is one sample), and cnn2mlp cannot "
            f"give this node one.{hint}")

    def unsqueeze(self, name: str, axes: list[int]) -> str:
        if not axes:
            return name
        if self.opset >= 13:
            return self.emit("Unsqueeze", [name, self.const(np.array(axes, np.int64), "axes")])
        return self.emit("Unsqueeze", [name], axes=axes)

    def squeeze(self, name: str, axes: list[int], output: str | None = None) -> str:
        outputs = [output] if output else None
        if self.opset >= 13:
            return self.emit("Squeeze", [name, self.const(np.array(axes, np.int64), "axes")],
                             outputs)
        return self.emit("Squeeze", [name], outputs, axes=axes)

    # -- the rewrite ------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        g = self.model.graph
        feed = next(i for i in g.input if i.name not in self.consts)
        self.batched.add(feed.name)
        for node in g.node:
            if node.op_type == "Constant" and node.output:
                self.consts[node.output[0]] = constant_value(node)
            if not any(i in self.batched for i in node.input if i):
                self.nodes.append(node)
                continue
            self.rewrite(node)
        return self.finish(feed)

    def finish(self, feed: onnx.ValueInfoProto) -> onnx.ModelProto:
        """A copy of the model with the rewritten nodes; the input and the batched outputs
        declare the new leading axis ``N``. The original stays untouched."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        graph = model.graph
        del graph.node[:]
        graph.node.extend(self.nodes)
        graph.initializer.extend(self.inits)
        del graph.value_info[:]  # intermediate shapes all changed
        for vi in list(graph.input) + list(graph.output):
            if vi.name == feed.name or vi.name in self.batched:
                dims = vi.type.tensor_type.shape.dim
                old = [onnx.TensorShapeProto.Dimension() for _ in dims]
                for copy, d in zip(old, dims):
                    copy.CopyFrom(d)
                del dims[:]
                dims.add().dim_param = "N"
                dims.extend(old)
        return model

    def rewrite(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        rule = RULES.get(op)
        if rule is None:
            if op in UNARY:
                rule = rewrite_unary
            elif op in BROADCASTING:
                rule = rewrite_broadcasting
            elif op in AXIS_ATTR:
                rule = rewrite_axis_attr
            elif op in REDUCE:
                rule = rewrite_reduce
            elif op in SAMPLE_OPS:
                rule = rewrite_sample_op
            else:
                self.refuse(node, "no batching rule for this op")
        rule(self, node)
        if op not in ("Shape", "Size"):
            self.batched.update(o for o in node.output if o)


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


def measured_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    """The shapes of ``names`` from one run of the model on zeros (onnxruntime, or ONNX's
    reference implementation when onnxruntime has no kernel); {} when neither can run it."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    consts = {i.name for i in probe.graph.initializer}
    feed = next(i for i in probe.graph.input if i.name not in consts)
    elem = feed.type.tensor_type.elem_type
    dims = [d.dim_value for d in feed.type.tensor_type.shape.dim]
    x = np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(elem))
    wanted = [o.name for o in probe.graph.output]
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(probe.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        values = session.run(wanted, {feed.name: x})
    except Exception:
        try:
            from onnx.reference import ReferenceEvaluator

            values = ReferenceEvaluator(probe).run(wanted, {feed.name: x})
        except Exception:
            return {}
    return {name: tuple(np.shape(v)) for name, v in zip(wanted, values)}


def add_batch_axis(model: onnx.ModelProto, source: str, opset: int,
                   output: str | None = None, suggest: bool = True) -> onnx.ModelProto:
    """The model mapping (N, *S) to (N, *output) for a model that maps S to its output
    (or to ``output``, a tensor inside it): only the nodes that output needs are kept.
    ``suggest``: refusals may suggest --batch-axis 0."""
    return BatchAxisAdder(model, source, opset, output, suggest).run()


def has_batch_axis(model: onnx.ModelProto, consts: set[str]) -> tuple[bool | None, str]:
    """(whether the input's first axis is a batch axis, why): True for a symbolic or
    size-1 first axis, False for a rank-1 input of fixed size, None (unsure) for a fixed
    first axis above 1, which is a batch the exporter fixed or a sample's own axis."""
    feed = next(i for i in model.graph.input if i.name not in consts)
    dims = feed.type.tensor_type.shape.dim
    if not dims:
        return True, "the input declares no shape"
    first = dims[0]
    if not first.HasField("dim_value") or first.dim_value <= 0:
        return True, "its first axis is symbolic"
    if first.dim_value == 1 and len(dims) > 1:
        return True, "its first axis has size 1"
    if len(dims) == 1:
        return False, f"the input is a vector of {first.dim_value}"
    return None, (f"its first axis has a fixed size of {first.dim_value} and, read as a "
                  "batch axis, the graph mixes it with the others")
