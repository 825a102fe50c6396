"""Interval bounds are sound: every value the interpreter computes lies inside them."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn2mlp.ir import Graph, run
from cnn2mlp.ir.analysis import interval_bounds, lipschitz_inf, nonnegative
from cnn2mlp.testing import cnn_graphs


def values_of(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for node in graph.nodes:
        probe = graph.copy()
        probe.output = node.output
        out[node.output] = run(probe, x)
    return out


@given(cnn_graphs(), st.sampled_from([(0.0, 1.0), (-2.0, 3.0)]))
def test_bounds_contain_every_value(graph, box):
    bounds = interval_bounds(graph, *box)
    x = np.random.default_rng(0).uniform(*box, (16,) + graph.shape(graph.input))
    corners = np.stack([np.full(graph.shape(graph.input), box[0]),
                        np.full(graph.shape(graph.input), box[1])])
    for name, value in values_of(graph, np.concatenate([x, corners])).items():
        lo, hi = bounds[name]
        slack = 1e-9 * (1 + np.abs(value))
        assert (value >= lo - slack).all() and (value <= hi + slack).all(), name


@given(cnn_graphs(), st.data())
def test_bounds_kept_for_some_values_are_the_same_and_the_others_freed(graph, data):
    everything = interval_bounds(graph, -1.0, 2.0)
    names = [node.output for node in graph.nodes]
    keep = set(data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)))
    kept = interval_bounds(graph, -1.0, 2.0, keep=keep)
    assert set(kept) == keep
    for name in keep:
        np.testing.assert_array_equal(kept[name][0], everything[name][0])
        np.testing.assert_array_equal(kept[name][1], everything[name][1])


@given(cnn_graphs(layers=("conv", "activation", "batchnorm", "maxpool")))
def test_nonnegativity_proofs_hold_for_unbounded_inputs(graph):
    bounds = interval_bounds(graph)
    x = np.random.default_rng(1).normal(0, 100, (32,) + graph.shape(graph.input))
    for name, value in values_of(graph, x).items():
        proven = nonnegative(graph, name, bounds)
        assert (value[:, proven] >= 0).all(), name


def test_batchnorm_after_relu_with_negative_shift_is_not_nonnegative():
    # Regression: centre-radius bounds cancelled 1e30-sized numbers and "proved" this >= 0.
    g = Graph("x", (2, 3, 3))
    g.append("Relu")
    g.append("BatchNorm", {"scale": np.array([1.0, 0.5]), "bias": np.array([-0.25, 0.5]),
                           "mean": np.array([0.5, 0.0]), "var": np.array([1.0, 1.0]),
                           "epsilon": 0.0})
    lo, _ = interval_bounds(g)[g.output]
    assert (lo[0] < 0).all() and np.allclose(lo[1], 0.5)


def test_lipschitz_bounds_the_output_change():
    rng = np.random.default_rng(2)
    g = Graph("x", (4,))
    g.append("Dense", {"weight": rng.normal(size=(5, 4)), "bias": rng.normal(size=5)})
    start = g.output
    g.append("Tanh")
    g.append("Dense", {"weight": rng.normal(size=(3, 5)), "bias": None})
    constant = lipschitz_inf(g, start)
    head = Graph("h", (5,))
    head.append("Tanh")
    head.append("Dense", {"weight": g.nodes[-1].attrs["weight"], "bias": None})
    h = rng.normal(size=(64, 5))
    e = rng.uniform(-1e-3, 1e-3, (64, 5))
    change = np.abs(run(head, h + e) - run(head, h)).max(axis=1)
    assert (change <= constant * np.abs(e).max(axis=1) + 1e-12).all()


def worst_case_change(head: Graph, h: np.ndarray, row: np.ndarray, delta: float) -> float:
    """The output change when ``h`` moves by ``delta * sign(row)``: what a row of a linear
    layer amplifies most (the infinity-norm of that row times delta)."""
    e = delta * np.sign(row)[None]
    return float(np.abs(run(head, h + e) - run(head, h)).max())


@pytest.mark.parametrize("activation, slope", [("Identity", 1.0), ("Tanh", 1.0),
                                               ("Sigmoid", 0.25)])
def test_lipschitz_bound_is_not_below_the_worst_case_near_zero(activation, slope):
    """Near 0 the activation has its steepest slope; moving the input along the sign of the
    widest row of the next Dense reaches ``slope * |row|_1 * delta``: the bound may not be
    below it (a column-sum rule or a halved sigmoid slope is)."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 8))
    w[1] *= 4.0  # the widest row: rows and columns have different largest sums
    g = Graph("h", (8,))
    g.append(activation)
    g.append("Dense", {"weight": w, "bias": rng.normal(size=3)})
    delta = 1e-4
    realized = max(worst_case_change(g, np.zeros((1, 8)), row, delta) for row in w)
    constant = lipschitz_inf(g, "h")
    assert constant * delta >= realized * (1 - 1e-6)
    assert realized >= 0.99 * slope * np.abs(w).sum(axis=1).max() * delta  # the probe bites


def test_lipschitz_of_a_dense_layer_is_its_largest_row_sum():
    w = np.array([[1.0, -2.0, 0.5], [0.1, 0.1, 3.0]])
    g = Graph("x", (3,))
    g.append("Dense", {"weight": w, "bias": None})
    assert lipschitz_inf(g, "x") == pytest.approx(3.5)


def test_negative_scale_flips_interval_bounds():
    g = Graph("x", (2,))
    g.append("Relu")
    g.append("MulConst", {"const": np.array([-1.0, 2.0])})
    lo, hi = interval_bounds(g, -1.0, 3.0)[g.output]
    np.testing.assert_array_equal(lo, [-3.0, 0.0])
    np.testing.assert_array_equal(hi, [0.0, 6.0])


@given(st.integers(1, 12), st.integers(1, 7), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 6), st.integers(0, 6), st.booleans())
def test_window_taps_by_arithmetic_match_the_window_table(n, k, s, d, pb, pe, ceil):
    from cnn2mlp.ir.cost import axis_taps
    from cnn2mlp.ir.geometry import window_axes

    (ax,) = window_axes((n,), (k,), (s,), (d,), (pb, pe), ceil)
    if ax.size_out > 0:
        assert axis_taps(ax) == int(ax.inside().sum())
