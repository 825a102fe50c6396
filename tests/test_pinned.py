"""Behaviours that a planted bug changed without any test noticing (round 3): each pinned
here by values against a reference (onnxruntime, the float64 interpreter, Keras), with
fixtures that exercise it (negative weights, three-input merges, pruned mixed layers, two
slopes in one layer, float64, maps measured in several chunks)."""
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from cnn2mlp.errors import CompileError
from cnn2mlp.ir import Graph, run
from cnn2mlp.ir.analysis import interval_bounds
from cnn2mlp.ir.mlp import Mlp
from cnn2mlp.passes import PassContext, Pipeline
from cnn2mlp.testing import OnnxBuilder, assert_equivalent, compile_to_model


def conv_geo(k=3, s=1, p=1, out=4, g=1):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "group": g, "out_channels": out}


# ------------------------------------------------------------------ 2. interval bounds
@st.composite
def signed_sum_graphs(draw):
    """Random DAGs of Dense layers, activations and Sums whose coefficients take both
    signs: a join ``a - 2 b`` must bound its lower end by ``b``'s upper one."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(2, 5))
    g = Graph("x", (n,))
    pool = ["x"]
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["dense", "relu", "sum", "sum", "concat"]))
        a = draw(st.sampled_from(pool))
        if kind == "dense":
            value = g.add_node("Dense", [a], {"weight": rng.normal(size=(n, n)),
                                              "bias": rng.normal(size=n)}).output
        elif kind == "relu":
            value = g.add_node(draw(st.sampled_from(["Relu", "Tanh", "LeakyRelu"])), [a],
                               {"alpha": 0.1}).output
        elif kind == "sum":
            b = draw(st.sampled_from(pool))
            coeffs = tuple(float(c) for c in rng.choice([-2.0, -0.5, 0.75, 1.5], 2))
            value = g.add_node("Sum", [a, b], {"coeffs": coeffs}).output
        else:
            b = draw(st.sampled_from(pool))
            both = g.add_node("Concat", [a, b], {"axis": 0}).output
            value = g.add_node("Dense", [both], {"weight": rng.normal(size=(n, 2 * n)),
                                                 "bias": None}).output
        pool.append(value)
    g.output = pool[-1]
    return g


@settings(max_examples=60)
@given(signed_sum_graphs(), st.sampled_from([(0.0, 1.0), (-2.0, 1.0)]))
def test_bounds_hold_for_sampled_inputs_on_graphs_with_negative_weights(graph, box):
    bounds = interval_bounds(graph, *box)
    x = np.random.default_rng(0).uniform(*box, (64,) + graph.shape(graph.input))
    for node in graph.nodes:
        probe = graph.copy()
        probe.output = node.output
        value = run(probe, x)
        lo, hi = bounds[node.output]
        slack = 1e-9 * (1 + np.abs(value))
        assert (value >= lo - slack).all() and (value <= hi + slack).all(), node


def test_a_negative_join_is_not_proven_nonnegative():
    """relu(a) - relu(b) is signed: carrying it as one ReLU neuron would drop its negative
    part."""
    g = Graph("x", (3,))
    a = g.add_node("Relu", ["x"]).output
    b = g.add_node("Relu", [g.add_node("Dense", ["x"], {"weight": -np.eye(3),
                                                        "bias": None}).output]).output
    d = g.add_node("Sum", [a, b], {"coeffs": (1.0, -1.0)}).output
    lo, hi = interval_bounds(g, -1.0, 1.0)[d]
    assert np.allclose(lo, -1.0) and np.allclose(hi, 1.0)


# ------------------------------------------------------------------ 3. gated values
def two_branches(opset=13) -> tuple[OnnxBuilder, str, str]:
    b = OnnxBuilder((6,), opset=opset, seed=3)
    y = b.dense(5)
    b.current, b.shape = "input", (6,)
    t = b.dense(5)
    return b, y, t


def finish(b: OnnxBuilder, value: str) -> onnx.ModelProto:
    b.current, b.shape = value, (5,)
    b.dense(2)
    return b.build()


def compile_fails(model, *words):
    with pytest.raises(CompileError) as info:
        compile_to_model(model)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_a_gate_computed_from_another_value_is_refused():
    """y · cast(t > θ) with t ≠ y is a product of two computed values, not ThresholdedRelu."""
    b, y, t = two_branches()
    mask = b.node("Cast", [b.node("Greater", [t, b.const(np.array(0.2, np.float32))])],
                  to=TensorProto.FLOAT)
    compile_fails(finish(b, b.node("Mul", [y, mask])), "no MLP layer")


def test_the_same_gate_on_its_own_value_is_thresholded_relu():
    b, y, _ = two_branches()
    mask = b.node("Cast", [b.node("Greater", [y, b.const(np.array(0.2, np.float32))])],
                  to=TensorProto.FLOAT)
    model = finish(b, b.node("Mul", [y, mask]))
    compiled = compile_to_model(model)
    assert "thresholded_relu" in [layer.activation for layer in compiled.layers]
    assert_equivalent(model, compiled, n=32, input_range=(-2, 2))


def test_where_below_a_threshold_is_not_thresholded_relu():
    """where(x < θ, x, 0) keeps the values below θ: it jumps too, but it is not
    ThresholdedRelu(θ), which keeps the values above."""
    b, y, _ = two_branches()
    below = b.node("Less", [y, b.const(np.array(0.2, np.float32))])
    compile_fails(finish(b, b.node("Where", [below, y, b.const(np.array(0.0, np.float32))])),
                  "no MLP layer")


def test_a_constant_divided_by_the_value_is_not_gelu():
    """x · ½(1 + erf(c / x)) looks like GELU's chain but divides by a computed value."""
    b, y, _ = two_branches()
    inner = b.node("Div", [b.const(np.array(0.70710678, np.float32)), y])
    erf = b.node("Add", [b.const(np.array(1.0, np.float32)), b.node("Erf", [inner])])
    half = b.node("Mul", [erf, b.const(np.array(0.5, np.float32))])
    compile_fails(finish(b, b.node("Mul", [y, half])), "Div")


# ------------------------------------------------------------------ 4. variadic Max / Min
@settings(max_examples=16, deadline=None)
@given(st.integers(2, 5), st.sampled_from(["Max", "Min"]), st.integers(0, 2**16))
def test_variadic_max_and_min_of_two_to_five_branches(count, op, seed):
    b = OnnxBuilder((4,), opset=13, seed=seed)
    branches = []
    for _ in range(count):
        b.current, b.shape = "input", (4,)
        branches.append(b.dense(3))
    b.node(op, branches)
    b.shape = (3,)
    b.dense(2)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=32, input_range=(-2, 2))


# ------------------------------------------------------------------ 5-7. carried runs
def test_pruned_mixed_layer_keeps_its_runs():
    """x carried (identity neurons) through a tanh layer, then read at stride 2 (a Slice
    joined to the main branch before the next tanh): pruning removes three quarters of
    the carried run, and the runs of the mixed layer must follow."""
    b = OnnxBuilder((2, 6, 6), opset=13, seed=5)
    b.conv(conv_geo(out=2))
    b.activation("Tanh")
    main_branch = b.conv(conv_geo(out=2, s=2))
    shortcut = b.node("Slice", ["input", b.const(np.array([0, 0], np.int64)),
                                b.const(np.array([6, 6], np.int64)),
                                b.const(np.array([2, 3], np.int64)),
                                b.const(np.array([2, 2], np.int64))])
    b.node("Add", [main_branch, shortcut])
    b.shape = (2, 3, 3)
    b.activation("Tanh")
    b.flatten()
    b.dense(3)
    model = b.build()
    compiled = compile_to_model(model)
    mixed = [layer for layer in compiled.layers if layer.segments]
    assert mixed and all(layer.carried for layer in mixed)
    assert compiled.result.stats["prune-neurons"]["neurons"] == 2 * 6 * 6 - 2 * 3 * 3
    assert_equivalent(model, compiled, n=32, input_range=(-2, 2))


def test_two_leaky_slopes_in_one_layer_stay_two_runs():
    b = OnnxBuilder((2, 5, 5), opset=13, seed=6)
    b.conv(conv_geo(out=3))
    a = b.node("LeakyRelu", [b.current], alpha=0.1)
    b.current, b.shape = "input", (2, 5, 5)
    b.conv(conv_geo(out=3))
    c = b.node("LeakyRelu", [b.current], alpha=0.35)
    b.node("Sub", [a, c])
    b.shape = (3, 5, 5)
    b.flatten()
    b.dense(2)
    model = b.build()
    compiled = compile_to_model(model)
    slopes = {alpha for layer in compiled.layers for *_, alpha in layer.segments or ()}
    assert {0.1, 0.35} <= {round(s, 6) for s in slopes}
    assert_equivalent(model, compiled, n=32, input_range=(-2, 2))


def test_a_value_partly_proven_nonnegative_then_another_carried_block():
    """v = concat(relu(a), conv(x)): half is ≥ 0 (one neuron a value), half signed (two);
    a second value w is carried in the same layer after it."""
    b = OnnxBuilder((2, 4, 4), opset=13, seed=7)
    b.conv(conv_geo(out=2))
    positive = b.activation("Relu")
    b.current, b.shape = "input", (2, 4, 4)
    signed = b.conv(conv_geo(out=2))
    v = b.node("Concat", [positive, signed], axis=1)
    b.current, b.shape = "input", (2, 4, 4)
    w = b.conv(conv_geo(out=4))
    b.current, b.shape = v, (4, 4, 4)
    b.conv(conv_geo(out=4))
    b.activation("Relu")
    b.conv(conv_geo(out=4))
    deep = b.activation("Relu")
    total = b.node("Add", [b.node("Add", [deep, v]), w])
    b.current, b.shape = total, (4, 4, 4)
    b.flatten()
    b.dense(3)
    model = b.build()
    from cnn2mlp.backends import get_target

    ctx = get_target("csr").context()
    ctx.options.carry = "activation"  # ReLU neurons, not identity ones
    compiled = compile_to_model(model, ctx=ctx)
    assert_equivalent(model, compiled, n=32, input_range=(-2, 2))
    # ReLU pairs for the signed entries only: fewer than two neurons a carried value
    layer = compiled.layers[0]
    assert 0 < layer.carried < 2 * (64 + 64)


# ------------------------------------------------------------------ 8. float64 DAGs
def test_a_float64_residual_block_with_a_projection_stays_float64(tmp_path):
    from onnx.reference import ReferenceEvaluator

    b = OnnxBuilder((3, 6, 6), opset=17, seed=8)
    b.conv(conv_geo(out=4))
    stem = b.activation("Relu")
    b.conv(conv_geo(out=4, s=2))
    b.activation("Relu")
    main_branch = b.conv(conv_geo(out=4))
    b.current, b.shape = stem, (4, 6, 6)
    shortcut = b.conv(conv_geo(k=1, s=2, p=0, out=4))
    b.node("Add", [main_branch, shortcut])
    b.shape = (4, 3, 3)
    b.activation("Relu")
    b.flatten()
    b.dense(3)
    model = to_float64(b.build())
    compiled = compile_to_model(model)
    assert compiled.dtype == np.float64
    assert all(layer.weight.dtype == np.float64 for layer in compiled.layers)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 6, 6))
    reference = ReferenceEvaluator(model).run(None, {"input": x})[0]
    got = compiled.predict(x)
    assert np.max(np.abs(got - reference) / np.maximum(1, np.abs(reference))) < 1e-12


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model in float64, its weights moved off float32's grid (by up to 1e-6)."""
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32:
            value = value.astype(np.float64) + rng.uniform(-1e-6, 1e-6, value.shape)
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    return model


# ------------------------------------------------------------------ 9. verifier ONNX
def test_verifier_onnx_writes_thresholded_relu_with_its_alpha(tmp_path):
    from cnn2mlp.references import onnx_runner
    from cnn2mlp.cli import main

    b = OnnxBuilder((5,), opset=13, seed=9)
    b.dense(6)
    b.node("ThresholdedRelu", [b.current], alpha=0.7)
    b.dense(2)
    src, out = tmp_path / "m.onnx", tmp_path / "mlp.onnx"
    onnx.save(b.build(), str(src))
    assert main([str(src), "-o", str(out), "--quiet"]) == 0
    x = np.random.default_rng(1).uniform(-2, 2, (64, 5)).astype(np.float32)
    reference, got = onnx_runner(src)(x), onnx_runner(out)(x)
    assert np.max(np.abs(reference - got)) < 1e-5
    nodes = onnx.load(str(out)).graph.node
    (gate,) = [n for n in nodes if n.op_type == "ThresholdedRelu"]
    assert helper.get_attribute_value(gate.attribute[0]) == pytest.approx(0.7)


# ------------------------------------------------------------------ 11. chunked measurement
@pytest.mark.parametrize("op", ["Resize", "Einsum", "ReduceL1"])
def test_linear_maps_measured_in_several_chunks(monkeypatch, op):
    from cnn2mlp.frontends.onnx import measure

    monkeypatch.setattr(measure, "MAX_PROBE_ENTRIES", 64)  # a handful of basis vectors a run
    b = OnnxBuilder((2, 5, 4), opset=13, seed=11)
    if op == "Resize":
        b.node("Resize", [b.current, "", b.const(np.array([1, 1, 2, 1.5], np.float32))],
               mode="linear")
        b.shape = (2, 10, 6)
    elif op == "Einsum":
        b.node("Einsum", [b.current, b.const(b.weights((4, 3)))], equation="bchw,wk->bckh")
        b.shape = (2, 3, 5)
    else:
        b.node("ReduceL1", [b.current], axes=[3], keepdims=0)
        b.shape = (2, 5)
    b.flatten()
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16, input_range=(-1, 1))


# ------------------------------------------------------------------ caught only by a crash
def test_batchless_transpose_without_perm_reverses_the_axes():
    """A batch-less model's Transpose with no perm reverses the sample's axes; after the
    batch axis is added it must still reverse those, not the batch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    w = numpy_helper.from_array(np.random.default_rng(2).normal(size=(12, 2)).astype(
        np.float32), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["t"]),
             helper.make_node("Reshape", ["t", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    shape = numpy_helper.from_array(np.array([12], np.int64), "shape")
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, shape]),
                              opset_imports=[helper.make_opsetid("", 13)])
    compiled = compile_to_model(model, batch_axis="none")
    from cnn2mlp.references import onnx_runner

    run = onnx_runner(model)
    xs = np.random.default_rng(3).uniform(-1, 1, (6, 3, 4)).astype(np.float32)
    reference = np.stack([run(sample) for sample in xs])
    np.testing.assert_allclose(compiled.predict(xs), reference, rtol=1e-5, atol=1e-6)


def test_opset_18_pad_with_axes_pads_those_axes():
    b = OnnxBuilder((2, 4, 5), opset=18, seed=12)
    b.node("Pad", [b.current, b.const(np.array([1, 0, 2, 3], np.int64)),
                   b.const(np.array(0.5, np.float32)), b.const(np.array([2, 3], np.int64))])
    b.shape = (2, 7, 8)
    b.flatten()
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=8)


def test_float64_check_judges_at_its_own_tolerance(tmp_path, capsys):
    """A float64 model checked at 1e-9: a weight rounded to float32 in the file's MLP
    must fail the check, not only change a string."""
    from cnn2mlp.check import DEFAULT_TOLERANCE

    assert DEFAULT_TOLERANCE["float64"] <= 1e-9
    b = OnnxBuilder((5,), opset=13, seed=13)
    b.dense(4)
    b.activation("Relu")
    b.dense(2)
    model = to_float64(b.build())
    compiled = compile_to_model(model)
    x = np.random.default_rng(4).uniform(0, 1, (16, 5))
    from cnn2mlp.references import onnx_runner

    exact = onnx_runner(model)(x)
    rounded = compiled.mlp.layers[0].weight.astype(np.float32).astype(np.float64)
    error = np.abs(exact - compiled.predict(x)).max()
    assert error < 1e-12
    compiled.mlp.layers[0].weight = rounded
    from cnn2mlp.comparison import compare

    assert not compare(exact, compiled.mlp.forward(x), DEFAULT_TOLERANCE["float64"]).passed


# ------------------------------------------------------------------ runtime
def test_a_layer_whose_groups_run_partly_blocked_adds_its_bias_once():
    """A convolution (a big group, blocked from batch 16) beside max-pool pairs (small
    groups, direct): bias and ReLU must not ride with the blocked stores when other groups
    add into the same rows afterwards."""
    pytest.importorskip("numba")
    import scipy.sparse as sp

    from cnn2mlp.ir.conv_matrix import conv_matrix
    from cnn2mlp.ir.mlp import MlpLayer
    from cnn2mlp.runtime import make_engine

    rng = np.random.default_rng(14)
    conv, _, _ = conv_matrix(rng.normal(size=(8, 2, 3, 3)).astype(np.float32), None,
                             (2, 10, 10), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    n_in = conv.shape[1]
    pairs = sp.csr_array((np.tile([1.0, -1.0], 40).astype(np.float32),
                          np.arange(80) % n_in, np.arange(0, 81, 2)), shape=(40, n_in))
    weight = sp.csr_array(sp.vstack([conv, pairs]))
    bias = rng.uniform(-1, 1, weight.shape[0]).astype(np.float32)
    mlp = Mlp([MlpLayer(weight, bias, "relu")], (n_in,), (weight.shape[0],))
    x = rng.uniform(-1, 1, (37, n_in)).astype(np.float32)
    for threads in (1, 2):
        got = make_engine(mlp, "numba", threads).run(x)
        np.testing.assert_allclose(got, mlp.forward(x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ 10. Keras
def keras_models():
    keras = pytest.importorskip("keras")
    L = keras.layers
    cf = "channels_first"
    flat_1d = keras.Sequential([keras.Input((3, 16)),
                                L.Conv1D(4, 3, data_format=cf, activation="relu"),
                                L.Flatten(), L.Dense(3)])
    flat_1d_cf = keras.Sequential([keras.Input((3, 16)),
                                   L.Conv1D(4, 3, data_format=cf, activation="relu"),
                                   L.Flatten(data_format=cf), L.Dense(3)])
    inverted = keras.Sequential([keras.Input((4, 3)),
                                 L.Normalization(mean=[0.5, -1.0, 2.0],
                                                 variance=[2.0, 0.25, 4.0], invert=True),
                                 L.Flatten(), L.Dense(3)])
    return {"flatten_after_channels_first_conv1d": flat_1d,
            "flatten_channels_first_after_conv1d": flat_1d_cf,
            "normalization_invert": inverted}


@pytest.mark.parametrize("name", ["flatten_after_channels_first_conv1d",
                                  "flatten_channels_first_after_conv1d",
                                  "normalization_invert"])
def test_keras_layouts_and_inverted_normalization(tmp_path, name):
    from test_keras import randomize

    model = randomize(keras_models()[name])
    path = tmp_path / f"{name}.keras"
    model.save(path)
    x = np.random.default_rng(0).uniform(-1, 1, (16,) + tuple(model.inputs[0].shape[1:]))
    x = x.astype(np.float32)
    reference = np.asarray(model(x, training=False))
    assert_equivalent(lambda v: reference, compile_to_model(path), x)


def test_the_cli_check_uses_the_float64_tolerance(tmp_path, monkeypatch, capsys):
    """An error of 1e-7, fine in float32, fails the check of a float64 model (exit 1)."""
    from cnn2mlp.backends import get_target
    from cnn2mlp.cli import main

    target = get_target("csr")
    b = OnnxBuilder((5,), opset=13, seed=15)
    b.dense(4)
    b.activation("Relu")
    b.dense(2)
    for precision, model in (("float32", b.build()), ("float64", to_float64(b.build()))):
        src = tmp_path / f"{precision}.onnx"
        onnx.save(model, str(src))
        real_load = type(target).load

        def off_by_1e7(mlp, path):
            loaded = real_load(target, mlp, path)

            class Off:
                predict = staticmethod(lambda x: loaded.predict(x) + 1e-7)
            return Off()

        monkeypatch.setattr(target, "load", off_by_1e7)
        code = main([str(src), "-o", str(tmp_path / f"{precision}.npz"), "--check",
                            "4", "--quiet"])
        assert code == (1 if precision == "float64" else 0), capsys.readouterr().err
