"""OnnxBuilder: ONNX models written node by node the way exporters lay them out (used by
the strategies, the architecture zoo, the tests and the example model), and the output-shape
rules the builder and the strategies share. Needs numpy and onnx only."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..ir.geometry import output_size


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



def _same(spatial, kernel) -> list[int]:
    begins, ends = [], []
    for _, k in zip(spatial, kernel):
        total = max(0, k - 1)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends



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
