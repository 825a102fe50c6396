"""float64 models stay float64: weights, the artifact, predict's default and --check.

A learned-index model (VNN-COMP nn4sys style: outputs in the thousands, weights in double)
is wrong by far more than float32 rounding if its weights are rounded to float32, so every
test here compares against float64 references within 1e-9 relative.
"""
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnn2mlp
from cnn2mlp.references import onnx_runner
from cnn2mlp.cli import main
from cnn2mlp.compile import compile_model

F64_TOLERANCE = 1e-9


def init(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float64), name)


def learned_index_model(seed=0) -> onnx.ModelProto:
    """MatMul/Add/Relu in double, outputs around 1e5, weights with all 53 bits used."""
    rng = np.random.default_rng(seed)
    sizes = [1, 64, 64, 1]
    inits, nodes, current = [], [], "x"
    for k, (a, b) in enumerate(zip(sizes, sizes[1:])):
        inits += [init(f"W{k}", rng.normal(0, 1, (a, b)) * (1 + np.pi * 1e-9)),
                  init(f"B{k}", rng.normal(0, 1, b) * 1000 / 3)]
        nodes += [helper.make_node("MatMul", [current, f"W{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"B{k}"], [f"a{k}"])]
        current = f"a{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{k}"]))
            current = f"r{k}"
    nodes.append(helper.make_node("Mul", [current, "scale"], ["y"]))
    inits.append(init("scale", np.array([123.456789012345678])))
    graph = helper.make_graph(
        nodes, "learned_index",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def double_cnn(seed=1) -> onnx.ModelProto:
    """Conv, MaxPool and a Dense head in double (onnxruntime has no double Conv kernel)."""
    rng = np.random.default_rng(seed)
    inits = [init("W1", rng.normal(0, 1, (4, 2, 3, 3))), init("B1", rng.normal(0, 1, 4)),
             init("W2", rng.normal(0, 100, (36, 8))), init("B2", rng.normal(0, 1000, 8))]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["y"])]
    graph = helper.make_graph(
        nodes, "double_cnn", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def rel_error(ref, got):
    return float(np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))))


def test_learned_index_model_stays_float64(tmp_path):
    src = tmp_path / "index.onnx"
    onnx.save(learned_index_model(), str(src))
    compile_model(src, tmp_path / "index.npz")
    model = cnn2mlp.load(tmp_path / "index.npz")
    assert model.dtype == np.float64
    x = np.random.default_rng(2).uniform(0, 1, (200, 1))
    reference = onnx_runner(src)(x)
    got = model.predict(x)  # the default is the model's precision
    assert got.dtype == np.float64
    assert np.abs(reference).max() > 1e3  # the regime where float32 weights fail
    assert rel_error(reference, got) <= F64_TOLERANCE
    # rounded to float32 the same model is off by far more: the test can tell them apart
    assert rel_error(reference, model.predict(x.astype(np.float32), dtype=np.float32)) > 1e-7
    with zipfile.ZipFile(tmp_path / "index.npz") as z:
        assert "dtype.npy" in z.namelist()


@pytest.mark.parametrize("suffix", ["npz", "onnx", "nnet"])
def test_check_runs_in_float64_on_every_target(tmp_path, suffix, capsys):
    src = tmp_path / "index.onnx"
    onnx.save(learned_index_model(seed=3), str(src))
    out = tmp_path / f"mlp.{suffix}"
    assert main([str(src), "-o", str(out), "--check", "64"]) == 0
    printed = capsys.readouterr().out
    assert "tolerance 1e-09" in printed and "check passed" in printed
    if suffix == "onnx":
        emitted = onnx.load(str(out))
        assert emitted.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
        x = np.random.default_rng(4).uniform(0, 1, (50, 1))
        assert rel_error(onnx_runner(src)(x), onnx_runner(out)(x)) <= F64_TOLERANCE


def test_double_conv_is_checked_with_onnx_reference(tmp_path, capsys):
    """onnxruntime lacks a float64 Conv: --check says it fell back to onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    src = tmp_path / "cnn.onnx"
    onnx.save(double_cnn(), str(src))
    assert main([str(src), "-o", str(tmp_path / "cnn.npz"), "--check", "32"]) == 0
    assert "onnx.reference" in capsys.readouterr().out
    x = np.random.default_rng(5).uniform(-1, 1, (20, 2, 6, 6))
    reference = ReferenceEvaluator(double_cnn()).run(None, {"x": x})[0]
    assert rel_error(reference, cnn2mlp.load(tmp_path / "cnn.npz").predict(x)) <= F64_TOLERANCE


def test_kernel_module_and_both_engines_keep_float64(tmp_path):
    import importlib.util

    from cnn2mlp.runtime import available_engines

    src = tmp_path / "index.onnx"
    onnx.save(learned_index_model(seed=6), str(src))
    assert main([str(src), "-o", str(tmp_path / "m.npz"), "--kernel-py",
                 str(tmp_path / "kernel.py"), "--quiet"]) == 0
    x = np.random.default_rng(7).uniform(0, 1, (30, 1))
    reference = onnx_runner(src)(x)
    for engine in available_engines():
        got = cnn2mlp.load(tmp_path / "m.npz", engine=engine).predict(x)
        assert got.dtype == np.float64 and rel_error(reference, got) <= F64_TOLERANCE, engine
    spec = importlib.util.spec_from_file_location("kernel", tmp_path / "kernel.py")
    kernel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel)
    got = kernel.load().predict(x)
    assert got.dtype == np.float64 and rel_error(reference, got) <= F64_TOLERANCE


def test_files_without_a_dtype_member_load_as_float32(tmp_path):
    from cnn2mlp.testing import OnnxBuilder

    b = OnnxBuilder((4,), seed=8)
    b.dense(3)
    onnx.save(b.build(), str(tmp_path / "m.onnx"))
    compile_model(tmp_path / "m.onnx", tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "dtype"}
    np.savez(tmp_path / "old.npz", **arrays)
    assert cnn2mlp.load(tmp_path / "old.npz").dtype == np.float32
    arrays["dtype"] = np.array("float16")
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(Exception, match="not float32 or float64"):
        cnn2mlp.load(tmp_path / "bad.npz")


def test_keras_float64_model(tmp_path):
    keras = pytest.importorskip("keras", reason="install the tensorflow extra")
    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 2), dtype="float64"),
                              L.Conv2D(3, 3, activation="relu", dtype="float64"),
                              L.Flatten(dtype="float64"), L.Dense(2, dtype="float64")])
    rng = np.random.default_rng(9)
    for w in model.weights:
        w.assign(rng.normal(0, 100, tuple(w.shape)))
    path = tmp_path / "m.keras"
    model.save(path)
    x = rng.uniform(0, 1, (16, 6, 6, 2))
    reference = np.asarray(model(x, training=False))  # predict() would cast to float32
    compiled = cnn2mlp.load(compile_model(path, tmp_path / "m.npz") and tmp_path / "m.npz")
    assert compiled.dtype == np.float64
    assert rel_error(reference, compiled.predict(x)) <= F64_TOLERANCE
