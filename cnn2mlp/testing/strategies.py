"""Hypothesis strategies for random CNNs: :func:`conv_geometries` (one conv's attributes
for a given input), :func:`cnn_graphs` and :func:`dag_graphs` (IR graphs, for testing passes
with the interpreter), :func:`onnx_cnns` and :func:`onnx_dag_cnns` (ONNX models as exporters
write them, for end-to-end tests against onnxruntime). Needs hypothesis
(the ``test`` extra, ``pip install -e ".[test]"``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import helper

from ..ir import Graph
from ..ir.activations import BY_OP, CATALOGUE
from .builder import OnnxBuilder, _same, drops_last_window


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
