"""The runtime engines against a plain float64 reference, on random CSR layers: empty rows,
one column, int64 indices, dense layers, every activation, mixed layers, thread counts."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import cnn2mlp
from cnn2mlp.backends.csr import CsrModel, save_csr
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.runtime import available_engines, runnable_engines

ENGINES = available_engines()
#: and the c engine where a C compiler is found (each model it runs is a build)
EVERY_ENGINE = runnable_engines()
ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh"]


@st.composite
def random_mlps(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sizes = [draw(st.integers(1, 40)) for _ in range(draw(st.integers(2, 4)))]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.9]))  # empty rows .. dense GEMM
        w = sp.random_array((n_out, n_in), density=density, rng=rng, format="csr",
                            dtype=np.float32)
        w.data = rng.normal(size=w.nnz).astype(np.float32)
        if draw(st.booleans()):  # int64 indices, as huge layers have
            w = sp.csr_array((w.data, w.indices.astype(np.int64), w.indptr.astype(np.int64)),
                             shape=w.shape)
        bias = rng.normal(size=n_out).astype(np.float32)
        if draw(st.booleans()) and n_out >= 3:  # a mixed layer: runs of activations
            cut = sorted(rng.choice(np.arange(1, n_out), 2, replace=False))
            acts = [draw(st.sampled_from(ACTIVATIONS)) for _ in range(3)]
            segments = tuple((int(a), int(b), act, 0.15) for a, b, act in
                             zip([0, *cut], [*cut, n_out], acts))
            layers.append(MlpLayer(w, bias, "mixed", 0.0, segments))
        else:
            layers.append(MlpLayer(w, bias, draw(st.sampled_from(ACTIVATIONS)), 0.2))
    return Mlp(layers, (sizes[0],), (sizes[-1],))


@pytest.mark.parametrize("engine", ENGINES)
@given(mlp=random_mlps(), batch=st.sampled_from([1, 3, 37, 64]), threads=st.sampled_from([1, 2]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_engine_matches_the_float64_reference(engine, mlp, batch, threads, dtype):
    assert_engine_matches_the_reference(engine, mlp, batch, threads, dtype)


def assert_engine_matches_the_reference(engine, mlp, batch, threads, dtype):
    x = np.random.default_rng(1).normal(size=(batch, mlp.layers[0].n_in)) * 3
    model = CsrModel(mlp, threads=threads, engine=engine)
    assert model.engine == engine
    got = model.predict(x, dtype=dtype)
    assert got.dtype == dtype and got.shape == (batch, mlp.layers[-1].n_out)
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, mlp.forward(x), rtol=tolerance, atol=tolerance)


@pytest.mark.skipif("c" not in EVERY_ENGINE, reason="no C compiler (apt install gcc)")
@settings(max_examples=20, deadline=None)
@given(mlp=random_mlps(), batch=st.sampled_from([1, 3, 37, 64]), threads=st.sampled_from([1, 2]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_the_c_engine_matches_the_float64_reference(mlp, batch, threads, dtype):
    """As above, for the c engine (fewer examples: each is a build)."""
    assert_engine_matches_the_reference("c", mlp, batch, threads, dtype)


@pytest.mark.skipif("numba" not in ENGINES, reason="install the fast extra (numba)")
def test_thread_count_does_not_change_the_result():
    rng = np.random.default_rng(2)
    w = sp.random_array((3000, 800), density=0.02, rng=rng, format="csr", dtype=np.float32)
    mlp = Mlp([MlpLayer(w, rng.normal(size=3000).astype(np.float32), "relu")], (800,), (3000,))
    x = rng.normal(size=(64, 800)).astype(np.float32)
    one = CsrModel(mlp, threads=1, engine="numba").predict(x)
    two = CsrModel(mlp, threads=2, engine="numba").predict(x)
    np.testing.assert_array_equal(one, two)  # each row is summed by one thread, in order


def test_load_options_and_the_environment(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    mlp = Mlp([MlpLayer(sp.csr_array(rng.normal(size=(3, 4)).astype(np.float32)),
                        np.zeros(3, np.float32), "relu")], (4,), (3,))
    save_csr(mlp, tmp_path / "m.npz")
    assert cnn2mlp.load(tmp_path / "m.npz", engine="scipy").engine == "scipy"
    assert cnn2mlp.load(tmp_path / "m.npz").engine == ENGINES[0]
    monkeypatch.setenv("CNN2MLP_THREADS", "1")
    assert cnn2mlp.load(tmp_path / "m.npz").threads == 1
    assert cnn2mlp.load(tmp_path / "m.npz", threads=2).threads == 2
    with pytest.raises(ValueError, match="unknown engine"):
        cnn2mlp.load(tmp_path / "m.npz", engine="gpu")


@pytest.mark.parametrize("engine", ENGINES)
@given(data=st.data(), batch=st.sampled_from([1, 5, 64]))
def test_convolution_rows_run_as_gemm_exactly(engine, data, batch):
    """Convolution matrices (every geometry): their row groups run as im2col + GEMM, the
    rest as CSR; the result is the float64 reference's."""
    from cnn2mlp.ir.conv_matrix import conv_matrix
    from cnn2mlp.testing import conv_geometries, input_shapes

    shape = data.draw(input_shapes((1, 2), max_channels=3, min_size=4, max_size=12))
    geo = data.draw(conv_geometries(shape, max_out_channels=6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kernel = rng.normal(size=(geo["out_channels"], shape[0] // geo["group"])
                        + geo["kernel_shape"]).astype(np.float32)
    w, b, out_shape = conv_matrix(kernel, rng.normal(size=geo["out_channels"]).astype(
        np.float32), shape, geo["strides"], geo["pads"], geo["dilations"], geo["group"])
    act = data.draw(st.sampled_from(ACTIVATIONS))
    mlp = Mlp([MlpLayer(w, b, act, 0.1)], tuple(shape), tuple(out_shape))
    x = rng.normal(size=(batch, w.shape[1]))
    got = CsrModel(mlp, engine=engine).predict(x.reshape((batch,) + tuple(shape)))
    np.testing.assert_allclose(got.reshape(batch, -1), mlp.forward(x).reshape(batch, -1),
                               rtol=1e-4, atol=1e-4)


def test_a_padded_convolution_is_found_as_row_groups():
    from cnn2mlp.ir.conv_matrix import conv_matrix
    from cnn2mlp.runtime.structure import find_parts

    kernel = np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32)
    w, _, _ = conv_matrix(kernel, None, (3, 16, 16), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    parts, touched = find_parts(w.data, w.indices.astype(np.int64), w.indptr.astype(np.int64),
                                w.shape[1])
    groups = [g for part in parts for g in part.groups]
    assert sum(g.rows.size for g in groups) == w.shape[0]  # interior, edges and corners
    interior = max(groups, key=lambda g: len(g.bases))
    assert len(interior.kernels) == 8 and not interior.shifted  # a weight vector a channel
    assert len(interior.bases) == 14 * 14
    assert (touched == 1).all()


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_bench_command_on_the_example_model(tmp_path, capsys):
    """python -m cnn2mlp.bench: every engine, both batches, a plot."""
    pytest.importorskip("matplotlib", reason="install the plot extra")
    from cnn2mlp.bench import main

    plot = tmp_path / "bench.png"
    assert main([str(ROOT / "examples" / "small_cnn.onnx"), "--batch", "1,4", "--repeats", "3",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    for engine in ("onnxruntime (CNN)", "cnn2mlp (scipy)", "kernel-py (numpy)"):
        assert sum(line.startswith(engine) for line in out.splitlines()) == 2, out
    rows = [line.split() for line in out.splitlines() if line.startswith("cnn2mlp (")]
    assert all(float(row[-3]) < 1e-4 for row in rows)  # max |diff|: the MLP is the model
    assert "vs fastest CNN" in out and "fastest CNN engine at batch 4:" in out
    assert plot.stat().st_size > 10_000


def test_bench_command_on_a_keras_model(tmp_path, capsys):
    keras = pytest.importorskip("keras", reason="install the tensorflow extra")
    from cnn2mlp.bench import main

    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    model.save(tmp_path / "m.keras")
    assert main([str(tmp_path / "m.keras"), "--batch", "2", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    # Keras is timed as a deployment calls it (a tf.function), not through predict()
    assert "keras, tf.function (CNN)" in out and "cnn2mlp (scipy)" in out


def test_bench_without_numba_prints_the_scipy_engine_once(capsys, monkeypatch):
    from cnn2mlp.bench import main
    from cnn2mlp.runtime import engine

    monkeypatch.setattr(engine, "available_engines", lambda: ["scipy"])
    monkeypatch.setenv("CNN2MLP_ENGINE", "scipy")
    assert main([str(ROOT / "examples" / "small_cnn.onnx"), "--batch", "1,2",
                 "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("cnn2mlp (scipy") == 2 and "numba" not in out


def test_bench_plot_without_matplotlib_fails_before_timing(capsys, monkeypatch):
    import sys

    from cnn2mlp import bench

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(bench, "bench", lambda *a: pytest.fail("timed before checking --plot"))
    assert bench.main([str(ROOT / "examples" / "small_cnn.onnx"), "--plot", "x.png"]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_bench_ratios_keep_three_digits():
    from cnn2mlp.bench import ratio

    assert [ratio(v) for v in (0.004213, 1.0, 1.234, 412.3)] == ["0.00421x", "1x", "1.23x",
                                                                 "412x"]


def test_bench_refuses_bad_batches(capsys):
    from cnn2mlp.bench import main

    assert main([str(ROOT / "examples" / "small_cnn.onnx"), "--batch", "0"]) == 2
    assert "--batch takes positive sizes" in capsys.readouterr().err


@pytest.mark.parametrize("engine", EVERY_ENGINE)
@pytest.mark.parametrize("out_channels, in_channels, kernel", [(16, 8, 3), (11, 3, 3), (3, 2, 2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_group_path_matches_the_reference(engine, out_channels, in_channels, kernel,
                                                threads):
    """At a batch of 16 or more (numba), groups run on the blocked kernel (11 kernels:
    blocks of 8, 1, 1 and 1; batch 37: 5 columns past the blocks); below that a big
    kernel matrix runs as gather + GEMM, a small one as direct axpys. The input (8 × 16 ×
    16 floats, rows of 8 KiB) also takes the padded transpose."""
    from cnn2mlp.ir.conv_matrix import conv_matrix
    from cnn2mlp.runtime.numba_engine import DIRECT_MAX_WEIGHTS, MIN_BLOCKED_WEIGHTS

    rng = np.random.default_rng(out_channels)
    shape = (in_channels, 16, 16) if in_channels == 8 else (in_channels, 32, 32)
    k = rng.normal(size=(out_channels, in_channels, kernel, kernel)).astype(np.float32)
    w, b, out_shape = conv_matrix(k, rng.normal(size=out_channels).astype(np.float32), shape,
                                  (1, 1), (1, 1, 1, 1), (1, 1), 1)
    mlp = Mlp([MlpLayer(w, b, "relu")], shape, tuple(out_shape))
    model = CsrModel(mlp, threads=threads, engine=engine)
    for batch, dtype in ((1, np.float32), (5, np.float32), (37, np.float64), (64, np.float32)):
        x = rng.normal(size=(batch,) + shape)
        got = model.predict(x.astype(dtype), dtype=dtype)
        tolerance = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got.reshape(batch, -1),
                                   mlp.forward(x.reshape(batch, -1)).reshape(batch, -1),
                                   rtol=tolerance, atol=tolerance)
    if engine == "numba":
        (layer,) = model._engine.plans(np.float32)
        assert [run.small for run in layer.groups] == [  # shifted: the border groups
            run.group.kernels.size <= DIRECT_MAX_WEIGHTS or run.group.shifted
            for run in layer.groups]
        assert [run.blocked is not None for run in layer.groups] == [
            run.group.kernels.size > MIN_BLOCKED_WEIGHTS for run in layer.groups]
        paths = {run.path(b) for run in layer.groups for b in (1, 5, 37)}
        assert paths == ({"blocked", "direct", "gemm"} if kernel == 3 else
                         {"blocked", "direct"})


def columns_matrix(rng, n_rows=12):
    """Columns 0-5 are one column and its near misses; 6-23 are nine equal pairs."""
    base = rng.normal(size=n_rows).astype(np.float32)
    base[[2, 7]] = 0.0  # a sparse column
    near_value = base.copy()
    near_value[0] = np.nextafter(near_value[0], np.float32(np.inf))  # one ulp away
    moved = base.copy()
    moved[[1, 2]] = moved[[2, 1]]  # the same values, one in another row
    negative_zero = base.copy()
    negative_zero[2] = -0.0  # -0.0 is a stored entry of value zero: not the same column
    columns = [base, base, near_value, moved, negative_zero, np.zeros(n_rows, np.float32)]
    for _ in range(9):
        pair = rng.normal(size=n_rows).astype(np.float32)
        columns += [pair, pair]
    dense = np.stack(columns, axis=1)
    w = sp.csr_array(dense)
    if (dense == 0).any():  # keep the -0.0 as an explicit entry
        w = sp.csr_array((dense[dense.nonzero()], dense.nonzero()), shape=dense.shape)
        rows, cols = np.nonzero(np.signbit(dense) & (dense == 0))
        w = sp.csr_array((np.concatenate([w.data, dense[rows, cols]]),
                          (np.concatenate([w.nonzero()[0], rows]),
                           np.concatenate([w.nonzero()[1], cols]))), shape=dense.shape)
    w.sort_indices()
    return w


def test_equal_columns_and_only_those_share_a_class():
    from cnn2mlp.runtime.columns import column_classes

    w = columns_matrix(np.random.default_rng(5))
    classes = column_classes(w.data, w.indices, w.indptr, w.shape[1])
    assert classes[0] == classes[1]
    assert len(set(classes[[0, 2, 3, 4, 5]].tolist())) == 5  # near misses stay apart
    assert (classes[6::2] == classes[7::2]).all() and len(set(classes[6::2])) == 9
    assert classes.max() + 1 == 6 - 1 + 9


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(2, 30), st.integers(0, 2**32 - 1))
def test_the_quick_equal_columns_test_never_misses_a_pair(n_out, n_in, seed):
    """Two equal columns (the same rows with the same stored values, explicit zeros
    included) always make the quick test say "maybe": it hashes each column's count and
    sums, which are the same bits for equal columns."""
    from cnn2mlp.runtime.columns import may_have_equal_columns

    rng = np.random.default_rng(seed)
    w = sp.random(n_out, n_in, density=0.3, random_state=seed, format="coo")
    rows, cols = w.row[w.col != 1], w.col[w.col != 1]
    data = rng.integers(-2, 3, len(rows)).astype(np.float32)  # zeros stored too
    first = cols == 0  # column 1 a copy of column 0, stored entries and all
    rows, cols = np.r_[rows, rows[first]], np.r_[cols, np.ones(first.sum(), cols.dtype)]
    w = sp.csr_array((np.r_[data, data[first]], (rows, cols)), shape=(n_out, n_in))
    assert may_have_equal_columns(w.data, w.indices, w.indptr, n_in)
    distinct = sp.csr_array(np.eye(n_in, dtype=np.float32)[:n_out])  # no pair when square
    if n_out >= n_in:
        assert not may_have_equal_columns(distinct.data, distinct.indices, distinct.indptr,
                                          n_in)


def test_a_hash_collision_never_merges_unequal_columns():
    from cnn2mlp.runtime.columns import confirm_equal

    # two columns of one entry each, in different rows: proposed as one class
    col_rows, col_data = np.array([0, 1]), np.array([1.0, 1.0], np.float32)
    starts, counts = np.array([0, 1]), np.array([1, 1])
    assert confirm_equal(col_rows, col_data, starts, counts, np.array([0, 0])).tolist() == [0, 1]
    assert confirm_equal(np.array([0, 0]), np.array([1.0, 2.0], np.float32), starts, counts,
                         np.array([0, 0])).tolist() == [0, 1]  # one row, other values
    assert confirm_equal(np.array([0, 0]), col_data, starts, counts,
                         np.array([0, 0])).tolist() == [0, 0]


def maxpool_cnn():
    """conv → ReLU → 2×2 max pool → conv → ReLU → max pool → dense: each max pool
    compiles to relu pairs that the next layer reads with equal weights."""
    from cnn2mlp.testing import OnnxBuilder

    b = OnnxBuilder((2, 12, 12), batch="N", opset=13, seed=7)
    pool = {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
            "pads": (0, 0, 0, 0), "ceil_mode": False}
    for channels, pad in ((4, 1), (6, 0)):
        b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
                "pads": (pad,) * 4, "group": 1, "out_channels": channels})
        b.activation("Relu")
        b.pool("MaxPool", pool)
    b.flatten("flatten")
    b.dense(32)
    b.activation("Relu")
    b.dense(5)
    return b.build()


@pytest.mark.parametrize("engine", EVERY_ENGINE)
def test_max_pool_pairs_are_summed_before_the_next_layer(engine, tmp_path):
    """The next layer runs on the pairs' sums: fewer non-zeros, the same function (against
    onnxruntime on the CNN, in the runtime and in the standalone kernel module)."""
    import onnxruntime as ort

    from cnn2mlp.runtime.columns import runtime_layers
    from cnn2mlp.testing import compile_to_model, run_kernel_module

    from cnn2mlp.backends import get_target

    model = maxpool_cnn()
    # every recombination fused into the next layer, as the ReLU-only targets do (the CSR
    # default keeps them as layers of their own): the pairs' columns come out equal
    ctx = get_target("csr").context()
    ctx.fusion = "always"
    compiled = compile_to_model(model, ctx=ctx)
    mlp = compiled.mlp
    runtime = runtime_layers(mlp.layers)
    assert len(runtime) == len(mlp.layers) + 2  # a summing layer after each max pool
    nnz = [layer.weight.nnz for layer in runtime]
    assert mlp.layers[3].weight.nnz // 2 in nnz and mlp.layers[6].weight.nnz // 2 in nnz
    x = np.random.default_rng(8).normal(size=(64, 2, 12, 12)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString())
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    for threads in (1, 2):
        got = CsrModel(mlp, threads=threads, engine=engine).predict(x)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    kernel = run_kernel_module(mlp, x.astype(np.float64), tmp_path)
    np.testing.assert_allclose(kernel, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
@given(mlp=random_mlps(), seed=st.integers(0, 2**32 - 1), batch=st.sampled_from([1, 64]))
def test_merged_columns_keep_the_function(engine, mlp, seed, batch):
    """Random layers that read their inputs several times (a selection layer repeats them,
    the next layer reads the copies with the original column's weights): merged at any
    saving, the runtime's result is the float64 reference's."""
    from unittest import mock

    from cnn2mlp.runtime import columns

    rng = np.random.default_rng(seed)
    layers = []
    for layer in mlp.layers:
        inputs = np.concatenate([np.arange(layer.n_in), rng.integers(0, layer.n_in,
                                                                     2 * layer.n_in)])
        pick = sp.csr_array((np.ones(len(inputs), np.float32), (np.arange(len(inputs)), inputs)),
                            shape=(len(inputs), layer.n_in))
        layers += [MlpLayer(pick, np.zeros(len(inputs), np.float32), "identity"),
                   MlpLayer(sp.csr_array(layer.weight[:, inputs]), layer.bias, layer.activation,
                            layer.alpha, layer.segments)]
    wide = Mlp(layers, mlp.input_shape, mlp.output_shape)
    with mock.patch.object(columns, "MIN_SAVED_SHARE", 0), \
            mock.patch.object(columns, "MIN_SAVED_OVER_COST", 0):
        run = columns.runtime_layers(wide.layers)
        if any(layer.weight.nnz for layer in mlp.layers):
            assert len(run) > len(wide.layers)
        x = rng.normal(size=(batch, mlp.layers[0].n_in))
        got = CsrModel(wide, engine=engine).predict(x)
    np.testing.assert_allclose(got, wide.forward(x), rtol=1e-4, atol=1e-4)


def test_the_committed_microkernel_is_the_generators_output():
    """microkernel.py is generated: regenerate it (python -m cnn2mlp.runtime.microkernel_gen)
    rather than edit it."""
    from cnn2mlp.runtime import microkernel_gen

    committed = (ROOT / "cnn2mlp" / "runtime" / "microkernel.py").read_text()
    assert committed == microkernel_gen.generate()


def test_the_committed_activation_kernels_are_the_generators_output():
    """activation_kernels.py is generated from the activation catalogue: regenerate it
    (python -m cnn2mlp.runtime.activation_gen) after adding an activation."""
    from cnn2mlp.runtime import activation_gen

    committed = (ROOT / "cnn2mlp" / "runtime" / "activation_kernels.py").read_text()
    assert committed == activation_gen.generate()


def test_the_committed_lane_kernels_are_the_generators_output():
    """lanes.py (the batch-1 program's tap kernels) is generated: regenerate it
    (python -m cnn2mlp.runtime.lanes_gen) rather than edit it."""
    from cnn2mlp.runtime import lanes_gen

    committed = (ROOT / "cnn2mlp" / "runtime" / "lanes.py").read_text()
    assert committed == lanes_gen.generate()


def test_kernels_are_cut_into_blocks_of_16_8_4_1():
    from cnn2mlp.runtime.blocking import kernel_blocks

    assert kernel_blocks(11) == [(0, 8), (8, 1), (9, 1), (10, 1)]
    assert kernel_blocks(6) == [(0, 4), (4, 1), (5, 1)]
    assert kernel_blocks(40) == [(0, 16), (16, 16), (32, 8)]
    assert kernel_blocks(7) == [(0, 4), (4, 1), (5, 1), (6, 1)]


@pytest.mark.skipif("numba" not in ENGINES or not hasattr(__import__("os"), "fork"),
                    reason="needs numba and os.fork")
def test_a_process_forked_after_threaded_runs_predicts():
    """The runtime prefers OpenMP threads, and GNU OpenMP aborts a parallel region in a
    child forked after its threads started: a forked child runs the serial kernels."""
    import os

    rng = np.random.default_rng(9)
    w = sp.random_array((4000, 3000), density=0.05, rng=rng, format="csr", dtype=np.float32)
    mlp = Mlp([MlpLayer(w, rng.normal(size=4000).astype(np.float32), "relu")], (3000,), (4000,))
    model = CsrModel(mlp, threads=2, engine="numba")
    x = rng.normal(size=(64, 3000)).astype(np.float32)
    expected = model.predict(x)  # threads started in this process
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when the prediction is right
        try:
            ok = np.allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)
        finally:
            os._exit(0 if locals().get("ok") else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


@pytest.mark.skipif("numba" not in ENGINES, reason="install the fast extra (numba)")
def test_threaded_and_serial_kernels_have_their_own_cache_entries():
    """numba names a function's cache entries after its qualified name: two compilations
    of one function under one name load each other's code (a "threaded" kernel that ran
    serially, or the reverse)."""
    from cnn2mlp.runtime import microkernel
    from cnn2mlp.runtime import numba_kernels as k

    pairs = [(microkernel.blocked_group, microkernel.blocked_group_serial)]
    pairs += [(getattr(k, name), getattr(k, name + "_serial")) for name in dir(k)
              if hasattr(k, name + "_serial")]
    assert len(pairs) >= 8
    for threaded, serial in pairs:
        names = {threaded.py_func.__qualname__, serial.py_func.__qualname__}
        assert len(names) == 2, names
        assert threaded.targetoptions.get("parallel") and not serial.targetoptions.get("parallel")


@pytest.mark.skipif("numba" not in ENGINES, reason="install the fast extra (numba)")
def test_each_signature_of_the_blocked_kernel_compiles_with_the_vectorizer(monkeypatch):
    """Only a compile reads numba's SLP setting; a call with index arrays of a new dtype is
    a new signature, compiled then. It must compile with the vectorizer on (without it the
    kernel runs 9x slower), so the first call of every signature sets it."""
    from numba.core import config

    from cnn2mlp.runtime import microkernel
    from cnn2mlp.runtime import numba_kernels as k

    seen = []
    monkeypatch.setattr(microkernel, "blocked_group_serial",
                        lambda *args: seen.append((args[4].dtype, config.SLP_VECTORIZE)))
    monkeypatch.setattr(k, "_compiled_blocked", set())
    h, out = np.zeros((3, 16), np.float32), np.zeros((2, 16), np.float32)
    index = np.zeros(2, np.uint64)
    for rows in (np.zeros((2, 1), np.uint64), np.zeros((2, 1), np.uint32)):
        k.blocked_group(False, (1, 1), np.zeros(2, np.float32), np.zeros((1, 4), np.uint64),
                        index, index, rows, h, out, *[np.zeros(2, np.float32)] * 4,
                        np.zeros(2, np.uint8))
    assert seen == [(np.uint64, 1), (np.uint32, 1)]


@pytest.mark.skipif("numba" not in ENGINES, reason="install the fast extra (numba)")
def test_blocked_groups_index_with_64_bits_whatever_the_plan():
    """One signature of the blocked kernel for int32 and int64 plans alike (each more is a
    compile of its own: 5 s, and 50 s before its stores were a loop)."""
    from cnn2mlp.runtime.numba_engine import BlockedGroup
    from cnn2mlp.runtime.structure import ProductGroup

    for kind in (np.int32, np.int64):
        group = ProductGroup(np.ones((2, 3), np.float32), np.arange(3, dtype=kind),
                             np.arange(4, dtype=kind), np.arange(8, dtype=kind).reshape(2, 4))
        arrays = BlockedGroup(group, np.float32).arrays
        assert [a.dtype for a in arrays[1:]] == [np.uint64] * 4


def test_bench_times_the_cnn_engines_a_user_would_pick_instead(capsys):
    """OpenVINO and OpenCV's dnn on the CNN, when installed, next to onnxruntime; every
    row's time against the fastest of them."""
    pytest.importorskip("openvino", reason="install the bench extra")
    pytest.importorskip("cv2", reason="install the opencv extra")
    from cnn2mlp.bench import fastest_cnn, main

    assert main([str(ROOT / "examples" / "small_cnn.onnx"), "--batch", "2",
                 "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    cnn_rows = [line for line in out.splitlines() if "(CNN)" in line and " 2 " in line]
    assert any(line.startswith("OpenVINO") for line in cnn_rows), out
    assert any(line.startswith("OpenCV") and "dnn" in line for line in cnn_rows), out
    for line in cnn_rows:
        if not line.startswith("onnxruntime"):
            assert float(line.split()[-3]) < 1e-4  # each CNN engine agrees with onnxruntime
    fastest = out.split("fastest CNN engine at batch 2: ")[1].splitlines()[0]
    assert fastest.endswith("(CNN)")
    assert fastest_cnn([]) == {}
