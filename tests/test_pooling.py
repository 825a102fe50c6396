"""Pooling: maxpool-to-relu, avgpool-fuse, avgpool-linearize, against the interpreter and
onnxruntime, over pool geometry."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn2mlp.ir import Graph, run
from cnn2mlp.ir.mlp import Mlp
from cnn2mlp.backends import get_target
from cnn2mlp.passes import PassContext, PassOptions, Pipeline, get_pass
from cnn2mlp.testing import (
    OnnxBuilder,
    assert_equivalent,
    compile_to_model,
    input_shapes,
    pool_geometries,
)


@st.composite
def pool_models(draw, op=None, opset=None):
    """A single pool (after an optional ReLU) on a random input, as ONNX."""
    shape = draw(input_shapes(min_size=3, max_size=8))
    opset = opset or draw(st.sampled_from([11, 13, 19, 21]))
    op = op or draw(st.sampled_from(["MaxPool", "AveragePool"]))
    # A lone pool: onnxruntime's kernel runs even where ONNX shape inference disagrees.
    geo = draw(pool_geometries(shape, dilations=opset >= 19 or op == "MaxPool",
                               ort_consistent=False))
    b = OnnxBuilder(shape, opset=opset, seed=0)
    if draw(st.booleans()):
        b.activation("Relu")
    b.pool(op, geo)
    return b.build()


@given(pool_models())
def test_pool_semantics_and_compiled_mlp_match_onnxruntime(model):
    # The IR's pool evaluation is the reference the pass tests trust: check it first.
    from cnn2mlp.frontends.onnx import OnnxImporter

    graph = OnnxImporter(model, "model", None).run()
    assert_equivalent(model, graph, n=6)
    assert_equivalent(model, compile_to_model(model), n=6)


def pool_graph(draw_shape, geo, op, relu_first: bool) -> Graph:
    g = Graph("x", draw_shape)
    if relu_first:
        g.append("Relu")
    g.append(op, geo)
    return g


@given(st.data())
def test_maxpool_to_relu_is_exact_and_lean(data):
    shape = data.draw(input_shapes(min_size=3, max_size=8))
    geo = data.draw(pool_geometries(shape))
    geo.pop("count_include_pad")
    relu_first = data.draw(st.booleans())
    g = pool_graph(shape, geo, "MaxPool", relu_first)
    after = g.copy()
    ctx = PassContext()
    assert get_pass("maxpool-to-relu").run(after, ctx) == 1
    after.verify()
    assert "MaxPool" not in after.ops()
    assert_equivalent(g, after, n=8, rtol=1e-6)

    k = math.prod(geo["kernel_shape"])
    relus = after.ops().count("Relu") - relu_first
    stats = ctx.stats["maxpool-to-relu"]
    assert relus == stats["relu_layers"] <= math.ceil(math.log2(k)) if k > 1 else relus == 0
    # Never more than a tournament per window without sharing: a pair costs a difference
    # and a passed value (two neurons if its sign is unknown), a lone value its pass.
    from cnn2mlp.ir.linear import window_members

    per_pass = 1 if relu_first else 2
    sizes = (window_members(shape, geo) >= 0).sum(axis=1)
    levels = stats["relu_layers"]
    assert stats["neurons"] <= sum(tournament_cost(int(m), per_pass, levels) for m in sizes)


def tournament_cost(m: int, per_pass: int, levels: int) -> int:
    """Neurons of one window's tournament over ``levels`` ReLU layers (a window smaller
    than the largest one passes its values on until the last layer)."""
    cost = 0
    for _ in range(levels):
        cost += (m // 2) * (1 + per_pass) + (m % 2) * per_pass
        m = (m + 1) // 2
    return cost


def test_maxpool_neurons_for_a_2x2_window_after_relu():
    # One window of 4 non-negative values: level 1 = 2 differences + 2 passes,
    # level 2 = 1 difference + 1 pass: 6 neurons in 2 ReLU layers.
    g = pool_graph((1, 2, 2), {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                               "pads": (0, 0, 0, 0), "ceil_mode": False}, "MaxPool", True)
    ctx = PassContext()
    after = g.copy()
    get_pass("maxpool-to-relu").run(after, ctx)
    assert ctx.stats["maxpool-to-relu"] == {"neurons": 6, "relu_layers": 2}
    signed = Graph("x", (1, 2, 2))
    signed.append("MaxPool", g.nodes[1].attrs)
    ctx = PassContext()
    get_pass("maxpool-to-relu").run(signed.copy(), ctx)
    assert ctx.stats["maxpool-to-relu"]["neurons"] == 2 + 4 + 1 + 2  # passes cost two


def test_overlapping_windows_share_pairs():
    geo = {"kernel_shape": (2,), "strides": (1,), "dilations": (1,), "pads": (0, 0),
           "ceil_mode": False}
    g = pool_graph((1, 9), geo, "MaxPool", True)
    ctx = PassContext()
    get_pass("maxpool-to-relu").run(g, ctx)
    # 8 windows of 2: 8 differences + 8 distinct passed values (x1..x8), no repeats.
    assert ctx.stats["maxpool-to-relu"]["neurons"] == 16


def test_a_3x3_pool_reduces_rows_then_columns():
    """A 3×3 stride-1 pool as the 1×3 maxima of each row, then the 3×1 maxima of those, in
    the same 4 layers: a row of 8 takes 28 neurons, 8 rows and 8 columns 16 × 28 = 448;
    the whole windows at once took 639."""
    geo = {"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
           "pads": (1, 1, 1, 1), "ceil_mode": False}
    g = pool_graph((1, 8, 8), geo, "MaxPool", True)
    after, ctx = g.copy(), PassContext()
    get_pass("maxpool-to-relu").run(after, ctx)
    assert ctx.stats["maxpool-to-relu"] == {"neurons": 448, "relu_layers": 4}
    assert_equivalent(g, after, n=16, rtol=1e-6)


def test_a_pool_that_would_need_more_layers_separably_is_reduced_whole():
    """5×5 = 25 cells take 5 layers whole, 3 + 3 by rows then columns (fewer neurons, but
    a layer more): the whole window."""
    geo = {"kernel_shape": (5, 5), "strides": (1, 1), "dilations": (1, 1),
           "pads": (2, 2, 2, 2), "ceil_mode": False}
    g = pool_graph((1, 9, 9), geo, "MaxPool", True)
    after, ctx = g.copy(), PassContext()
    get_pass("maxpool-to-relu").run(after, ctx)
    assert ctx.stats["maxpool-to-relu"]["relu_layers"] == 5
    assert_equivalent(g, after, n=16, rtol=1e-6)


@given(st.data(), st.sampled_from(["conv_after", "dense_before"]))
def test_avgpool_fuse(data, where):
    shape = data.draw(input_shapes(min_size=3, max_size=7))
    geo = data.draw(pool_geometries(shape))
    g = Graph("x", shape)
    rng = np.random.default_rng(0)
    if where == "dense_before":
        n = math.prod(shape)
        g.append("Dense", {"weight": rng.normal(size=(n, n)).astype(np.float32),
                           "bias": rng.normal(size=n).astype(np.float32), "out_shape": shape})
    g.append("AveragePool", geo)
    n = math.prod(g.shape(g.output))
    g.append("Reshape", {"shape": (n,)})
    if where == "conv_after":
        g.append("Dense", {"weight": rng.normal(size=(3, n)).astype(np.float32), "bias": None})
    after = g.copy()
    Pipeline(["layout-to-permutation"]).run(after)
    assert get_pass("avgpool-fuse").run(after, PassContext(fusion="always")) == 1
    assert "AveragePool" not in after.ops()
    assert_equivalent(g, after, n=8, rtol=1e-5)


def tanh_cnn_with_final_avgpool(activation="Tanh", seed=0) -> Graph:
    """conv → f → avgpool → dense → f → avgpool (at the end): both pools stand alone."""
    rng = np.random.default_rng(seed)
    g = Graph("x", (2, 8, 8))
    g.append("Conv", {"kernel": rng.normal(size=(3, 2, 3, 3)).astype(np.float32),
                      "bias": rng.normal(size=3).astype(np.float32), "strides": (1, 1),
                      "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1})
    g.append(activation)
    g.append("AveragePool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                             "pads": (0, 0, 0, 0), "ceil_mode": False,
                             "count_include_pad": False})
    g.append("Conv", {"kernel": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                      "bias": None, "strides": (1, 1), "pads": (0, 0, 0, 0),
                      "dilations": (1, 1), "group": 1})
    g.append(activation)
    g.append("AveragePool", {"kernel_shape": (2, 2), "strides": (1, 1), "dilations": (1, 1),
                             "pads": (0, 1, 0, 1), "ceil_mode": False,
                             "count_include_pad": True})
    return g


LINEARIZE = ["eliminate-identity", "fold-batchnorm", "avgpool-linearize", "conv-to-dense",
             "lower-linear", "fuse-dense", "eliminate-dead"]


@pytest.mark.parametrize("activation", ["Tanh", "Sigmoid"])
@pytest.mark.parametrize("eps", [None, 1e-1, 3e-2, 1e-2, 1e-3, 1e-4])
def test_linearization_error_stays_within_the_reported_bound(activation, eps):
    g = tanh_cnn_with_final_avgpool(activation)
    after = g.copy()
    options = PassOptions(epsilon=eps)
    ctx = PassContext(input_range=(0.0, 1.0), options=options)
    Pipeline(LINEARIZE).run(after, ctx)
    mlp = Mlp.from_graph(after, g.shape(g.output))
    assert "AveragePool" not in after.ops()
    assert any(n.startswith("approximate") for n in after.notes)
    pools = ctx.stats["avgpool-linearize"]["pools"]
    assert len(pools) == 2
    # The exact compile (pools fused) on the same inputs: its float32 error is the baseline.
    exact = g.copy()
    get_target("csr").pipeline().run(exact, PassContext(fusion="always"))
    exact_mlp = Mlp.from_graph(exact, g.shape(g.output))
    x = np.random.default_rng(1).uniform(0, 1, (64, 2, 8, 8))
    reference = run(g, x)
    from cnn2mlp.backends.csr import CsrModel

    measured = np.abs(CsrModel(mlp).predict(x) - reference).max()
    baseline = np.abs(CsrModel(exact_mlp).predict(x) - reference).max()
    # The first pool's error reaches the output through the Lipschitz bound; add both.
    bound = sum(p["bound_at_output"] for p in pools)
    assert measured <= bound + baseline, (measured, bound, baseline)
    if eps is None:  # the chosen eps keeps the error near float32 rounding
        assert measured < 1e-3


def test_chosen_epsilon_beats_a_sweep():
    def error(eps):
        g = tanh_cnn_with_final_avgpool("Sigmoid")
        after = g.copy()
        options = PassOptions(epsilon=eps)
        Pipeline(LINEARIZE).run(after, PassContext(options=options))
        from cnn2mlp.backends.csr import CsrModel

        x = np.random.default_rng(2).uniform(0, 1, (64, 2, 8, 8))
        return np.abs(CsrModel(Mlp.from_graph(after)).predict(x) - run(g, x)).max()

    chosen = error(None)
    assert chosen <= 2 * min(error(e) for e in [1e-1, 1e-2, 1e-3, 1e-4, 1e-5])


@pytest.mark.parametrize("relu_first", [True, False])
def test_linearize_under_relu_is_exact(relu_first):
    g = Graph("x", (2, 6, 6))
    if relu_first:
        g.append("Relu")
    g.append("AveragePool", {"kernel_shape": (3, 3), "strides": (2, 2), "dilations": (1, 1),
                             "pads": (1, 1, 1, 1), "ceil_mode": True, "count_include_pad": False})
    after = g.copy()
    ctx = PassContext(options=PassOptions(activation="Relu"))
    Pipeline(["avgpool-linearize", "lower-linear", "fuse-dense"]).run(after, ctx)
    assert not after.notes  # exact: nothing approximate to report
    mlp = Mlp.from_graph(after, g.shape(g.output))
    # non-negative inputs: one neuron an output; signed: relu(z) and relu(-z)
    widths = [layer.n_out for layer in mlp.layers]
    n = math.prod(g.shape(g.output))
    assert widths[-1 if relu_first else -2] == (n if relu_first else 2 * n)
    assert_equivalent(g, after, n=8, rtol=1e-6)


@given(st.data(), st.sampled_from(["Relu", "Tanh", "Sigmoid"]))
def test_avgpool_linearize_over_geometry(data, activation):
    """Exact under ReLU; under tanh/sigmoid within the bound it reports at the pool."""
    shape = data.draw(input_shapes(min_size=3, max_size=7))
    geo = data.draw(pool_geometries(shape))
    relu_first = data.draw(st.booleans())
    g = Graph("x", shape)
    if relu_first:
        g.append("Relu")
    g.append("AveragePool", geo)
    after = g.copy()
    ctx = PassContext(input_range=(-1.0, 1.0), options=PassOptions(activation=activation))
    assert get_pass("avgpool-linearize").run(after, ctx) == 1
    after.verify()
    assert "AveragePool" not in after.ops()
    x = np.random.default_rng(3).uniform(-1, 1, (8,) + shape)
    error = np.abs(run(after, x) - run(g, x)).max()
    if activation == "Relu":
        assert error < 1e-6 and not after.notes
    else:
        (entry,) = ctx.stats["avgpool-linearize"]["pools"]
        assert error <= entry["bound_at_output"]
        assert after.notes[0].startswith("approximate")


@pytest.mark.parametrize("precision", [None, "opencv"])
@pytest.mark.parametrize("activation", ["Tanh", "Sigmoid"])
@pytest.mark.parametrize("zmax", [0.05, 1.0, 7.5, 300.0])
def test_chosen_epsilon_minimises_the_reported_bound(precision, activation, zmax):
    """The pass reports ``error_bound(eps)``; the eps it picks must be the best one for that
    bound among its neighbours (within the linear regime eps <= 1/zmax)."""
    from cnn2mlp.passes.avgpool_linearize import (
        best_epsilon,
        error_bound,
        rounding_model,
    )

    ctx = PassContext(options=PassOptions(opencv_arithmetic=precision == "opencv"))
    eps = best_epsilon(activation, zmax, ctx)
    assert 0 < eps <= 1.0 / zmax
    chosen = error_bound(activation, eps, zmax, ctx)
    if rounding_model(activation, ctx)[1] == 0:
        # tanh in float32 has no absolute rounding floor: any small eps reaches the relative
        # floor; the pass stops where truncation equals it, within 2x of the infimum.
        relative = rounding_model(activation, ctx)[0] * zmax
        assert chosen <= 2 * relative * (1 + 1e-9)
        return
    for factor in (0.5, 0.8, 1.25, 2.0):
        if eps * factor <= 1.0 / zmax:
            assert chosen <= error_bound(activation, eps * factor, zmax, ctx) * (1 + 1e-12)


@pytest.mark.parametrize("activation", ["Sigmoid", "Tanh"])
def test_linearized_pool_in_float32_stays_within_its_bound_without_allowance(activation):
    """x → f → AveragePool (the output): the whole error of the float32 MLP against the
    float64 interpreter is the pool's, and must lie within the bound it reports."""
    from cnn2mlp.backends.csr import CsrModel

    g = Graph("x", (2, 6, 6))
    g.append(activation)
    g.append("AveragePool", {"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
                             "pads": (1, 1, 1, 1), "ceil_mode": False,
                             "count_include_pad": False})
    after = g.copy()
    ctx = PassContext(input_range=(-4.0, 4.0))
    Pipeline(LINEARIZE).run(after, ctx)
    (entry,) = ctx.stats["avgpool-linearize"]["pools"]
    x = np.random.default_rng(4).uniform(-4, 4, (256, 2, 6, 6)).astype(np.float32)
    measured = np.abs(CsrModel(Mlp.from_graph(after, g.shape(g.output))).predict(x)
                      - run(g, x.astype(np.float64))).max()
    assert measured <= entry["bound_at_output"], (measured, entry)


def test_max_pool_after_a_negative_scale_is_exact():
    """Relu → Mul(-1) → MaxPool: the pooled values are <= 0. A sign rule that assumed a
    positive constant would "prove" them >= 0 and pass them through one ReLU neuron."""
    b = OnnxBuilder((2, 6, 6), opset=13, seed=2)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 3})
    b.activation("Relu")
    b.node("Mul", [b.current, b.const(np.array(-1.0, np.float32))])
    b.pool("MaxPool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (0, 0, 0, 0), "ceil_mode": False})
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)
