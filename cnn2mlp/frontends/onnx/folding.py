"""Constant folding for the ONNX importer: nodes whose inputs are all constants (shape
arithmetic, weight preparation) are evaluated by ``onnx.reference``, after their output's
size is checked against --max-bytes; a constant built from the batch size is folded with 1
in its place (it is the same in every sample)."""
from __future__ import annotations

import math

import numpy as np
import onnx

from .registry import BATCH, as_float64, attr, describe_bytes, first_line

# Ops folded to constants when every input is constant (shape arithmetic, weight prep).
FOLDABLE = {"Gather", "Slice", "Concat", "Cast", "Unsqueeze", "Squeeze", "ConstantOfShape",
            "Reshape", "Add", "Sub", "Mul", "Div", "Identity", "Transpose", "Range",
            "Expand", "Floor", "Ceil", "Neg", "Abs", "Sqrt", "Equal", "Where", "Min", "Max",
            "ReduceProd", "Flatten", "Tile", "CastLike", "Pow", "Reciprocal", "Shape", "Size",
            "Sum", "Mean", "And", "Or", "Xor", "Not", "Greater", "Less", "GreaterOrEqual",
            "LessOrEqual", "Mod", "ReduceMax", "ReduceMin", "ReduceSum", "Sign", "Round"}


#: folds whose output shape is the broadcast of their inputs' shapes
BROADCASTING_FOLDS = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Min", "Max", "Equal",
                      "Sum", "Mean", "And", "Or", "Xor", "Greater", "Less", "Mod"}
#: folds whose output size comes from an input's values (a shape, repeats): op → that input
SIZE_FROM_VALUES = {"ConstantOfShape": 0, "Expand": 1, "Tile": 1}


class ConstantFolding:
    """The importer's folding methods (a mixin: ``self`` is the ``OnnxImporter``)."""

    def _fold(self, node: onnx.NodeProto) -> None:
        self._check_fold_size(node)
        per_batch = self._batch_free_inputs(node)
        try:
            results = self.reference(node, per_batch)
        except Exception as exc:
            self.fail(node, f"could not fold its constant inputs ({first_line(exc)})")
        from_batch = bool(per_batch) or any(i in self.batch_consts for i in node.input if i)
        for out, val in zip([o for o in node.output if o], results):
            value = np.asarray(val)
            if node.op_type == "Shape" and node.input[0] in self.batch_consts and \
                    attr(node, "start", 0) in (0, None) and value.size:
                value = value.copy()
                value[0] = BATCH  # the shape of a per-batch constant names the batch
            elif from_batch and value.ndim and value.shape[0] == 1:
                self.batch_consts.add(out)
            self.consts[out] = value

    def _batch_free_inputs(self, node: onnx.NodeProto) -> dict[str, np.ndarray]:
        """A ConstantOfShape, Expand or Tile to a shape (or repeats) that starts with the
        batch size makes a constant that is the same in every sample: it is folded with 1
        in the batch's place (never with the stand-in number, which would allocate a
        million copies)."""
        index = SIZE_FROM_VALUES.get(node.op_type)
        if index is None or len(node.input) <= index:
            return {}
        name = node.input[index]
        shape = np.asarray(self.consts[name])
        if shape.ndim != 1 or not shape.size or int(shape[0]) != BATCH:
            return {}
        if node.op_type == "Tile" and np.shape(self.consts[node.input[0]])[:1] != (1,):
            return {}
        shape = shape.astype(np.int64).copy()
        shape[0] = 1
        return {name: shape}

    def reference(self, node: onnx.NodeProto | list[onnx.NodeProto],
                  data: dict[str, np.ndarray]) -> list:
        """The node (or a chain of nodes: the last one's outputs) evaluated by
        onnx.reference (ONNX's own semantics), its inputs taken from ``data`` or, for the
        others, the model's constants."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        nodes = node if isinstance(node, list) else [node]
        made = {o for n in nodes for o in n.output if o}
        inputs = list(dict.fromkeys(i for n in nodes for i in n.input if i and i not in made))
        value_info = [helper.make_tensor_value_info(i, onnx.TensorProto.UNDEFINED, None)
                      for i in inputs]
        outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                   for o in nodes[-1].output if o]
        graph = helper.make_graph(nodes, "node", value_info, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        # probes are float64 (exact indices, exact basis responses); float constants join
        # them in float64, as ops that combine two tensors (MatMul, Einsum) need one type
        feeds = {i: data[i] if i in data else as_float64(self.consts[i]) for i in inputs}
        return ReferenceEvaluator(model).run(None, feeds)

    def _check_fold_size(self, node: onnx.NodeProto) -> None:
        """A fold's output can dwarf its inputs (a ConstantOfShape of [10^6, 10^6], a
        product of a column and a row): its size is known from the inputs' values and
        shapes, and refused above --max-bytes before anything is allocated."""
        batch_free = self._batch_free_inputs(node)

        def value(i: int) -> np.ndarray | None:
            name = node.input[i] if i < len(node.input) else ""
            if not name:
                return None
            return np.asarray(batch_free.get(name, self.consts[name]))

        try:
            if node.op_type == "ConstantOfShape":
                dims = [int(d) for d in value(0).ravel()]
                size = math.prod(dims)
            elif node.op_type == "Expand":
                dims = tuple(int(d) for d in value(1).ravel())
                size = math.prod(np.broadcast_shapes(value(0).shape, dims))
            elif node.op_type == "Tile":
                dims = [int(r) for r in value(1).ravel()]
                size = value(0).size * math.prod(dims)
            elif node.op_type == "Range":
                start, limit, delta = (float(value(i)) for i in range(3))
                dims, size = [], max(0, math.ceil((limit - start) / delta)) if delta else 0
            elif node.op_type in BROADCASTING_FOLDS:
                dims, size = [], math.prod(np.broadcast_shapes(
                    *[np.shape(self.consts[i]) for i in node.input if i]))
            else:
                return
        except (ValueError, TypeError, OverflowError, ZeroDivisionError):
            return  # malformed: the reference evaluator reports it
        if BATCH in dims:
            self.fail(node, "builds a constant whose shape depends on the batch size beyond "
                            "its first axis; no per-sample MLP computes that")
        if size * 8 > self.max_bytes:
            self.fail(node, f"folding it would make a constant of {size:,} values, above "
                            f"--max-bytes {describe_bytes(self.max_bytes)}")
