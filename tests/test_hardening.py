"""Hostile inputs, round 2: crafted artifacts, sizes that must be checked before memory is
taken, files that used to cost minutes, and bad input that exited 0 or 1. Each case runs
the CLI in a child process of its own and measures that child's peak memory."""
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper

import cnn2mlp
import cnn2mlp.cli as cli_module
from cnn2mlp.backends.csr import ArtifactError, save_csr
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.testing import OnnxBuilder

from test_bad_input import assert_clean_failure, run_cli_peak

GIB_KIB = 1 << 20  # a GiB, in the KiB ru_maxrss counts


# ------------------------------------------------------------------ crafted artifacts
def artifact_arrays(tmp_path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    layers = [MlpLayer(sp.csr_array(rng.normal(size=(2, 4)).astype(np.float32)),
                       np.ones(2, np.float32), "relu"),
              MlpLayer(sp.csr_array(rng.normal(size=(2, 2)).astype(np.float32)),
                       np.zeros(2, np.float32), "mixed",
                       segments=((0, 1, "relu", 0.0), (1, 2, "identity", 0.0)))]
    path = tmp_path / "a.npz"
    save_csr(Mlp(layers, (4,), (2,)), path)
    with np.load(path) as z:
        return path, dict(z)


@pytest.mark.parametrize("indptr, dtype", [
    ([0, 10**9, 0], np.uint32), ([0, 10**9, 0], np.uint64), ([0, 12, 8], np.uint32),
    ([0, 12, 8], np.uint64), ([0, 2**64 - 1, 8], np.uint64)])
def test_unsigned_row_pointers_that_decrease_are_refused(tmp_path, indptr, dtype):
    """np.diff wraps around on unsigned arrays: [0, 10**9, 0] looked non-decreasing and
    the kernels then read past the arrays (a segfault)."""
    path, arrays = artifact_arrays(tmp_path)
    nnz = indptr[-1]
    arrays["layer0.indptr"] = np.array([indptr[0], indptr[1], indptr[2]], dtype)
    arrays["layer0.indices"] = np.zeros(nnz, np.int32)
    arrays["layer0.data"] = np.ones(nnz, np.float32)
    np.savez(path, **arrays)
    with pytest.raises(ArtifactError, match="layer0.indptr"):  # never loads, never runs
        cnn2mlp.load(path)


def test_activation_run_stops_beyond_int64_are_refused(tmp_path):
    path, arrays = artifact_arrays(tmp_path)
    arrays["layer1.segment_stops"] = np.array([2**64 - 1, 2], np.uint64)
    np.savez(path, **arrays)
    with pytest.raises(ArtifactError, match="layer1.segment_stops"):
        cnn2mlp.load(path)


def test_valid_unsigned_indices_still_load(tmp_path):
    path, arrays = artifact_arrays(tmp_path)
    want = cnn2mlp.load(path).predict(np.ones((3, 4), np.float32))
    for key in ("layer0.indptr", "layer0.indices", "layer1.segment_stops"):
        arrays[key] = arrays[key].astype(np.uint64)
    np.savez(path, **arrays)
    assert np.array_equal(cnn2mlp.load(path).predict(np.ones((3, 4), np.float32)), want)


@pytest.mark.parametrize("threads", [-1, 0, 1.5, True, "2"])
def test_bad_thread_counts_are_refused_at_load(tmp_path, threads):
    path, _ = artifact_arrays(tmp_path)
    with pytest.raises(ValueError, match="whole number of threads"):
        cnn2mlp.load(path, threads=threads)


@pytest.mark.parametrize("value", ["-2", "0", "four"])
def test_bad_thread_variable_is_refused_at_load(tmp_path, monkeypatch, value):
    path, _ = artifact_arrays(tmp_path)
    monkeypatch.setenv("CNN2MLP_THREADS", value)
    with pytest.raises(ValueError, match="CNN2MLP_THREADS"):
        cnn2mlp.load(path)


# ------------------------------------------------------------------ sizes before memory
def save(builder: OnnxBuilder, tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    onnx.save(builder.build(), str(path))
    return path


def assert_refused_small(tmp_path, model, *words, limit="100M", args=()):
    """Exit 2, one line naming the node and --max-bytes, within 15 s and well under 1 GiB,
    nothing written."""
    out = tmp_path / "out.npz"
    start = time.monotonic()
    proc, peak = run_cli_peak(model, "-o", out, "--max-bytes", limit, *args)
    assert_clean_failure(proc, *words)
    assert time.monotonic() - start < 15
    assert peak < GIB_KIB // 2, peak
    assert not out.exists()


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_by_3500_is_refused_before_it_is_built(tmp_path, mode):
    b = OnnxBuilder((1, 4, 4), opset=13, seed=0)
    scales = b.const(np.array([1, 1, 3500, 3500], np.float32))
    b.node("Resize", [b.current, "", scales], mode=mode)
    b.shape = (1, 14000, 14000)
    assert_refused_small(tmp_path, save(b, tmp_path), "Resize", "--max-bytes")


def test_tile_on_the_data_path_is_refused_before_it_is_built(tmp_path):
    b = OnnxBuilder((1, 4, 4), opset=13, seed=0)
    b.node("Tile", [b.current, b.const(np.array([1, 1, 3500, 3500], np.int64))])
    b.shape = (1, 14000, 14000)
    assert_refused_small(tmp_path, save(b, tmp_path), "Tile", "--max-bytes")


def test_expand_to_14000_squared_is_refused_before_it_is_built(tmp_path):
    b = OnnxBuilder((1, 1), opset=13, seed=0)
    b.node("Expand", [b.current, b.const(np.array([1, 14000, 14000], np.int64))])
    b.shape = (14000, 14000)
    assert_refused_small(tmp_path, save(b, tmp_path), "Expand", "--max-bytes")


def test_broadcasting_a_column_constant_against_a_row_is_refused(tmp_path):
    b = OnnxBuilder((1, 14000), opset=13, seed=0)
    b.node("Add", [b.current, b.const(np.ones((14000, 1), np.float32))])
    b.shape = (14000, 14000)
    assert_refused_small(tmp_path, save(b, tmp_path), "--max-bytes", "broadcasting")


def test_two_computed_tensors_broadcasting_to_a_square_are_refused(tmp_path):
    b = OnnxBuilder((1, 14000), opset=13, seed=0)
    column = b.node("Transpose", ["input"], perm=[0, 2, 1])
    b.node("Add", ["input", column])
    b.shape = (14000, 14000)
    assert_refused_small(tmp_path, save(b, tmp_path), "--max-bytes", "broadcasting")


def test_a_folded_outer_product_of_constants_is_refused(tmp_path):
    """(14000, 1) · (1, 14000): 1.5 GB of float64, folded from 112 KB of constants."""
    b = OnnxBuilder((14000, 14000), opset=13, seed=0)
    square = b.node("Mul", [b.const(np.ones((14000, 1), np.float32)),
                            b.const(np.ones((1, 14000), np.float32))])
    b.node("Add", ["input", square])
    assert_refused_small(tmp_path, save(b, tmp_path), "Mul", "--max-bytes",
                         "196,000,000 values")


def test_an_einsum_outer_product_is_refused_before_it_is_probed(tmp_path):
    b = OnnxBuilder((14000,), opset=13, seed=0)
    b.node("Einsum", [b.current, b.const(np.ones(14000, np.float32))], equation="bi,j->bij")
    b.shape = (14000, 14000)
    assert_refused_small(tmp_path, save(b, tmp_path), "Einsum", "--max-bytes")


def test_a_conv_transpose_with_a_huge_stride_is_refused(tmp_path):
    b = OnnxBuilder((1, 2, 2), opset=13, seed=0)
    b.node("ConvTranspose", [b.current, b.const(np.ones((1, 1, 2, 2), np.float32)),
                             b.const(np.ones(1, np.float32))], strides=[15000, 15000])
    b.shape = (1, 15002, 15002)
    assert_refused_small(tmp_path, save(b, tmp_path), "ConvTranspose", "--max-bytes")


def test_reduce_sum_over_a_big_map_compiles_small_and_fast(tmp_path):
    """A 27 k non-zero MLP: measured structurally, not with n_in basis vectors."""
    b = OnnxBuilder((3, 96, 96), opset=13, seed=0)
    b.node("ReduceSum", [b.current, b.const(np.array([1, 2, 3], np.int64))], keepdims=0)
    b.shape = ()
    model, out = save(b, tmp_path), tmp_path / "out.npz"
    start = time.monotonic()
    proc, peak = run_cli_peak(model, "-o", out, "--check", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 15 and peak < GIB_KIB // 2, peak


def test_a_measured_linear_map_on_a_big_map_stays_bounded(tmp_path):
    """ReduceL1 over a 3×96×96 map is measured on basis vectors: in chunks, never as one
    27648 × 27648 identity (6 GB)."""
    b = OnnxBuilder((3, 96, 96), opset=13, seed=0)
    b.node("ReduceL1", [b.current], axes=[1, 2, 3], keepdims=0)
    b.shape = ()
    model, out = save(b, tmp_path), tmp_path / "out.npz"
    start = time.monotonic()
    proc, peak = run_cli_peak(model, "-o", out, "--check", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 15 and peak < GIB_KIB // 2, peak


def test_linearize_dag_stops_at_max_bytes_before_building_a_layer():
    """The running count in the pass itself (the preflight's estimate is a second line)."""
    from cnn2mlp.errors import CompileError
    from cnn2mlp.ir import Graph
    from cnn2mlp.passes import PassContext, get_pass

    g = Graph("x", (200,))
    steps = []
    current = "x"
    for _ in range(6):
        current = g.add_node("Dense", [current], {"weight": np.eye(200), "bias": None}).output
        current = g.add_node("Relu", [current]).output
        steps.append(current)
    g.output = g.add_node("Sum", steps).output
    with pytest.raises(CompileError, match="carry values for later layers.*--max-bytes"):
        get_pass("linearize-dag").run(g.copy(), PassContext(max_bytes=20_000))
    get_pass("linearize-dag").run(g, PassContext(max_bytes=10**8))  # fits


def test_a_per_sample_constant_built_from_the_batch_size(tmp_path):
    """ConstantOfShape([N, 512]) + x: the batch stays symbolic (no million-row stand-in),
    and the model compiles exactly."""
    b = OnnxBuilder((512,), opset=13, seed=0)
    shape = b.node("Shape", ["input"])
    ones = b.node("ConstantOfShape", [shape], value=numpy_helper.from_array(
        np.array([0.75], np.float32)))
    b.node("Add", ["input", ones])
    b.node("Mul", [b.current, ones])
    b.dense(3)
    model, out = save(b, tmp_path), tmp_path / "out.npz"
    proc, peak = run_cli_peak(model, "-o", out, "--check", "20", "--input-range", "-1,1")
    assert proc.returncode == 0, proc.stderr
    assert "1000003" not in proc.stdout + proc.stderr and "1,000,003" not in proc.stderr
    assert peak < GIB_KIB // 2, peak


def test_carried_neurons_count_against_max_bytes(tmp_path):
    """A ReLU staircase whose every step a final Sum reads: carrying grows with depth²
    (22 M neurons here), refused from the shapes before anything is written."""
    depth, width = 300, 500
    b = OnnxBuilder((width,), opset=13, seed=0)
    steps = []
    for _ in range(depth):
        b.node("MatMul", [b.current, b.const(np.eye(width, dtype=np.float32))])
        steps.append(b.node("Relu", [b.current]))
    b.node("Sum", steps)
    model, out = save(b, tmp_path), tmp_path / "out.npz"
    start = time.monotonic()
    proc, peak = run_cli_peak(model, "-o", out, "--max-bytes", "50M")
    assert_clean_failure(proc, "carrying values", "--max-bytes")
    assert time.monotonic() - start < 15 and peak < GIB_KIB, peak
    assert not out.exists()


def test_the_check_runs_in_batches_sized_to_memory(tmp_path, monkeypatch):
    from cnn2mlp import check

    b = OnnxBuilder((3, 8, 8), opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 4})
    b.activation("Relu")
    model, out = save(b, tmp_path), tmp_path / "out.npz"
    calls = []
    real = check.compare

    def counting(reference, got, tolerance, **judged):
        calls.append(len(got))  # one call a batch, the float64 evaluation passed with it
        return real(reference, got, tolerance, **judged)

    monkeypatch.setattr(check, "CHECK_BYTES", 64 * 1024)
    monkeypatch.setattr(check, "compare", counting)
    assert cli_module.main([str(model), "-o", str(out), "--check", "100", "--quiet"]) == 0
    assert len(calls) > 1 and sum(calls) == 100 and max(calls) < 100


def test_batches_draw_the_same_inputs_as_one_draw():
    from cnn2mlp.check import input_batches, random_inputs

    whole = random_inputs((3, 4), 10, -1, 2)
    parts = np.concatenate(list(input_batches((3, 4), 10, 3, -1, 2)))
    assert np.array_equal(whole, parts)


def test_a_wide_check_stays_bounded(tmp_path):
    """--check 1000 on a 2.4 M non-zero convolution: 1000 samples' activations would take
    more than a GiB; the batches keep the whole run under one."""
    b = OnnxBuilder((8, 64, 64), opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 16})
    b.activation("Relu")
    model, out = save(b, tmp_path), tmp_path / "out.npz"
    peaks = []
    # the difference between 32 and 1000 inputs is the check's batches (the check runs
    # the file on the scipy engine: no kernels to compile in the first run)
    for n in ("32", "1000"):
        proc, peak = run_cli_peak(model, "-o", out, "--check", n, "--quiet")
        assert proc.returncode == 0, proc.stderr
        peaks.append(peak)
    assert peaks[1] - peaks[0] < GIB_KIB // 4, peaks


# ------------------------------------------------------------------ time
def test_keras_weights_off_the_usual_path_are_indexed_once(tmp_path):
    """1000 layers whose weights sit below a nested path, in a file of 1000 other groups:
    one walk of the file, not one per layer (76 s before)."""
    import h5py

    n = 1000
    layers = [{"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 2]}}]
    layers += [{"class_name": "Dense", "config": {"name": f"d{i}", "units": 2}}
               for i in range(n)]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with h5py.File(buffer, "w") as handle:
        for i in range(n):
            handle.create_group(f"clutter/g{i}")
        for i in range(n):
            group = handle.create_group(f"nested/deeper/d{i}/vars")
            group["0"] = (np.eye(2) + 0.01 * rng.normal(size=(2, 2))).astype(np.float32)
            group["1"] = rng.normal(size=2).astype(np.float32) * 0.01
    model = tmp_path / "m.keras"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    start = time.monotonic()
    proc, _ = run_cli_peak(model, "-o", tmp_path / "out.npz", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 15


def test_a_batchless_model_measures_only_what_its_output_needs(tmp_path):
    """A 300-byte batch-less model with an unused Loop of 10^12 trips beside a Reshape
    whose target comes from the data: the Loop is never run."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])
    unused = helper.make_tensor_value_info("spin", TensorProto.FLOAT, None)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Constant", [], ["trips"], value=numpy_helper.from_array(
            np.array(10**12, np.int64))),
        helper.make_node("Constant", [], ["yes"], value=numpy_helper.from_array(
            np.array(True))),
        helper.make_node("Loop", ["trips", "yes", "x"], ["spin"], body=body),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Reshape", ["r", "s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y, unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(path), "-o",
                           str(tmp_path / "out.npz"), "--output-tensor", "y", "--check", "4",
                           "--input-range", "-1,1", "--quiet"], capture_output=True, text=True,
                          timeout=60)  # a Loop that ran would never end
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 15


# ------------------------------------------------------------------ exit 0 or 1 on bad input
@pytest.mark.parametrize("name", ["with\rreturn", "form\x0cfeed", "line\u2028sep"])
def test_nnet_header_survives_line_breaks_in_the_model_path(tmp_path, name):
    from cnn2mlp.backends.nnet import read_nnet

    b = OnnxBuilder((4,), opset=13, seed=0)
    b.dense(3)
    b.activation("Relu")
    b.dense(2)
    model = save(b, tmp_path, f"{name}.onnx")
    out = tmp_path / "out.nnet"
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(model), "-o", str(out),
                           "--check", "2", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    header = [line for line in out.read_text().split("\n") if line.startswith("//")]
    assert all(len(line.splitlines()) == 1 for line in header)
    assert read_nnet(out).layers[-1].n_out == 2


def test_output_tensor_that_is_the_input_is_refused(tmp_path):
    b = OnnxBuilder((4,), opset=13, seed=0)
    b.dense(2)
    model = save(b, tmp_path)
    proc, _ = run_cli_peak(model, "-o", tmp_path / "o.onnx", "--output-tensor", "input")
    assert_clean_failure(proc, "'input' is the model's input")


def keras_file(tmp_path, batch_shape, conv=None) -> Path:
    layers = [{"class_name": "InputLayer",
               "config": {"name": "in", "batch_shape": batch_shape}}]
    if conv is not None:
        layers.append({"class_name": "Conv2D", "config": {"name": "c", "filters": 1,
                                                          "use_bias": False, **conv}})
    else:
        layers.append({"class_name": "Flatten", "config": {"name": "f"}})
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        if conv is not None:
            k = conv["kernel_size"]
            handle.create_group("layers/c/vars")["0"] = np.ones(tuple(k) + (1, 1), np.float32)
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


@pytest.mark.parametrize("batch_shape, words", [([None, -3], "-3"), ([None, 0], "the dim 0")])
def test_keras_input_dims_below_one_are_refused(tmp_path, batch_shape, words):
    proc, _ = run_cli_peak(keras_file(tmp_path, batch_shape), "-o", tmp_path / "o.npz")
    assert_clean_failure(proc, words, "at least 1")


@pytest.mark.parametrize("conv, words", [
    ({"kernel_size": [0, 0], "strides": [1, 1], "dilation_rate": [1, 1]}, "kernel"),
    ({"kernel_size": [2, 2], "strides": [1, 1], "dilation_rate": [0, 0]}, "dilations"),
    ({"kernel_size": [2, 2], "strides": [0, 1], "dilation_rate": [1, 1]}, "strides"),
])
def test_conv_geometry_below_one_is_refused(tmp_path, conv, words):
    proc, _ = run_cli_peak(keras_file(tmp_path, [None, 5, 5, 1], conv), "-o",
                           tmp_path / "o.npz")
    assert_clean_failure(proc, words, "at least 1")


def test_onnx_target_above_2_gib_is_refused_up_front(tmp_path):
    """12288 inputs to 45056 neurons: 2.2 GB of float32, which protobuf cannot write;
    refused from the shapes in seconds, as the dense-size limit is."""
    b = OnnxBuilder((3, 64, 64), opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 11})
    b.activation("Relu")
    b.flatten()
    b.dense(2)
    model = save(b, tmp_path)
    start = time.monotonic()
    proc, peak = run_cli_peak(model, "-o", tmp_path / "o.onnx", "--max-dense-bytes", "4G")
    assert_clean_failure(proc, "2 GiB", "--target csr")
    assert time.monotonic() - start < 15 and peak < GIB_KIB, peak


# ------------------------------------------------------------------ the kernel cache
def test_kernels_are_cached_in_the_users_folder(tmp_path):
    pytest.importorskip("numba")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR",
                                                             "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path)
    code = ("import cnn2mlp.runtime.numba_kernels, numba, os, stat\n"
            "d = numba.config.CACHE_DIR\nprint(d)\nprint(oct(os.stat(d).st_mode & 0o777))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(tmp_path / ".cache" / "cnn2mlp" / "numba"), "0o700"]
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", code.replace("print(oct", "0 and print(oct")],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(tmp_path / "mine")]


def test_a_cache_folder_others_can_write_is_not_used(tmp_path):
    pytest.importorskip("numba")
    shared = tmp_path / "cache" / "cnn2mlp" / "numba"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    code = "import cnn2mlp.runtime.numba_kernels, numba\nprint(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out != str(shared) and "cnn2mlp-numba-" in out
