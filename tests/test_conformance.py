"""ONNX's own node conformance cases, end to end through the compiler.

Every 1D/2D float case of the listed ops whose output keeps the batch axis (and whose
weights can be constants of the model) is compiled with its weights as initializers and
compared with the case's expected output.
"""
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cnn2mlp.check import compare
from cnn2mlp.testing import compile_to_model

OPS = {"Conv", "Gemm", "MatMul", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Flatten", "Transpose",
       "BatchNormalization", "Identity", "Dropout",
       "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Clip",
       "Elu", "Selu", "Celu", "Softplus", "Softsign", "HardSwish", "HardSigmoid", "Mish",
       "Gelu", "ThresholdedRelu", "Erf", "PRelu", "Abs", "Neg", "DepthToSpace",
       "SpaceToDepth", "Tile", "Gather", "GatherElements", "Pad", "Resize", "Upsample",
       "ConvTranspose", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1",
       "Shrink"}


def all_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_testcases(None)


def out_of_scope(case) -> str | None:
    """Why a case is outside "1D/2D float, keeps the batch axis, constant weights"."""
    graph = case.model.graph
    node = graph.node[0]
    inputs, outputs = case.data_sets[0]
    if not all(isinstance(a, np.ndarray) for a in inputs[:1] + outputs):
        return "not tensors"
    x, y = inputs[0], outputs[0]
    if len(outputs) > 1:
        return "extra outputs (training mode or mask)"
    if x.dtype != np.float32 or y.dtype != np.float32:
        return "not float32"
    if x.ndim > 4:
        return "more than 2 spatial axes"
    if x.ndim < 2:
        return "no batch axis (a rank-1 tensor is one sample)"
    if x.size == 0:
        return "an empty tensor"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("training_mode") or (node.op_type == "Dropout" and len(inputs) > 2
                                      and bool(np.asarray(inputs[2]))):
        return "training mode"
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        return "output does not keep the batch axis"
    if node.op_type == "Transpose" and attrs.get("perm", [x.ndim - 1])[0] != 0:
        return "moves the batch axis"
    if node.op_type == "Flatten" and attrs.get("axis", 1) % x.ndim != 1:
        return "flattens the batch axis into others"
    if node.op_type == "Gemm" and attrs.get("transA"):
        return "transA reads the batch axis as features"
    if node.op_type == "Gemm" and len(inputs) > 2 and inputs[2].ndim == 2 and \
            inputs[2].shape[0] not in (1,):
        return "bias varies along the batch axis"
    if node.op_type == "MatMul" and inputs[1].ndim != 2:
        return "batched weight"
    if node.op_type == "PRelu" and inputs[1].ndim == x.ndim and inputs[1].shape[0] != 1:
        return "slope varies along the batch axis"
    if node.op_type == "Shrink" and attrs.get("bias", 0.0) != attrs.get("lambd", 0.5):
        return "hard shrink jumps at ±lambd (discontinuous)"
    if node.op_type == "GatherElements" and inputs[1].shape[0] != 1:
        return "indices vary along the batch axis"
    if node.op_type in ("Gather", "GatherElements") and attrs.get("axis", 0) % x.ndim == 0:
        return "gathers along the batch axis"
    if node.op_type == "Tile" and int(np.asarray(inputs[1]).ravel()[0]) != 1:
        return "repeats the batch axis"
    return None


def in_scope_cases():
    cases = [c for c in all_cases() if c.kind == "node" and len(c.model.graph.node) == 1
             and c.model.graph.node[0].op_type in OPS and c.data_sets]
    return [c for c in cases if out_of_scope(c) is None]


CASES = in_scope_cases()


def with_constant_weights(case) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    inputs, _ = case.data_sets[0]
    keep = graph.input[0]
    for value, array in zip(list(graph.input)[1:], inputs[1:]):
        graph.initializer.append(numpy_helper.from_array(np.asarray(array), value.name))
    del graph.input[1:]
    assert graph.input[0] == keep
    return model


def test_the_scope_is_not_empty():
    covered = {c.model.graph.node[0].op_type for c in CASES}
    # Mish's cases are all rank 1 (no batch axis); it is tested in test_activations.py
    # these ops' cases all use the batch axis or rank 1; tested in test_activations.py and
    # test_linear_ops.py instead
    assert covered == OPS - {"Mish", "GatherElements", "Tile", "Shrink"}, \
        f"no in-scope case for {OPS - covered}"
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case):
    inputs, outputs = case.data_sets[0]
    model = with_constant_weights(case)
    compiled = compile_to_model(model)
    got = compiled.predict(inputs[0])
    comparison = compare(outputs[0], got, 1e-4)
    assert comparison.passed, comparison.describe()
