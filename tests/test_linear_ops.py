"""Linear ops that move, copy or interpolate values: selections and matrices built from
ONNX's own reference implementation, in realistic models, against onnxruntime."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn2mlp.testing import OnnxBuilder, assert_equivalent, compile_to_model


def conv(k=3, p=1, out=4, s=1):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "group": 1, "out_channels": out}


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_small_unet(mode):
    """Encoder (conv, max pool), bottleneck, decoder (Resize ×2, Concat with the encoder's
    map, conv), a per-pixel head: the U-Net shape, exact for every resize mode."""
    b = OnnxBuilder((2, 8, 8), opset=13, seed=60)
    b.conv(conv(out=4))
    skip = b.activation("Relu")
    b.pool("MaxPool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (0, 0, 0, 0), "ceil_mode": False})
    b.conv(conv(out=6))
    b.activation("Relu")
    scales = b.const(np.array([1, 1, 2, 2], np.float32))
    up = b.node("Resize", [b.current, "", scales], mode=mode,
                coordinate_transformation_mode="half_pixel" if mode != "nearest" else "asymmetric")
    b.node("Concat", [up, skip], axis=1)
    b.shape = (10, 8, 8)
    b.conv(conv(out=3))
    b.activation("Relu")
    b.conv(conv(k=1, p=0, out=2))  # per-pixel logits
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


def test_pixel_shuffle_tile_gather_and_reflect_pad():
    # GatherElements' indices carry the batch axis (1): the model runs with batch 1
    b = OnnxBuilder((8, 4, 4), batch=1, opset=13, seed=61)
    b.node("DepthToSpace", [b.current], blocksize=2, mode="CRD")  # (2, 8, 8)
    b.node("Pad", [b.current, b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))],
           mode="reflect")  # (2, 11, 11)
    b.node("SpaceToDepth", [b.current], blocksize=1)
    b.node("Tile", [b.current, b.const(np.array([1, 2, 1, 1], np.int64))])  # (4, 11, 11)
    b.node("Gather", [b.current, b.const(np.array([3, 0, 0, 2], np.int64))], axis=1)
    b.node("GatherElements", [b.current, b.const(
        np.random.default_rng(0).integers(0, 11, (1, 4, 11, 11)))], axis=3)
    b.shape = (4, 11, 11)
    b.conv(conv(out=2))
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


def test_gather_on_the_batch_axis_is_refused():
    from cnn2mlp.errors import CompileError

    b = OnnxBuilder((4,), opset=13, seed=62)
    b.node("Gather", [b.current, b.const(np.array([0], np.int64))], axis=0)
    b.dense(2)
    with pytest.raises(CompileError, match="batch axis"):
        compile_to_model(b.build())


@pytest.mark.parametrize("geometry", [
    dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(strides=[2, 1], dilations=[1, 2], group=2),
    dict(strides=[3, 2], output_shape=[14, 9]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER")])
def test_conv_transpose_decoder(geometry):
    """A decoder: Conv → ReLU → ConvTranspose (upsampling) → ReLU → per-pixel 1×1 Conv."""
    b = OnnxBuilder((2, 5, 4), opset=13, seed=63)
    b.conv(conv(out=4))
    b.activation("Relu")
    group = geometry.get("group", 1)
    weight = b.weights((4, 6 // group, 3, 3))
    y = b.node("ConvTranspose", [b.current, b.const(weight), b.const(b.weights(6))],
               kernel_shape=[3, 3], **geometry)
    from cnn2mlp.references import onnx_runner

    probe = onnx_runner(b.build())(np.zeros((1, 2, 5, 4), np.float32))
    b.shape = probe.shape[1:]  # what onnxruntime says the transpose gives
    assert y == b.current
    b.activation("Relu")
    b.conv(conv(k=1, p=0, out=2))
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


def test_reductions_over_sample_axes():
    b = OnnxBuilder((3, 4, 5), opset=13, seed=64)
    b.conv(conv(out=4))
    b.activation("Tanh")
    b.node("ReduceMean", [b.current], axes=[2, 3], keepdims=1)
    b.node("ReduceSum", [b.current, b.const(np.array([1], np.int64))], keepdims=0)
    b.shape = (1, 1)
    b.flatten("flatten")
    b.dense(2)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceL1"])
def test_max_min_and_l1_reductions_in_a_cnn(op):
    """Channel-wise and spatial reductions with the max-pool machinery (and |x| from ReLUs)."""
    b = OnnxBuilder((3, 4, 5), opset=13, seed=65)
    b.conv(conv(out=4))
    b.activation("Tanh")
    b.node(op, [b.current], axes=[1], keepdims=1)       # over channels: (1, 4, 5)
    b.node(op, [b.current], axes=[3], keepdims=0)       # over width: (1, 4)
    b.shape = (1, 4)
    b.flatten("flatten")
    b.dense(2)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


def test_matmul_with_the_constant_on_the_left():
    """``C @ X`` for a per-sample matrix X (a token-mixing layer): kron(C, I)."""
    b = OnnxBuilder((5, 3), opset=13, seed=66)
    b.node("MatMul", [b.const(b.weights((4, 5))), b.current])
    b.shape = (4, 3)
    b.activation("Relu")
    b.node("MatMul", [b.current, b.const(b.weights((3, 2)))])
    b.shape = (4, 2)
    b.flatten("flatten")
    b.dense(2)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


@pytest.mark.parametrize("equation, const_shape, sample", [
    ("bij,jk->bik", (5, 3), (4, 5)),        # a Dense on the last axis
    ("bchw,oc->bohw", (2, 3), (3, 4, 4)),   # a 1x1 convolution
    ("...i,ij->...j", (6, 2), (6,)),        # with an ellipsis
    ("bi,ji", (3, 6), (6,)),                # implicit output: "bj"
])
def test_einsum_with_a_constant_is_a_linear_map(equation, const_shape, sample):
    b = OnnxBuilder(sample, opset=13, seed=61)
    const = b.weights(const_shape)
    b.node("Einsum", [b.current, b.const(const)], equation=equation)
    probe = np.zeros((1,) + sample, np.float32)
    b.shape = np.einsum(equation.replace("...", "Z") if "..." in equation else equation,
                        probe, const).shape[1:]
    b.node("Relu", [b.current])
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


@pytest.mark.parametrize("equation, why", [
    ("bi,bi->b", "multiplies two values"),   # two computed operands
    ("bi,ij->jb", "batch axis"),             # the batch moved
])
def test_einsum_that_is_not_per_sample_linear_is_refused(equation, why):
    from cnn2mlp.errors import CompileError

    b = OnnxBuilder((6,), opset=13, seed=62)
    x = b.current
    other = x if why == "multiplies two values" else b.const(b.weights((6, 6)))
    b.node("Einsum", [x, other], equation=equation)
    with pytest.raises(CompileError, match=why):
        compile_to_model(b.build())


EINSUM_TEMPLATES = [  # (equation, constant's axes as letters of the sample's dims)
    ("bij,jk->bik", "jk"), ("bij,ki->bkj", "ki"), ("bi,i->b", "i"), ("bij,ij->bi", "ij"),
    ("bijk,kl->bijl", "kl"), ("bij,jk->bki", "jk")]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_einsum_property(data):
    """Random constant contractions: the compiled MLP equals onnxruntime on the model."""
    equation, const_axes = data.draw(st.sampled_from(EINSUM_TEMPLATES))
    letters = equation.split(",")[0][1:]
    dims = {ch: data.draw(st.integers(1, 4), label=ch) for ch in set(letters + const_axes)}
    sample = tuple(dims[ch] for ch in letters)
    b = OnnxBuilder(sample, opset=13, seed=data.draw(st.integers(0, 1000)))
    const = b.weights(tuple(dims[ch] for ch in const_axes))
    b.node("Einsum", [b.current, b.const(const)], equation=equation)
    b.shape = np.einsum(equation, np.zeros((1,) + sample), const).shape[1:]
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=8)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_expand_property(data):
    """Expand of a computed tensor to a constant shape that grows some of its size-1 axes:
    a selection."""
    sample = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    target = [d if d > 1 or not data.draw(st.booleans()) else data.draw(st.integers(2, 3))
              for d in sample]
    b = OnnxBuilder(sample, opset=13, seed=data.draw(st.integers(0, 1000)))
    b.node("Relu", [b.current])
    b.node("Expand", [b.current, b.const(np.array([1] + target, np.int64))])
    b.shape = tuple(target)
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=8)
