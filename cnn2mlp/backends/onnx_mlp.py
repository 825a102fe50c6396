"""ONNX backend: the MLP as a plain ONNX model of MatMul, Add and activations, for
verifiers (Marabou, NNV, α,β-CROWN) and any ONNX runtime.

The input keeps the source model's name and shape (with a symbolic batch axis ``N``) and is
flattened by one Reshape; each layer is ``MatMul(h, W^T)`` + ``Add(b)`` and its activation
(Relu, LeakyRelu, Sigmoid, Tanh; none for a linear layer); the output is reshaped to the
source model's output shape and keeps its name. A layer with an activation per run of
neurons is split into one MatMul per run, and the next layer sums their products, so that
every node has one activation. Weights are dense float32 (float64 for a double model): the
MLP's own values, unchanged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._io import atomic_write
from ..ir.activations import Activation, by_name
from ..ir.graph import GraphMeta
from ..ir.mlp import Mlp, MlpLayer
from ..ir.weights import as_csr
from .registry import (Predictor, Target, TargetOptions, dense_preflight, refuse_approximate,
                       register_target)

OPSET = 13
class _Builder:
    def __init__(self, dtype=np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        out = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def runs(layer: MlpLayer) -> list[tuple[int, int, str, float]]:
    """The layer's neurons as runs of one activation."""
    if layer.segments is not None:
        return [tuple(s) for s in layer.segments]
    return [(0, layer.n_out, layer.activation, layer.alpha)]


def activation_nodes(b: _Builder, entry: Activation, alpha: float, z: str,
                     opset: int) -> tuple[str, int]:
    """The ONNX node(s) computing the activation on ``z``, and the opset now needed."""
    op = entry.onnx
    if op is None:
        return z, opset
    if op == "Swish":  # x * sigmoid(x): no Swish op before opset 24
        return b.node("Mul", [z, b.node("Sigmoid", [z])]), opset
    if op == "Clip":  # bounds as inputs from opset 11
        zero = b.const(np.array(0, b.dtype), "clip_min")
        top = b.const(np.array(alpha, b.dtype), "clip_max")
        return b.node("Clip", [z, zero, top]), opset
    attrs = {"alpha": alpha} if entry.alpha is not None else {}
    attrs.update(entry.onnx_attrs)
    return b.node(op, [z], **attrs), max(opset, entry.onnx_opset)


def mlp_to_onnx(mlp: Mlp, input_name: str = "input", output_name: str = "output",
                doc: str = "") -> onnx.ModelProto:
    b = _Builder(mlp.dtype)
    n_in = mlp.layers[0].n_in
    flat = b.node("Reshape", [input_name, b.const(np.array([-1, n_in], np.int64), "shape")],
                  "flat_input")
    parts = [(flat, 0, n_in)]  # the previous layer as (tensor, first neuron, stop)
    opset = OPSET
    for k, layer in enumerate(mlp.layers):
        dense = as_csr(layer.weight).toarray().astype(mlp.dtype)  # (n_out, n_in)
        bias = np.asarray(layer.bias, mlp.dtype)
        outputs = []
        for start, stop, act, alpha in runs(layer):
            z = None
            for tensor, lo, hi in parts:  # sum over the previous layer's runs
                product = b.node("MatMul", [tensor, b.const(dense[start:stop, lo:hi].T,
                                                              f"W{k}")])
                z = product if z is None else b.node("Add", [z, product])
            z = b.node("Add", [z, b.const(bias[start:stop], f"b{k}")], f"z{k}_{start}")
            z, opset = activation_nodes(b, by_name(act), alpha, z, opset)
            outputs.append((z, start, stop))
        parts = outputs
    (last, _, _), = parts
    out_dims = ["N", *mlp.output_shape]
    elem = TensorProto.DOUBLE if mlp.dtype == np.float64 else TensorProto.FLOAT
    b.node("Reshape", [last, b.const(np.array([-1, *mlp.output_shape], np.int64), "shape")],
           output_name)
    graph = helper.make_graph(
        b.nodes, "cnn2mlp_mlp",
        [helper.make_tensor_value_info(input_name, elem, ["N", *mlp.input_shape])],
        [helper.make_tensor_value_info(output_name, elem, out_dims)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cnn2mlp", doc_string=doc)
    model.ir_version = 8  # readable by older onnxruntime and verifier builds
    onnx.checker.check_model(model)
    return model


def save_onnx_mlp(mlp: Mlp, path: str | Path, input_name: str, output_name: str,
                  doc: str = "") -> None:
    model = mlp_to_onnx(mlp, input_name, output_name, doc)
    with atomic_write(path, "wb") as handle:
        handle.write(model.SerializeToString())


@register_target
class OnnxMlpTarget(Target):
    """ONNX MatMul/Add/activation layers for verifiers: every linear map fused, dense
    float32 weights (an ONNX file holds less than 2 GiB)."""

    name, suffix, kind = "onnx", ".onnx", "an ONNX model"
    dense_bytes = 4
    format_limit = 2**31 - 2**24
    limit_note = "an ONNX file holds less than 2 GiB (protobuf's limit)"
    insert_after = {"linearize-dag": ("fuse-dense",)}

    def write(self, mlp: Mlp, meta: GraphMeta, path: str | Path, options: TargetOptions,
              provenance: dict[str, str]) -> None:
        source = provenance.get("source", "")
        refuse_approximate(mlp, options, source)
        dense_preflight(self, mlp, options.max_dense_bytes, source)
        save_onnx_mlp(mlp, path, *meta.io_names,
                      doc=f"cnn2mlp {provenance.get('cnn2mlp', '')} from {source}")

    def load(self, mlp: Mlp, path: Path) -> Predictor:
        """The written file, run by onnxruntime."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        return Predictor(lambda x: session.run(None, {feed: np.asarray(x, mlp.dtype)})[0])
