"""Every CLI path (each target, ``--check``, ``--output-tensor``) on the three shapes real
exports give an input: a fixed batch of 1 (``torch.onnx.export``'s default, most VNN-COMP
networks), a symbolic batch, and no batch axis. ``--check 5`` runs the float32 reference
and the float64 evaluation on several samples: a model that takes one sample at a time
must be fed one at a time by both (it crashed the float64 one)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnn2mlp.backends.c import c_paths
from cnn2mlp.cli import main
from cnn2mlp.runtime.c_build import find_compiler

RNG = np.random.default_rng(20261206)
SUFFIXES = [".npz", ".onnx", ".nnet", ".xml", ".c"]


def conv_chain(batch) -> onnx.ModelProto:
    """Conv (negative weights, non-zero bias), ReLU, Flatten (a Reshape to [1, -1] with a
    fixed batch, as torch.onnx.export writes it), Gemm, ReLU, Gemm, with the input's
    leading dimension ``batch`` (1, a name, or None: no batch axis)."""
    dims = ([batch] if batch is not None else []) + [2, 5, 5]
    inits = [numpy_helper.from_array(RNG.uniform(-0.8, 0.8, (3, 2, 3, 3)).astype(np.float32), "K"),
             numpy_helper.from_array(RNG.uniform(-0.5, 0.5, 3).astype(np.float32), "Kb"),
             numpy_helper.from_array(RNG.uniform(-0.4, 0.4, (6, 27)).astype(np.float32), "W1"),
             numpy_helper.from_array(RNG.uniform(-0.5, 0.5, 6).astype(np.float32), "b1"),
             numpy_helper.from_array(RNG.uniform(-0.6, 0.6, (4, 6)).astype(np.float32), "W2"),
             numpy_helper.from_array(RNG.uniform(-0.5, 0.5, 4).astype(np.float32), "b2")]
    x = "x"
    nodes = []
    if batch is None:  # batch-less: a 3-D input made 4-D for the Conv, as exporters do
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
        nodes.append(helper.make_node("Unsqueeze", ["x", "axis0"], ["x4"]))
        x = "x4"
    if batch == 1:  # torch.onnx.export with a fixed batch flattens by a constant shape
        inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "flat"))
        flatten = helper.make_node("Reshape", ["r", "flat"], ["f"])
    else:
        flatten = helper.make_node("Flatten", ["r"], ["f"], axis=1)
    nodes += [helper.make_node("Conv", [x, "K", "Kb"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              flatten,
              helper.make_node("Gemm", ["f", "W1", "b1"], ["g1"], transB=1),
              helper.make_node("Relu", ["g1"], ["hidden"]),
              helper.make_node("Gemm", ["hidden", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, dims)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


BATCHES = {"fixed batch of 1": 1, "symbolic batch": "batch_size", "no batch axis": None}


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("shape", list(BATCHES))
def test_every_target_checks_every_batch_shape(tmp_path, capsys, shape, suffix):
    if suffix == ".c" and find_compiler() is None:
        pytest.skip("no C compiler (apt install gcc)")
    model = tmp_path / "m.onnx"
    onnx.save(conv_chain(BATCHES[shape]), str(model))
    out = tmp_path / f"out{suffix}"
    assert main([str(model), "-o", str(out), "--check", "5"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "check passed" in printed and "against a float64 evaluation" in printed
    assert out.exists()


@pytest.mark.parametrize("shape", list(BATCHES))
def test_output_tensor_checks_every_batch_shape(tmp_path, capsys, shape):
    model = tmp_path / "m.onnx"
    onnx.save(conv_chain(BATCHES[shape]), str(model))
    out = tmp_path / "cut.npz"
    assert main([str(model), "-o", str(out), "--check", "4", "--output-tensor", "hidden"]) == 0
    assert "check passed" in capsys.readouterr().out


def test_the_c_target_checks_a_fixed_batch_with_its_weights_file(tmp_path, capsys, monkeypatch):
    """The external-weights variant of the C code on a fixed-batch model."""
    if find_compiler() is None:
        pytest.skip("no C compiler (apt install gcc)")
    import cnn2mlp.runtime.c_source as c_source

    monkeypatch.setattr(c_source, "STATIC_LIMIT", 0)
    model = tmp_path / "m.onnx"
    onnx.save(conv_chain(1), str(model))
    out = tmp_path / "net.c"
    assert main([str(model), "-o", str(out), "--check", "7"]) == 0
    assert c_paths(out)[2].exists() and "check passed" in capsys.readouterr().out
