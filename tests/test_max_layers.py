"""Max pooling as the runtime's row form (runtime/max_blocks.py): the MLP's tournament
layers are found from the layers alone and run as one max over each window's taps, in every
engine and the C target, exactly (against a float64 reference); a run of layers that does
not compute maxima is never taken for one."""
import math

import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn2mlp.backends import get_target
from cnn2mlp.backends.csr import CsrModel
from cnn2mlp.ir import Graph, run
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.ir.weights import as_csr
from cnn2mlp.runtime import runnable_engines
from cnn2mlp.runtime.columns import runtime_layers
from cnn2mlp.runtime.max_blocks import MaxLayer, row_classes, with_max_layers
from cnn2mlp.testing import input_shapes, pool_geometries

ENGINES = runnable_engines()


def lowered(graph: Graph) -> Mlp:
    g = graph.copy()
    get_target("csr").pipeline().run(g)
    return Mlp.from_graph(g, graph.shape(graph.output))


def pool_graph(shape, geo, relu_first: bool, dense_after: int = 0, seed: int = 0) -> Graph:
    g = Graph("x", tuple(shape))
    if relu_first:
        g.append("Relu")
    g.append("MaxPool", geo)
    if dense_after:
        rng = np.random.default_rng(seed)
        n = math.prod(g.shape(g.output))
        g.append("Dense", {"weight": rng.normal(size=(dense_after, n)).astype(np.float32),
                           "bias": rng.uniform(-1, 1, dense_after).astype(np.float32)})
    return g


def max_layers(mlp: Mlp) -> list[MaxLayer]:
    return [item for item in with_max_layers(runtime_layers(mlp.layers))
            if isinstance(item, MaxLayer)]


def forward(mlp: Mlp, x: np.ndarray) -> np.ndarray:
    """The MLP's layers in float64, flat: (B, n_out)."""
    return mlp.forward(x).reshape(len(x), -1)


def run_items(items, x: np.ndarray) -> np.ndarray:
    """The layers and max layers in float64, on x (B, n_in)."""
    h = x.T.astype(np.float64)
    for item in items:
        h = item.apply(h) if isinstance(item, MaxLayer) else forward(
            Mlp([item], (item.n_in,), (item.n_out,)), h.T).T
    return h.T


def stem_model(seed: int = 0) -> Mlp:
    """A ResNet stem at a small size: conv 3x3 + ReLU, max pool 3x3 stride 2 pad 1 (borders
    of 4 and 6 taps), conv 1x1, ReLU, a classifier: random weights, non-zero biases."""
    return lowered(stem_graph(9, 6, 5, 4, pool_pads=1, zero_padding=0, seed=seed))


def stem_graph(side: int, channels: int, after: int, classes: int, pool_pads: int,
               zero_padding: int, seed: int) -> Graph:
    """conv 3x3 (``channels``) + ReLU, [a zero padding,] a 3x3 stride-2 max pool, conv
    1x1 (``after``) + ReLU, a dense classifier: random weights and biases."""
    rng = np.random.default_rng(seed)
    g = Graph("x", (3, side, side))
    g.append("Conv", {"kernel": rng.normal(size=(channels, 3, 3, 3)).astype(np.float32),
                      "bias": rng.uniform(-1, 1, channels).astype(np.float32),
                      "strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1),
                      "group": 1})
    g.append("Relu")
    if zero_padding:
        p = zero_padding
        g.append("Pad", {"pads": (0, p, p, 0, p, p), "value": 0.0})
    g.append("MaxPool", {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (pool_pads,) * 4,
                         "dilations": (1, 1), "ceil_mode": False})
    g.append("Conv", {"kernel": rng.normal(size=(after, channels, 1, 1)).astype(np.float32),
                      "bias": rng.uniform(-1, 1, after).astype(np.float32), "strides": (1, 1),
                      "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1})
    g.append("Relu")
    n = after * math.prod(g.shape(g.output)[1:])
    g.append("Dense", {"weight": rng.normal(size=(classes, n)).astype(np.float32),
                       "bias": rng.uniform(-1, 1, classes).astype(np.float32)})
    return g


@st.composite
def max_pools(draw, max_size: int = 8) -> tuple:
    """(input shape, MaxPool attributes, a ReLU before it or not), 1-D or 2-D."""
    shape = draw(input_shapes(min_size=3, max_size=max_size))
    geo = draw(pool_geometries(shape))
    del geo["count_include_pad"]
    return shape, geo, draw(st.booleans())


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(max_pools(), st.sampled_from([0, 3]))
def test_every_pool_is_found_and_computes_what_its_layers_do(pool, dense_after):
    shape, geo, relu_first = pool
    graph = pool_graph(shape, geo, relu_first, dense_after)
    mlp = lowered(graph)
    found = max_layers(mlp)
    if math.prod(geo["kernel_shape"]) > 1 and not dense_after:
        assert found, "the pool's tournament was not found"
    x = np.random.default_rng(1).normal(size=(5, mlp.layers[0].n_in))
    items = with_max_layers(runtime_layers(mlp.layers))
    np.testing.assert_allclose(run_items(items, x), forward(mlp, x), rtol=1e-12, atol=1e-12)
    if found and not dense_after:  # the pool alone: the maxima are the interpreter's own
        want = run(graph, x.reshape((5,) + tuple(shape)))
        np.testing.assert_array_equal(run_items(items, x), want.reshape(5, -1))


def zero_padded_pool_graph(shape, zero_pads, geo, relu_first: bool) -> Graph:
    """A max pool after an explicit zero padding, as Keras writes ResNet50's and
    DenseNet121's first pool (``ZeroPadding2D`` then ``MaxPooling2D``)."""
    g = Graph("x", tuple(shape))
    if relu_first:
        g.append("Relu")
    nd = len(shape) - 1
    g.append("Pad", {"pads": (0, *zero_pads[:nd], 0, *zero_pads[nd:]), "value": 0.0})
    g.append("MaxPool", geo)
    return g


@st.composite
def zero_padded_pools(draw) -> tuple:
    """(input shape, zero pads per spatial axis, the pool on the padded map, a ReLU first)."""
    shape = draw(input_shapes(min_size=3, max_size=7))
    nd = len(shape) - 1
    zero_pads = tuple(draw(st.lists(st.integers(0, 2), min_size=2 * nd, max_size=2 * nd)))
    padded_shape = (shape[0], *(d + zero_pads[i] + zero_pads[nd + i]
                                for i, d in enumerate(shape[1:])))
    geo = draw(pool_geometries(padded_shape))
    del geo["count_include_pad"]
    return shape, zero_pads, geo, draw(st.booleans())


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(zero_padded_pools())
def test_a_pool_after_a_zero_padding_is_found_where_the_zeros_change_no_maximum(pool):
    """The padding's zeros are rows that read nothing: after a ReLU a window's zero is no
    maximum's, and the pool is one max layer (its border windows without the zero); on
    signed values a zero may be the maximum, and whatever is taken computes what the
    layers do."""
    shape, zero_pads, geo, relu_first = pool
    graph = zero_padded_pool_graph(shape, zero_pads, geo, relu_first)
    mlp = lowered(graph)
    x = np.random.default_rng(3).normal(size=(7, mlp.layers[0].n_in))
    items = with_max_layers(runtime_layers(mlp.layers))
    np.testing.assert_allclose(run_items(items, x), forward(mlp, x), rtol=1e-12, atol=1e-12)
    found = max_layers(mlp)
    every_window_reads_the_map = all(
        p < k for p, k in zip(zero_pads, 2 * tuple(geo["kernel_shape"])))
    if relu_first and math.prod(geo["kernel_shape"]) > 1 and every_window_reads_the_map \
            and not any(geo["pads"]):
        assert found, "the zero-padded pool's tournament was not found"
    if found:
        want = run(graph, x.reshape((7,) + tuple(shape)))
        np.testing.assert_array_equal(run_items(items, x), want.reshape(7, -1))


def keras_stem_model(seed: int = 0) -> Mlp:
    """Keras's ResNet50 stem at a small size: conv + ReLU, ``ZeroPadding2D(1)``, max pool
    3x3 stride 2 unpadded, conv 1x1 + ReLU, a classifier; random weights and biases."""
    return lowered(stem_graph(10, 4, 3, 5, pool_pads=0, zero_padding=1, seed=seed))


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_runs_a_zero_padded_pool_as_a_max_layer_exactly(engine):
    mlp = keras_stem_model(seed=5)
    (found,) = max_layers(mlp)
    taps = sorted({len(g.offsets) for g in found.groups})
    assert taps == [4, 6, 9], taps  # the top and left windows hold the padding's zeros
    model = CsrModel(mlp, threads=1, engine=engine)
    x = nan_and_inf_inputs(mlp.layers[0].n_in)
    x[7:] = np.random.default_rng(8).normal(size=(14, mlp.layers[0].n_in))
    for batch in (1, 21):
        got = np.concatenate([model.predict(
            x[i:i + batch].astype(np.float32).reshape((-1,) + mlp.input_shape)).reshape(
            batch, -1) for i in range(0, 21, batch)])
        want = forward(mlp, x)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[7:], want[7:], rtol=2e-5, atol=2e-5)
        # where the layers' values are finite, so are the max layer's, the same
        np.testing.assert_allclose(got[:7][finite[:7]], want[:7][finite[:7]], rtol=2e-5,
                                   atol=2e-5)


def corrupt(mlp: Mlp, data) -> Mlp:
    """The MLP with one of its pool layers changed in one place: a weight's sign, a weight
    dropped or scaled, a bias, a row's activation."""
    candidates = [i for i, layer in enumerate(mlp.layers) if layer.weight.nnz <= 8 * layer.n_out]
    index = data.draw(st.sampled_from(candidates))
    layer = mlp.layers[index]
    w = as_csr(layer.weight).copy()
    bias = np.array(layer.bias)
    activation, segments = layer.activation, layer.segments
    how = data.draw(st.sampled_from(["sign", "drop", "scale", "bias", "activation"]))
    entry = data.draw(st.integers(0, max(0, w.nnz - 1)))
    row = data.draw(st.integers(0, layer.n_out - 1))
    if how == "sign" and w.nnz:
        w.data[entry] = -w.data[entry]
    elif how == "drop" and w.nnz:
        w.data[entry] = 0
        w.eliminate_zeros()
    elif how == "scale" and w.nnz:
        w.data[entry] *= 2
    elif how == "bias":
        bias[row] = 0.5
    else:  # the row's activation flipped between ReLU and the identity
        codes = ["relu" if name == "relu" else "identity" for name in row_names(layer)]
        codes[row] = "identity" if codes[row] == "relu" else "relu"
        activation, segments = "mixed", tuple((r, r + 1, name, 0.0)
                                              for r, name in enumerate(codes))
    changed = MlpLayer(sp.csr_array(w), bias, activation, layer.alpha, segments)
    return Mlp(mlp.layers[:index] + [changed] + mlp.layers[index + 1:], mlp.input_shape,
               mlp.output_shape)


def row_names(layer: MlpLayer) -> list[str]:
    runs = layer.segments or ((0, layer.n_out, layer.activation, layer.alpha),)
    return [name for start, stop, name, _ in runs for _ in range(start, stop)]


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(max_pools(max_size=6), st.data())
def test_layers_changed_anywhere_are_never_taken_for_a_max(pool, data):
    """Whatever one change makes of a tournament, the runtime's reading of the layers
    computes what they compute: a run is taken only where it is proven to be maxima."""
    mlp = corrupt(lowered(pool_graph(*pool)), data)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, mlp.layers[0].n_in))
    items = with_max_layers(runtime_layers(mlp.layers))
    np.testing.assert_allclose(run_items(items, x), forward(mlp, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("relu_first", [True, False])
def test_a_relu_of_a_max_is_a_max_only_where_its_window_is_proven_nonnegative(relu_first):
    """The pool's last layer given a ReLU: still a max after a ReLU; on signed values the
    ReLU may clip, and the layers are not taken for a max."""
    geo = {"kernel_shape": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0),
           "dilations": (1, 1), "ceil_mode": False}
    mlp = lowered(pool_graph((2, 6, 6), geo, relu_first))
    last = mlp.layers[-1]
    assert last.activation == "identity"
    clipped = Mlp(mlp.layers[:-1] + [MlpLayer(last.weight, last.bias, "relu")],
                  mlp.input_shape, mlp.output_shape)
    assert bool(max_layers(clipped)) == relu_first
    x = np.random.default_rng(6).normal(size=(9, mlp.layers[0].n_in)) - 1.0
    items = with_max_layers(runtime_layers(clipped.layers))
    np.testing.assert_allclose(run_items(items, x), forward(clipped, x), rtol=1e-12, atol=1e-12)


def test_the_stem_pool_is_one_max_layer():
    mlp = stem_model()
    (found,) = max_layers(mlp)
    assert found.n_out == 6 * 5 * 5 and found.replaces >= 2
    taps = sorted(len(g.offsets) for g in found.groups)
    assert taps[-1] == 9 and 4 in taps and 6 in taps  # interior, corners, edges
    assert found.nonneg.all()  # after a ReLU


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("threads", [1, 2])
def test_every_engine_runs_the_max_layer_exactly(engine, threads):
    mlp = stem_model(seed=3)
    model = CsrModel(mlp, threads=threads, engine=engine)
    rng = np.random.default_rng(4)
    # float64 on numba would compile its blocked kernels in float64 for this test alone
    # (about three minutes on a cold cache, in CI every time)
    precisions = ((np.float32, 2e-5),) + (((np.float64, 1e-12),) if engine != "numba" else ())
    for batch in (1, 21, 64):
        for dtype, tolerance in precisions:
            x = rng.normal(size=(batch, mlp.layers[0].n_in))
            got = model.predict(x.astype(dtype).reshape((batch,) + mlp.input_shape),
                                dtype=dtype).reshape(batch, -1)
            np.testing.assert_allclose(got, forward(mlp, x), rtol=tolerance, atol=tolerance)


def nan_and_inf_inputs(n_in: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(21, n_in))
    x[1, rng.choice(n_in, 7, replace=False)] = np.nan
    x[2, rng.choice(n_in, 7, replace=False)] = np.inf
    x[3, rng.choice(n_in, 7, replace=False)] = -np.inf
    x[4, :] = np.inf
    x[5, :] = -np.inf
    x[6, ::3] = np.nan
    x[6, 1::3] = np.inf
    return x


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("relu_first", [True, False])
def test_nan_and_infinities_in_the_max_layer(engine, relu_first):
    """A NaN in a window gives NaN, as the layers do; otherwise each output is its window's
    true max, infinities included (where the layers compute inf - inf, they give NaN). The
    pool reads what the engine's layer before it gave (its ReLU of -inf is NaN: z * 0)."""
    geo = {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1),
           "dilations": (1, 1), "ceil_mode": False}
    shape = (2, 7, 7)
    mlp = lowered(pool_graph(shape, geo, relu_first))
    (found,) = max_layers(mlp)
    x = nan_and_inf_inputs(mlp.layers[0].n_in).astype(np.float32)
    pool_input = x
    if relu_first:  # the ReLU layer, as this engine runs it
        relu = Mlp(mlp.layers[:1], mlp.input_shape, (mlp.layers[0].n_out,))
        pool_input = CsrModel(relu, threads=1, engine=engine).predict(
            x.reshape((-1,) + shape)).reshape(len(x), -1)
    want = run(pool_graph(shape, geo, False), pool_input.reshape((-1,) + shape))
    want = want.reshape(len(x), -1)
    layers = forward(mlp, x.astype(np.float64))
    model = CsrModel(mlp, threads=1, engine=engine)
    for batch in (1, 21):  # the single-sample and the batched code
        got = np.concatenate([model.predict(x[i:i + batch].reshape((-1,) + shape)).reshape(
            -1, want.shape[1]) for i in range(0, 21, batch)])
        np.testing.assert_array_equal(got, want)
        # every cell is in a window: a sample with a NaN has a NaN output
        has_nan = np.isnan(pool_input).any(axis=1)
        assert has_nan.sum() >= 2 and np.isnan(got[has_nan]).any(axis=1).all()
        finite = ~np.isnan(layers) & ~np.isnan(got)
        np.testing.assert_array_equal(got[finite], layers[finite].astype(np.float32))


def stem_onnx(batch) -> "onnx.ModelProto":
    """A stem as PyTorch exports it (a symbolic or a fixed batch of 1): conv, ReLU, a 3x3
    stride-2 max pool padded by one, conv, ReLU, a dense head."""
    from cnn2mlp.testing import OnnxBuilder

    b = OnnxBuilder((3, 16, 16), batch=batch, seed=7)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 4})
    b.activation("Relu")
    b.pool("MaxPool", {"kernel_shape": (3, 3), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (1, 1, 1, 1), "ceil_mode": 0})
    b.conv({"kernel_shape": (1, 1), "strides": (1, 1), "dilations": (1, 1),
            "pads": (0, 0, 0, 0), "group": 1, "out_channels": 3})
    b.activation("Relu")
    b.flatten()
    b.dense(5)
    return b.build()


@pytest.mark.skipif("c" not in ENGINES, reason="no C compiler (apt install gcc)")
@pytest.mark.parametrize("style", ["symbolic batch", "batch of 1", "no batch axis"])
def test_the_c_target_writes_the_max_layer_and_passes_its_check(tmp_path, style):
    """The three kinds of files users bring: the C target holds the pool as a max layer and
    --check (the written C against onnxruntime) passes. The batchless model's pool reads a
    convolution's signed values (the two-neuron passes)."""
    import onnx

    from cnn2mlp.backends.csr import read_csr
    from cnn2mlp.cli import main

    if style == "no batch axis":
        from test_batch_axis import rank1_model

        model = rank1_model()
    else:
        model = stem_onnx("N" if style == "symbolic batch" else 1)
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.npz"), "--quiet"]) == 0
    mlp, _ = read_csr(tmp_path / "m.npz")
    assert max_layers(mlp)
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.c"), "--check", "8",
                 "--quiet"]) == 0
    source = (tmp_path / "m.c").read_text()
    assert "_max_runs_" in source and "max_vector(m, u)" in source


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 9), st.integers(0, 2 ** 31))
def test_window_shapes_are_the_distinct_rows_in_numpys_order(n, taps, seed):
    """The windows' shapes found through a hash of each row are np.unique's, in its order,
    with each row's class."""
    rows = np.random.default_rng(seed).integers(-1, 4, size=(n, taps))
    shapes, shape_of = row_classes(rows)
    expected, expected_of = np.unique(rows, axis=0, return_inverse=True)
    assert np.array_equal(shapes, expected)
    assert np.array_equal(shape_of.ravel(), expected_of.ravel())
