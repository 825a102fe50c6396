"""A Keras user's first hour: refusals that say why and name the cut that compiles,
--output-tensor that cuts before a refused layer (and catches a misspelt name), a --check
that keeps TensorFlow's log lines off the terminal and says what it compared."""
import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="install the tensorflow extra")
L = keras.layers


def randomized(model):
    """Non-zero biases: a dropped bias shows."""
    rng = np.random.default_rng(7)
    for w in model.weights:
        if "bias" in (getattr(w, "path", None) or w.name):
            w.assign(rng.uniform(0.1, 0.6, tuple(w.shape)) * rng.choice([-1, 1], tuple(w.shape)))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu", name="conv2d")(inp)
    x = L.Conv2D(4, 3, name="conv2d_1")(x)
    s = L.GlobalAveragePooling2D(name="squeeze")(x)
    s = L.Dense(4, activation="sigmoid", name="excite")(s)
    x = L.Multiply(name="multiply")([x, L.Reshape((1, 1, 4), name="gate")(s)])
    out = L.Dense(3, activation="softmax", name="head")(L.Flatten()(x))
    randomized(keras.Model(inp, out)).save(folder / "se.keras")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu", name="conv2d")(inp)
    x = L.LayerNormalization(name="ln")(x)
    out = L.Dense(3, name="head")(L.Flatten()(x))
    randomized(keras.Model(inp, out)).save(folder / "ln.keras")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu", name="conv2d")(inp)
    out = L.Dense(3, activation="softmax", name="head")(L.Flatten()(x))
    randomized(keras.Model(inp, out)).save(folder / "plain.keras")
    return folder


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cnn2mlp.compile", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_output_tensor_cuts_before_a_refused_layer(models, tmp_path):
    out = tmp_path / "cut.npz"
    proc = run(models / "se.keras", "-o", out, "--output-tensor", "conv2d_1", "--check", "5")
    assert proc.returncode == 0, proc.stderr
    assert "check passed" in proc.stdout and out.exists()


def test_a_misspelt_output_tensor_is_not_a_layer(models, tmp_path):
    proc = run(models / "se.keras", "-o", tmp_path / "x.npz", "--output-tensor", "conv2dd")
    assert proc.returncode == 2
    assert "'conv2dd' is not a layer of the model; did you mean" in proc.stderr
    assert "Multiply" not in proc.stderr


def test_a_refused_product_names_the_cut_that_compiles(models, tmp_path):
    proc = run(models / "se.keras", "-o", tmp_path / "x.npz")
    assert proc.returncode == 2
    assert "Compile the network up to the layer before it: --output-tensor conv2d_1" in \
        proc.stderr


def test_layer_normalization_gets_its_reason_and_a_cut_not_a_list(models, tmp_path):
    proc = run(models / "ln.keras", "-o", tmp_path / "x.npz")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "normalizes each sample by statistics computed from it" in proc.stderr
    assert "--output-tensor conv2d" in proc.stderr
    assert "supported layers" not in proc.stderr and "Multiply" not in proc.stderr
    cut = run(models / "ln.keras", "-o", tmp_path / "x.npz", "--output-tensor", "conv2d")
    assert cut.returncode == 0, cut.stderr


def test_a_keras_check_is_quiet_and_says_it_compares_probabilities(models, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_", "GLOG", "ABSL"))}  # as a user's shell has it
    proc = run(models / "plain.keras", "-o", tmp_path / "p.npz", "--check", "5", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert all(line.startswith("note: ") for line in lines), lines
    assert "check passed: on probabilities" in proc.stdout
