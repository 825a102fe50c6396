"""Property-based equivalence testing: strategies for random CNNs, and assert_equivalent.

    from hypothesis import given
    from cnn2mlp.testing import onnx_cnns, assert_equivalent, compile_to_model

    @given(onnx_cnns())
    def test_my_pipeline(model):
        assert_equivalent(model, compile_to_model(model))

Strategies: :func:`conv_geometries` (one conv's attributes for a given input), :func:`cnn_graphs`
(IR graphs, for testing passes with the interpreter) and :func:`onnx_cnns` (ONNX models as
exporters write them, for end-to-end tests against onnxruntime). Needs hypothesis
(``pip install cnn2mlp[test]``).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from .check import Comparison, compare, onnx_runner, random_inputs
from .ir.activations import BY_OP, CATALOGUE
from .ir import Graph, run
from .ir.geometry import output_size


# --------------------------------------------------------------------------- geometry
@st.composite
def conv_geometries(draw, in_shape: Sequence[int], max_kernel: int = 5, max_stride: int = 3,
                    max_dilation: int = 3, max_pad: int = 2, max_out_channels: int = 4,
                    groups: bool = True) -> dict[str, Any]:
    """Attributes of one convolution on a ``(C, *spatial)`` input that yields ≥ 1 output."""
    c_in, spatial = in_shape[0], tuple(in_shape[1:])
    divisors = [g for g in range(1, c_in + 1) if c_in % g == 0] if groups else [1]
    group = draw(st.sampled_from(divisors))
    out_channels = group * draw(st.integers(1, max(1, max_out_channels // group)))
    kernel, strides, dilations, pads_b, pads_e = [], [], [], [], []
    for size in spatial:
        pb, pe = draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad))
        k = draw(st.integers(1, min(max_kernel, size + pb + pe)))
        dmax = max(1, (size + pb + pe - 1) // max(k - 1, 1)) if k > 1 else 1
        d = draw(st.integers(1, min(max_dilation, dmax)))
        # ONNX requires pads smaller than the kernel span for some runtimes; keep it so.
        span = d * (k - 1) + 1
        pb, pe = min(pb, span - 1), min(pe, span - 1)
        if span > size + pb + pe:
            d, span = 1, k
            pb, pe = min(pb, k - 1), min(pe, k - 1)
        k = min(k, size + pb + pe)
        kernel.append(k)
        dilations.append(d)
        strides.append(draw(st.integers(1, max_stride)))
        pads_b.append(pb)
        pads_e.append(pe)
    return {"kernel_shape": tuple(kernel), "strides": tuple(strides),
            "dilations": tuple(dilations), "pads": tuple(pads_b + pads_e), "group": group,
            "out_channels": out_channels}


@st.composite
def pool_geometries(draw, in_shape: Sequence[int], max_kernel: int = 4, max_stride: int = 3,
                    max_dilation: int = 2, dilations: bool = True,
                    ort_consistent: bool = True) -> dict[str, Any]:
    """Attributes of one MaxPool/AveragePool on ``(C, *spatial)``: any kernel, strides,
    dilations, asymmetric pads (each smaller than the kernel, as ONNX requires), ceil_mode
    and count_include_pad.

    With ceil_mode, a last window that would start in the trailing padding is dropped (as
    PyTorch and onnxruntime's kernels do), but ONNX shape inference keeps it, and
    onnxruntime then fails on a model with more layers. ``ort_consistent`` avoids those
    geometries, so that onnxruntime can serve as the reference."""
    kernel, strides, dils, pads_b, pads_e = [], [], [], [], []
    for size in in_shape[1:]:
        k = draw(st.integers(1, min(max_kernel, size)))
        d = draw(st.integers(1, max_dilation)) if dilations and k > 1 else 1
        if d * (k - 1) + 1 > size:
            d = 1
        limit = min(k - 1, d * (k - 1))
        kernel.append(k)
        dils.append(d)
        strides.append(draw(st.integers(1, max_stride)))
        pads_b.append(draw(st.integers(0, limit)))
        pads_e.append(draw(st.integers(0, limit)))
    geo = {"kernel_shape": tuple(kernel), "strides": tuple(strides), "dilations": tuple(dils),
           "pads": tuple(pads_b + pads_e), "ceil_mode": draw(st.booleans()),
           "count_include_pad": draw(st.booleans())}
    if ort_consistent and geo["ceil_mode"] and drops_last_window(in_shape, geo):
        geo["ceil_mode"] = False
    return geo


def drops_last_window(in_shape: Sequence[int], geo: dict[str, Any]) -> bool:
    """Whether ceil_mode's rule "no window starts in the trailing padding" applies."""
    nd = len(in_shape) - 1
    for a in range(nd):
        k, s, d = geo["kernel_shape"][a], geo["strides"][a], geo["dilations"][a]
        pb, pe = geo["pads"][a], geo["pads"][nd + a]
        room = in_shape[1 + a] + pb + pe - d * (k - 1) - 1
        if room >= 0 and -(-room // s) + 1 != output_size(in_shape[1 + a], k, s, d, pb, pe, True):
            return True
    return False


def pool_output_shape(in_shape: Sequence[int], geo: dict[str, Any]) -> tuple[int, ...]:
    nd = len(in_shape) - 1
    return (in_shape[0],) + tuple(
        output_size(in_shape[1 + a], geo["kernel_shape"][a], geo["strides"][a],
                    geo["dilations"][a], geo["pads"][a], geo["pads"][nd + a], geo["ceil_mode"])
        for a in range(nd))


def conv_output_shape(in_shape: Sequence[int], geo: dict[str, Any]) -> tuple[int, ...]:
    nd = len(in_shape) - 1
    return (geo["out_channels"],) + tuple(
        output_size(in_shape[1 + a], geo["kernel_shape"][a], geo["strides"][a],
                    geo["dilations"][a], geo["pads"][a], geo["pads"][nd + a])
        for a in range(nd))


def input_shapes(ranks: Sequence[int] = (1, 2), max_channels: int = 3, min_size: int = 3,
                 max_size: int = 9) -> st.SearchStrategy[tuple[int, ...]]:
    return st.sampled_from(list(ranks)).flatmap(lambda r: st.tuples(
        st.integers(1, max_channels), *[st.integers(min_size, max_size)] * r))


def _floats(draw, shape, low=-1.0, high=1.0, seed_label="w") -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1), label=seed_label)
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _signed_away_from_zero(draw, shape) -> np.ndarray:
    """Factors in ±[0.5, 1.5]: both signs, so that a rule that assumes one sign fails."""
    magnitude = _floats(draw, shape, 0.5, 1.5, seed_label="magnitude")
    sign = np.where(_floats(draw, shape, -1.0, 1.0, seed_label="sign") < 0, -1.0, 1.0)
    return (magnitude * sign).astype(np.float32)


# --------------------------------------------------------------------------- IR graphs
ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh")
#: every element-wise activation of the IR but the identity (exact in the CSR target)
ELEMENTWISE = ACTIVATIONS + tuple(a.op for a in CATALOGUE
                                  if a.op not in ACTIVATIONS and a.op != "Identity")


def _push(g: Graph, op: str, attrs: dict[str, Any]):
    """Append ``op`` reading the current output, and make it the output."""
    return g.append(op, attrs)


@st.composite
def cnn_graphs(draw, ranks: Sequence[int] = (1, 2), max_layers: int = 3,
               layers: Sequence[str] = ("conv", "conv", "batchnorm", "activation", "affine",
                                        "pad", "transpose", "maxpool", "avgpool"),
               dense_head: bool = True) -> Graph:
    """Small random IR graphs: convolutions of every geometry mixed with the other ops,
    optionally ending in Flatten + Dense."""
    shape = draw(input_shapes(ranks))
    g = Graph("x", shape)
    for _ in range(draw(st.integers(1, max_layers))):
        kind = draw(st.sampled_from(list(layers)))
        shape = g.shape(g.output)
        if kind == "conv":
            geo = draw(conv_geometries(shape))
            kernel = _floats(draw, (geo["out_channels"], shape[0] // geo["group"])
                             + geo["kernel_shape"])
            bias = _floats(draw, (geo["out_channels"],)) if draw(st.booleans()) else None
            _push(g, "Conv", {"kernel": kernel, "bias": bias,
                                            "strides": geo["strides"], "pads": geo["pads"],
                                            "dilations": geo["dilations"],
                                            "group": geo["group"]})
        elif kind in ("maxpool", "avgpool"):
            geo = draw(pool_geometries(shape))
            if kind == "maxpool":
                geo.pop("count_include_pad")
            _push(g, "MaxPool" if kind == "maxpool" else "AveragePool", geo)
        elif kind == "batchnorm":
            c = shape[0]
            _push(g, "BatchNorm", {  # negative scales too: they flip interval bounds
                "scale": _signed_away_from_zero(draw, c), "bias": _floats(draw, c),
                "mean": _floats(draw, c), "var": _floats(draw, c, 0.5, 2.0), "epsilon": 1e-5})
        elif kind == "activation":
            op = draw(st.sampled_from(ELEMENTWISE))
            takes = BY_OP[op].alpha is not None  # a parameter: drawn, not the default
            _push(g, op, {"alpha": draw(st.sampled_from([0.1, 0.2, 0.7]))} if takes else {})
        elif kind == "affine":
            const_shape = draw(st.sampled_from([(), (shape[0],) + (1,) * (len(shape) - 1),
                                                tuple(shape)]))
            op = draw(st.sampled_from(["AddConst", "MulConst"]))
            const = _signed_away_from_zero(draw, const_shape) if op == "MulConst" else \
                _floats(draw, const_shape, -1.0, 1.5)
            _push(g, op, {"const": const.astype(np.float64)})
        elif kind == "pad":
            nd = len(shape)
            pads = tuple([0] + [draw(st.integers(0, 2)) for _ in range(nd - 1)]) * 1
            pads = pads + tuple([0] + [draw(st.integers(0, 2)) for _ in range(nd - 1)])
            value = draw(st.sampled_from([0.0, 0.0, 0.5]))
            _push(g, "Pad", {"pads": pads, "value": value})
        elif kind == "transpose" and len(shape) > 1:
            perm = tuple(draw(st.permutations(range(len(shape)))))
            _push(g, "Transpose", {"perm": perm})
            back = tuple(int(i) for i in np.argsort(perm))
            _push(g, "Transpose", {"perm": back})
    if dense_head:
        n = g.values[g.output].size
        _push(g, "Reshape", {"shape": (n,)})
        units = draw(st.integers(1, 5))
        _push(g, "Dense", {"weight": _floats(draw, (units, n)),
                                            "bias": _floats(draw, units)})
    return g


# --------------------------------------------------------------------------- ONNX models
class OnnxBuilder:
    """Builds ONNX models node by node the way exporters lay them out (used by the
    strategies, the tests and the example model)."""

    def __init__(self, sample_shape: Sequence[int], batch: int | str = "N", opset: int = 13,
                 nhwc: bool = False, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shape = tuple(sample_shape)          # current per-sample shape (NCHW view)
        self.nhwc = nhwc
        input_dims = (sample_shape[1:] + (sample_shape[0],)) if nhwc else tuple(sample_shape)
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                   [batch, *input_dims])
        self.current = "input"
        self._n = 0
        if nhwc:  # tf2onnx: NHWC input, a Transpose to NCHW before the first Conv
            self.node("Transpose", [self.current], perm=[0, len(self.shape)] +
                      list(range(1, len(self.shape))))

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: np.ndarray, hint: str = "c", as_node: bool = False) -> str:
        name = self.name(hint)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        else:
            self.inits.append(tensor)
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.current = out
        return out

    def weights(self, shape, low=-1.0, high=1.0) -> np.ndarray:
        return self.rng.uniform(low, high, shape).astype(np.float32)

    # -- layers -------------------------------------------------------------------------
    def conv(self, geo: dict[str, Any], bias: bool = True, constants_as_nodes: bool = False) -> str:
        c_in = self.shape[0]
        k = self.weights((geo["out_channels"], c_in // geo["group"]) + geo["kernel_shape"],
                         -0.7, 0.7)
        inputs = [self.current, self.const(k, "w", constants_as_nodes)]
        if bias:
            inputs.append(self.const(self.weights(geo["out_channels"]), "b", constants_as_nodes))
        attrs = dict(strides=list(geo["strides"]), dilations=list(geo["dilations"]),
                     group=geo["group"])
        if geo.get("auto_pad"):
            attrs["auto_pad"] = geo["auto_pad"]
        else:
            attrs["pads"] = list(geo["pads"])
        self.shape = conv_output_shape(self.shape, {**geo, "pads": geo.get("resolved_pads",
                                                                          geo["pads"])})
        return self.node("Conv", inputs, **attrs)

    def pool(self, op: str, geo: dict[str, Any]) -> str:
        """MaxPool / AveragePool (and Global* when ``geo`` is None)."""
        if op.startswith("Global"):
            self.shape = (self.shape[0],) + (1,) * (len(self.shape) - 1)
            return self.node(op, [self.current])
        attrs = dict(kernel_shape=list(geo["kernel_shape"]), strides=list(geo["strides"]),
                     pads=list(geo["pads"]))
        if geo.get("ceil_mode"):
            attrs["ceil_mode"] = 1
        if max(geo["dilations"]) > 1:
            attrs["dilations"] = list(geo["dilations"])
        if op == "AveragePool" and geo.get("count_include_pad"):
            attrs["count_include_pad"] = 1
        self.shape = pool_output_shape(self.shape, geo)
        return self.node(op, [self.current], **attrs)

    def batchnorm(self) -> str:
        c = self.shape[0]
        gamma = self.weights(c, 0.5, 1.5) * np.where(self.weights(c) < -0.6, -1, 1)
        ins = [self.const(gamma.astype(np.float32)), self.const(self.weights(c)),
               self.const(self.weights(c)), self.const(self.weights(c, 0.5, 2.0))]
        return self.node("BatchNormalization", [self.current] + ins, epsilon=1e-3)

    def activation(self, op: str) -> str:
        return self.node(op, [self.current], **({"alpha": 0.1} if op == "LeakyRelu" else {}))

    def normalize(self, mean: float = 0.5, std: float = 0.25) -> str:
        """Sub/Div by per-channel constants, as verification benchmarks do."""
        c = self.shape[0]
        shape = (1, c) + (1,) * (len(self.shape) - 1)
        self.node("Sub", [self.current, self.const(np.full(shape, mean, np.float32)
                                                   + self.weights(shape, -0.1, 0.1))])
        return self.node("Div", [self.current, self.const(np.full(shape, std, np.float32)
                                                          + self.weights(shape, 0, 0.1))])

    def flatten(self, style: str = "flatten") -> str:
        """Flatten as PyTorch (Flatten, or Reshape from Shape→Gather→Unsqueeze→Concat) or
        tf2onnx (Transpose back to NHWC, then Reshape [batch, -1]) write it."""
        n = math.prod(self.shape)
        if style == "tf2onnx":
            self.node("Transpose", [self.current], perm=[0] + list(range(2, len(self.shape) + 1))
                      + [1])
            style = "shape"
        if style == "flatten":
            out = self.node("Flatten", [self.current], axis=1)
        elif style == "reshape":
            out = self.node("Reshape", [self.current, self.const(np.array([-1, n], np.int64))])
        else:
            data = self.current
            shape = self.node("Shape", [data])
            batch = self.node("Gather", [shape, self.const(np.array(0, np.int64))], axis=0)
            if self.opset >= 13:
                batch = self.node("Unsqueeze", [batch, self.const(np.array([0], np.int64))])
            else:
                batch = self.node("Unsqueeze", [batch], axes=[0])
            target = self.node("Concat", [batch, self.const(np.array([-1], np.int64))], axis=0)
            out = self.node("Reshape", [data, target])
        self.shape = (n,)
        return out

    def dense(self, units: int, style: str = "gemm") -> str:
        n = self.shape[0]
        w = self.weights((units, n), -0.5, 0.5)
        b = self.weights(units)
        self.shape = (units,)
        if style == "gemm":  # PyTorch: Gemm with transB=1
            return self.node("Gemm", [self.current, self.const(w), self.const(b)], transB=1)
        mm = self.node("MatMul", [self.current, self.const(np.ascontiguousarray(w.T))])
        return self.node("Add", [mm, self.const(b)])

    def build(self) -> onnx.ModelProto:
        out_dims = [self.input.type.tensor_type.shape.dim[0].dim_param or
                    self.input.type.tensor_type.shape.dim[0].dim_value, *self.shape]
        output = helper.make_tensor_value_info(self.current, TensorProto.FLOAT, out_dims)
        graph = helper.make_graph(self.nodes, "cnn", [self.input], [output], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="cnn2mlp.testing")
        model.ir_version = min(model.ir_version, 8)
        onnx.checker.check_model(model)
        return model


@st.composite
def onnx_cnns(draw, ranks: Sequence[int] = (1, 2), max_convs: int = 3,
              activations: Sequence[str] = ACTIVATIONS,
              opsets: Sequence[int] = (9, 11, 13, 17, 21),
              pools: Sequence[str] = ("MaxPool", "AveragePool", "GlobalMaxPool",
                                      "GlobalAveragePool")) -> onnx.ModelProto:
    """Random ONNX CNNs as exporters write them: NCHW or NHWC (+Transpose) input, symbolic or
    fixed batch, optional Sub/Div normalization, convolutions of every geometry with
    BatchNorm and activations, then Flatten/Reshape and Gemm or MatMul+Add."""
    shape = draw(input_shapes(ranks))
    nhwc = len(shape) == 3 and draw(st.booleans())
    opset = draw(st.sampled_from(list(opsets)))
    b = OnnxBuilder(shape, batch=draw(st.sampled_from(["N", "unk__17", 1])), opset=opset,
                    nhwc=nhwc, seed=draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        b.normalize()
    for _ in range(draw(st.integers(1, max_convs))):
        geo = draw(conv_geometries(b.shape))
        if len(b.shape) == 3 and draw(st.integers(0, 4)) == 0:
            geo = {**geo, "strides": (1, 1), "dilations": (1, 1), "auto_pad": "SAME_UPPER",
                   "resolved_pads": tuple(_same(b.shape[1:], geo["kernel_shape"]))}
        b.conv(geo, bias=draw(st.booleans()))
        if draw(st.booleans()):
            b.batchnorm()
        b.activation(draw(st.sampled_from(list(activations))))
        if pools and draw(st.booleans()):
            op = draw(st.sampled_from(list(pools)))
            geo = None
            if not op.startswith("Global"):
                # ceil_mode needs opset 10, pool dilations opset 10 (Max) / 19 (Average)
                dilated = opset >= (19 if op == "AveragePool" else 10)
                geo = draw(pool_geometries(b.shape, dilations=dilated))
                if opset < 10:
                    geo["ceil_mode"] = False
            b.pool(op, geo)
    style = draw(st.sampled_from(["flatten", "reshape", "shape", "tf2onnx"] if nhwc
                                 else ["flatten", "reshape", "shape"]))
    b.flatten(style)
    b.dense(draw(st.integers(1, 6)), draw(st.sampled_from(["gemm", "matmul"])))
    if draw(st.booleans()):
        b.node("Softmax", [b.current], axis=1 if opset < 13 else -1)
    return b.build()


def _same(spatial, kernel) -> list[int]:
    begins, ends = [], []
    for _, k in zip(spatial, kernel):
        total = max(0, k - 1)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


# --------------------------------------------------------------------------- equivalence
def compile_to_model(model: onnx.ModelProto | str | Path, **options):
    """Compile an ONNX model (proto or file) through the default pipeline; return the
    loaded CSR runtime, and keep the compile result on it as ``.result``."""
    from .backends.csr import load
    from .compile import compile_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(model) if not isinstance(model, onnx.ModelProto) else Path(tmp, "m.onnx")
        if isinstance(model, onnx.ModelProto):
            onnx.save(model, str(path))
        out = Path(tmp, "m.npz")
        result = compile_model(path, out, **options)
        runtime = load(out)
    runtime.result = result
    return runtime


def _runner(obj: Any, logits: str | None = None) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                          tuple[int, ...] | None]:
    """A function x → y for whatever stands on either side, and its input shape if known."""
    from .ir.mlp import Mlp

    if isinstance(obj, Graph):
        return (lambda x: run(obj, x)), obj.shape(obj.input)
    if isinstance(obj, Mlp):
        return obj.forward, tuple(obj.input_shape)
    if isinstance(obj, (onnx.ModelProto, str, Path)) and (
            isinstance(obj, onnx.ModelProto) or str(obj).endswith(".onnx")):
        return onnx_runner(obj, logits), None
    if isinstance(obj, (str, Path)):
        from .backends.csr import load

        obj = load(obj)
    if hasattr(obj, "predict"):
        return obj.predict, tuple(getattr(obj, "input_shape", ()) or ()) or None
    if callable(obj):
        return obj, None
    raise TypeError(f"cannot run {type(obj).__name__}")


def assert_equivalent(original: Any, compiled: Any, inputs: np.ndarray | None = None, *,
                      n: int = 16, input_range: tuple[float, float] = (-1.0, 1.0),
                      rtol: float = 1e-4, atol: float | None = None) -> Comparison:
    """Run both sides on the same inputs and fail with the worst element if they differ.

    Either side may be an ONNX model (proto or path: onnxruntime), an IR :class:`Graph`
    (the interpreter), an :class:`~cnn2mlp.ir.mlp.Mlp`, a compiled artifact (path or loaded
    model), or a function. The error is measured as ``|got - ref| / max(1, |ref|)``; it must
    stay within ``rtol`` (and ``|got - ref| <= atol`` if given). When the compiler dropped a
    final Softmax, the ONNX side is read at the logits.
    """
    logits = None
    result = getattr(compiled, "result", None)
    if result is not None and isinstance(original, (onnx.ModelProto, str, Path)):
        logits = result.graph.meta.get("logits")
    run_ref, ref_shape = _runner(original, logits)
    run_got, got_shape = _runner(compiled)
    if inputs is None:
        shape = got_shape or ref_shape
        if shape is None:
            raise ValueError("pass inputs=...: neither side tells its input shape")
        inputs = random_inputs(shape, n, *input_range, seed=n)
    ref = np.asarray(run_ref(inputs))
    got = np.asarray(run_got(inputs))
    comparison = compare(ref.reshape(got.shape) if ref.size == got.size else ref, got, rtol)
    if not comparison.passed or (atol is not None and comparison.max_abs_error > atol):
        raise AssertionError("not equivalent: " + comparison.describe())
    return comparison


# --------------------------------------------------------------------------- DAGs
DAG_STEPS = ("conv", "conv", "add", "sub", "concat", "max", "min", "projection",
             "activation", "sum3", "clip")


@st.composite
def dag_graphs(draw, ranks: Sequence[int] = (1, 2), max_steps: int = 5,
               steps: Sequence[str] = DAG_STEPS,
               activations: Sequence[str] = ACTIVATIONS) -> Graph:
    """Random IR DAGs: convolutions with activations, residual Add/Sub (shortcuts with and
    without a projection), Concat of branches, Maximum/Minimum of branches, a Sum of three,
    values read by several nodes; a Dense head reads the last value. For testing
    linearize-dag and friends with the interpreter. The step "linear" (not in the default
    steps) is a 3×3 convolution without an activation, for chains of linear maps."""
    shape = draw(input_shapes(ranks, max_channels=3, min_size=3, max_size=6))
    g = Graph("x", shape)
    pool = ["x"]
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(list(steps)))
        src = draw(st.sampled_from(pool))
        same = [v for v in pool if g.shape(v) == g.shape(src)]
        other = draw(st.sampled_from(same))
        if kind == "linear":  # a 3×3 convolution with no activation: a linear map
            node = _same_conv(draw, g, src, 3)
        elif kind in ("conv", "projection"):
            node = _same_conv(draw, g, src, 1 if kind == "projection" else 3)
            if kind == "projection":
                c = g.shape(node)[0]
                node = g.add_node("BatchNorm", [node], {
                    "scale": _signed_away_from_zero(draw, c), "bias": _floats(draw, c),
                    "mean": _floats(draw, c), "var": _floats(draw, c, 0.5, 2.0),
                    "epsilon": 1e-5}).output
            else:
                op = draw(st.sampled_from(list(activations)))
                node = g.add_node(op, [node], {"alpha": 0.1} if op == "LeakyRelu" else {}
                                  ).output
        elif kind in ("add", "sub"):
            node = g.add_node("Sum", [src, other],
                              {"coeffs": (1.0, 1.0 if kind == "add" else -1.0)}).output
        elif kind == "sum3":
            third = draw(st.sampled_from(same))
            node = g.add_node("Sum", [src, other, third], {"coeffs": (0.5, -1.0, 1.5)}).output
        elif kind == "concat":
            peers = [v for v in pool if g.shape(v)[1:] == g.shape(src)[1:]]
            node = g.add_node("Concat", [src, draw(st.sampled_from(peers))],
                              {"axis": 0}).output
        elif kind in ("max", "min"):
            node = g.add_node("Maximum" if kind == "max" else "Minimum", [src, other]).output
        elif kind == "clip":  # ReLU6-like, one-sided, or degenerate (high <= low)
            low, high = draw(st.sampled_from([(0.0, 6.0), (-0.5, 0.3), (None, 0.2),
                                              (-0.1, None), (0.4, 0.1)]))
            node = g.add_node("Clip", [src], {"low": low, "high": high}).output
        else:
            op = draw(st.sampled_from(list(activations)))
            node = g.add_node(op, [src], {"alpha": 0.1} if op == "LeakyRelu" else {}).output
        pool.append(node)
    last = pool[-1]
    n = g.values[last].size
    flat = g.add_node("Reshape", [last], {"shape": (n,)}).output
    units = draw(st.integers(1, 4))
    g.output = g.add_node("Dense", [flat], {"weight": _floats(draw, (units, n)),
                                            "bias": _floats(draw, units)}).output
    return g


def _same_conv(draw, g: Graph, src: str, k: int) -> str:
    """A stride-1 convolution with 'same' padding (so that its output can join others)."""
    shape = g.shape(src)
    nd = len(shape) - 1
    out_c = draw(st.integers(1, 3))
    kernel = _floats(draw, (out_c, shape[0]) + (k,) * nd, -0.8, 0.8)
    return g.add_node("Conv", [src], {"kernel": kernel, "bias": _floats(draw, out_c),
                                      "strides": (1,) * nd, "pads": (k // 2,) * (2 * nd),
                                      "dilations": (1,) * nd, "group": 1}).output


@st.composite
def onnx_dag_cnns(draw, max_steps: int = 5, activations: Sequence[str] = ACTIVATIONS,
                  opsets: Sequence[int] = (11, 13, 17, 21)) -> onnx.ModelProto:
    """Random ONNX DAG CNNs laid out as PyTorch exports them: Conv + BatchNorm + activation
    blocks, residual Add/Sub, Concat (channels), Max/Min of branches, Sum/Mean of three,
    Split into halves, a Slice of channels; Flatten and Gemm at the end."""
    shape = draw(input_shapes((2,), max_channels=3, min_size=3, max_size=6))
    opset = draw(st.sampled_from(list(opsets)))
    b = OnnxBuilder(shape, batch=draw(st.sampled_from(["N", 1])), opset=opset,
                    seed=draw(st.integers(0, 2**32 - 1)))
    shapes = {b.current: tuple(shape)}
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(["conv", "conv", "add", "sub", "concat", "max", "min",
                                     "sum", "mean", "split", "slice"]))
        src = draw(st.sampled_from(sorted(shapes)))
        same = sorted(v for v in shapes if shapes[v] == shapes[src])
        other = draw(st.sampled_from(same))
        if kind == "conv":
            b.current, b.shape = src, shapes[src]
            k = draw(st.sampled_from([1, 3]))
            b.conv({"kernel_shape": (k, k), "strides": (1, 1), "dilations": (1, 1),
                    "pads": (k // 2,) * 4, "group": 1, "out_channels": draw(st.integers(1, 3))})
            if draw(st.booleans()):
                b.batchnorm()
            if draw(st.booleans()):
                b.activation(draw(st.sampled_from(list(activations))))
            shapes[b.current] = b.shape
        elif kind in ("add", "sub", "max", "min"):
            op = {"add": "Add", "sub": "Sub", "max": "Max", "min": "Min"}[kind]
            shapes[b.node(op, [src, other])] = shapes[src]
        elif kind in ("sum", "mean"):
            third = draw(st.sampled_from(same))
            shapes[b.node(kind.capitalize(), [src, other, third])] = shapes[src]
        elif kind == "concat":
            peers = sorted(v for v in shapes if shapes[v][1:] == shapes[src][1:])
            peer = draw(st.sampled_from(peers))
            out = b.node("Concat", [src, peer], axis=1)
            shapes[out] = (shapes[src][0] + shapes[peer][0],) + shapes[src][1:]
        elif kind == "split" and shapes[src][0] >= 2:
            c = shapes[src][0]
            first = b.name("split")
            second = b.name("split")
            sizes = b.const(np.array([c // 2, c - c // 2], np.int64))
            inputs = [src, sizes] if opset >= 13 else [src]
            attrs = {"axis": 1} if opset >= 13 else {"axis": 1, "split": [c // 2, c - c // 2]}
            b.nodes.append(helper.make_node("Split", inputs, [first, second], **attrs))
            shapes[first] = (c // 2,) + shapes[src][1:]
            shapes[second] = (c - c // 2,) + shapes[src][1:]
        elif kind == "slice" and shapes[src][0] >= 2:
            c = shapes[src][0]
            out = b.node("Slice", [src, b.const(np.array([1], np.int64)),
                                   b.const(np.array([c], np.int64)),
                                   b.const(np.array([1], np.int64))])
            shapes[out] = (c - 1,) + shapes[src][1:]
    last = max(shapes, key=lambda v: int(v.rsplit("_", 1)[-1]) if "_" in v else -1)
    b.current, b.shape = last, shapes[last]
    b.flatten("flatten")
    b.dense(draw(st.integers(1, 4)))
    return b.build()


def run_kernel_module(mlp, x: np.ndarray, folder: str | Path) -> np.ndarray:
    """Save ``mlp`` as CSR with its standalone ``--kernel-py`` module in ``folder``, and run
    the module on ``x`` (float64) in a fresh interpreter where scipy cannot be imported:
    what a user with numpy alone gets."""
    import subprocess
    import sys

    from .backends.csr import save_csr, write_kernel

    folder = Path(folder)
    save_csr(mlp, folder / "kernel_model.npz")
    write_kernel(folder / "kernel_module.py", folder / "kernel_model.npz", mlp)
    np.save(folder / "kernel_x.npy", x)
    script = ("import sys, numpy as np; sys.modules['scipy'] = None\nimport kernel_module\n"
              "np.save('kernel_y.npy', kernel_module.load().predict(np.load('kernel_x.npy'), "
              "dtype=np.float64))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise AssertionError(f"the kernel module failed: {proc.stderr[-2000:]}")
    return np.load(folder / "kernel_y.npy")
