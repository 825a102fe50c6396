"""Models without a batch axis (VNN-COMP nn4sys and test models, column-vector ``W @ x``):
the whole input is one sample, predict takes (B, *input_shape), and every op's batching
rule is checked against onnxruntime run one sample at a time."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnn2mlp
from cnn2mlp.references import onnx_runner, per_sample
from cnn2mlp.cli import main
from cnn2mlp.compile import compile_model
from cnn2mlp.errors import CompileError

RNG = np.random.default_rng(20261126)


def init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def make(nodes, inits, in_dims, out="y", opset=13, elem=TensorProto.FLOAT):
    graph = helper.make_graph(nodes, "batchless", [helper.make_tensor_value_info("x", elem, in_dims)],
                              [helper.make_tensor_value_info(out, elem, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def column_model(dtype=np.float32, elem=TensorProto.FLOAT):
    """nn4sys style: x is a column (5, 1); W @ x + b with b a column; ReLU."""
    inits = [init("W0", RNG.normal(0, 1, (8, 5)), dtype), init("b0", RNG.normal(0, 1, (8, 1)), dtype),
             init("W1", RNG.normal(0, 50, (3, 8)), dtype), init("b1", RNG.normal(0, 900, (3, 1)), dtype)]
    nodes = [helper.make_node("MatMul", ["W0", "x"], ["m0"]),
             helper.make_node("Add", ["m0", "b0"], ["a0"]),
             helper.make_node("Relu", ["a0"], ["r0"]),
             helper.make_node("MatMul", ["W1", "r0"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["y"])]
    return make(nodes, inits, [5, 1], elem=elem)


def rank1_model():
    """A vector input through Gemm, a Reshape to an image with a leading 1, Conv, MaxPool,
    Flatten, a Reshape to its own Shape, Transpose and Squeeze (opset 11 attributes)."""
    inits = [init("Wg", RNG.normal(0, 1, (12, 6))), init("bg", RNG.normal(0, 1, 12)),
             init("shape", [1, 3, 2, 2], np.int64), init("K", RNG.normal(0, 1, (2, 3, 2, 2))),
             init("Kb", RNG.normal(0, 1, 2))]
    nodes = [helper.make_node("Unsqueeze", ["x"], ["x2"], axes=[0]),
             helper.make_node("Gemm", ["x2", "Wg", "bg"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["g"], ["gr"]),
             helper.make_node("Reshape", ["gr", "shape"], ["img"]),
             helper.make_node("Conv", ["img", "K", "Kb"], ["c"], pads=[1, 1, 0, 0]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 1]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Shape", ["f"], ["fs"]),
             helper.make_node("Reshape", ["f", "fs"], ["f2"]),
             helper.make_node("Transpose", ["f2"], ["ft"]),
             helper.make_node("Squeeze", ["ft"], ["y"], axes=[1])]
    return make(nodes, inits, [6], opset=11)


def save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def assert_matches_per_sample(path, compiled, x, rtol=1e-5):
    reference = per_sample(onnx_runner(path, batchless=True))(x)
    got = compiled.predict(x)
    assert got.shape[0] == len(x)
    err = np.max(np.abs(got - reference.reshape(got.shape)) / np.maximum(1, np.abs(reference.reshape(got.shape))))
    assert err <= rtol, err


def test_column_vector_model_is_one_sample(tmp_path, capsys):
    path = save(column_model(), tmp_path)
    assert main([str(path), "-o", str(tmp_path / "m.npz"), "--check", "32"]) == 0
    printed = capsys.readouterr()
    assert "no batch axis" in printed.out + printed.err
    model = cnn2mlp.load(tmp_path / "m.npz")
    assert model.input_shape == (5, 1) and model.output_shape == (3, 1)
    assert_matches_per_sample(path, model, RNG.uniform(-1, 1, (20, 5, 1)).astype(np.float32))


def test_rank1_input_through_gemm_conv_and_shape_ops(tmp_path):
    path = save(rank1_model(), tmp_path)
    compile_model(path, tmp_path / "m.npz")
    model = cnn2mlp.load(tmp_path / "m.npz")
    assert model.input_shape == (6,)
    assert_matches_per_sample(path, model, RNG.uniform(-1, 1, (20, 6)).astype(np.float32))


def test_float64_column_model_matches_within_1e9(tmp_path):
    """nn4sys' learned-index models are both: double and batch-less."""
    path = save(column_model(np.float64, TensorProto.DOUBLE), tmp_path)
    compile_model(path, tmp_path / "m.npz")
    model = cnn2mlp.load(tmp_path / "m.npz")
    assert model.dtype == np.float64
    assert_matches_per_sample(path, model, RNG.uniform(-1, 1, (20, 5, 1)), rtol=1e-9)


def test_forcing_a_batch_axis_on_a_column_model_says_what_to_do(tmp_path):
    path = save(column_model(), tmp_path)
    with pytest.raises(CompileError, match="--batch-axis none"):
        compile_model(path, batch_axis="0")


def test_batch_axis_none_needs_every_dim(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    path = save(make(nodes, [], ["n", 4]), tmp_path)
    with pytest.raises(CompileError, match="unknown dims"):
        compile_model(path, batch_axis="none")
    compile_model(path, batch_axis="none", input_shape=(3, 4))  # the whole input's shape


def test_an_op_without_a_batching_rule_is_named(tmp_path):
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"])]
    path = save(make(nodes, [init("axis", 0, np.int64)], [4]), tmp_path)  # a vector: one sample
    with pytest.raises(CompileError, match="no batching rule"):
        compile_model(path)


def test_conv_over_a_non_unit_leading_axis_is_refused(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "K"], ["y"])]
    path = save(make(nodes, [init("K", RNG.normal(0, 1, (2, 3, 1, 1)))], [2, 3, 4, 4]),
                tmp_path)
    compile_model(path)  # auto: a fixed first axis reads as a batch when nothing mixes it
    with pytest.raises(CompileError, match="not 1"):
        compile_model(path, batch_axis="none")


def op_case(name):
    """One op on a (4, 3) batch-less input, then a dense head: (nodes, inits)."""
    w = init("Wh", RNG.normal(0, 1, (12, 5)))
    head = [helper.make_node("Reshape", ["h", "flat"], ["hf"]),
            helper.make_node("MatMul", ["hf", "Wh"], ["y"])]
    flat = init("flat", [1, 12], np.int64)
    cases = {
        "reduce_max_axis0": ([helper.make_node("ReduceMax", ["x"], ["m"], axes=[0]),
                              helper.make_node("Sub", ["x", "m"], ["h"])], []),
        "concat_split": ([helper.make_node("Split", ["x", "sizes"], ["p", "q"], axis=1),
                          helper.make_node("Concat", ["q", "p"], ["h"], axis=1)],
                         [init("sizes", [1, 2], np.int64)]),
        "reduce_then_broadcast": ([helper.make_node("ReduceMean", ["x"], ["m"], axes=[0]),
                                   helper.make_node("Sub", ["x", "m"], ["h"])], []),
        "vector_plus_matrix": ([helper.make_node("ReduceSum", ["x", "ax0"], ["v"], keepdims=0),
                                helper.make_node("Add", ["v", "C"], ["h"])],
                               [init("ax0", [0], np.int64), init("C", RNG.normal(0, 1, (4, 3)))]),
        "slice_pad": ([helper.make_node("Slice", ["x", "st", "en"], ["sl"]),
                       helper.make_node("Pad", ["sl", "pads"], ["h"])],
                      [init("st", [1, 0], np.int64), init("en", [4, 2], np.int64),
                       init("pads", [1, 0, 0, 1], np.int64)]),
        "tile_gather": ([helper.make_node("Tile", ["x", "reps"], ["t"]),
                         helper.make_node("Gather", ["t", "idx"], ["h"], axis=1)],
                        [init("reps", [1, 2], np.int64), init("idx", [5, 0, 2], np.int64)]),
        "row_vector_matmul": ([helper.make_node("MatMul", ["x", "W"], ["h"])],
                              [init("W", RNG.normal(0, 1, (3, 3)))]),
        "einsum": ([helper.make_node("Einsum", ["E", "x"], ["h"], equation="ij,jk->ik")],
                   [init("E", RNG.normal(0, 1, (4, 4)))]),
        "expand_from_vector": ([helper.make_node("ReduceSum", ["x", "ax"], ["v"], keepdims=0),
                                helper.make_node("Expand", ["v", "shp"], ["h"])],
                               [init("ax", [1], np.int64), init("shp", [3, 4], np.int64)]),
    }
    nodes, inits = cases[name]  # each h has 12 entries
    return nodes + head, inits + [w, flat]


@pytest.mark.parametrize("name", ["reduce_max_axis0", "concat_split", "reduce_then_broadcast",
                                  "vector_plus_matrix", "slice_pad", "tile_gather", "row_vector_matmul", "einsum",
                                  "expand_from_vector"])
def test_batching_rule_per_op(tmp_path, name):
    nodes, inits = op_case(name)
    model = make(nodes, inits, [4, 3])
    path = save(model, tmp_path)
    compile_model(path, tmp_path / "m.npz")
    model = cnn2mlp.load(tmp_path / "m.npz")
    assert model.input_shape == (4, 3)
    assert_matches_per_sample(path, model, RNG.uniform(-1, 1, (16, 4, 3)).astype(np.float32))
