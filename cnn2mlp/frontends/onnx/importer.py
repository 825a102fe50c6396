"""ONNX frontend: an ``.onnx`` file (opsets 9–21) into the IR with static per-sample shapes.

The first axis of the single input is the batch; the other dims come from the model or the
user. Nodes whose inputs are all constants (shape computations, Constant nodes, weight
preprocessing) are folded with ``onnx.reference``; ``Shape`` of a run-time value is known
from the static shapes, with a sentinel standing for the batch size so that a reshape
target computed from it can be recognised as "keep the batch".
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ...errors import CompileError, UnsupportedOpError
from ...ir import Graph
from ...ir.precision import working_precision
from .folding import FOLDABLE, ConstantFolding
from .model import MIN_OPSET, needed_nodes, read_model
from .patterns import fuse_patterns
from .refusals import DISCONTINUOUS, NO_MLP_FORM
from .registry import (BATCH, CONVERTERS, attr, constant_value, describe_bytes, first_line,
                       inferred_output_shape)


def load_onnx(path: str | Path, input_shape: Sequence[int] | None = None,
              allow_non_finite: bool = False, max_bytes: int | None = None,
              output: str | None = None, batch_axis: str = "auto") -> Graph:
    """Read an ONNX file into the IR. ``input_shape`` gives the per-sample dims (no batch);
    weights with NaN or Inf are refused unless ``allow_non_finite``; nothing larger than
    ``max_bytes`` is folded or built."""
    model, notes = read_model(path)
    graph = import_onnx(model, str(path), input_shape, allow_non_finite, max_bytes, output,
                        batch_axis)
    graph.notes[:0] = notes
    # the MLP's ONNX file keeps the original's tensor names, so that code feeding one feeds
    # the other (a model converted from TensorFlow keeps "input" and "output")
    graph.meta.io_names = (graph.input, graph.output)
    return graph


def import_onnx(model: onnx.ModelProto, source: str, input_shape=None,
                allow_non_finite: bool = False, max_bytes: int | None = None,
                output: str | None = None, batch_axis: str = "auto") -> Graph:
    """The importer, with ``batch_axis`` settled: "0" reads the input's first axis as the
    batch, "none" the whole input as one sample. "auto" asks ``has_batch_axis``; when it is
    unsure (a fixed first axis above 1: exporters fix the batch of their dummy input), the
    first axis is read as a batch, and if the graph then mixes it with the other axes
    (``W @ x`` with x a column) the whole input is one sample. The first reading's error
    stands if the second fails too."""
    from .batch_axis import has_batch_axis

    def attempt(one_sample: str | None) -> Graph:
        return OnnxImporter(model, source, input_shape, allow_non_finite, max_bytes, output,
                            one_sample).run()

    if batch_axis not in ("auto", "0", "none"):
        raise CompileError(f"--batch-axis {batch_axis!r}: give auto, 0 or none")
    if batch_axis != "auto":
        return attempt("--batch-axis none" if batch_axis == "none" else None)
    batched, why = has_batch_axis(model, {i.name for i in model.graph.initializer})
    if batched is not None:
        return attempt(None if batched else why)
    try:
        return attempt(None)
    except UnsupportedOpError as first:
        try:
            return attempt(why)
        except CompileError as second:
            if "batch axis" in str(first):
                # the first reading mixed its batch axis with the others: that rules it
                # out, and what stops the whole-input reading is the true reason
                raise type(second)(f"{second} (read as one sample: the first axis cannot be "
                                   f"a batch axis, {first_reason(first)})") from None
            raise first from None


def first_reason(error: CompileError) -> str:
    """'node X: why' from a refusal's message, without the file's name."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


class OnnxImporter(ConstantFolding):
    def __init__(self, model: onnx.ModelProto, source: str,
                 input_shape: Sequence[int] | None, allow_non_finite: bool = False,
                 max_bytes: int | None = None, output: str | None = None,
                 one_sample: str | None = None) -> None:
        from ...ir.cost import default_max_bytes

        self.allow_non_finite = allow_non_finite
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self.model = model
        self.source = source
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          None)
        if self.opset is None:
            raise CompileError(f"{source}: the model imports no default ONNX opset")
        newest = onnx.defs.onnx_opset_version()  # what the installed onnx can check
        if not MIN_OPSET <= self.opset <= newest:
            raise CompileError(f"{source}: the model uses ONNX opset {self.opset}; cnn2mlp reads "
                               f"opsets {MIN_OPSET} to {newest} (the newest this onnx package "
                               "knows): convert it with "
                               "onnx.version_converter.convert_version(model, 17)")
        self.consts: dict[str, np.ndarray] = {}
        # constants whose leading axis stands for the batch (built from the batch size, as
        # ConstantOfShape([N, 4]) is): stored with size 1 there, the same in every sample
        self.batch_consts: set[str] = set()
        self.user_shape = tuple(input_shape) if input_shape else None
        self.output_name = output
        self.graph: Graph | None = None
        self.batch_is_one = False
        # why the whole input is one sample (it then gets a batch axis), or None
        self.one_sample = one_sample
        self.batchless: str | None = None  # the report's note when it is
        self.nodes: list[onnx.NodeProto] = []
        # outputs of nodes a converter took with an earlier node (a chain that moves the
        # batch axis and back is converted as one map): skipped when their turn comes
        self.absorbed: set[str] = set()

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> Graph:
        self._add_batch_axis_if_missing()
        g = self.model.graph
        for init in g.initializer:
            self.consts[init.name] = self._tensor(init)
        if g.sparse_initializer:
            raise CompileError(f"{self.source}: sparse initializers are not supported; "
                               "save the model with dense initializers")
        self.graph = self._make_input()
        if self.output_name is None and len(g.output) != 1:
            raise CompileError(f"{self.source}: the model has {len(g.output)} outputs; "
                               "cnn2mlp converts models with one output (or pick a tensor "
                               "with --output-tensor)")
        out = self.output_name or g.output[0].name
        nodes = fuse_patterns(list(g.node), self._scalar_lookup(g.node))
        self.nodes = needed_nodes(nodes, out)  # nodes the output does not need are not read
        with working_precision(self.graph.dtype):
            for node in self.nodes:
                self._convert(node)
        if out in self.consts:
            raise CompileError(f"{self.source}: the output {out!r} does not depend on the input")
        if out == self.graph.input:
            raise CompileError(f"{self.source}: --output-tensor {out!r} is the model's input "
                               "itself; name a tensor computed from it")
        if out not in self.graph.values:
            raise CompileError(f"{self.source}: --output-tensor {out!r} is not a tensor of the model")
        self.graph.output = out
        if self.batchless:
            self.graph.meta.batched = False
            self.graph.notes.append(self.batchless)
        if self.output_name is None:
            self._check_output_shape(g.output[0])
        else:
            self.graph.meta.output_tensor = out
            self.graph.notes.append(f"compiled up to the tensor {out!r} (--output-tensor)")
        return self.graph

    def _add_batch_axis_if_missing(self) -> None:
        """A model whose whole input is one sample gets a batch axis (batch_axis.py)."""
        from .batch_axis import add_batch_axis

        if self.one_sample is None:
            return
        consts = {i.name for i in self.model.graph.initializer}
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        feed = next(i for i in model.graph.input if i.name not in consts)
        dims = feed.type.tensor_type.shape.dim
        if self.user_shape is not None:  # the user's shape is the whole input's
            if len(self.user_shape) != len(dims):
                raise CompileError(f"{self.source}: --input-shape has {len(self.user_shape)} "
                                   f"dims but the input {feed.name!r} (no batch axis) has "
                                   f"{len(dims)}")
            for d, n in zip(dims, self.user_shape):
                d.Clear()
                d.dim_value = n
        if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            raise CompileError(f"{self.source}: the input {feed.name!r} has no batch axis and "
                               "unknown dims; pass --input-shape with every dim")
        sample = tuple(d.dim_value for d in dims)
        # --batch-axis 0 is worth suggesting unless reading the first axis as the batch was
        # what auto tried first, and failed
        self.model = add_batch_axis(model, self.source, self.opset, self.output_name,
                                    suggest=self.one_sample == "--batch-axis none")
        self.batchless = (f"the model has no batch axis ({self.one_sample}): its whole input "
                          f"{sample} is one sample, and predict takes "
                          f"(B, {', '.join(map(str, sample))})")

    def _scalar_lookup(self, nodes):
        """name → its value when it is a one-element constant (an initializer or a Constant
        node), else None: what the pattern fusions need to know."""
        constants = {n.output[0]: n for n in nodes if n.op_type == "Constant" and n.output}

        def scalar(name: str) -> float | None:
            value = self.consts.get(name)
            if value is None and name in constants:
                try:
                    value = constant_value(constants[name])
                except Exception:
                    return None
            if value is None or value.size != 1 or value.dtype.kind not in "fiu":
                return None
            return float(value.ravel()[0])

        return scalar

    def _tensor(self, tensor: onnx.TensorProto) -> np.ndarray:
        """An initializer as an array; a tensor whose data does not match its dims is bad
        input (exit 2), not a crash."""
        try:
            return numpy_helper.to_array(tensor)
        except Exception as exc:
            raise CompileError(f"{self.source}: initializer {tensor.name!r} (dims "
                               f"{list(tensor.dims)}) is damaged: {first_line(exc)}; "
                               "export the model again") from exc

    def _make_input(self) -> Graph:
        inputs = [i for i in self.model.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            raise CompileError(f"{self.source}: the model has {len(inputs)} inputs ({names}); "
                               "cnn2mlp converts models with one input")
        value = inputs[0]
        ttype = value.type.tensor_type
        if ttype.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                   onnx.TensorProto.FLOAT16):
            raise CompileError(f"{self.source}: input {value.name!r} is not a float tensor")
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in ttype.shape.dim]
        if not ttype.HasField("shape") or not dims:
            dims = [None] + [None] * len(self.user_shape or ())
        self.batch_is_one = dims[0] == 1
        sample = self._resolve_input_dims(value.name, dims[1:])
        graph = Graph(value.name, sample)
        if ttype.elem_type == onnx.TensorProto.DOUBLE:  # a double model stays double
            graph.dtype = np.dtype(np.float64)
        return graph

    def _resolve_input_dims(self, name: str, dims: list[int | None]) -> tuple[int, ...]:
        if self.user_shape is None:
            if any(d is None for d in dims):
                shown = ",".join("?" if d is None else str(d) for d in dims)
                raise CompileError(f"{self.source}: input {name!r} has unknown dims (N,{shown}); "
                                   f"pass --input-shape with the dims after the batch axis")
            return tuple(dims)
        if len(self.user_shape) != len(dims):
            raise CompileError(f"{self.source}: --input-shape has {len(self.user_shape)} dims but "
                               f"input {name!r} has {len(dims)} after the batch axis")
        for model_dim, user_dim in zip(dims, self.user_shape):
            if model_dim is not None and model_dim != user_dim:
                shown = ",".join("?" if d is None else str(d) for d in dims)
                raise CompileError(f"{self.source}: --input-shape "
                                   f"{','.join(map(str, self.user_shape))} contradicts the "
                                   f"model's input {name!r} (N,{shown})")
        return self.user_shape

    def _check_output_shape(self, out: onnx.ValueInfoProto) -> None:
        dims = out.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
        actual = self.graph.shape(self.graph.output)
        if len(declared) == len(actual) and any(
                d is not None and d > 0 and d != a for d, a in zip(declared, actual)):
            raise CompileError(f"{self.source}: computed output shape (N,{actual}) differs from "
                               f"the declared one; check --input-shape")

    def _convert(self, node: onnx.NodeProto) -> None:
        if node.output and all(o in self.absorbed for o in node.output if o):
            return
        if node.domain not in ("", "ai.onnx"):
            self._unsupported(node, f"custom domain {node.domain!r}")
        if node.op_type == "Constant":
            try:
                self.consts[node.output[0]] = constant_value(node)
            except CompileError:
                raise
            except Exception as exc:  # data that does not match its dims, no attribute
                self.fail(node, f"its value is damaged ({first_line(exc)}); export the "
                                "model again")
            return
        if node.op_type in ("Shape", "Size") and not self.is_const(node.input[0]):
            self.consts[node.output[0]] = self._shape_of(node)
            return
        data_inputs = [i for i in node.input if i]
        if all(self.is_const(i) for i in data_inputs):
            if node.op_type in FOLDABLE or node.op_type in CONVERTERS:
                self._fold(node)
                return
        fn = CONVERTERS.get(node.op_type)
        if fn is None:
            self._unsupported(node)
        try:
            fn(self, node)
        except CompileError:
            raise
        except Exception as exc:  # malformed attributes or tensors in the file
            self.fail(node, f"cannot be converted ({type(exc).__name__}: {first_line(exc)}); "
                            "check the node's attributes and weights")

    def _unsupported(self, node: onnx.NodeProto, why: str = "") -> None:
        reason = NO_MLP_FORM.get(node.op_type)
        if node.op_type in DISCONTINUOUS:
            reason = "is discontinuous (a jump no weighted sum of ReLUs has)"
        if reason is not None:
            self.refuse(node, reason)
        what = f"op {node.op_type}" + (f" ({why})" if why else "")
        raise UnsupportedOpError(
            f"{self.source}: node {node.name or node.output[0]!r}: {what} has no converter "
            "in cnn2mlp (the ops it reads are listed in the README, 'Supported ONNX ops')"
            + self.output_tensor_hint(node))

    def refuse(self, node: onnx.NodeProto, reason: str) -> None:
        """Refuse a node no MLP computes: say why, and which tensor before it compiles."""
        raise UnsupportedOpError(
            f"{self.source}: node {node.name or node.output[0]!r} ({node.op_type}) {reason}: "
            "no MLP layer f(Wx + b) computes this." + self.output_tensor_hint(node))

    def output_tensor_hint(self, node: onnx.NodeProto) -> str:
        """' Compile the network up to the tensor before it: --output-tensor NAME', for a
        computed input that was converted (so the network up to it compiles), or ''."""
        graph = self.graph
        before = next((i for i in node.input if i and graph is not None and i in graph.values
                       and i != graph.input), None)
        if before is None:
            return ""
        return f" Compile the network up to the tensor before it: --output-tensor {before}"

    def fail(self, node: onnx.NodeProto, why: str) -> None:
        raise UnsupportedOpError(
            f"{self.source}: node {node.name or node.output[0]!r} ({node.op_type}): {why}")

    # -- constants ------------------------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, node: onnx.NodeProto, index: int, optional: bool = False) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            if optional:
                return None
            self.fail(node, f"input {index} is missing")
        name = node.input[index]
        if name not in self.consts:
            self.refuse(node, f"takes its input {name!r} from values computed from the model's "
                              f"input (a {node.op_type} whose parameters depend on the data)")
        value = self.consts[name]
        if value.dtype.kind == "f" and value.dtype.itemsize < 4 or "bfloat16" in str(value.dtype):
            self.fail(node, f"tensor {name!r} is {value.dtype} while the data is float: ONNX "
                            "needs both operands of one type; insert a Cast to float or save "
                            "the weights as float32")
        if not self.allow_non_finite and value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise CompileError(f"{self.source}: tensor {name!r} (read by node "
                               f"{node.name or node.output[0]!r}, {node.op_type}) has {bad} "
                               "NaN/Inf values; fix the model, or pass --allow-non-finite")
        return value

    def _shape_of(self, node: onnx.NodeProto) -> np.ndarray:
        full = np.array((BATCH,) + self.graph.shape(node.input[0]), dtype=np.int64)
        if node.op_type == "Size":
            return np.array(np.prod(full), dtype=np.int64)
        start = attr(node, "start", 0)
        end = attr(node, "end", None)
        return full[start:end]

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        """The nodes (among those the output needs) that read tensor ``name``."""
        return [n for n in self.nodes if name in n.input]

    def reduce_axes(self, node: onnx.NodeProto, x: str) -> list[int] | None:
        """The sample axes a Reduce* node reduces (sorted; the batch axis is refused), or
        None for a no-op (empty axes with noop_with_empty_axes)."""
        takes_input = self.opset >= 18 or (node.op_type == "ReduceSum" and self.opset >= 13)
        axes = self.const(node, 1, optional=True) if takes_input else attr(node, "axes", None)
        if axes is None or np.size(axes) == 0:
            if attr(node, "noop_with_empty_axes", 0):
                return None
            self.fail(node, "reduces every axis, the batch axis too; only per-sample "
                            "reductions can become an MLP")
        rank = self.sample_rank(x) + 1
        return sorted({self.sample_axis(node, int(a), rank) for a in np.ravel(axes)})

    def const_name(self, node: onnx.NodeProto, value) -> str:
        """A new constant, by name (for converters that rewrite a node into another)."""
        name = f"{node.name or node.output[0]}__const_{len(self.consts)}"
        self.consts[name] = np.asarray(value, np.int64)
        return name

    def check_size(self, node: onnx.NodeProto, nnz: int) -> None:
        """Refuse a matrix of ``nnz`` non-zeros above --max-bytes before building it."""
        from ...ir.cost import BYTES_PER_NNZ

        if nnz * BYTES_PER_NNZ > self.max_bytes:
            self.fail(node, f"as a matrix it needs {nnz:,} non-zeros, above --max-bytes "
                            f"{describe_bytes(self.max_bytes)}")

    def check_values(self, node: onnx.NodeProto, count: int, what: str) -> None:
        """Refuse ``count`` values (8 bytes each) above --max-bytes before making them."""
        if count * 8 > self.max_bytes:
            self.fail(node, f"{what} would hold {count:,} values, above --max-bytes "
                            f"{describe_bytes(self.max_bytes)}")

    def inferred_shape(self, node: onnx.NodeProto,
                       data: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
        """The shape of the node's first output when its inputs are ``data`` (name →
        shape) and the model's constants, by ONNX shape inference alone: nothing is
        evaluated or allocated. None when inference cannot tell."""
        return inferred_output_shape(node, data, self.consts, self.opset)

    # -- helpers for converters -----------------------------------------------------------
    def data(self, node: onnx.NodeProto, index: int = 0) -> str:
        return self.data_by_name(node, node.input[index])

    def data_by_name(self, node: onnx.NodeProto, name: str) -> str:
        if name not in self.graph.values:
            self.fail(node, f"input {name!r} is unknown (is the graph topologically sorted?)")
        return name

    def emit(self, node: onnx.NodeProto, op: str, inputs: list[str], attrs=None,
             output: str | None = None) -> str:
        """Add an IR node; the last one of a conversion takes the ONNX output name."""
        try:
            ir_node = self.graph.add_node(op, inputs, attrs, name=node.name or op, output=output)
        except ValueError as exc:
            self.fail(node, str(exc))
        return ir_node.output

    def alias(self, node: onnx.NodeProto, src: str) -> None:
        """The ONNX output is the same value as ``src``."""
        self.emit(node, "Identity", [src], output=node.output[0])

    def sample_rank(self, name: str) -> int:
        return len(self.graph.shape(name))

    def sample_axis(self, node: onnx.NodeProto, axis: int, full_rank: int) -> int:
        """An ONNX axis of the batched tensor as an axis of the sample; never the batch."""
        axis = axis + full_rank if axis < 0 else axis
        if axis == 0 or not 0 < axis < full_rank:
            self.fail(node, f"axis {axis} is the batch axis or out of range; only ops that "
                            "keep each sample separate can become an MLP")
        return axis - 1
