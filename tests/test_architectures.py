"""The blocks real architectures are made of, as PyTorch exports them (ONNX, from
cnn2mlp.testing.zoo) and as Keras writes them: each compiles exactly (against onnxruntime /
Keras) and its MLP holds at most 1.25 non-zeros per multiply-add of the CNN."""
import os

import numpy as np
import onnx
import pytest

from cnn2mlp.testing import assert_equivalent, compile_to_model, zoo

#: the size goal: MLP non-zeros per multiply-add of the CNN
MAX_NNZ_PER_MULTIPLY_ADD = 1.25


@pytest.mark.parametrize("block", list(zoo.BLOCKS))
def test_pytorch_style_blocks_are_exact_and_small(block):
    model = zoo.block_model(block)
    compiled = compile_to_model(model)
    assert_equivalent(model, compiled, n=37)
    result = compiled.result
    assert result.multiply_adds == zoo.multiply_adds(model)
    assert result.nnz <= MAX_NNZ_PER_MULTIPLY_ADD * result.multiply_adds, (
        f"{block}: {result.nnz} non-zeros for {result.multiply_adds} multiply-adds")


def test_the_zoo_writes_what_the_exporter_writes():
    """Folded BatchNorm, ReLU6 as Clip with Constant bounds, view()/chunk() shapes computed
    at run time: the quirks the frontend has to meet in real exports."""
    ops = {n.op_type for n in zoo.block_model("shuffle_units").graph.node}
    assert {"Shape", "Gather", "Div", "Cast", "Unsqueeze", "Reshape", "Transpose",
            "Slice"} <= ops
    clip = next(n for n in zoo.block_model("inverted_residual").graph.node
                if n.op_type == "Clip")
    assert len(clip.input) == 3


def test_a_whole_architecture_at_32x32():
    """MobileNetV2 as torchvision defines it (1.0 width, 32×32): its size is within the goal
    and it is exact at batch 1 and 37."""
    model = zoo.mobilenet_v2()
    compiled = compile_to_model(model)
    assert compiled.result.multiply_adds == zoo.multiply_adds(model) > 6_000_000
    assert compiled.result.nnz <= MAX_NNZ_PER_MULTIPLY_ADD * compiled.result.multiply_adds
    for n in (1, 37):
        assert_equivalent(model, compiled, n=n, input_range=(0.0, 1.0))


def test_zoo_models_pass_the_onnx_checker():
    for block in zoo.BLOCKS:
        onnx.checker.check_model(zoo.block_model(block), full_check=True)


# ----------------------------------------------------------------------------- Keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _keras():
    return pytest.importorskip("keras", reason="install the tensorflow extra")


def _conv_bn(L, x, filters, kernel=1, strides=1, groups=1, act="relu"):
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                 groups=groups)(x)
    x = L.BatchNormalization()(x)
    return L.Activation(act)(x) if act else x


def keras_blocks():
    """keras.applications' blocks (their layer patterns, a few channels), functional API."""
    keras = _keras()
    L = keras.layers

    def mobilenet(x):      # MobileNet: depthwise 3×3 + BN + ReLU6, pointwise + BN + ReLU6
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = L.ReLU(6.0)(L.BatchNormalization()(x))
        x = L.Conv2D(24, 1, use_bias=False)(x)
        return L.ReLU(6.0)(L.BatchNormalization()(x))

    def mobilenet_v2(x):   # inverted residual, linear bottleneck, Add
        y = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(96, 1, use_bias=False)(x)))
        y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = L.ReLU(6.0)(L.BatchNormalization()(y))
        y = L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(y))
        return L.Add()([x, y])

    def resnet50(x):       # bottleneck with a projection shortcut
        shortcut = _conv_bn(L, x, 32, 1, 2, act=None)
        y = _conv_bn(L, x, 8, 1, 2)
        y = _conv_bn(L, y, 8, 3)
        y = _conv_bn(L, y, 32, 1, act=None)
        return L.Activation("relu")(L.Add()([shortcut, y]))

    def densenet121(x):    # BN-ReLU-Conv1×1-BN-ReLU-Conv3×3, concatenated; a transition
        for _ in range(3):
            y = L.Activation("relu")(L.BatchNormalization()(x))
            y = _conv_bn(L, y, 16, 1)
            y = L.Conv2D(4, 3, padding="same", use_bias=False)(y)
            x = L.Concatenate()([x, y])
        x = L.Activation("relu")(L.BatchNormalization()(x))
        x = L.Conv2D(14, 1, use_bias=False)(x)
        return L.AveragePooling2D(2, 2)(x)

    def inception(x):      # four branches, a 3×3 max pool with stride 1
        b1 = _conv_bn(L, x, 21)
        b2 = _conv_bn(L, _conv_bn(L, x, 32), 43, 3)
        b3 = _conv_bn(L, _conv_bn(L, x, 5), 11, 3)
        b4 = _conv_bn(L, L.MaxPooling2D(3, 1, padding="same")(x), 11)
        return L.Concatenate()([b1, b2, b3, b4])

    def grouped(x):        # ResNeXt / RegNet: a grouped 3×3 between 1×1 convolutions
        y = _conv_bn(L, x, 16)
        y = _conv_bn(L, y, 16, 3, groups=4)
        y = _conv_bn(L, y, 16, act=None)
        return L.Activation("relu")(L.Add()([x, y]))

    return {"mobilenet": (mobilenet, 16), "mobilenet_v2": (mobilenet_v2, 16),
            "resnet50": (resnet50, 16), "densenet121": (densenet121, 16),
            "inception": (inception, 64), "grouped": (grouped, 16)}


def _keras_model(block, channels):
    keras = _keras()
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(channels, 3, padding="same", activation="relu")(inputs)
    x = block(x)
    outputs = L.Dense(5)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _keras_multiply_adds(model) -> int:
    """Multiply-adds of a Keras model's convolutions and Dense layers, from its shapes."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D", "Dense"):
            out = int(np.prod(layer.output.shape[1:]))
            kernel = layer.weights[0].shape   # (kh, kw, c_in / groups, c_out) or (n, units)
            taps = int(np.prod(kernel[:-1])) if kind != "DepthwiseConv2D" else int(
                np.prod(kernel[:2]))
            total += out * taps
    return total


@pytest.mark.parametrize("block", ["mobilenet", "mobilenet_v2", "resnet50", "densenet121",
                                   "inception", "grouped"])
def test_keras_application_blocks_are_exact_and_small(tmp_path, block):
    from test_keras import randomize

    write, channels = keras_blocks()[block]
    model = randomize(_keras_model(write, channels), seed=len(block))
    path = tmp_path / f"{block}.keras"
    model.save(path)
    x = np.random.default_rng(1).uniform(-1, 1, (37, 8, 8, 3)).astype(np.float32)
    compiled = compile_to_model(path)
    assert_equivalent(lambda v: model.predict(v, verbose=0), compiled, x)
    result = compiled.result
    assert result.multiply_adds == _keras_multiply_adds(model)
    assert result.nnz <= MAX_NNZ_PER_MULTIPLY_ADD * result.multiply_adds, (
        f"{block}: {result.nnz} non-zeros for {result.multiply_adds} multiply-adds")
