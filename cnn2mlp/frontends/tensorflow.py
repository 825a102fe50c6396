"""TensorFlow SavedModel folders, frozen GraphDef ``.pb`` files and float ``.tflite`` models,
converted in memory to ONNX by tf2onnx, then read by the ONNX frontend. Needs the
``tensorflow`` extra."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from ..errors import CompileError

OPSET = 13


def import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise CompileError("SavedModel and .pb models need TensorFlow and tf2onnx: "
                           "pip install 'cnn2mlp[tensorflow]' (or use a .keras/.h5/.onnx "
                           "file, which need neither)") from exc
    return tf


def tensorflow_to_onnx(path: Path, kind: str) -> onnx.ModelProto:
    tf = import_tensorflow()
    from tf2onnx import convert, tf_loader

    try:
        if kind == "tflite":
            model, _ = convert.from_tflite(str(path), opset=OPSET)
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
