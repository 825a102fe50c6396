"""Activation layers and the ``activation=`` of other layers: ReLU (max_value,
negative_slope, threshold), LeakyReLU, ELU, PReLU, Softmax, Activation, and the layers that
are the identity at inference (Dropout and friends)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...errors import CompileError, UnsupportedOpError
from .registry import Layer, Tensor, layer
from .spatial import emit_multi

if TYPE_CHECKING:
    from .importer import KerasImporter

ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softplus": "Softplus",
                  "softsign": "Softsign", "silu": "Swish", "swish": "Swish", "gelu": "Gelu",
                  "mish": "Mish", "hard_silu": "HardSwish", "hard_swish": "HardSwish"}
#: keras.activations.selu's constants
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
IDENTITY_LAYERS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                   "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity"}


def apply_activation(imp: KerasImporter, lay: Layer, t: Tensor, name) -> Tensor:
    if isinstance(name, dict):  # a serialized activation object
        name = name.get("config", {}).get("name") or name.get("class_name")
    name = (name or "linear").lower()
    if name in ("linear", "identity", None):
        return t
    if name in ACTIVATION_OPS:
        return imp.emit(lay, ACTIVATION_OPS[name], t)
    if name == "leaky_relu":  # keras.activations.leaky_relu: negative_slope 0.2
        return imp.emit(lay, "LeakyRelu", t, {"alpha": 0.2})
    if name == "relu6":
        return imp.emit(lay, "Clip", t, {"low": 0.0, "high": 6.0})
    if name == "elu":
        return imp.emit(lay, "Elu", t, {"alpha": 1.0})
    if name == "selu":
        y = imp.emit(lay, "Elu", t, {"alpha": SELU_ALPHA})
        return imp.emit(lay, "MulConst", y, {"const": np.full(imp.shape(y), SELU_SCALE)})
    if name == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6; tf.keras 2: clip(0.2 x + 0.5, 0, 1)
        slope = 0.2 if imp.keras_version.startswith("2.") else 1.0 / 6.0
        y = imp.emit(lay, "MulConst", t, {"const": np.full(imp.shape(t), slope)})
        y = imp.emit(lay, "AddConst", y, {"const": np.full(imp.shape(t), 0.5)})
        return imp.emit(lay, "Clip", y, {"low": 0.0, "high": 1.0})
    if name == "softmax":
        flat = imp.keras_layout(t, lay)
        if len(imp.shape(flat)) != 1:
            raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: softmax over part of a "
                                     "tensor is not supported")
        return imp.emit(lay, "Softmax", flat)
    known = sorted(set(ACTIVATION_OPS) | {"leaky_relu", "relu6", "elu", "selu",
                                          "hard_sigmoid", "linear", "softmax"})
    raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: activation {name!r} is not "
                             f"supported ({', '.join(known)})")


@layer("Activation")
def convert_activation_layer(imp, lay, t):
    return imp.activation(lay, t, lay.config.get("activation"))


@layer("ReLU")
def convert_relu(imp, lay, t):
    """Keras ReLU(max_value=m, negative_slope=s, threshold=θ), as Keras computes it:
    ``x·[x > θ]``, clipped to [0, m] when m is given, minus ``s·relu(θ - x)``. With θ = 0
    that is piecewise linear (ReLUs); with θ ≠ 0 it jumps at θ, and the jump is one
    ThresholdedRelu activation (exact in the CSR target; no ReLU network equals it)."""
    c = lay.config
    threshold = float(c.get("threshold", 0.0) or 0.0)
    slope = float(c.get("negative_slope", 0.0) or 0.0)
    top = c.get("max_value")
    if not threshold and top is None:
        return imp.emit(lay, "LeakyRelu", t, {"alpha": slope}) if slope else \
            imp.emit(lay, "Relu", t)
    if threshold:
        y = imp.emit(lay, "ThresholdedRelu", t, {"alpha": threshold})
        if top is not None:
            y = imp.emit(lay, "Clip", y, {"low": 0.0, "high": float(top)})
    else:
        y = imp.emit(lay, "Clip", t, {"low": 0.0, "high": float(top)})
    if not slope:
        return y
    shape = imp.shape(t)
    negative = imp.emit(lay, "MulConst", t, {"const": np.full(shape, -1.0)})
    if threshold:
        negative = imp.emit(lay, "AddConst", negative, {"const": np.full(shape, threshold)})
    negative = imp.emit(lay, "Relu", negative)
    return emit_multi(imp, lay, "Sum", [y, negative], {"coeffs": (1.0, -slope)},
                      t.channels_first)


@layer("ELU")
def convert_elu(imp, lay, t):
    return imp.emit(lay, "Elu", t, {"alpha": float(lay.config.get("alpha", 1.0))})


@layer("Softmax")
def convert_softmax_layer(imp, lay, t):
    axis = lay.config.get("axis", -1)
    if axis not in (-1, [-1]):
        raise UnsupportedOpError(f"{imp.path}: layer {lay.name!r}: Softmax over axis {axis}")
    return imp.activation(lay, t, "softmax")


@layer("PReLU")
def convert_prelu(imp, lay, t):
    """``relu(x) - a relu(-x)`` with the learned slope ``a`` (shared axes broadcast)."""
    x = imp.keras_layout(t, lay)
    shape = imp.shape(x)
    slope = imp.weight(lay, 0, "alpha")
    try:
        slope = np.broadcast_to(slope, shape)
    except ValueError:
        raise CompileError(f"{imp.path}: layer {lay.name!r}: slope of shape {slope.shape} does "
                           f"not fit {shape}") from None
    positive = imp.emit(lay, "Relu", x)
    negative = imp.emit(lay, "Relu", imp.emit(lay, "MulConst", x, {"const": np.full(shape, -1.0)}))
    negative = imp.emit(lay, "MulConst", negative, {"const": -slope.astype(np.float64)})
    return emit_multi(imp, lay, "Sum", [positive, negative])


@layer("LeakyReLU")
def convert_leaky(imp, lay, t):
    slope = lay.config.get("negative_slope", lay.config.get("alpha", 0.3))
    return imp.emit(lay, "LeakyRelu", t, {"alpha": float(slope)})


@layer(*IDENTITY_LAYERS)
def convert_identity(imp, lay, t):
    return t
