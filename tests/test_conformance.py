"""ONNX's own node conformance cases, end to end through the compiler.

Every 1D/2D float32 or float64 case of the listed ops whose output keeps the batch axis (and
whose weights can be constants of the model) is compiled with its weights as initializers
and compared with the case's expected output; the cases whose first axis is not a batch
are compiled again as one sample (--batch-axis none).
"""
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cnn2mlp.comparison import compare
from cnn2mlp.testing import compile_to_model

OPS = {"Conv", "Gemm", "MatMul", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Flatten", "Transpose",
       "BatchNormalization", "Identity", "Dropout",
       "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Clip",
       "Elu", "Selu", "Celu", "Softplus", "Softsign", "HardSwish", "HardSigmoid", "Mish",
       "Gelu", "ThresholdedRelu", "Erf", "PRelu", "Abs", "Neg", "DepthToSpace",
       "SpaceToDepth", "Tile", "Gather", "GatherElements", "Pad", "Resize", "Upsample",
       "ConvTranspose", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1",
       "Shrink", "Einsum", "Expand"}

#: reasons a case is out of scope only because its first axis is not a batch axis: such a
#: case is one sample, compiled with --batch-axis none
NOT_A_BATCH = ("no batch axis", "output does not keep the batch axis", "moves the batch axis",
               "flattens the batch axis", "transA reads", "bias varies along the batch",
               "batched weight", "slope varies along", "indices vary along", "gathers along",
               "repeats the batch", "the first axis")


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
    if x.dtype not in (np.float32, np.float64) or y.dtype != x.dtype:
        return "not float32 or float64"
    if x.ndim > 4:
        return "more than 2 spatial axes"
    if x.ndim < 2:
        return "no batch axis (a rank-1 tensor is one sample)"
    if node.op_type in ("Einsum", "Expand"):
        return "the first axis is a sample's own (the cases broadcast or contract it)"
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


def op_cases():
    return [c for c in all_cases() if c.kind == "node" and len(c.model.graph.node) == 1
            and c.model.graph.node[0].op_type in OPS and c.data_sets]


def in_scope_cases():
    return [c for c in op_cases() if out_of_scope(c) is None]


def one_sample_cases():
    """Float cases whose first axis is not a batch: the whole input is one sample."""
    picked = []
    for c in op_cases():
        why = out_of_scope(c)
        if why is None or not why.startswith(NOT_A_BATCH):
            continue
        node = c.model.graph.node[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Shrink" and attrs.get("bias", 0.0) != attrs.get("lambd", 0.5):
            continue  # hard shrink jumps: refused as discontinuous, tested elsewhere
        inputs, outputs = c.data_sets[0]
        if inputs[0].dtype in (np.float32, np.float64) and inputs[0].ndim <= 4 and \
                outputs[0].size and outputs[0].dtype == inputs[0].dtype:
            picked.append(c)
    return picked


CASES = in_scope_cases()
ONE_SAMPLE_CASES = one_sample_cases()


def tolerance(expected: np.ndarray) -> float:
    """float32 cases within 1e-4 relative; float64 cases, compiled in float64, within 1e-9."""
    return 1e-9 if expected.dtype == np.float64 else 1e-4


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
    assert covered == OPS - {"Mish", "GatherElements", "Tile", "Shrink", "Einsum", "Expand"}, \
        f"no in-scope case for {OPS - covered}"
    # ... and they are covered read as one sample
    one_sample = {c.model.graph.node[0].op_type for c in ONE_SAMPLE_CASES}
    assert {"Mish", "GatherElements", "Tile", "Shrink", "Einsum", "Expand"} <= one_sample
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case):
    inputs, outputs = case.data_sets[0]
    model = with_constant_weights(case)
    compiled = compile_to_model(model)
    got = compiled.predict(inputs[0])
    comparison = compare(outputs[0], got, tolerance(outputs[0]))
    assert comparison.passed, comparison.describe()


@pytest.mark.parametrize("case", ONE_SAMPLE_CASES, ids=[c.name for c in ONE_SAMPLE_CASES])
def test_node_case_as_one_sample(case):
    """The same cases read without a batch axis (as VNN-COMP's nn4sys models are): the
    compiled MLP's sample is the case's whole input."""
    inputs, outputs = case.data_sets[0]
    model = with_constant_weights(case)
    compiled = compile_to_model(model, batch_axis="none")
    got = compiled.predict(inputs[0][None])[0]
    comparison = compare(outputs[0], got.reshape(outputs[0].shape), tolerance(outputs[0]))
    assert comparison.passed, comparison.describe()
