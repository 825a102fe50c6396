"""Models laid out the way tf2onnx, PyTorch and verification benchmarks export them."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnn2mlp.testing import OnnxBuilder, assert_equivalent, compile_to_model


def conv_geo(k=3, s=1, p=1, d=1, g=1, out=4, nd=2):
    return {"kernel_shape": (k,) * nd, "strides": (s,) * nd, "dilations": (d,) * nd,
            "pads": (p,) * (2 * nd), "group": g, "out_channels": out}


def tf2onnx_keras_cnn(opset=13) -> onnx.ModelProto:
    """tf2onnx of a Keras CNN: NHWC input with symbolic batch (unk__17), Transpose to NCHW,
    kernels stored HWIO and transposed by a node, SAME padding, Transpose back to NHWC,
    Reshape whose target comes from Shape → Slice → Concat → Cast, MatMul + Add, Identity."""
    rng = np.random.default_rng(1)
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__17", 10, 10, 3])
    nodes.append(helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]))
    const("k1_hwio", rng.normal(size=(3, 3, 3, 6)).astype(np.float32))
    nodes.append(helper.make_node("Transpose", ["k1_hwio"], ["k1"], perm=[3, 2, 0, 1]))
    const("b1", rng.normal(size=6).astype(np.float32))
    nodes.append(helper.make_node("Conv", ["nchw", "k1", "b1"], ["c1"], strides=[2, 2],
                                  auto_pad="SAME_UPPER", kernel_shape=[3, 3]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    const("k2", rng.normal(size=(6, 1, 3, 3)).astype(np.float32))  # depthwise
    nodes.append(helper.make_node("Conv", ["r1", "k2"], ["c2"], group=6, pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(helper.make_node("Transpose", ["r2"], ["nhwc"], perm=[0, 2, 3, 1]))
    nodes.append(helper.make_node("Shape", ["nhwc"], ["shape"]))
    nodes.append(helper.make_node("Slice", ["shape", const("s0", np.array([0])),
                                            const("s1", np.array([1])),
                                            const("ax", np.array([0]))], ["batch"]))
    nodes.append(helper.make_node("Concat", ["batch", const("m1", np.array([-1]))],
                                  ["target64"], axis=0))
    nodes.append(helper.make_node("Cast", ["target64"], ["target32"], to=TensorProto.INT32))
    nodes.append(helper.make_node("Cast", ["target32"], ["target"], to=TensorProto.INT64))
    nodes.append(helper.make_node("Reshape", ["nhwc", "target"], ["flat"]))
    const("w", rng.normal(size=(5 * 5 * 6, 4)).astype(np.float32) / 10)
    const("b", rng.normal(size=4).astype(np.float32))
    nodes.append(helper.make_node("MatMul", ["flat", "w"], ["mm"]))
    nodes.append(helper.make_node("Add", ["mm", "b"], ["logits"]))
    nodes.append(helper.make_node("Identity", ["logits"], ["dense"]))
    nodes.append(helper.make_node("Softmax", ["dense"], ["probs"], axis=-1))
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["unk__17", 4])
    model = helper.make_model(helper.make_graph(nodes, "tf2onnx", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tf2onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def pytorch_cnn(opset=11, batch="batch_size", bn=True, constants_as_nodes=False,
                inits_as_inputs=False) -> onnx.ModelProto:
    """torch.onnx.export of a small CNN: NCHW, Conv+BN(+folded)+Relu, Flatten or Reshape from
    Shape→Gather→Unsqueeze→Concat, Gemm with transB=1, Dropout."""
    b = OnnxBuilder((3, 12, 12), batch=batch, opset=opset, seed=3)
    b.conv(conv_geo(out=8, s=2), constants_as_nodes=constants_as_nodes)
    if bn:
        b.batchnorm()
    b.activation("Relu")
    b.conv(conv_geo(k=3, p=0, out=4, d=2))
    b.activation("Relu")
    b.node("Dropout", [b.current])
    b.flatten("shape")
    b.dense(16)
    b.activation("Relu")
    b.dense(10)
    model = b.build()
    if inits_as_inputs:  # opset-9 era exporters list every initializer as a graph input
        for init in model.graph.initializer:
            model.graph.input.append(helper.make_tensor_value_info(
                init.name, init.data_type, list(init.dims)))
    return model


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_tf2onnx_keras_cnn(opset):
    model = tf2onnx_keras_cnn(opset)
    compiled = compile_to_model(model)
    assert any("Softmax" in note for note in compiled.result.mlp.notes)
    assert compiled.input_shape == (10, 10, 3)
    assert_equivalent(model, compiled, n=16)


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 21])
@pytest.mark.parametrize("batch", ["batch_size", 1])
def test_pytorch_cnn(opset, batch):
    model = pytorch_cnn(opset, batch)
    assert_equivalent(model, compile_to_model(model), n=16)


def test_pytorch_opset9_initializers_listed_as_inputs_and_constant_nodes():
    model = pytorch_cnn(9, constants_as_nodes=True, inits_as_inputs=True)
    assert len(model.graph.input) > 1
    assert any(n.op_type == "Constant" for n in model.graph.node)
    assert_equivalent(model, compile_to_model(model), n=16)


def test_pytorch_batch1_with_hard_coded_reshape():
    b = OnnxBuilder((2, 6, 6), batch=1, opset=13, seed=5)
    b.conv(conv_geo(out=3))
    b.activation("Relu")
    b.node("Reshape", [b.current, b.const(np.array([1, 108], np.int64))])
    b.shape = (108,)
    b.dense(5)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=8)


def test_verification_benchmark_mlp_input_784x1_with_normalization():
    """ERAN/VNN-COMP style: input [1, 784, 1], Sub/Div normalization, Flatten, Gemm + Sigmoid."""
    b = OnnxBuilder((784, 1), batch=1, opset=11, seed=7)
    b.node("Sub", [b.current, b.const(np.array(0.1307, np.float32))])
    b.node("Div", [b.current, b.const(np.array(0.3081, np.float32))])
    b.node("Flatten", [b.current], axis=1)
    b.shape = (784,)
    b.dense(50)
    b.activation("Sigmoid")
    b.dense(10)
    b.activation("Tanh")
    b.dense(10, style="matmul")
    model = b.build()
    compiled = compile_to_model(model)
    assert [l.activation for l in compiled.layers] == ["sigmoid", "tanh", "identity"]
    assert_equivalent(model, compiled, n=16, input_range=(0, 1))


def test_normalization_folds_into_padded_first_conv_exactly():
    """(x - mean) / std before a zero-padded conv: the fold must keep the borders right."""
    b = OnnxBuilder((3, 9, 9), opset=13, seed=11)
    b.normalize(mean=0.45, std=0.226)
    b.conv(conv_geo(k=5, p=2, out=6))
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(4)
    model = b.build()
    compiled = compile_to_model(model)
    assert len(compiled.layers) == 2  # normalization folded, not a layer of its own
    assert_equivalent(model, compiled, n=16, input_range=(0, 1))


def test_symbolic_spatial_dims_with_input_shape():
    b = OnnxBuilder((3, 8, 8), opset=13, seed=2)
    b.conv(conv_geo(out=4, s=2))
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "F"
    compiled = compile_to_model(model, input_shape=(3, 8, 8))
    assert compiled.input_shape == (3, 8, 8)
    assert_equivalent(model, compiled, n=8)


def test_pad_node_and_leaky_relu_1d():
    b = OnnxBuilder((2, 20), opset=13, seed=4)
    b.node("Pad", [b.current, b.const(np.array([0, 0, 2, 0, 0, 3], np.int64)),
                   b.const(np.array(0.25, np.float32))], mode="constant")
    b.shape = (2, 25)
    b.conv(conv_geo(k=4, s=3, p=0, out=4, nd=1, g=2))
    b.activation("LeakyRelu")
    b.flatten("reshape")
    b.dense(3, style="matmul")
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


def pool_geo(k=2, s=2, p=0, ceil=False, include_pad=False, nd=2):
    return {"kernel_shape": (k,) * nd, "strides": (s,) * nd, "dilations": (1,) * nd,
            "pads": (p,) * (2 * nd), "ceil_mode": ceil, "count_include_pad": include_pad}


@pytest.mark.parametrize("ceil", [False, True])
def test_pytorch_lenet_with_maxpool(ceil):
    """Conv → Relu → MaxPool → Conv → Relu → MaxPool(ceil_mode) → Flatten → Gemm → Relu → Gemm."""
    b = OnnxBuilder((1, 15, 15), batch="batch_size", opset=13, seed=8)
    b.conv(conv_geo(k=5, p=2, out=6))
    b.activation("Relu")
    b.pool("MaxPool", pool_geo(ceil=ceil))
    b.conv(conv_geo(k=3, p=0, out=8))
    b.activation("Relu")
    b.pool("MaxPool", pool_geo(k=3, s=2, p=1, ceil=ceil))
    b.flatten("flatten")
    b.dense(20)
    b.activation("Relu")
    b.dense(10)
    model = b.build()
    compiled = compile_to_model(model)
    assert all(layer.activation in ("relu", "identity") for layer in compiled.layers)
    assert_equivalent(model, compiled, n=32)


def test_pad_node_in_front_of_average_pool():
    """Older tools write an explicit Pad, then AveragePool with count_include_pad=0: the
    padded zeros are real values to the pool and count in the average."""
    b = OnnxBuilder((2, 8, 8), opset=11, seed=9)
    b.conv(conv_geo(out=3))
    b.activation("Tanh")
    b.node("Pad", [b.current, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))],
           mode="constant")
    b.shape = (3, 10, 10)
    b.pool("AveragePool", pool_geo(k=3, s=3))
    b.flatten("flatten")
    b.dense(4)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


def test_keras_nhwc_cnn_with_pools_through_transposes():
    b = OnnxBuilder((3, 12, 12), batch="unk__17", opset=13, seed=10, nhwc=True)
    b.conv(conv_geo(out=4))
    b.activation("Relu")
    b.pool("MaxPool", pool_geo())
    b.conv(conv_geo(out=4, p=1))
    b.activation("Relu")
    b.pool("AveragePool", pool_geo(k=3, s=2, p=1, ceil=True, include_pad=True))
    b.flatten("tf2onnx")
    b.dense(5, style="matmul")
    b.node("Softmax", [b.current], axis=-1)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


@pytest.mark.parametrize("shape, activation, pool", [
    ((3, 9, 9), "Relu", "GlobalAveragePool"),   # ResNet-style head
    ((3, 9), "Sigmoid", "GlobalMaxPool"),       # 1D, signed inputs to the max
])
def test_global_pools_head(shape, activation, pool):
    nd = len(shape) - 1
    b = OnnxBuilder(shape, opset=17, seed=12)
    b.conv(conv_geo(out=8, s=2, nd=nd))
    b.batchnorm()
    b.activation(activation)
    b.pool(pool, None)
    b.flatten("flatten")
    b.dense(6)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16)


def test_model_with_a_fixed_batch_of_four():
    b = OnnxBuilder((2, 6, 6), batch=4, opset=13, seed=14)
    b.conv(conv_geo(out=3))
    b.activation("Relu")
    b.flatten("reshape")
    b.dense(2)
    model = b.build()
    compiled = compile_to_model(model)
    assert_equivalent(model, compiled, n=7)  # 7 samples: two chunks of 4, the last padded


@pytest.mark.parametrize("op", ["Sub", "Add", "Mul"])
def test_constant_on_the_left_of_arithmetic(op):
    """``c - x`` is not ``x - c``: a per-channel constant on the left, negative values too."""
    b = OnnxBuilder((3, 6, 6), opset=13, seed=15)
    c = b.weights((1, 3, 1, 1), -2.0, 2.0)
    b.node(op, [b.const(c), b.current])
    b.conv(conv_geo(out=4))
    b.activation("Relu")
    b.node("Div", [b.current, b.const(np.array([[[[-2.5]]]], np.float32))])
    b.flatten("flatten")
    b.dense(3)
    model = b.build()
    assert_equivalent(model, compile_to_model(model), n=16, input_range=(-1, 1))


def test_constant_divided_by_the_input_is_refused_by_name(tmp_path):
    from cnn2mlp.errors import CompileError

    b = OnnxBuilder((4,), opset=13, seed=15)
    b.node("Div", [b.const(np.array(2.0, np.float32)), b.current])
    b.dense(2)
    with pytest.raises(CompileError, match="divides by a value computed from the input"):
        compile_to_model(b.build())
