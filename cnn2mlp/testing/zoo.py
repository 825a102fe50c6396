"""Architectures as PyTorch exports them: torchvision's networks written node by node.

``torch.onnx.export`` (the TorchScript exporter, eval mode) folds each BatchNorm that
follows a Conv into the Conv's weights and bias, writes ReLU6 as ``Clip`` with its bounds
as ``Constant`` nodes, a shortcut as ``Add``, ``torch.cat`` as ``Concat``, adaptive average
pooling to 1×1 as ``GlobalAveragePool`` + ``Flatten``, ``nn.Linear`` as ``Gemm`` with
``transB=1``, and computes the shapes of ``chunk`` and ``view`` at run time
(``Shape → Gather → Div → Unsqueeze → Concat``): that is what :class:`Net` writes, so that the
models here meet the frontend as real exports do. Weights are He-scaled (as torchvision
initialises them) with random non-zero biases, so that fifty layers neither explode nor
vanish.

The building blocks (:meth:`Net.inverted_residual`, :meth:`Net.dense_block`,
:meth:`Net.inception`, :meth:`Net.shuffle_unit`, :meth:`Net.fire`, :meth:`Net.basic_block`,
:meth:`Net.bottleneck`, :meth:`Net.regnet_block`) are what :data:`BLOCKS` wraps into small
models for tests; :data:`ARCHITECTURES` holds the full networks (torchvision's widths and
depths) for the benchmark. Needs numpy and onnx only.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..ir.geometry import output_size

OPSET = 17


class Net:
    """A DAG written node by node; every method takes tensor names and returns the output's
    name, with the per-sample shape (C, H, W) kept in :attr:`shapes`."""

    def __init__(self, channels: int = 3, size: int = 32, seed: int = 0,
                 batch: int | str = "batch") -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": (channels, size, size)}
        self.batch = batch
        self.multiply_adds = 0      # convolutions' and Linear layers' (as ir.cost counts)
        self._n = 0

    # -- plumbing ----------------------------------------------------------------------
    def _name(self, hint: str) -> str:
        self._n += 1
        return f"/{hint}_{self._n}"

    def init(self, value: np.ndarray, hint: str = "w") -> str:
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def constant(self, value: np.ndarray) -> str:
        name = self._name("Constant")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=numpy_helper.from_array(np.asarray(value))))
        return name

    def op(self, op: str, inputs: Sequence[str], shape: tuple[int, ...] | None = None,
           **attrs) -> str:
        out = self._name(op)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        if shape is not None:
            self.shapes[out] = shape
        return out

    # -- layers ------------------------------------------------------------------------
    def conv(self, x: str, out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             pad: int | None = None, bias: bool = True) -> str:
        """A Conv (with the folded BatchNorm as its bias, as the exporter writes it)."""
        c, h, w = self.shapes[x]
        pad = kernel // 2 if pad is None else pad
        fan_in = c // groups * kernel * kernel
        weight = self.rng.normal(0, math.sqrt(2.0 / fan_in),
                                 (out, c // groups, kernel, kernel)).astype(np.float32)
        inputs = [x, self.init(weight)]
        if bias:
            inputs.append(self.init(self.rng.uniform(-0.2, 0.2, out).astype(np.float32), "b"))
        oh, ow = (output_size(n, kernel, stride, 1, pad, pad) for n in (h, w))
        self.multiply_adds += out * oh * ow * fan_in
        return self.op("Conv", inputs, (out, oh, ow), dilations=[1, 1], group=groups,
                       kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride] * 2)

    def batchnorm(self, x: str) -> str:
        """A BatchNormalization the exporter cannot fold (it follows a Concat or a ReLU)."""
        c = self.shapes[x][0]
        u = lambda lo, hi: self.init(self.rng.uniform(lo, hi, c).astype(np.float32), "bn")
        return self.op("BatchNormalization", [x, u(0.5, 1.5), u(-0.2, 0.2), u(-0.2, 0.2),
                                              u(0.5, 1.5)], self.shapes[x], epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x], self.shapes[x])

    def relu6(self, x: str) -> str:
        lo, hi = self.constant(np.float32(0)), self.constant(np.float32(6))
        return self.op("Clip", [x, lo, hi], self.shapes[x])

    def conv_relu(self, x: str, out: int, kernel: int = 1, stride: int = 1,
                  groups: int = 1, pad: int | None = None) -> str:
        return self.relu(self.conv(x, out, kernel, stride, groups, pad))

    def add(self, a: str, b: str) -> str:
        assert self.shapes[a] == self.shapes[b], (self.shapes[a], self.shapes[b])
        return self.op("Add", [a, b], self.shapes[a])

    def concat(self, parts: Sequence[str]) -> str:
        c = sum(self.shapes[p][0] for p in parts)
        return self.op("Concat", parts, (c,) + self.shapes[parts[0]][1:], axis=1)

    def max_pool(self, x: str, kernel: int, stride: int, pad: int = 0,
                 ceil: bool = False) -> str:
        c, h, w = self.shapes[x]
        oh, ow = (output_size(n, kernel, stride, 1, pad, pad, ceil) for n in (h, w))
        return self.op("MaxPool", [x], (c, oh, ow), ceil_mode=int(ceil), dilations=[1, 1],
                       kernel_shape=[kernel] * 2, pads=[pad] * 4, strides=[stride] * 2)

    def avg_pool(self, x: str, kernel: int, stride: int) -> str:
        c, h, w = self.shapes[x]
        oh, ow = (output_size(n, kernel, stride, 1, 0, 0) for n in (h, w))
        return self.op("AveragePool", [x], (c, oh, ow), ceil_mode=0, count_include_pad=1,
                       kernel_shape=[kernel] * 2, pads=[0] * 4, strides=[stride] * 2)

    def classifier(self, x: str, classes: int, reduce_mean: bool = False) -> str:
        """Global average pool, flatten and a Linear layer (``x.mean([2, 3])`` as
        ReduceMean in ShuffleNet)."""
        c = self.shapes[x][0]
        if reduce_mean:
            flat = self.op("ReduceMean", [x], (c,), axes=[2, 3], keepdims=0)
        else:
            pooled = self.op("GlobalAveragePool", [x], (c, 1, 1))
            flat = self.op("Flatten", [pooled], (c,), axis=1)
        weight = self.rng.uniform(-1, 1, (classes, c)).astype(np.float32) / math.sqrt(c)
        bias = self.rng.uniform(-0.2, 0.2, classes).astype(np.float32)
        self.multiply_adds += classes * c
        return self.op("Gemm", [flat, self.init(weight), self.init(bias, "b")], (classes,),
                       alpha=1.0, beta=1.0, transB=1)

    # -- run-time shape arithmetic, as the exporter writes view() and chunk() ------------
    def _dim(self, x: str, axis: int) -> str:
        shape = self.op("Shape", [x])
        return self.op("Gather", [shape, self.constant(np.int64(axis))], axis=0)

    def _unsqueezed(self, scalar: str) -> str:
        return self.op("Unsqueeze", [scalar, self.constant(np.array([0], np.int64))])

    def channel_shuffle(self, x: str, groups: int = 2) -> str:
        c, h, w = self.shapes[x]
        dims = [self._dim(x, a) for a in range(4)]
        per_group = self.op("Cast", [self.op("Cast", [self.op(
            "Div", [dims[1], self.constant(np.int64(groups))])], to=7)], to=7)
        split = self.op("Concat", [self._unsqueezed(dims[0]),
                                   self.constant(np.array([groups], np.int64)),
                                   self._unsqueezed(per_group), self._unsqueezed(dims[2]),
                                   self._unsqueezed(dims[3])], axis=0)
        grouped = self.op("Reshape", [x, split], allowzero=0)
        swapped = self.op("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
        back = self.op("Concat", [self._unsqueezed(d) for d in dims], axis=0)
        return self.op("Reshape", [swapped, back], (c, h, w), allowzero=0)

    def chunk(self, x: str) -> tuple[str, str]:
        """``x.chunk(2, dim=1)`` as two Slices whose ends are computed from Shape."""
        c, h, w = self.shapes[x]
        size = self.op("Gather", [self.op("Shape", [x]),
                                  self.constant(np.array([1], np.int64))], axis=0)
        step = self.op("Div", [self.op("Add", [size, self.constant(np.array([1], np.int64))]),
                               self.constant(np.array([2], np.int64))])
        axes = self.constant(np.array([1], np.int64))
        middle = self.op("Mul", [step, self.constant(np.array([1], np.int64))])
        end = self.op("Mul", [step, self.constant(np.array([2], np.int64))])
        first = self.op("Slice", [x, self.constant(np.array([0], np.int64)), middle, axes],
                        ((c + 1) // 2, h, w))
        second = self.op("Slice", [x, middle, end, axes], (c - (c + 1) // 2, h, w))
        return first, second

    # -- blocks ------------------------------------------------------------------------
    def inverted_residual(self, x: str, out: int, stride: int, expand: int) -> str:
        """MobileNetV2: 1×1 expansion (ReLU6), 3×3 depthwise (ReLU6), linear 1×1
        projection, and the shortcut when the shape is kept."""
        c = self.shapes[x][0]
        hidden = c * expand
        y = x if expand == 1 else self.relu6(self.conv(x, hidden))
        y = self.relu6(self.conv(y, hidden, 3, stride, groups=hidden))
        y = self.conv(y, out)
        return self.add(x, y) if stride == 1 and c == out else y

    def dense_layer(self, x: str, growth: int, bottleneck: int = 4) -> str:
        """DenseNet: BN-ReLU-Conv1×1-(BN folded)-ReLU-Conv3×3, without bias."""
        y = self.relu(self.batchnorm(x))
        y = self.relu(self.conv(y, bottleneck * growth))
        return self.conv(y, growth, 3, bias=False)

    def dense_block(self, x: str, layers: int, growth: int) -> str:
        features = [x]
        for _ in range(layers):
            joined = features[0] if len(features) == 1 else self.concat(features)
            features.append(self.dense_layer(joined, growth))
        return self.concat(features)

    def transition(self, x: str, out: int) -> str:
        y = self.conv(self.relu(self.batchnorm(x)), out, bias=False)
        return self.avg_pool(y, 2, 2)

    def inception(self, x: str, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                  pool: int) -> str:
        """GoogLeNet: 1×1; 1×1→3×3; 1×1→3×3; 3×3 max pool (ceil mode)→1×1; concatenated."""
        b1 = self.conv_relu(x, c1)
        b2 = self.conv_relu(self.conv_relu(x, c3r), c3, 3)
        b3 = self.conv_relu(self.conv_relu(x, c5r), c5, 3)
        b4 = self.conv_relu(self.max_pool(x, 3, 1, 1, ceil=True), pool)
        return self.concat([b1, b2, b3, b4])

    def shuffle_unit(self, x: str, out: int, stride: int) -> str:
        """ShuffleNetV2: split (stride 1) or two branches (stride 2), 1×1-depthwise 3×3-1×1,
        concatenated and shuffled."""
        branch = out // 2
        if stride == 1:
            kept, x2 = self.chunk(x)
            right = x2
        else:
            c = self.shapes[x][0]
            kept = self.conv_relu(self.conv(x, c, 3, stride, groups=c), branch)
            right = x
        right = self.conv_relu(right, branch)
        right = self.conv(right, branch, 3, stride, groups=branch)
        right = self.conv_relu(right, branch)
        return self.channel_shuffle(self.concat([kept, right]))

    def fire(self, x: str, squeeze: int, expand: int) -> str:
        """SqueezeNet: a 1×1 squeeze, then 1×1 and 3×3 expansions concatenated."""
        s = self.conv_relu(x, squeeze)
        return self.concat([self.conv_relu(s, expand), self.conv_relu(s, expand, 3)])

    def basic_block(self, x: str, out: int, stride: int) -> str:
        """ResNet basic block: two 3×3 convolutions, a 1×1 projection when needed."""
        y = self.conv(self.conv_relu(x, out, 3, stride), out, 3)
        shortcut = x if stride == 1 and self.shapes[x][0] == out else self.conv(x, out, 1,
                                                                                 stride)
        return self.relu(self.add(y, shortcut))

    def bottleneck(self, x: str, width: int, stride: int, expansion: int = 4,
                   groups: int = 1) -> str:
        """ResNet bottleneck (1×1, 3×3 with the stride, 1×1 ×4); grouped for ResNeXt."""
        out = width * expansion
        y = self.conv_relu(x, width)
        y = self.conv_relu(y, width, 3, stride, groups=groups)
        y = self.conv(y, out)
        shortcut = x if stride == 1 and self.shapes[x][0] == out else self.conv(x, out, 1,
                                                                                 stride)
        return self.relu(self.add(y, shortcut))

    def regnet_block(self, x: str, out: int, stride: int, group_width: int = 16) -> str:
        """RegNetX: a bottleneck of ratio 1 with a grouped 3×3 convolution."""
        y = self.conv_relu(x, out)
        y = self.conv_relu(y, out, 3, stride, groups=out // group_width)
        y = self.conv(y, out)
        shortcut = x if stride == 1 and self.shapes[x][0] == out else self.conv(x, out, 1,
                                                                                 stride)
        return self.relu(self.add(y, shortcut))

    # -- the model -----------------------------------------------------------------------
    def build(self, output: str, name: str = "net") -> onnx.ModelProto:
        c, h, w = self.shapes["input"]
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                [self.batch, c, h, w])]
        for node in self.nodes:     # the exporter names the graph's output after the module's
            node.output[:] = ["logits" if o == output else o for o in node.output]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                 [self.batch, *self.shapes[output]])]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="pytorch", producer_version="2.5.0")
        model.ir_version = 8
        model.doc_string = f"multiply_adds={self.multiply_adds}"
        onnx.checker.check_model(model)
        return model


# ------------------------------------------------------------------------ architectures
def _stem(net: Net, out: int, kernel: int = 3, stride: int = 2) -> str:
    return net.conv_relu("input", out, kernel, stride)


def mobilenet_v2(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    net = Net(size=size, seed=seed)
    x = net.relu6(net.conv("input", 32, 3, 2))
    for expand, out, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                         (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                         (6, 320, 1, 1)]:
        for i in range(repeats):
            x = net.inverted_residual(x, out, stride if i == 0 else 1, expand)
    x = net.relu6(net.conv(x, 1280))
    return net.build(net.classifier(x, classes), "mobilenet_v2")


def resnet18(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    net = Net(size=size, seed=seed)
    x = net.max_pool(_stem(net, 64, 7, 2), 3, 2, 1)
    for stage, width in enumerate((64, 128, 256, 512)):
        for i in range(2):
            x = net.basic_block(x, width, 2 if i == 0 and stage > 0 else 1)
    return net.build(net.classifier(x, classes), "resnet18")


def resnet50(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    net = Net(size=size, seed=seed)
    x = net.max_pool(_stem(net, 64, 7, 2), 3, 2, 1)
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for i in range(blocks):
            x = net.bottleneck(x, width, 2 if i == 0 and stage > 0 else 1)
    return net.build(net.classifier(x, classes), "resnet50")


def densenet121(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    net = Net(size=size, seed=seed)
    x = net.max_pool(_stem(net, 64, 7, 2), 3, 2, 1)
    for i, layers in enumerate((6, 12, 24, 16)):
        x = net.dense_block(x, layers, 32)
        if i < 3:
            x = net.transition(x, net.shapes[x][0] // 2)
    x = net.relu(net.batchnorm(x))
    return net.build(net.classifier(x, classes), "densenet121")


def googlenet(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    net = Net(size=size, seed=seed)
    x = net.max_pool(_stem(net, 64, 7, 2), 3, 2, ceil=True)
    x = net.conv_relu(net.conv_relu(x, 64), 192, 3)
    x = net.max_pool(x, 3, 2, ceil=True)
    x = net.inception(x, 64, 96, 128, 16, 32, 32)
    x = net.inception(x, 128, 128, 192, 32, 96, 64)
    x = net.max_pool(x, 3, 2, ceil=True)
    for spec in [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
                 (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
                 (256, 160, 320, 32, 128, 128)]:
        x = net.inception(x, *spec)
    x = net.max_pool(x, 2, 2, ceil=True)
    x = net.inception(x, 256, 160, 320, 32, 128, 128)
    x = net.inception(x, 384, 192, 384, 48, 128, 128)
    return net.build(net.classifier(x, classes), "googlenet")


def shufflenet_v2(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """ShuffleNetV2 ×1.0."""
    net = Net(size=size, seed=seed)
    x = net.max_pool(_stem(net, 24), 3, 2, 1)
    for out, repeats in zip((116, 232, 464), (4, 8, 4)):
        for i in range(repeats):
            x = net.shuffle_unit(x, out, 2 if i == 0 else 1)
    x = net.conv_relu(x, 1024)
    return net.build(net.classifier(x, classes, reduce_mean=True), "shufflenet_v2")


def squeezenet1_1(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    net = Net(size=size, seed=seed)
    x = net.max_pool(net.conv_relu("input", 64, 3, 2, pad=0), 3, 2, ceil=True)
    x = net.fire(net.fire(x, 16, 64), 16, 64)
    x = net.max_pool(x, 3, 2, ceil=True)
    x = net.fire(net.fire(x, 32, 128), 32, 128)
    x = net.max_pool(x, 3, 2, ceil=True)
    for squeeze, expand in [(48, 192), (48, 192), (64, 256), (64, 256)]:
        x = net.fire(x, squeeze, expand)
    x = net.conv_relu(x, classes)
    c = net.shapes[x][0]
    pooled = net.op("GlobalAveragePool", [x], (c, 1, 1))
    return net.build(net.op("Flatten", [pooled], (c,), axis=1), "squeezenet1_1")


def regnet_x_400mf(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    net = Net(size=size, seed=seed)
    x = _stem(net, 32)
    for width, depth in zip((32, 64, 160, 400), (1, 2, 7, 12)):
        for i in range(depth):
            x = net.regnet_block(x, width, 2 if i == 0 else 1)
    return net.build(net.classifier(x, classes), "regnet_x_400mf")


ARCHITECTURES: dict[str, Callable[..., onnx.ModelProto]] = {
    "mobilenet_v2": mobilenet_v2, "resnet18": resnet18, "resnet50": resnet50,
    "densenet121": densenet121, "googlenet": googlenet, "shufflenet_v2": shufflenet_v2,
    "squeezenet1_1": squeezenet1_1, "regnet_x_400mf": regnet_x_400mf,
}


# ------------------------------------------------------------------------ blocks, small
#: name → (the block written on a stem's output, the stem's channels): channel counts in
#: the proportions of the real networks (an Inception module's pool branch is a small part
#: of its work only when its convolutions are as wide as GoogLeNet's)
BLOCKS: dict[str, tuple[Callable[[Net, str], str], int]] = {
    "inverted_residual": (lambda n, x: n.inverted_residual(
        n.inverted_residual(x, n.shapes[x][0], 1, 6), 12, 2, 6), 8),
    "dense_block": (lambda n, x: n.transition(n.dense_block(x, 3, 4), 8), 8),
    "inception": (lambda n, x: n.inception(x, 21, 32, 43, 5, 11, 11), 64),
    "shuffle_units": (lambda n, x: n.shuffle_unit(n.shuffle_unit(x, 16, 2), 16, 1), 8),
    "fire": (lambda n, x: n.fire(n.max_pool(x, 3, 2, ceil=True), 4, 8), 8),
    "basic_blocks": (lambda n, x: n.basic_block(n.basic_block(x, n.shapes[x][0], 1), 12, 2),
                     8),
    "bottleneck": (lambda n, x: n.bottleneck(x, 4, 2), 8),
    "grouped": (lambda n, x: n.regnet_block(x, 16, 1, group_width=4), 16),
}


def block_model(block: str, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """One of :data:`BLOCKS` as a small model: a stem convolution, the block, a
    classifier."""
    write, channels = BLOCKS[block]
    net = Net(size=size, seed=seed)
    x = net.conv_relu("input", channels, 3)
    return net.build(net.classifier(write(net, x), 5), block)


def multiply_adds(model: onnx.ModelProto) -> int:
    """The multiply-adds a model of this zoo was written with."""
    return int(model.doc_string.split("=", 1)[1])
