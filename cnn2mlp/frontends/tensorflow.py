"""TensorFlow SavedModel folders, frozen GraphDef ``.pb`` files and float ``.tflite`` models,
converted in memory to ONNX by tf2onnx, then read by the ONNX frontend. Needs the
``tensorflow`` extra."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..errors import CompileError, install_hint
from ..tensorflow_env import prepare_tensorflow, quiet_native_logs

OPSET = 13


def import_tensorflow():
    prepare_tensorflow()
    try:
        with quiet_native_logs():
            import tensorflow as tf
            import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise CompileError("SavedModel and .pb models need TensorFlow and tf2onnx: "
                           f"{install_hint('tensorflow')} (or use a .keras/.h5/.onnx "
                           "file, which need neither)") from exc
    return tf


def tensorflow_to_onnx(path: Path, kind: str) -> onnx.ModelProto:
    tf = import_tensorflow()
    from tf2onnx import convert, tf_loader

    try:
        if kind == "tflite":
            model, _ = convert.from_tflite(str(path), opset=OPSET,
                                           custom_rewriter=[rewrite_tflite_dilations])
            return model
        if kind == "savedmodel":
            graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
                str(path), None, None, return_tensors_to_rename=True)
        else:
            graph_def = tf.compat.v1.GraphDef()
            graph_def.ParseFromString(path.read_bytes())
            inputs, outputs = graph_def_io(graph_def)
            renames = None
        model, _ = convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                          opset=OPSET, tensors_to_rename=renames)
    except CompileError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"{path}: tf2onnx could not convert the model: {first}") from exc
    return model


def rewrite_tflite_dilations(g, ops):
    """Fold TFLite's dilated convolutions back into one Conv with dilations.

    A .tflite file writes a dilated (or causal) Conv1D as SpaceToBatchND → ExpandDims →
    Conv2D → Reshape → BatchToSpaceND (and some 2D ones as SpaceToBatchND → Conv2D →
    BatchToSpaceND), with the bias fused into the Conv2D. tf2onnx's own dilation rewriter
    expects a Squeeze and a two-input Conv2D, misses these, and emits chains of Reshape and
    Transpose that mix the batch axis with space. The pattern is exactly a dilated
    convolution: SpaceToBatchND pads by (p0, p1) and splits into `block` phases, each phase
    is a VALID convolution, BatchToSpaceND interleaves them and crops (c0, c1); that is the
    convolution with dilation `block` and padding (p0 - c0, p1 - c1)."""
    ops = list(ops)
    for b2s in list(ops):
        if b2s.type != "BatchToSpaceND":
            continue
        chain = match_dilation_chain(b2s)
        if chain is None:
            continue
        s2b, expand, conv, squeeze = chain
        block = s2b.inputs[1].get_tensor_value(as_list=True)
        paddings = s2b.inputs[2].get_tensor_value(as_list=True)
        crops = b2s.inputs[2].get_tensor_value(as_list=True)
        if block != b2s.inputs[1].get_tensor_value(as_list=True):
            continue
        pads = [(p[0] - c[0], p[1] - c[1]) for p, c in zip(paddings, crops)]
        if any(lo < 0 or hi < 0 for lo, hi in pads):
            continue
        if expand is not None:  # 1D: the spatial axis is W of the NHWC Conv2D
            block, pads = [1] + block, [(0, 0)] + pads
            g.replace_inputs(expand, [s2b.input[0], expand.input[1]])
            source, target = g.get_shape(s2b.input[0]), g.get_shape(b2s.output[0])
            g.set_shape(expand.output[0], source[:1] + [1] + source[1:])
            g.set_shape(conv.output[0], target[:1] + [1] + target[1:])
            if squeeze.type == "Reshape":  # its constant target has the undilated length
                squeeze = g.make_node("Squeeze", [conv.output[0]], attr={"squeeze_dims": [1]},
                                      shapes=[target], dtypes=[g.get_dtype(b2s.output[0])])
                ops.append(squeeze)
        else:
            g.replace_inputs(conv, [s2b.input[0]] + conv.input[1:])
        conv.set_attr("dilations", [1] + block + [1])
        conv.set_attr("padding", "EXPLICIT")
        conv.set_attr("explicit_paddings", [0, 0] + [v for lo_hi in pads for v in lo_hi] + [0, 0])
        last = squeeze if squeeze is not None else conv
        g.copy_shape(b2s.output[0], last.output[0])
        g.replace_all_inputs(b2s.output[0], last.output[0], ops=ops)
    return ops


def match_dilation_chain(b2s):
    """(SpaceToBatchND, ExpandDims or None, Conv2D, squeeze or None) feeding ``b2s``, with
    constant block and paddings and a VALID convolution; None when ``b2s`` is anything else."""
    node, squeeze, expand = b2s.inputs[0], None, None
    if node is not None and node.type in ("Squeeze", "Reshape"):
        squeeze, node = node, node.inputs[0]
    if node is None or node.type not in ("Conv2D", "DepthwiseConv2dNative"):
        return None
    conv, node = node, node.inputs[0]
    if node is not None and node.type == "ExpandDims":
        expand, node = node, node.inputs[0]
    if node is None or node.type != "SpaceToBatchND" or (squeeze is None) != (expand is None):
        return None
    if not all(t.is_const() for t in (node.inputs[1], node.inputs[2], b2s.inputs[1],
                                      b2s.inputs[2])):
        return None
    if expand is not None and not is_unit_axis_pair(expand, squeeze, conv):
        return None
    if conv.get_attr_value("padding") not in (b"VALID", "VALID"):
        return None
    if any(d != 1 for d in conv.get_attr_value("dilations", [1, 1, 1, 1])):
        return None
    return node, expand, conv, squeeze


def is_unit_axis_pair(expand, squeeze, conv) -> bool:
    """ExpandDims adds axis 1 and the squeeze (a Squeeze, or the Reshape TFLite writes for
    one) removes it again: (N, W, C) → (N, 1, W, C) → conv → (N, 1, W', C') → (N, W', C')."""
    if expand.inputs[1].get_tensor_value(as_list=True) not in (1, [1], -3, [-3]):
        return False
    if squeeze.type == "Squeeze":
        return squeeze.get_attr_value("squeeze_dims") in ([1], [-3])
    before, after = squeeze.graph.get_shape(conv.output[0]), squeeze.graph.get_shape(
        squeeze.output[0])
    return (before is not None and after is not None and len(before) == 4 and before[1] == 1
            and list(after[1:]) == [before[2], before[3]] and before[2] >= 0)


def graph_def_io(graph_def) -> tuple[list[str], list[str]]:
    """Inputs: the Placeholders; outputs: the nodes nothing else reads."""
    read = {name.split(":")[0].lstrip("^") for node in graph_def.node for name in node.input}
    inputs = [f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder"]
    outputs = [f"{n.name}:0" for n in graph_def.node
               if n.name not in read and n.op not in ("NoOp", "Const", "Placeholder")]
    if len(inputs) != 1 or len(outputs) != 1:
        raise CompileError(f"the GraphDef has {len(inputs)} inputs and {len(outputs)} outputs; "
                           "cnn2mlp converts models with one of each")
    return inputs, outputs


def savedmodel_runner(path: Path):
    """TensorFlow itself on the SavedModel's serving signature (the reference for --check)."""
    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]

    def run(x):
        outputs = serve(tf.constant(x))
        return next(iter(outputs.values())).numpy()

    return run


def tflite_runner(path: Path):
    """The TensorFlow Lite interpreter on the .tflite file (the reference for --check)."""
    tf = import_tensorflow()
    interpreter = tf.lite.Interpreter(model_path=str(path))
    feed = interpreter.get_input_details()[0]
    fetch = interpreter.get_output_details()[0]

    def run(x):
        outputs = []
        for sample in x:  # converted models usually fix the batch to 1
            interpreter.resize_tensor_input(feed["index"], (1,) + sample.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(feed["index"], sample[None].astype(feed["dtype"]))
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(fetch["index"]))
        return np.concatenate(outputs)

    return run
