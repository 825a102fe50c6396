"""Linear maps exporters write that move the batch axis or build constants from it, and
refusals that name their true reason (issue 21)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnn2mlp.errors import CompileError
from cnn2mlp.testing import assert_equivalent, compile_to_model


def model_of(nodes, inits, in_shape, out_name, out_shape, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def window_indices(size: int, out: int) -> np.ndarray:
    """(out, k) rows of an adaptive pool's windows along one axis (k cells each)."""
    starts = [int(np.floor(i * size / out)) for i in range(out)]
    ends = [int(np.ceil((i + 1) * size / out)) for i in range(out)]
    k = max(e - s for s, e in zip(starts, ends))
    assert all(e - s == k for s, e in zip(starts, ends))
    return np.array([list(range(s, s + k)) for s in starts])


def dynamo_adaptive_avg_pool(channels=3, size=5, out=2):
    """What torch.onnx.export(dynamo=True) writes for adaptive_avg_pool2d((2, 2)) on 5×5:
    Transpose(perm [2,3,0,1]), GatherND of the windows' cells, Transpose(perm
    [4,5,0,1,2,3]), ReduceMean over the window axes; a Conv before and a Gemm after."""
    rng = np.random.default_rng(5)
    rows = window_indices(size, out)                 # (out, k)
    k = rows.shape[1]
    index = np.zeros((out, k, out, k, 2), np.int64)  # (oh, kh, ow, kw, [h, w])
    index[..., 0] = rows[:, :, None, None]
    index[..., 1] = rows[None, None, :, :]
    inits = {"w": rng.uniform(-1, 1, (channels, 2, 3, 3)).astype(np.float32),
             "b": rng.uniform(-1, 1, channels).astype(np.float32),
             "idx": index, "axes": np.array([3, 5], np.int64),
             "fc": rng.uniform(-1, 1, (4, channels * out * out)).astype(np.float32),
             "fb": rng.uniform(-1, 1, 4).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[2, 3, 0, 1]),
        helper.make_node("GatherND", ["t", "idx"], ["g"]),
        helper.make_node("Transpose", ["g"], ["t2"], perm=[4, 5, 0, 1, 2, 3]),
        helper.make_node("ReduceMean", ["t2", "axes"], ["m"], keepdims=0),
        helper.make_node("Flatten", ["m"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1),
    ]
    return model_of(nodes, inits, (2, size, size), "y", (4,), opset=18)


def test_dynamo_adaptive_average_pool_compiles_exactly():
    model = dynamo_adaptive_avg_pool()
    compiled = compile_to_model(model)
    assert_equivalent(model, compiled, n=16)


def test_a_batch_axis_moved_away_for_good_is_refused_with_the_reason():
    inits = {"fc": np.ones((2, 6), np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Relu", ["t"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, "N"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CompileError, match="do not move it back"):
        compile_to_model(model, batch_axis="0")


@pytest.mark.parametrize("pick, message", [
    ("gather", "mixes the batch axis"),      # sample 0 twice: the batch's size is lost
    ("reverse", "mixes the samples"),        # the batch reversed: sizes kept, samples swapped
])
def test_a_chain_that_mixes_samples_is_refused(pick, message):
    """The batch axis moved second, then picked along (a Gather, or a Slice with step -1),
    then moved back: the shapes may look per-sample, the values are not."""
    inits = {"i": np.array([0, 0], np.int64), "s": np.array([-1], np.int64),
             "e": np.array([-2**62], np.int64), "a": np.array([1], np.int64),
             "st": np.array([-1], np.int64)}
    picked = (helper.make_node("Gather", ["t", "i"], ["g"], axis=1) if pick == "gather" else
              helper.make_node("Slice", ["t", "s", "e", "a", "st"], ["g"]))
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]), picked,
             helper.make_node("Transpose", ["g"], ["y"], perm=[1, 0, 2])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CompileError, match=message):
        compile_to_model(model, batch_axis="0")


def test_pads_computed_from_the_shape_of_a_constant():
    """A U-Net's pad arithmetic: (Shape(T)[2] - 5) / 2 of a constant T, on each side."""
    rng = np.random.default_rng(2)
    inits = {"T": np.zeros((1, 1, 7, 7), np.float32), "two": np.array(2, np.int64),
             "five": np.array(5, np.int64), "zero2": np.zeros(2, np.int64),
             "ax": np.array([0], np.int64),
             "w": rng.uniform(-1, 1, (2, 2, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Shape", ["T"], ["s"]),
             helper.make_node("Gather", ["s", "two"], ["g"], axis=0),
             helper.make_node("Sub", ["g", "five"], ["d"]),
             helper.make_node("Div", ["d", "two"], ["h"]),
             helper.make_node("Unsqueeze", ["h", "ax"], ["u"]),
             helper.make_node("Concat", ["zero2", "u", "u", "zero2", "u", "u"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Conv", ["p", "w"], ["y"])]
    model = model_of(nodes, inits, (2, 5, 5), "y", (2, 5, 5))
    assert_equivalent(model, compile_to_model(model), n=8)


# ------------------------------------------------------------------ powers and refusals
def relu_then(node_op, *extra_inputs, inits=None, **attrs):
    """x → Conv → Relu ('r') → node → Flatten → Gemm: a node after a computed tensor."""
    rng = np.random.default_rng(9)
    all_inits = {"w": rng.uniform(-1, 1, (2, 2, 3, 3)).astype(np.float32),
                 "fc": rng.uniform(-1, 1, (3, 2 * 4 * 4)).astype(np.float32),
                 **(inits or {})}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node(node_op, ["r", *extra_inputs], ["n"], name="suspect", **attrs),
             helper.make_node("Flatten", ["n"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    return model_of(nodes, all_inits, (2, 4, 4), "y", (3,))


def test_pow_of_one_is_the_identity():
    model = relu_then("Pow", "e", inits={"e": np.array(1.0, np.float32)})
    assert_equivalent(model, compile_to_model(model), n=8)


@pytest.mark.parametrize("exponent, reason", [
    (2.0, "to the power 2 (a product of computed values)"),
    (3.0, "to the power 3 (a product"),
    (0.5, "square root of a computed value"),
    (1.7, "to the power 1.7 (a function no MLP target has"),
])
def test_other_powers_are_refused_as_what_they_are(exponent, reason):
    model = relu_then("Pow", "e", inits={"e": np.array(exponent, np.float32)})
    with pytest.raises(CompileError) as error:
        compile_to_model(model)
    message = str(error.value)
    assert reason in message and "no MLP layer" in message
    assert "--output-tensor r" in message     # the tensor before it compiles


@pytest.mark.parametrize("op, words", [
    ("LayerNormalization", "normalizes each sample by statistics computed from it"),
    ("Sin", "computes sin of values"),
    ("Softmax", "softmax over part of each sample"),
    ("Div", "divides by a value computed from the input"),
])
def test_refusals_name_the_true_reason_and_the_way_out(op, words):
    inits, extra, attrs = {}, [], {}
    if op == "LayerNormalization":
        inits = {"scale": np.ones(4, np.float32)}
        extra = ["scale"]
    elif op == "Softmax":
        attrs = {"axis": 1}                      # over the channels of each pixel
    elif op == "Div":
        extra = ["r"]
    model = relu_then(op, *extra, inits=inits, **attrs)
    with pytest.raises(CompileError) as error:
        compile_to_model(model)
    message = str(error.value)
    assert words in message and "'suspect'" in message, message
    assert message.endswith("--output-tensor r"), message
    assert "supported ops:" not in message
    # the suggestion works
    assert_equivalent(model_up_to(model, "r"), compile_to_model(model, output_tensor="r"), n=4)


def model_up_to(model, tensor):
    """The model with ``tensor`` as its output (what --output-tensor compiles)."""
    from onnx.utils import Extractor

    return Extractor(onnx.shape_inference.infer_shapes(model)).extract_model(["x"], [tensor])


# ------------------------------------------------------------------ constants from the batch
def test_a_constant_of_shape_n_by_4_times_the_input():
    """ConstantOfShape([N, 4]) * x: the same in every sample, built from the batch size."""
    inits = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64),
             "four": np.array([4], np.int64), "fc": np.eye(4, dtype=np.float32)[:3]}
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
             helper.make_node("Concat", ["n", "four"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["k"],
                              value=numpy_helper.from_array(np.array([-1.5], np.float32))),
             helper.make_node("Mul", ["k", "x"], ["m"]),
             helper.make_node("Gemm", ["m", "fc"], ["y"], transB=1)]
    model = model_of(nodes, inits, (4,), "y", (3,))
    assert_equivalent(model, compile_to_model(model), n=8)


def vit_class_token(tokens=4, dim=3):
    """A ViT's class token: a learned (1, 1, D) constant expanded to the batch and
    concatenated before the patch embeddings, then a linear head on the sequence."""
    rng = np.random.default_rng(4)
    inits = {"cls": rng.uniform(-1, 1, (1, 1, dim)).astype(np.float32),
             "emb": rng.uniform(-1, 1, (dim, dim)).astype(np.float32),
             "zero": np.array([0], np.int64), "one": np.array([1], np.int64),
             "tail": np.array([1, 1], np.int64),    # torch's expand(N, -1, -1)
             "head": rng.uniform(-1, 1, (2, (tokens + 1) * dim)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "emb"], ["patches"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
             helper.make_node("Concat", ["n", "tail"], ["shape"], axis=0),
             helper.make_node("Expand", ["cls", "shape"], ["tok"]),
             helper.make_node("Concat", ["tok", "patches"], ["seq"], axis=1),
             helper.make_node("Relu", ["seq"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "head"], ["y"], transB=1)]
    return model_of(nodes, inits, (tokens, dim), "y", (2,))


def test_a_class_token_concatenated_with_computed_values():
    model = vit_class_token()
    assert_equivalent(model, compile_to_model(model), n=8)


# ------------------------------------------------------------------ batch-less models
def fixed_input_model(nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_pensieve_style_input_reports_what_stops_the_one_sample_reading():
    """Input [12, 8] reshaped to [-1, 12, 8] (read with a batch axis, the reshape mixes it
    in, which rules that reading out), then a Sin: the refusal names the Sin, not the
    reshape, and does not send the user to --batch-axis 0."""
    inits = {"shape": np.array([-1, 12, 8], np.int64)}
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Sin", ["r"], ["y"], name="periodic")]
    model = fixed_input_model(nodes, inits, (12, 8), (1, 12, 8))
    with pytest.raises(CompileError) as error:
        compile_to_model(model)
    message = str(error.value)
    assert "'periodic'" in message and "computes sin" in message, message
    assert "first axis cannot be a batch axis" in message
    assert "--batch-axis 0" not in message


def test_a_patch_with_computed_bounds_names_the_reason_not_batch_axis_0():
    """cctsdb-style: a Slice whose start is computed from the input."""
    inits = {"axes": np.array([1], np.int64), "zero": np.array([0], np.int64),
             "end": np.array([3], np.int64)}
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["i"], to=TensorProto.INT64),
             helper.make_node("Unsqueeze", ["i", "zero"], ["start"]),
             helper.make_node("Slice", ["x", "start", "end", "axes"], ["y"], name="patch")]
    model = fixed_input_model(nodes, inits, (4, 6), (4, 3))
    with pytest.raises(CompileError) as error:
        compile_to_model(model)
    message = str(error.value)
    assert "'patch'" in message and "depend on the data" in message, message
    assert "--batch-axis 0" not in message


# ------------------------------------------------------------------ --check against float64
def cancelling_model(seed=0, n_in=64, pairs=8, scale=3000.0, delta=1e-3):
    """Pairs of ReLU neurons of size ~1e4 whose difference is ~1: float32 rounding of the
    big terms makes any float32 evaluation (onnxruntime's, the MLP's) about 1e-3 off."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, (pairs, n_in)) * scale
    w1 = np.empty((2 * pairs, n_in))
    w1[0::2], w1[1::2] = w, w * (1 + delta)
    w2 = np.zeros((pairs, 2 * pairs))
    w2[np.arange(pairs), 2 * np.arange(pairs)] = 1
    w2[np.arange(pairs), 2 * np.arange(pairs) + 1] = -1
    inits = {"w1": w1.astype(np.float32), "w2": w2.astype(np.float32)}
    # Gemm's alpha: onnxruntime scales the sum, the MLP's weights are scaled: the same
    # function, rounded differently
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1, alpha=0.3),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
    return model_of(nodes, inits, (n_in,), "y", (pairs,))


def test_check_judges_against_float64_when_the_float32_reference_is_noisy(tmp_path, capsys):
    from cnn2mlp.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(cancelling_model(), str(path))
    assert main([str(path), "-o", str(tmp_path / "m.npz"), "--check", "32",
                 "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("check passed"))
    import json
    report = json.loads((tmp_path / "r.json").read_text())["check"]
    # against onnxruntime's float32 output the MLP is off by more than the tolerance...
    assert report["max_rel_error"] > 1e-4, line
    # ...but no further from the float64 truth than onnxruntime itself (within 2x)
    truth = report["float64"]
    assert truth["mlp_rel_error"] <= 2 * truth["reference_rel_error"]
    assert truth["reference_rel_error"] > 1e-4
    assert "against a float64 evaluation of the original" in line


def test_check_still_fails_an_mlp_that_is_wrong(tmp_path, monkeypatch):
    """A planted error (every bias of the written MLP moved by 0.01) fails --check even
    though the float64 evaluation runs: the truth only forgives float32 noise."""
    from cnn2mlp.backends import get_target
    from cnn2mlp.cli import main

    target = get_target("csr")
    real_load = type(target).load

    def shifted(mlp, path):
        model = real_load(target, mlp, path)

        class Shifted:
            predict = staticmethod(lambda x: model.predict(x) + 0.01)
        return Shifted()

    monkeypatch.setattr(target, "load", shifted)
    path = tmp_path / "m.onnx"
    onnx.save(dynamo_adaptive_avg_pool(), str(path))
    assert main([str(path), "-o", str(tmp_path / "m.npz"), "--check", "8"]) == 1
