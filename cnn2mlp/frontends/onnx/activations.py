"""Element-wise activations and the final Softmax."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from .registry import as_str, attr, converter

if TYPE_CHECKING:
    from .importer import OnnxImporter


@converter("Relu", "Sigmoid", "Tanh", "LeakyRelu")
def convert_activation(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    attrs = {"alpha": float(attr(node, "alpha", 0.01))} if node.op_type == "LeakyRelu" else {}
    if attrs and attrs["alpha"] < 0:  # not monotone: as relu(x) - a relu(-x), exact and sound
        relu_pair(imp, node, imp.data(node), attrs["alpha"], node.output[0])
        return
    imp.emit(node, node.op_type, [imp.data(node)], attrs, output=node.output[0])


@converter("Softmax")
def convert_softmax(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    full_rank = imp.sample_rank(x) + 1
    default = 1 if imp.opset < 13 else -1
    axis = imp.sample_axis(node, attr(node, "axis", default), full_rank)
    # Before opset 13 softmax flattens from `axis` on: axis 1 is the whole sample.
    whole = axis == 0 if imp.opset < 13 else imp.sample_rank(x) == 1
    if not whole:
        imp.refuse(node, "takes a softmax over part of each sample (a per-pixel softmax "
                         "divides by sums computed from the input; a softmax over each whole "
                         "sample is what cnn2mlp reads)")
    imp.emit(node, "Softmax", [x], output=node.output[0])


@converter("Clip")
def convert_clip(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Clip(x, min, max), ReLU6 among them: bounds from attributes (opset < 11) or constant
    inputs; either may be absent."""
    x = imp.data(node)
    if imp.opset < 11:
        low, high = attr(node, "min", None), attr(node, "max", None)
    else:
        low, high = (imp.const(node, i, optional=True) for i in (1, 2))
    bounds = {}
    for key, value in (("low", low), ("high", high)):
        if value is not None:
            value = np.asarray(value, np.float64)
            if value.size != 1:
                imp.fail(node, f"{key} bound of shape {value.shape}; Clip takes scalars")
            bounds[key] = float(value.ravel()[0])
    imp.emit(node, "Clip", [x], bounds, output=node.output[0])


@converter("Elu", "Softplus", "Softsign", "HardSwish", "Mish", "Erf", "ThresholdedRelu")
def convert_elementwise(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Element-wise activations the CSR target runs exactly as a layer's activation."""
    defaults = {"Elu": 1.0, "ThresholdedRelu": 1.0}
    attrs = {}
    if node.op_type in defaults:
        attrs["alpha"] = float(attr(node, "alpha", defaults[node.op_type]))
    imp.emit(node, node.op_type, [imp.data(node)], attrs, output=node.output[0])


@converter("Gelu")
def convert_gelu(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    tanh = as_str(attr(node, "approximate", "none")) == "tanh"
    imp.emit(node, "GeluTanh" if tanh else "Gelu", [imp.data(node)], output=node.output[0])


@converter("Selu", "Celu")
def convert_scaled_elu(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """selu(x) = γ elu_α(x); celu_α(x) = α elu_1(x / α): the scales fold into the matrices."""
    x = imp.data(node)
    shape = imp.graph.shape(x)
    if node.op_type == "Selu":
        alpha = float(attr(node, "alpha", 1.67326319217681884765625))
        gamma = float(attr(node, "gamma", 1.05070102214813232421875))
        y = imp.emit(node, "Elu", [x], {"alpha": alpha})
        imp.emit(node, "MulConst", [y], {"const": np.full(shape, gamma)}, output=node.output[0])
        return
    alpha = float(attr(node, "alpha", 1.0))
    if alpha == 0:
        imp.fail(node, "alpha 0 divides by zero")
    y = imp.emit(node, "MulConst", [x], {"const": np.full(shape, 1.0 / alpha)})
    y = imp.emit(node, "Elu", [y], {"alpha": 1.0})
    imp.emit(node, "MulConst", [y], {"const": np.full(shape, alpha)}, output=node.output[0])


@converter("HardSigmoid")
def convert_hard_sigmoid(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """max(0, min(1, αx + β)): an affine map and a Clip (two ReLU neurons a value)."""
    x = imp.data(node)
    shape = imp.graph.shape(x)
    y = imp.emit(node, "MulConst", [x], {"const": np.full(shape, float(attr(node, "alpha", 0.2)))})
    y = imp.emit(node, "AddConst", [y], {"const": np.full(shape, float(attr(node, "beta", 0.5)))})
    imp.emit(node, "Clip", [y], {"low": 0.0, "high": 1.0}, output=node.output[0])


def relu_pair(imp: OnnxImporter, node: onnx.NodeProto, x: str, negative_slope, output) -> str:
    """``relu(x) - s relu(-x)`` for a slope ``s`` broadcast to x (PRelu, LeakyRelu, Abs)."""
    shape = imp.graph.shape(x)
    positive = imp.emit(node, "Relu", [x])
    flipped = imp.emit(node, "MulConst", [x], {"const": np.full(shape, -1.0)})
    negative = imp.emit(node, "Relu", [flipped])
    scaled = imp.emit(node, "MulConst", [negative],
                      {"const": -np.broadcast_to(negative_slope, shape).astype(np.float64)})
    return imp.emit(node, "Sum", [positive, scaled], output=output)


@converter("PRelu")
def convert_prelu(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    from .arithmetic import broadcast_const

    slope = broadcast_const(imp, node, np.asarray(imp.const(node, 1), np.float64), x)
    relu_pair(imp, node, x, slope, node.output[0])


@converter("Abs")
def convert_abs(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """|x| = relu(x) + relu(-x)."""
    relu_pair(imp, node, imp.data(node), -1.0, node.output[0])


@converter("Neg")
def convert_neg(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    x = imp.data(node)
    imp.emit(node, "MulConst", [x], {"const": np.full(imp.graph.shape(x), -1.0)},
             output=node.output[0])


@converter("Shrink")
def convert_shrink(imp: OnnxImporter, node: onnx.NodeProto) -> None:
    """Soft shrink (bias == lambd) is ``relu(x - l) - relu(-x - l)``; with another bias the
    function jumps at ±lambd: no MLP computes it."""
    x = imp.data(node)
    lambd, bias = float(attr(node, "lambd", 0.5)), float(attr(node, "bias", 0.0))
    if bias != lambd:
        imp.fail(node, f"bias {bias:g} differs from lambd {lambd:g}: the function jumps at "
                       "±lambd (discontinuous), and no MLP computes it; only soft shrink "
                       "(bias == lambd) is continuous")
    shape = imp.graph.shape(x)
    up = imp.emit(node, "AddConst", [x], {"const": np.full(shape, -lambd)})
    down = imp.emit(node, "MulConst", [x], {"const": np.full(shape, -1.0)})
    down = imp.emit(node, "AddConst", [down], {"const": np.full(shape, -lambd)})
    imp.emit(node, "Sum", [imp.emit(node, "Relu", [up]), imp.emit(node, "Relu", [down])],
             {"coeffs": (1.0, -1.0)}, output=node.output[0])
