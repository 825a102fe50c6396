"""The input domain a compile assumes: read off the scaling a model starts with when no
--input-range is given (ir/domain.py), printed, reported, sampled by --check, and what the
OpenCV target's ReLU shift is exact on."""
import json

import numpy as np
import onnx
import pytest

from cnn2mlp.cli import main
from cnn2mlp.frontends import load_model
from cnn2mlp.ir.domain import infer_input_domain
from cnn2mlp.references import onnx_runner
from cnn2mlp.testing import OnnxBuilder

GEO = {"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1),
       "group": 1, "out_channels": 4}


def cnn(preprocess) -> onnx.ModelProto:
    """A small ReLU CNN with negative outputs, after ``preprocess(builder)``."""
    b = OnnxBuilder((2, 6, 6), batch="N", opset=13, seed=3)
    preprocess(b)
    b.conv(GEO)
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(8)
    b.activation("Relu")
    b.dense(3)
    return b.build()


def divide_by_255(b):
    b.node("Div", [b.current, b.const(np.array(255.0, np.float32))])


def scale_to_plus_minus_one(b):
    b.node("Mul", [b.current, b.const(np.array(1 / 127.5, np.float32))])
    b.node("Add", [b.current, b.const(np.array(-1.0, np.float32))])


def negate_and_scale(b):  # a negative scale: the preimage's ends swap
    b.node("Mul", [b.current, b.const(np.array(-1 / 255, np.float32))])


def standardize(b):
    b.normalize(mean=120.0, std=50.0)


def domain_of(model, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return infer_input_domain(load_model(path))


@pytest.mark.parametrize("preprocess, low, high", [
    (divide_by_255, 0.0, 255.0),
    (scale_to_plus_minus_one, 0.0, 255.0),
    (negate_and_scale, -255.0, 0.0),
])
def test_a_leading_scaling_gives_its_pixel_range(tmp_path, preprocess, low, high):
    domain = domain_of(cnn(preprocess), tmp_path)
    assert (domain.low, domain.high) == pytest.approx((low, high), rel=1e-5)
    assert "inferred" in domain.source and "--input-range" in domain.source


def test_a_standardization_gives_mean_plus_minus_three_deviations(tmp_path):
    domain = domain_of(cnn(standardize), tmp_path)
    # per channel mean 120 + U(-0.1, 0.1), std 50 + U(0, 0.1): about 120 ± 150
    assert -31 < domain.low < -29.5 and 269.5 < domain.high < 271
    assert "standard deviations" in domain.source


def test_a_model_without_preprocessing_keeps_the_default(tmp_path):
    assert domain_of(cnn(lambda b: None), tmp_path) is None


def compile_xml(tmp_path, model, *extra):
    src, out, report = tmp_path / "m.onnx", tmp_path / "m.xml", tmp_path / "m.json"
    onnx.save(model, str(src))
    code = main([str(src), "-o", str(out), "--report", str(report), *extra])
    return code, src, out, json.loads(report.read_text())


def test_opencv_is_exact_on_pixels_when_the_model_divides_by_255(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    code, src, out, report = compile_xml(tmp_path, cnn(divide_by_255), "--check", "32")
    assert code == 0
    table = capsys.readouterr().out
    assert "INPUT DOMAIN: [0, 255]" in table
    assert report["input_domain"]["high"] == 255 and report["check"]["passed"]
    assert report["check"]["input_range"] == [0, 255]  # --check drew pixels
    assert "32 inputs in [0, 255]" in table
    assert any("[0, 255]" in note for note in report["notes"])  # the ReLU shift's range
    x = np.random.default_rng(0).uniform(0, 255, (64, 2, 6, 6)).astype(np.float32)
    reference = onnx_runner(src)(x).reshape(64, -1)
    net = cv2.ml.ANN_MLP_load(str(out))
    got = net.predict(x.reshape(64, -1))[1]
    assert np.max(np.abs(got - reference) / np.maximum(1, np.abs(reference))) < 1e-4


def test_an_explicit_range_wins_and_is_what_the_shift_is_exact_on(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    code, src, out, report = compile_xml(tmp_path, cnn(divide_by_255), "--input-range", "0,1")
    assert code == 0
    assert "INPUT DOMAIN" not in capsys.readouterr().out
    assert report["input_domain"] == {"low": 0.0, "high": 1.0, "source": "--input-range"}
    # outside the stated range the shifted ReLUs are no longer exact: why the domain matters
    x = np.random.default_rng(0).uniform(0, 255, (64, 2, 6, 6)).astype(np.float32)
    reference = onnx_runner(src)(x).reshape(64, -1)
    got = cv2.ml.ANN_MLP_load(str(out)).predict(x.reshape(64, -1))[1]
    assert np.max(np.abs(got - reference) / np.maximum(1, np.abs(reference))) > 1e-3


def test_the_nnet_input_box_is_the_inferred_domain(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "m.nnet"
    onnx.save(cnn(divide_by_255), str(src))
    assert main([str(src), "-o", str(out), "--quiet"]) == 0
    lines = [line for line in out.read_text().splitlines() if not line.startswith("//")]
    minimums, maximums = (np.array(lines[i].rstrip(",").split(","), float) for i in (3, 4))
    assert np.all(minimums == 0) and np.allclose(maximums, 255, rtol=1e-5)


def test_keras_rescaling_makes_the_opencv_file_exact_on_pixels(tmp_path, capsys):
    """The issue's case: a Keras model starting with Rescaling(1/255)."""
    pytest.importorskip("cv2")
    keras = pytest.importorskip("keras", reason="install the tensorflow extra")
    layers = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 2)), layers.Rescaling(1 / 255.0),
                              layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                              layers.Dense(3)])
    rng = np.random.default_rng(1)
    for w in model.weights:
        w.assign(rng.uniform(-1, 1, tuple(w.shape)))
    path, out = tmp_path / "pixels.keras", tmp_path / "pixels.xml"
    model.save(path)
    assert main([str(path), "-o", str(out), "--check", "16"]) == 0
    assert "INPUT DOMAIN: [0, 255]" in capsys.readouterr().out
    import cv2

    x = rng.uniform(0, 255, (32, 6, 6, 2)).astype(np.float32)
    reference = np.asarray(model(x, training=False))
    got = cv2.ml.ANN_MLP_load(str(out)).predict(x.reshape(32, -1))[1]
    assert np.max(np.abs(got - reference) / np.maximum(1, np.abs(reference))) < 1e-4


def test_every_file_written_is_named_with_its_size(tmp_path, capsys):
    """A dense target is many times the sparse size the table counts: say what was written."""
    src = tmp_path / "m.onnx"
    onnx.save(cnn(divide_by_255), str(src))
    for suffix in (".xml", ".nnet", ".onnx", ".npz"):
        out = tmp_path / f"out{suffix}"
        assert main([str(src), "-o", str(out), "--report", str(tmp_path / "r.json")]) == 0
        printed = capsys.readouterr().out
        size = out.stat().st_size
        assert f"wrote {out} (" in printed and "wrote " + str(tmp_path / "r.json") in printed
        shown = printed.split(f"wrote {out} (")[1].split(")")[0]
        number, unit = shown.split()
        assert float(number) * {"bytes": 1, "KB": 1e3, "MB": 1e6}[unit] == \
            pytest.approx(size, rel=0.06)
