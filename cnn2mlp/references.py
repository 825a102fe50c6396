"""The original model's own runtimes, the references ``--check`` compares with: onnxruntime,
onnx.reference, Keras, TensorFlow; and a float64 evaluation of an ONNX model."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ._io import raise_if_terminated
from .errors import CompileError, first_line_of, install_hint

Runner = Callable[[np.ndarray], np.ndarray]


def onnx_runner(model_path, output: str | None = None, batchless: bool = False) -> Runner:
    """onnxruntime on the original ONNX file (or an in-memory ModelProto), fed the batch (one sample at a time if the
    model fixes the batch to 1). ``output`` names an inner tensor to return instead of the
    model's output (the logits when the compiler dropped a final Softmax)."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise CompileError("--check needs onnxruntime: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    in_memory = isinstance(model_path, onnx.ModelProto)
    source: str | bytes = model_path.SerializeToString() if in_memory else str(model_path)
    if output is not None:  # only what that tensor needs runs (not a Loop beside it)
        from .frontends.onnx.model import needed_part

        # onnx.load brings in external data from beside the file, raw bytes would not
        proto = model_path if in_memory else onnx.load(str(model_path))
        source = needed_part(proto, output).SerializeToString()
    if in_memory:
        model_path = "the ONNX model"
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if "NOT_IMPLEMENTED" in str(exc):  # e.g. no float64 Conv kernel in onnxruntime
            return reference_evaluator(source, output, first_line_of(exc))
        raise CompileError(f"{model_path}: onnxruntime, the reference for --check, cannot load "
                           f"the model: {first_line_of(exc)}") from exc
    feed = session.get_inputs()[0]
    fetch = [output] if output is not None else None
    batch = feed.shape[0] if feed.shape and isinstance(feed.shape[0], int) else None
    batch = None if batchless else batch  # a sample is the whole input: no chunking
    dtype = np.float64 if feed.type == "tensor(double)" else (
        np.float16 if feed.type == "tensor(float16)" else np.float32)

    def run_chunk(chunk: np.ndarray) -> np.ndarray:
        raise_if_terminated()  # many short calls: stop promptly after SIGTERM
        return session.run(fetch, {feed.name: chunk})[0]

    run_batch = in_fixed_batches(run_chunk, batch)

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype)
        try:
            return run_batch(x)
        except Exception as exc:
            raise CompileError(f"{model_path}: onnxruntime, the reference for --check, could not "
                               f"run the model: {str(exc).strip().splitlines()[0][:300]}") from exc

    return run


def in_fixed_batches(run: Runner, batch: int | None) -> Runner:
    """``run`` fed chunks of ``batch`` samples (the last padded with zeros) when the model
    fixes its batch size, the whole batch at once when ``batch`` is None."""
    if not batch:
        return run

    def chunked(x: np.ndarray) -> np.ndarray:
        padded = np.concatenate([x, np.zeros((-len(x) % batch,) + x.shape[1:], x.dtype)])
        return np.concatenate([np.asarray(run(padded[i:i + batch]))
                               for i in range(0, len(padded), batch)])[:len(x)]

    return chunked


def fixed_batch(proto) -> int | None:
    """The batch size an ONNX model's (first non-initializer) input fixes, or None."""
    names = {t.name for t in proto.graph.initializer}
    feed = next((i for i in proto.graph.input if i.name not in names), None)
    dims = feed.type.tensor_type.shape.dim if feed is not None else []
    return dims[0].dim_value or None if len(dims) else None


def reference_evaluator(source: bytes | str, output: str | None, why: str) -> Runner:
    """ONNX's own reference implementation (onnx.reference), for a model onnxruntime has no
    kernel for (float64 convolutions): slower, but the semantics the ONNX spec defines."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
    proto = batchnorm_as_arithmetic(proto)
    evaluator = ReferenceEvaluator(proto)
    feed = next(i for i in proto.graph.input
                if i.name not in {t.name for t in proto.graph.initializer})
    elem = feed.type.tensor_type.elem_type
    dtype = {onnx.TensorProto.DOUBLE: np.float64,
             onnx.TensorProto.FLOAT16: np.float16}.get(elem, np.float32)
    fetch = [output] if output is not None else None

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(evaluator.run(fetch, {feed.name: np.asarray(x, dtype)})[0])

    run.reference = f"onnx.reference, since onnxruntime cannot run the model ({why[:120]})"
    return run


def load_keras_model(model_path: str | Path, layer: str | None = None):
    """The Keras model in the .keras/.h5 file, loaded by Keras with ``safe_mode`` (a Lambda
    is never deserialized); up to ``layer`` when given."""
    from .tensorflow_env import prepare_tensorflow, quiet_native_logs

    prepare_tensorflow()
    try:
        with quiet_native_logs():
            import keras
    except ImportError as exc:
        raise CompileError("--check on a Keras model runs Keras: "
                           f"{install_hint('tensorflow')}") from exc
    import inspect

    load_model = keras.saving.load_model
    if "safe_mode" not in inspect.signature(load_model).parameters:
        raise CompileError(f"--check on a Keras model loads it with Keras' safe_mode, which this "
                           f"Keras ({getattr(keras, '__version__', '?')}) lacks: upgrade Keras "
                           "(2.13 or later), or compile without --check")
    try:
        with quiet_native_logs():  # the first model built starts TensorFlow's runtime
            model = load_model(str(model_path), compile=False, safe_mode=True)
    except Exception as exc:  # safe_mode refusing code, or a file Keras cannot read
        raise CompileError(f"{model_path}: Keras, the reference for --check, refused to load "
                           f"the model: {type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                           ) from exc
    if layer is not None:  # the inner layer --output-tensor named
        model = keras.Model(model.inputs, model.get_layer(layer).output)
    return model


def keras_runner(model_path: str | Path, layer: str | None = None) -> Runner:
    """Keras itself on the .keras/.h5 file."""
    model = load_keras_model(model_path, layer)

    def run(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == np.float64:  # predict() would cast to floatx (float32): call directly
            return np.concatenate([np.asarray(model(x[i:i + 256], training=False))
                                   for i in range(0, len(x), 256)])
        return np.asarray(model.predict(x, verbose=0))

    return run


def reference_runner(model_path: str | Path, logits: str | None = None,
                     output_tensor: str | None = None,
                     batchless: bool = False) -> tuple[Runner, bool]:
    """The original model's own runtime, and whether it returns the logits when the
    compiler dropped a final softmax (onnxruntime can; Keras and TensorFlow cannot).
    ``output_tensor`` (--output-tensor) is read instead of the model's output. A model
    without a batch axis (``batchless``) is run one sample at a time."""
    from .frontends import model_kind

    kind = model_kind(model_path)
    if kind == "onnx" and batchless:
        return per_sample(onnx_runner(model_path, logits or output_tensor,
                                      batchless=True)), True
    if kind == "onnx":
        return onnx_runner(model_path, logits or output_tensor), True
    if kind == "keras":
        return keras_runner(model_path, output_tensor), False
    if output_tensor is not None:
        raise CompileError(f"{model_path}: --check with --output-tensor needs an ONNX or Keras "
                           "model; compile without --check, or convert the model to ONNX")
    if kind == "savedmodel":
        from .frontends.tensorflow import savedmodel_runner

        return savedmodel_runner(Path(model_path)), False
    if kind == "tflite":
        from .frontends.tensorflow import tflite_runner

        return tflite_runner(Path(model_path)), False
    raise CompileError(f"{model_path}: --check has no reference runtime for a frozen .pb")


def per_sample(run: Runner) -> Runner:
    """A runner for a model without a batch axis, fed a batch one sample at a time."""
    def batched(x: np.ndarray) -> np.ndarray:
        outputs = []
        for sample in np.asarray(x):
            raise_if_terminated()
            outputs.append(np.asarray(run(sample)))
        return np.stack(outputs)

    batched.reference = getattr(run, "reference", "")
    return batched


def softmax(y: np.ndarray) -> np.ndarray:
    flat = y.reshape(len(y), -1).astype(np.float64)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(y.shape)


#: multiply-adds (the model's, times the inputs) onnx.reference may spend on the float64
#: evaluation when onnxruntime has no float64 kernel for an op (its Conv): about a minute
TRUTH_BUDGET = 2 * 10**9


def float64_copy(model) -> object | None:
    """The ONNX model with its float tensors, inputs, outputs and casts made double, or
    None when it holds subgraphs (their types would need the same treatment). Resize's and
    Upsample's scales stay float, as the operators require."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    keep = {n.input[i] for n in graph.node for i in ({"Resize": (2,), "Upsample": (1,)}
                                                     .get(n.op_type, ())) if len(n.input) > i}
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float64), init.name))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                return None
            if attribute.type == onnx.AttributeProto.TENSOR and \
                    attribute.t.data_type == onnx.TensorProto.FLOAT and \
                    not set(node.output) & keep:
                attribute.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(attribute.t).astype(np.float64), attribute.t.name))
            if node.op_type == "Cast" and attribute.name == "to" and \
                    attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.DOUBLE
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and info.name not in keep:
            info.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    return batchnorm_as_arithmetic(copy)


def batchnorm_as_arithmetic(model):
    """The model with each inference BatchNormalization of constant statistics written as
    ``x * a + b`` (a Mul and an Add of per-channel constants). onnx.reference (1.23) runs
    BatchNormalization-9 with its momentum's default, that is with the batch's own
    statistics: not what the model means, nor what onnxruntime does."""
    import onnx
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    ranks = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        for info in list(inferred.graph.input) + list(inferred.graph.value_info):
            if info.type.tensor_type.HasField("shape"):
                ranks[info.name] = len(info.type.tensor_type.shape.dim)
    except Exception:
        return model
    nodes = []
    for node in model.graph.node:
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        if node.op_type != "BatchNormalization" or training or len(node.output) != 1 or \
                not all(i in inits for i in node.input[1:5]) or node.input[0] not in ranks:
            nodes.append(node)
            continue
        scale, bias, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64)
                                  for i in node.input[1:5])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        shape = (-1,) + (1,) * (ranks[node.input[0]] - 2)
        a = scale / np.sqrt(var + np.float64(np.float32(eps)))
        dtype = numpy_helper.to_array(inits[node.input[1]]).dtype
        names = [f"{node.output[0]}__bn_{k}" for k in ("a", "b", "ax")]
        model.graph.initializer.extend([
            numpy_helper.from_array(a.reshape(shape).astype(dtype), names[0]),
            numpy_helper.from_array((bias - mean * a).reshape(shape).astype(dtype), names[1])])
        nodes += [helper.make_node("Mul", [node.input[0], names[0]], [names[2]]),
                  helper.make_node("Add", [names[2], names[1]], [node.output[0]])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def truth_runner(model_path, output: str | None, batchless: bool,
                 cost: int) -> tuple[Runner | None, str]:
    """The original ONNX model evaluated in float64 (onnxruntime on a double copy, or
    onnx.reference when onnxruntime has no double kernel and ``cost`` multiply-adds fit
    TRUTH_BUDGET), and a note when there is none."""
    import onnx

    proto = onnx.load(str(model_path))
    if output is not None:
        from .frontends.onnx.model import needed_part

        proto = needed_part(proto, output)
    double = float64_copy(proto)
    if double is None:
        return None, "no float64 evaluation: the model holds subgraphs"
    fetch = [output] if output is not None else None
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(double.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(fetch, {name: np.asarray(x, np.float64)})[0])
    except Exception:
        if cost > TRUTH_BUDGET:
            return None, ("no float64 evaluation: onnxruntime has no float64 kernel for an op "
                          f"of this model, and onnx.reference would take {cost:.2g} "
                          "multiply-adds (use fewer --check inputs)")
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(double)
        name = next(i.name for i in double.graph.input
                    if i.name not in {t.name for t in double.graph.initializer})

        def run(x: np.ndarray) -> np.ndarray:
            raise_if_terminated()
            return np.asarray(evaluator.run(fetch, {name: np.asarray(x, np.float64)})[0])
    # a model without a batch axis takes one sample; one that fixes the batch, that many
    return (per_sample(run) if batchless else in_fixed_batches(run, fixed_batch(double))), ""
