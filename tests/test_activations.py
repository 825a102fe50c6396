"""Element-wise activations beyond ReLU/tanh/sigmoid: ONNX's formulas in the IR, the CSR
runtime engines and the standalone module; interval bounds that hold for non-monotone ones;
piecewise-linear ops as ReLU constructions."""

import numpy as np
import onnx
import pytest
import scipy.sparse as sp

from cnn2mlp.backends.csr import CsrModel
from cnn2mlp.ir import Graph, run
from cnn2mlp.ir.analysis import interval_bounds
from cnn2mlp.ir.activations import BY_OP
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.runtime import available_engines
from cnn2mlp.testing import (
    ELEMENTWISE,
    OnnxBuilder,
    assert_equivalent,
    compile_to_model,
    run_kernel_module,
)

ALPHA = {"LeakyRelu": 0.1, "Elu": 0.7, "ThresholdedRelu": 0.2, "BoundedRelu": 2.5}
X = np.linspace(-8, 8, 4001)[None, :]


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_interval_bounds_hold_for_every_activation(op):
    g = Graph("x", (1,))
    g.append(op, {"alpha": ALPHA[op]} if op in ALPHA else {})
    rng = np.random.default_rng(0)
    for lo, hi in rng.uniform(-6, 6, (200, 2)):
        lo, hi = min(lo, hi), max(lo, hi)
        low, high = interval_bounds(g, lo, hi)[g.output]
        inside = X[:, (X[0] >= lo) & (X[0] <= hi)].T
        if len(inside):
            values = run(g, inside)
            assert values.min() >= low[0] - 1e-9 and values.max() <= high[0] + 1e-9, (lo, hi)


@pytest.mark.parametrize("engine", available_engines())
@pytest.mark.parametrize("op", ELEMENTWISE)
def test_runtime_and_kernel_module_compute_each_activation(tmp_path, engine, op):
    """The numba/scipy engines and the numpy-only module against the IR's formula."""
    name = BY_OP[op].name
    alpha = ALPHA.get(op, 0.0)
    n = X.shape[1]
    mlp = Mlp([MlpLayer(sp.identity(n, np.float32, "csr"), np.zeros(n, np.float32), name,
                        alpha)], (n,), (n,))
    g = Graph("x", (n,))
    g.append(op, {"alpha": alpha} if op in ALPHA else {})
    expected = run(g, X)
    got = CsrModel(mlp, engine=engine).predict(X, dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run_kernel_module(mlp, X, tmp_path), expected, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("op, attrs", [
    ("Elu", {"alpha": 0.5}), ("Selu", {}), ("Celu", {"alpha": 2.0}), ("Softplus", {}),
    ("Softsign", {}), ("HardSwish", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("Mish", {}), ("ThresholdedRelu", {"alpha": 0.3}), ("Erf", {}), ("Abs", {}), ("Neg", {}),
    ("LeakyRelu", {"alpha": -0.3}), ("LeakyRelu", {"alpha": 1.7})])
def test_onnx_activation_in_a_cnn(op, attrs):
    b = OnnxBuilder((2, 6, 6), opset=18 if op == "Mish" else 17, seed=50)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 3})
    b.node(op, [b.current], **attrs)
    b.pool("MaxPool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (0, 0, 0, 0), "ceil_mode": False})  # needs sound bounds
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16, input_range=(-3, 3))


def test_prelu_per_channel_and_swish_pattern():
    b = OnnxBuilder((3, 5, 5), opset=13, seed=51)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 3})
    b.node("PRelu", [b.current, b.const(np.array([[[0.1]], [[-0.5]], [[2.0]]], np.float32))])
    x = b.current
    gate = b.node("Sigmoid", [x])
    b.node("Mul", [gate, x])  # SiLU as PyTorch exports it
    b.flatten("flatten")
    b.dense(2)
    model = b.build()
    compiled = compile_to_model(model)
    assert any(layer.activation == "swish" for layer in compiled.layers)
    assert_equivalent(model, compiled, n=16, input_range=(-3, 3))


def test_gelu_opset_20_both_forms():
    for approximate in ("none", "tanh"):
        b = OnnxBuilder((4,), opset=20, seed=52)
        b.dense(5)
        b.node("Gelu", [b.current], approximate=approximate)
        b.dense(2)
        model = b.build()
        assert_equivalent(model, compile_to_model(model), n=16, input_range=(-3, 3))


def test_onnx_target_writes_the_activation_ops(tmp_path):
    from cnn2mlp.references import onnx_runner
    from cnn2mlp.cli import main

    b = OnnxBuilder((6,), opset=18, seed=53)
    b.dense(5)
    b.node("Mish", [b.current])
    b.dense(4)
    b.node("Softplus", [b.current])
    b.dense(2)
    src = tmp_path / "m.onnx"
    onnx.save(b.build(), str(src))
    assert main([str(src), "-o", str(tmp_path / "mlp.onnx"), "--check", "16", "--quiet"]) == 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "mlp.onnx")).graph.node}
    assert {"Mish", "Softplus"} <= ops
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    np.testing.assert_allclose(onnx_runner(tmp_path / "mlp.onnx")(x), onnx_runner(src)(x),
                               rtol=1e-5, atol=1e-5)


def test_soft_shrink_and_refused_hard_shrink():
    from cnn2mlp.errors import CompileError

    b = OnnxBuilder((6,), opset=13, seed=70)
    b.dense(5)
    b.node("Shrink", [b.current], lambd=0.4, bias=0.4)
    b.dense(2)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=32, input_range=(-2, 2))
    b = OnnxBuilder((6,), opset=13, seed=70)
    b.dense(5)
    b.node("Shrink", [b.current], lambd=0.4)
    b.dense(2)
    with pytest.raises(CompileError, match="jumps at ±lambd"):
        compile_to_model(b.build())


def erf_gelu_model(form: str, seed: int) -> onnx.ModelProto:
    """GELU spelled with Erf, as exporters before opset 20 write it."""
    b = OnnxBuilder((3, 5, 5), opset=13, seed=seed)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 3})
    x = b.current
    if form == "pytorch":  # x * (1 + erf(x / sqrt2)) * 0.5
        erf = b.node("Erf", [b.node("Div", [x, b.const(np.array(1.4142135, np.float32))])])
        one_plus = b.node("Add", [erf, b.const(np.array(1.0, np.float32))])
        b.node("Mul", [b.node("Mul", [x, one_plus]), b.const(np.array(0.5, np.float32))])
    else:  # (0.5 * x) * (1 + erf(x * 0.70710677)), constants as Constant nodes
        half = b.node("Mul", [b.const(np.array(0.5, np.float32), as_node=True), x])
        erf = b.node("Erf", [b.node("Mul", [x, b.const(np.array(0.70710677, np.float32),
                                                       as_node=True)])])
        b.node("Mul", [half, b.node("Add", [b.const(np.array(1.0, np.float32)), erf])])
    b.flatten("flatten")
    b.dense(2)
    return b.build()


@pytest.mark.parametrize("form", ["pytorch", "huggingface"])
def test_erf_gelu_pattern_is_one_activation(form):
    model = erf_gelu_model(form, seed=54)
    compiled = compile_to_model(model)
    assert [layer.activation for layer in compiled.layers].count("gelu") == 1
    assert_equivalent(model, compiled, n=16, input_range=(-3, 3))


def test_erf_with_another_scale_is_not_gelu():
    """x * (1 + erf(x)) is a product, not GELU: refused, not silently fused."""
    from cnn2mlp.errors import CompileError

    b = OnnxBuilder((4,), opset=13, seed=55)
    b.dense(4)
    x = b.current
    erf = b.node("Erf", [x])
    b.node("Mul", [x, b.node("Add", [erf, b.const(np.array(1.0, np.float32))])])
    b.dense(2)
    with pytest.raises(CompileError, match="multiplies two values computed"):
        compile_to_model(b.build())


@pytest.mark.parametrize("form", ["where", "mul_cast", "tf2onnx_select"])
def test_threshold_gate_pattern_is_thresholded_relu(form):
    """where(x > θ, x, 0) in the forms exporters write (Keras' ReLU(threshold=θ))."""
    b = OnnxBuilder((6,), opset=13, seed=56)
    b.dense(8)
    x = b.current
    theta = b.const(np.array(0.3, np.float32))
    gate = b.node("Greater", [x, theta])
    if form == "where":
        b.node("Where", [gate, x, b.const(np.array(0.0, np.float32))])
    elif form == "mul_cast":
        b.node("Mul", [b.node("Cast", [gate], to=onnx.TensorProto.FLOAT), x])
    else:
        kept = b.node("Mul", [b.node("Cast", [gate], to=onnx.TensorProto.FLOAT), x])
        zero = b.node("Mul", [b.const(np.array(0.0, np.float32)),
                              b.node("Cast", [b.node("Not", [gate])],
                                     to=onnx.TensorProto.FLOAT)])
        b.node("Add", [kept, zero])
    b.dense(3)
    model = b.build()
    compiled = compile_to_model(model)
    assert "thresholded_relu" in [layer.activation for layer in compiled.layers]
    assert_equivalent(model, compiled, n=64, input_range=(-2, 2))


def test_where_with_a_non_zero_branch_stays_refused():
    from cnn2mlp.errors import CompileError

    b = OnnxBuilder((6,), opset=13, seed=57)
    b.dense(4)
    x = b.current
    gate = b.node("Greater", [x, b.const(np.array(0.3, np.float32))])
    b.node("Where", [gate, x, b.const(np.array(0.5, np.float32))])
    b.dense(2)
    with pytest.raises(CompileError, match="discontinuous"):
        compile_to_model(b.build())
