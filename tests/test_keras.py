"""Real Keras models built with TensorFlow, saved as .keras, .h5 and SavedModel: each
compiles, and cnn2mlp.load(...).predict matches model.predict within 1e-4 * max(1, |y|)."""
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras", reason="install the tensorflow extra")
L = keras.layers

from cnn2mlp.comparison import compare  # noqa: E402
from cnn2mlp.cli import main  # noqa: E402
from cnn2mlp.testing import compile_to_model  # noqa: E402


def randomize(model, seed=0):
    """Give every bias random non-zero values (fresh layers have zero biases, which hide a
    dropped or misplaced bias) and BatchNormalization non-trivial statistics."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        path = getattr(w, "path", None) or w.name  # tf_keras variables have no .path
        if any(k in path for k in ("gamma", "moving_variance")):
            w.assign(rng.uniform(0.5, 1.5, tuple(w.shape)))
        elif any(k in path for k in ("beta", "moving_mean", "bias")):
            sign = np.where(rng.uniform(size=tuple(w.shape)) < 0.5, -1.0, 1.0)
            w.assign(sign * rng.uniform(0.1, 0.6, tuple(w.shape)))
    biases = [w for w in model.weights if "bias" in (getattr(w, "path", None) or w.name)]
    assert all(np.all(np.asarray(b) != 0) for b in biases)
    return model


def lenet():
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        L.Conv2D(6, 5, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(8, 3, activation="relu"),
        L.AveragePooling2D(pool_size=2, strides=1, padding="same"),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ])


def tanh_net():
    return keras.Sequential([
        keras.Input((12, 12, 2)),
        L.Conv2D(4, 3, strides=2, padding="same", activation="tanh"),
        L.Conv2D(4, 3, activation="sigmoid", use_bias=False),
        L.GlobalAveragePooling2D(),
        L.Dense(5, activation="tanh"),
        L.Dense(3),
    ])


def depthwise_bn():
    return keras.Sequential([
        keras.Input((10, 10, 3)),
        L.ZeroPadding2D(((1, 2), (0, 3))),
        L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same"),
        L.BatchNormalization(),
        L.ReLU(),
        L.Conv2D(5, 1, groups=1),
        L.BatchNormalization(epsilon=1e-2),
        L.LeakyReLU(negative_slope=0.2),
        L.GlobalMaxPooling2D(),
        L.Dense(4),
    ])


def causal_conv1d():
    return keras.Sequential([
        keras.Input((20, 3)),
        L.ZeroPadding1D((2, 1)),
        L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu"),
        L.Conv1D(6, 3, strides=2, padding="same", groups=2),
        L.Activation("leaky_relu"),
        L.MaxPooling1D(pool_size=3, strides=2, padding="same"),
        L.AveragePooling1D(2),
        L.GlobalAveragePooling1D(),
        L.Dense(2, activation="sigmoid"),
    ])


def functional():
    inputs = keras.Input((9, 9, 3))
    x = L.Conv2D(4, 3, strides=2, padding="same", name="stem")(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Reshape((5 * 5 * 4,))(x)
    x = L.Dense(6, activation="relu")(x)
    x = L.Reshape((2, 3))(x)
    x = L.Dense(2)(x)  # Dense on the last axis of a (2, 3) tensor
    x = L.Flatten()(x)
    outputs = L.Identity()(x)
    return keras.Model(inputs, outputs)


def residual_dag():
    """A Functional DAG with every merge layer: a ResNet-style Add, Maximum, Subtract,
    Average of three, Minimum, Concatenate; the stem is read by four layers."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    a = L.Conv2D(4, 3, padding="same")(x)
    a = L.BatchNormalization()(a)
    a = L.ReLU()(a)
    a = L.Conv2D(4, 3, padding="same")(a)
    y = L.Activation("relu")(L.Add()([a, x]))
    b = L.Conv2D(4, 1, activation="tanh")(x)
    m = L.Maximum()([y, b])
    d = L.Subtract()([m, x])
    av = L.Average()([d, y, b])
    mn = L.Minimum()([av, m])
    c = L.Concatenate()([mn, b])
    c = L.MaxPooling2D()(c)
    out = L.Dense(5)(L.Flatten()(c))
    return keras.Model(inputs, out)


def inception_1d():
    """Branches of different depth concatenated on the channel and on the time axis."""
    inputs = keras.Input((12, 2))
    a = L.Conv1D(3, 1, activation="relu")(inputs)
    b = L.Conv1D(3, 3, padding="same", activation="relu")(inputs)
    b = L.Conv1D(3, 3, padding="same", activation="sigmoid")(b)
    c = L.Concatenate(axis=-1)([a, b, inputs])
    t = L.Concatenate(axis=1)([c, L.Conv1D(8, 5, activation="relu")(c)])
    out = L.Dense(3)(L.GlobalAveragePooling1D()(t))
    return keras.Model(inputs, out)


def mobilenet_v2_block():
    """MobileNetV2's inverted residual: 1×1 expand + ReLU(6), depthwise 3×3 + relu6,
    1×1 project, Add; a ReLU with max_value and negative_slope at the head."""
    inputs = keras.Input((6, 6, 4))
    x = L.Conv2D(12, 1)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = L.Conv2D(4, 1)(x)
    x = L.Add()([x, inputs])
    x = L.ReLU(max_value=2.0, negative_slope=0.1)(x)
    out = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, out)


def channels_first_net():
    """Every spatial layer with data_format="channels_first", BatchNormalization on axis 1
    and Flatten's own channels_first reordering."""
    cf = "channels_first"
    inputs = keras.Input((3, 9, 8))
    x = L.ZeroPadding2D(((1, 0), (0, 2)), data_format=cf)(inputs)
    x = L.Conv2D(4, 3, strides=2, padding="same", data_format=cf)(x)
    x = L.BatchNormalization(axis=1)(x)
    x = L.ReLU()(x)
    x = L.SeparableConv2D(4, 3, padding="same", data_format=cf, activation="relu")(x)
    x = L.MaxPooling2D(2, data_format=cf)(x)
    x = L.UpSampling2D(2, interpolation="bilinear", data_format=cf)(x)
    x = L.Conv2DTranspose(3, 2, strides=2, data_format=cf)(x)
    x = L.Cropping2D(((1, 2), (0, 1)), data_format=cf)(x)
    x = L.AveragePooling2D(2, data_format=cf)(x)
    y = L.GlobalMaxPooling2D(data_format=cf)(x)
    x = L.Flatten(data_format=cf)(x)
    return keras.Model(inputs, L.Dense(4)(L.Concatenate()([x, y])))


def channels_first_1d():
    cf = "channels_first"
    return keras.Sequential([
        keras.Input((3, 16)),
        L.Conv1D(4, 3, dilation_rate=2, padding="causal", data_format=cf, activation="relu"),
        L.UpSampling1D(2),
        L.DepthwiseConv1D(3, data_format=cf),
        L.GlobalAveragePooling1D(data_format=cf),
        L.Dense(3),
    ])


def preprocessing_net():
    """Normalization from the config and adapted, bilinear UpSampling2D, and ReLU with a
    threshold (a jump: ThresholdedRelu), a slope and a ceiling."""
    inputs = keras.Input((5, 4, 2))
    x = L.Normalization(mean=[0.5, -1.0], variance=[2.0, 0.25])(inputs)
    adapted = L.Normalization(axis=(1, 3))
    adapted.adapt(np.random.default_rng(3).normal(1.0, 2.0, (32, 5, 4, 2)).astype("float32"))
    x = adapted(x)
    x = L.Conv2D(3, 3, padding="same")(x)
    x = L.ReLU(threshold=0.3, negative_slope=0.1, max_value=2.0)(x)
    x = L.UpSampling2D((2, 3), interpolation="bilinear")(x)
    x = L.Conv2D(3, 3, strides=2)(x)
    x = L.ReLU(threshold=0.2, max_value=1.5)(x)
    return keras.Model(inputs, L.Dense(4)(L.Flatten()(x)))


def dilated_convs():
    """Dilated and causal convolutions, which a .tflite file writes as SpaceToBatchND →
    Conv2D → BatchToSpaceND."""
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, padding="same", dilation_rate=2, activation="relu")(inputs)
    x = L.DepthwiseConv2D(3, dilation_rate=(2, 1))(x)
    x = L.SeparableConv2D(4, 3, padding="same", dilation_rate=2, activation="relu")(x)
    x = L.Reshape((-1, 4))(x)
    x = L.Conv1D(3, 3, padding="causal", dilation_rate=3, activation="relu")(x)
    x = L.Conv1D(3, 2, padding="same", dilation_rate=2)(x)
    return keras.Model(inputs, L.Dense(5)(L.Flatten()(x)))


MODELS = {"channels_first": channels_first_net, "channels_first_1d": channels_first_1d,
          "preprocessing": preprocessing_net, "dilated": dilated_convs,
          "mobilenet_v2_block": mobilenet_v2_block, "lenet": lenet, "tanh": tanh_net, "depthwise_bn": depthwise_bn,
          "causal_conv1d": causal_conv1d, "functional": functional,
          "residual_dag": residual_dag, "inception_1d": inception_1d}


def inputs_for(model, n=16, seed=0):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, (n,) + shape).astype(np.float32)


def assert_close(reference, got):
    comparison = compare(reference, got.reshape(reference.shape), 1e-4)
    assert comparison.passed, comparison.describe()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_files(tmp_path, name, fmt):
    model = randomize(MODELS[name]())
    path = tmp_path / f"{name}.{fmt}"
    model.save(path)
    x = inputs_for(model)
    reference = model.predict(x, verbose=0)
    compiled = compile_to_model(path)
    got = compiled.predict(x)
    if compiled.result.graph.meta.logits:  # softmax dropped: compare probabilities
        from cnn2mlp.references import softmax

        got = softmax(got)
    assert_close(reference, got)


def test_cli_check_on_keras_and_savedmodel(tmp_path, capsys):
    model = randomize(depthwise_bn())
    model.save(tmp_path / "m.keras")
    model.export(str(tmp_path / "saved"), verbose=False)
    assert main([str(tmp_path / "m.keras"), "-o", str(tmp_path / "a.npz"), "--check", "8"]) == 0
    assert main([str(tmp_path / "saved"), "-o", str(tmp_path / "b.npz"), "--check", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("check passed") == 2


MARKER_CODE = """
import keras, sys
marker = sys.argv[1]
def side_effect(x):
    open(marker, "w").write("ran")
    return x
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                          keras.layers.Lambda(side_effect), keras.layers.Dense(2)])
model.save(sys.argv[2])
"""


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_lambda_is_refused_and_never_runs(tmp_path, fmt):
    marker, path = tmp_path / "marker.txt", tmp_path / f"lambda.{fmt}"
    # Build and save in another process; saving may trace the function once: delete after.
    subprocess.run([sys.executable, "-c", MARKER_CODE, str(marker), str(path)], check=True,
                   capture_output=True)
    marker.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(path), "-o",
                           str(tmp_path / "o.npz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Lambda" in proc.stderr and "never runs" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "o.npz").exists()


def test_keras_frontend_does_not_import_tensorflow(tmp_path):
    model = lenet()
    model.save(tmp_path / "m.keras")
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from cnn2mlp.cli import main\n"
            f"sys.exit(main([{str(tmp_path / 'm.keras')!r}, '-o', {str(tmp_path / 'm.npz')!r},"
            " '--quiet']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_savedmodel_without_tensorflow_says_which_extra(tmp_path):
    model = lenet()
    model.export(str(tmp_path / "saved"), verbose=False)
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['tf2onnx'] = None\n"
            "from cnn2mlp.cli import main\n"
            f"sys.exit(main([{str(tmp_path / 'saved')!r}, '-o', {str(tmp_path / 'm.npz')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert '".[tensorflow]"' in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_layer_class_is_named(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(2, 3, name="conv"),
                              L.Masking(name="mask"), L.Flatten()])
    model.save(tmp_path / "m.keras")
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(tmp_path / "m.keras"),
                           "-o", str(tmp_path / "m.npz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "layer 'mask' (Masking) is not a layer cnn2mlp converts" in proc.stderr
    assert "--output-tensor conv" in proc.stderr and "supported layers" not in proc.stderr


def test_tf_keras_2_files(tmp_path):
    """Files written by tf.keras 2.x (the tf_keras package): legacy .h5 configs with
    batch_input_shape and list-style inbound nodes, and its own .keras archives."""
    tfk = pytest.importorskip("tf_keras", reason="install the tensorflow extra")
    K = tfk.layers
    inputs = K.Input((12, 12, 2))
    x = K.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = K.BatchNormalization()(x)
    x = K.DepthwiseConv2D(3, padding="same")(x)
    x = K.LeakyReLU(0.3)(x)
    x = K.MaxPooling2D()(x)
    x = K.Flatten()(x)
    functional_model = tfk.Model(inputs, K.Dense(5, activation="tanh")(x))
    sequential_model = tfk.Sequential([K.InputLayer((20, 2)), K.Conv1D(3, 5, padding="causal"),
                                       K.Activation("sigmoid"), K.GlobalMaxPooling1D(),
                                       K.Dense(2)])
    for model in (functional_model, sequential_model):
        randomize(model)
        x = inputs_for(model)
        reference = model.predict(x, verbose=0)
        for fmt in ("h5", "keras"):
            path = tmp_path / f"{model.name}.{fmt}"
            model.save(path)
            assert_close(reference, compile_to_model(path).predict(x))


def test_tflite_float_model(tmp_path, capsys):
    tf = pytest.importorskip("tensorflow", reason="install the tensorflow extra")
    model = randomize(depthwise_bn())
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    x = inputs_for(model)
    assert_close(model.predict(x, verbose=0), compile_to_model(path).predict(x))
    # --check runs the TensorFlow Lite interpreter on the file itself
    assert main([str(path), "-o", str(tmp_path / "m.npz"), "--check", "8"]) == 0
    assert "check passed" in capsys.readouterr().out


def test_check_needs_keras_safe_mode(tmp_path, monkeypatch):
    """--check loads the model with Keras: only with safe_mode, and a refusal is exit 2."""
    from cnn2mlp.references import keras_runner
    from cnn2mlp.errors import CompileError

    path = tmp_path / "m.keras"
    lenet().save(path)

    def old_load_model(filepath, custom_objects=None, compile=True):  # no safe_mode
        raise AssertionError("must not be called")

    monkeypatch.setattr(keras.saving, "load_model", old_load_model)
    with pytest.raises(CompileError, match="lacks: upgrade Keras"):
        keras_runner(path)

    def refusing(filepath, compile=True, safe_mode=True):
        raise ValueError("Requested the deserialization of a Lambda layer")

    monkeypatch.setattr(keras.saving, "load_model", refusing)
    with pytest.raises(CompileError, match="refused to load the model: ValueError"):
        keras_runner(path)


def test_tf_keras_2_functional_dag(tmp_path):
    """tf.keras 2.x writes merge layers' inputs as one list-style inbound node."""
    tfk = pytest.importorskip("tf_keras", reason="install the tensorflow extra")
    K = tfk.layers
    inputs = K.Input((6, 6, 2))
    x = K.Conv2D(3, 3, padding="same", activation="relu")(inputs)
    y = K.Conv2D(3, 3, padding="same")(x)
    z = K.Add()([x, y])
    z = K.Concatenate()([z, K.Maximum()([x, y])])
    model = tfk.Model(inputs, K.Dense(2)(K.Flatten()(z)))
    randomize(model)
    x = inputs_for(model)
    reference = model.predict(x, verbose=0)
    for fmt in ("h5", "keras"):
        path = tmp_path / f"dag.{fmt}"
        model.save(path)
        assert_close(reference, compile_to_model(path).predict(x))


def test_keras_multiply_is_refused_as_a_product(tmp_path):
    inputs = keras.Input((4,))
    gate = L.Dense(4, activation="sigmoid")(inputs)
    model = keras.Model(inputs, L.Dense(2)(L.Multiply(name="gating")([inputs, gate])))
    model.save(tmp_path / "m.keras")
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(tmp_path / "m.keras"),
                           "-o", str(tmp_path / "m.npz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "'gating' (Multiply) is a product of two values" in proc.stderr


def activations_zoo():
    """Every activation Keras names, PReLU (per channel, shared spatial axes), ELU, a
    Softmax layer at the end."""
    inputs = keras.Input((6, 6, 3))
    x = inputs
    for act in ("elu", "selu", "softplus", "softsign", "silu", "gelu", "mish", "hard_sigmoid",
                "hard_silu", "relu6"):
        x = L.Conv2D(3, 3, padding="same", activation=act)(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.ELU(alpha=0.5)(x)
    x = L.Dense(4)(L.Flatten()(x))
    return keras.Model(inputs, L.Softmax()(x))


def test_keras_activations_and_prelu(tmp_path):
    model = randomize(activations_zoo())
    for w in model.weights:
        if "alpha" in (getattr(w, "path", None) or w.name):
            w.assign(np.random.default_rng(1).uniform(-0.5, 1.5, tuple(w.shape)))
    x = inputs_for(model)
    reference = model.predict(x, verbose=0)
    from cnn2mlp.references import softmax

    for fmt in ("keras", "h5"):
        path = tmp_path / f"zoo.{fmt}"
        model.save(path)
        assert_close(reference, softmax(compile_to_model(path).predict(x)))


def test_tf_keras_hard_sigmoid_has_its_own_slope(tmp_path):
    tfk = pytest.importorskip("tf_keras", reason="install the tensorflow extra")
    K = tfk.layers
    model = tfk.Sequential([K.InputLayer((5,)), K.Dense(4, activation="hard_sigmoid"),
                            K.Dense(2)])
    randomize(model)
    x = inputs_for(model) * 4
    reference = model.predict(x, verbose=0)
    for fmt in ("h5", "keras"):
        model.save(tmp_path / f"hs.{fmt}")
        assert_close(reference, compile_to_model(tmp_path / f"hs.{fmt}").predict(x))


def decoder_zoo():
    """Rescaling, SeparableConv2D, Conv2DTranspose (valid and same, strided), UpSampling2D,
    Cropping2D, Permute; a 1D branch with SeparableConv1D, Conv1DTranspose and
    RepeatVector."""
    inputs = keras.Input((6, 5, 2))
    x = L.Rescaling(1 / 255.0, offset=-0.5)(inputs)
    x = L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, activation="relu")(x)
    x = L.Conv2DTranspose(3, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv2DTranspose(2, (2, 3), strides=(1, 2), padding="valid")(x)
    x = L.UpSampling2D((2, 1))(x)
    x = L.Cropping2D(((1, 2), (3, 1)))(x)
    x = L.Permute((2, 1, 3))(x)
    x = L.Flatten()(x)
    v = L.RepeatVector(4)(L.Dense(3, activation="tanh")(x))
    v = L.SeparableConv1D(4, 2, padding="same")(v)
    v = L.Conv1DTranspose(2, 3, strides=2)(v)
    out = L.Dense(3)(L.Flatten()(v))
    return keras.Model(inputs, out)


def test_keras_decoder_layers(tmp_path):
    model = randomize(decoder_zoo())
    x = inputs_for(model) * 255
    reference = model.predict(x, verbose=0)
    for fmt in ("keras", "h5"):
        path = tmp_path / f"decoder.{fmt}"
        model.save(path)
        assert_close(reference, compile_to_model(path).predict(x))


@pytest.mark.parametrize("fmt, name", [
    ("savedmodel", "lenet"), ("savedmodel", "depthwise_bn"), ("savedmodel", "residual_dag")] + [
    (fmt, name) for fmt in ("savedmodel", "tflite")
    for name in ("preprocessing", "dilated")] + [
    ("savedmodel", "channels_first")])  # TFLite cannot convert channels_first convolutions
def test_models_through_tf2onnx(tmp_path, name, fmt):
    """Models exported as a SavedModel or converted to .tflite: tf2onnx's ONNX (threshold
    gates, dilated-conv patterns, a final softmax) compiles to the same function."""
    tf = pytest.importorskip("tensorflow", reason="install the tensorflow extra")
    model = randomize(MODELS[name]())
    if fmt == "savedmodel":
        path = tmp_path / "saved"
        model.export(str(path), verbose=False)
    else:
        path = tmp_path / "m.tflite"
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    x = inputs_for(model)
    compiled = compile_to_model(path)
    got = compiled.predict(x)
    if compiled.result.graph.meta.logits:  # softmax dropped: compare probabilities
        from cnn2mlp.references import softmax

        got = softmax(got)
    assert_close(model.predict(x, verbose=0), got)
