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
from .batch_rules import rule_for
from .model import needed_part
from .registry import constant_value

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
        rule = rule_for(node.op_type)
        if rule is None:
            self.refuse(node, "no batching rule for this op")
        rule(self, node)
        if node.op_type not in ("Shape", "Size"):
            self.batched.update(o for o in node.output if o)


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
