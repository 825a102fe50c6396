"""Every op of the IR, defined once: a shape rule and a numpy reference evaluation.

Shapes are per sample (no batch axis); ``evaluate`` receives and returns batched arrays
``(B, *shape)``. The reference evaluation favours clarity over speed: it is what the
interpreter runs to check that each pass preserves the function.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .activations import BY_OP, CATALOGUE, Activation
from .geometry import combined_mask, gather_windows, window_axes
from .weights import matvec

if TYPE_CHECKING:  # graph.py looks ops up here: the import goes one way
    from .graph import Node, Shape

OPS: dict[str, "Op"] = {}


def register_op(cls: type["Op"]) -> type["Op"]:
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> "Op":
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"IR has no op {name!r}") from None


class Op:
    name = ""
    #: element-wise non-linearity (acts on each entry alone, shape-agnostic)
    activation = False

    def infer_shape(self, node: Node, shapes: list[Shape]) -> list[Shape]:
        return [shapes[0]]

    def evaluate(self, node: Node, xs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


# ---------------------------------------------------------------------------- activations
class _Activation(Op):
    """An element-wise activation of the catalogue (``ir/activations.py``)."""

    activation = True
    entry: Activation

    def evaluate(self, node, xs):
        entry = type(self).entry
        return [entry.numpy(xs[0], node.attrs.get("alpha", entry.alpha))]


for _entry in CATALOGUE:
    register_op(type(_entry.op, (_Activation,), {"name": _entry.op, "entry": _entry}))


@register_op
class Softmax(Op):
    """Softmax over the whole sample vector (frontends only accept that axis)."""

    name = "Softmax"

    def evaluate(self, node, xs):
        x = xs[0].reshape(len(xs[0]), -1)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return [(e / e.sum(axis=1, keepdims=True)).reshape(xs[0].shape)]


# -------------------------------------------------------------------------------- linear
@register_op
class Dense(Op):
    """``y = W vec(x) + b`` reshaped to ``out_shape``; W is (out, in), sparse or dense."""

    name = "Dense"

    def infer_shape(self, node, shapes):
        w = node.attrs["weight"]
        n_in = int(np.prod(shapes[0], dtype=np.int64))
        if w.shape[1] != n_in:
            raise ValueError(f"Dense weight {w.shape} does not take {n_in} inputs")
        out_shape = tuple(node.attrs.get("out_shape") or (w.shape[0],))
        if int(np.prod(out_shape, dtype=np.int64)) != w.shape[0]:
            raise ValueError(f"Dense out_shape {out_shape} does not hold {w.shape[0]} outputs")
        return [out_shape]

    def evaluate(self, node, xs):
        x = xs[0].reshape(len(xs[0]), -1)
        w, b = node.attrs["weight"], node.attrs.get("bias")
        y = matvec(w, x)
        if b is not None:
            y = y + b
        return [y.reshape((len(x),) + self.infer_shape(node, [xs[0].shape[1:]])[0])]


@register_op
class Conv(Op):
    """ONNX Conv on ``(C, *spatial)``: kernel (O, C/group, *k), explicit pads, any rank."""

    name = "Conv"

    def infer_shape(self, node, shapes):
        a = node.attrs
        kernel = a["kernel"]
        c_in, spatial = shapes[0][0], shapes[0][1:]
        if len(spatial) != kernel.ndim - 2:
            raise ValueError(f"Conv kernel rank {kernel.ndim} does not fit input {shapes[0]}")
        if kernel.shape[1] * a["group"] != c_in or kernel.shape[0] % a["group"]:
            raise ValueError(f"Conv kernel {kernel.shape} with group {a['group']} "
                             f"does not fit {c_in} input channels")
        axes = window_axes(spatial, kernel.shape[2:], a["strides"], a["dilations"], a["pads"])
        return [(kernel.shape[0],) + tuple(ax.size_out for ax in axes)]

    def evaluate(self, node, xs):
        a = node.attrs
        x, kernel, g = xs[0], a["kernel"], a["group"]
        axes = window_axes(x.shape[2:], kernel.shape[2:], a["strides"], a["dilations"], a["pads"])
        win = gather_windows(x, axes, 0.0)  # (B, C, out..., k...)
        b, c = win.shape[:2]
        out_sp = tuple(ax.size_out for ax in axes)
        win = win.reshape(b, g, c // g, int(np.prod(out_sp)), -1)
        k = kernel.reshape(g, kernel.shape[0] // g, c // g, -1)
        y = np.einsum("bgcpk,gock->bgop", win, k).reshape((b, kernel.shape[0]) + out_sp)
        if a.get("bias") is not None:
            y = y + a["bias"].reshape((1, -1) + (1,) * len(out_sp))
        return [y]


class _Pool(Op):
    """MaxPool / AveragePool on ``(C, *spatial)``: padding never counts as a value for max."""

    def _axes(self, node, spatial):
        a = node.attrs
        return window_axes(spatial, a["kernel_shape"], a["strides"], a["dilations"], a["pads"],
                           a.get("ceil_mode", False))

    def infer_shape(self, node, shapes):
        axes = self._axes(node, shapes[0][1:])
        return [(shapes[0][0],) + tuple(ax.size_out for ax in axes)]


@register_op
class MaxPool(_Pool):
    name = "MaxPool"

    def evaluate(self, node, xs):
        axes = self._axes(node, xs[0].shape[2:])
        win = gather_windows(xs[0], axes, -np.inf)
        nd = len(axes)
        return [win.max(axis=tuple(range(2 + nd, 2 + 2 * nd)))]


@register_op
class AveragePool(_Pool):
    name = "AveragePool"

    def evaluate(self, node, xs):
        axes = self._axes(node, xs[0].shape[2:])
        nd = len(axes)
        k_axes = tuple(range(2 + nd, 2 + 2 * nd))
        total = gather_windows(xs[0], axes, 0.0).sum(axis=k_axes)
        which = "inside_padded" if node.attrs.get("count_include_pad") else "inside"
        count = combined_mask(axes, which).sum(axis=tuple(range(nd, 2 * nd)))
        return [total / np.maximum(count, 1)]


@register_op
class BatchNorm(Op):
    """Inference batch norm over axis 0 of the sample (channels)."""

    name = "BatchNorm"

    def evaluate(self, node, xs):
        scale, shift = batchnorm_affine(node.attrs)
        shape = (1, -1) + (1,) * (xs[0].ndim - 2)
        return [xs[0] * scale.reshape(shape) + shift.reshape(shape)]


def batchnorm_affine(attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm as ``x * scale + shift`` per channel (float64)."""
    gamma = np.asarray(attrs["scale"], np.float64)
    scale = gamma / np.sqrt(np.asarray(attrs["var"], np.float64) + attrs["epsilon"])
    shift = np.asarray(attrs["bias"], np.float64) - np.asarray(attrs["mean"], np.float64) * scale
    return scale, shift


@register_op
class AddConst(Op):
    """``x + c`` with a constant broadcast to the sample shape."""

    name = "AddConst"

    def evaluate(self, node, xs):
        return [xs[0] + node.attrs["const"]]


@register_op
class MulConst(Op):
    """``x * c`` with a constant broadcast to the sample shape."""

    name = "MulConst"

    def evaluate(self, node, xs):
        return [xs[0] * node.attrs["const"]]


@register_op
class Pad(Op):
    """Constant padding; ``pads`` is (begins..., ends...) over the sample axes, may be < 0."""

    name = "Pad"

    def infer_shape(self, node, shapes):
        p = node.attrs["pads"]
        nd = len(shapes[0])
        return [tuple(d + p[i] + p[nd + i] for i, d in enumerate(shapes[0]))]

    def evaluate(self, node, xs):
        x, p = xs[0], node.attrs["pads"]
        nd = x.ndim - 1
        grow = [(0, 0)] + [(max(p[i], 0), max(p[nd + i], 0)) for i in range(nd)]
        y = np.pad(x, grow, constant_values=node.attrs.get("value", 0.0))
        crop = (slice(None),) + tuple(slice(max(-p[i], 0), y.shape[i + 1] - max(-p[nd + i], 0))
                                      for i in range(nd))
        return [y[crop]]


# -------------------------------------------------------------------------------- layout
@register_op
class Reshape(Op):
    name = "Reshape"

    def infer_shape(self, node, shapes):
        shape = tuple(node.attrs["shape"])
        if np.prod(shape, dtype=np.int64) != np.prod(shapes[0], dtype=np.int64):
            raise ValueError(f"cannot reshape {shapes[0]} to {shape}")
        return [shape]

    def evaluate(self, node, xs):
        return [xs[0].reshape((len(xs[0]),) + tuple(node.attrs["shape"]))]


@register_op
class Transpose(Op):
    """Permutes the sample axes by ``perm``."""

    name = "Transpose"

    def infer_shape(self, node, shapes):
        return [tuple(shapes[0][p] for p in node.attrs["perm"])]

    def evaluate(self, node, xs):
        return [xs[0].transpose((0,) + tuple(p + 1 for p in node.attrs["perm"]))]


@register_op
class Select(Op):
    """``y = vec(x)[indices]`` reshaped to ``out_shape``: permutations and row selections."""

    name = "Select"

    def infer_shape(self, node, shapes):
        idx = node.attrs["indices"]
        n_in = int(np.prod(shapes[0], dtype=np.int64))
        if len(idx) and (idx.min() < 0 or idx.max() >= n_in):
            raise ValueError("Select index out of range")
        out_shape = tuple(node.attrs.get("out_shape") or (len(idx),))
        if int(np.prod(out_shape, dtype=np.int64)) != len(idx):
            raise ValueError(f"Select out_shape {out_shape} does not hold {len(idx)} values")
        return [out_shape]

    def evaluate(self, node, xs):
        x = xs[0].reshape(len(xs[0]), -1)[:, node.attrs["indices"]]
        return [x.reshape((len(x),) + self.infer_shape(node, [xs[0].shape[1:]])[0])]



# --------------------------------------------------------------------- multi-input (DAGs)
def _same_shapes(node: Node, shapes: list[Shape]) -> Shape:
    if not shapes:
        raise ValueError(f"{node.op} needs at least one input")
    if any(tuple(s) != tuple(shapes[0]) for s in shapes):
        raise ValueError(f"{node.op} inputs have different shapes {shapes}")
    return tuple(shapes[0])


@register_op
class Sum(Op):
    """``y = sum_i c_i x_i`` over inputs of one shape (Add, Sub, Sum, Mean of computed
    tensors); ``coeffs`` defaults to all ones."""

    name = "Sum"

    def infer_shape(self, node, shapes):
        coeffs = node.attrs.get("coeffs")
        if coeffs is not None and len(coeffs) != len(shapes):
            raise ValueError(f"Sum has {len(shapes)} inputs but {len(coeffs)} coefficients")
        return [_same_shapes(node, shapes)]

    def evaluate(self, node, xs):
        coeffs = sum_coeffs(node)
        return [sum(c * x for c, x in zip(coeffs, xs))]


def sum_coeffs(node: Node) -> tuple[float, ...]:
    return tuple(node.attrs.get("coeffs") or (1.0,) * len(node.inputs))


@register_op
class Concat(Op):
    """Concatenation along the sample axis ``axis`` (never the batch)."""

    name = "Concat"

    def infer_shape(self, node, shapes):
        axis = node.attrs["axis"]
        rank = len(shapes[0])
        if not 0 <= axis < rank or any(len(s) != rank for s in shapes):
            raise ValueError(f"Concat axis {axis} does not fit shapes {shapes}")
        rest = [tuple(d for i, d in enumerate(s) if i != axis) for s in shapes]
        if any(r != rest[0] for r in rest):
            raise ValueError(f"Concat inputs {shapes} differ off axis {axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return [tuple(out)]

    def evaluate(self, node, xs):
        return [np.concatenate(xs, axis=node.attrs["axis"] + 1)]


class _Extremum(Op):
    """Element-wise max or min of inputs of one shape."""

    reduce: Callable

    def infer_shape(self, node, shapes):
        return [_same_shapes(node, shapes)]

    def evaluate(self, node, xs):
        return [type(self).reduce(np.stack(xs), axis=0)]


@register_op
class Maximum(_Extremum):
    name = "Maximum"
    reduce = staticmethod(np.max)


@register_op
class Minimum(_Extremum):
    name = "Minimum"
    reduce = staticmethod(np.min)


@register_op
class MixedActivation(Op):
    """A different element-wise activation on each run of the flat vector: ``segments`` is a
    list of ``(start, stop, op, alpha)`` covering ``[0, n)`` (a layer whose neurons carry
    values with the identity beside ReLU neurons, say)."""

    name = "MixedActivation"
    activation = True

    def infer_shape(self, node, shapes):
        n = int(np.prod(shapes[0], dtype=np.int64))
        check_segments(node.attrs["segments"], n)
        return [shapes[0]]

    def evaluate(self, node, xs):
        x = xs[0].reshape(len(xs[0]), -1)
        y = np.empty_like(x)
        for start, stop, op, alpha in node.attrs["segments"]:
            y[:, start:stop] = BY_OP[op].numpy(x[:, start:stop], alpha)
        return [y.reshape(xs[0].shape)]


def check_segments(segments, n: int) -> None:
    position = 0
    for start, stop, op, _ in segments:
        if start != position or stop < start or op not in BY_OP:
            raise ValueError(f"activation segments {segments} do not tile [0, {n})")
        position = stop
    if position != n:
        raise ValueError(f"activation segments {segments} do not tile [0, {n})")


@register_op
class Clip(Op):
    """``min(max(x, low), high)`` element-wise; ``low`` or ``high`` may be None (unbounded).
    ReLU6 is Clip(0, 6)."""

    name = "Clip"

    def evaluate(self, node, xs):
        low, high = node.attrs.get("low"), node.attrs.get("high")
        return [np.clip(xs[0], -np.inf if low is None else low, np.inf if high is None else high)]
