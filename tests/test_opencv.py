"""The OpenCV target: XML files that cv2.ml.ANN_MLP_load reads and that compute what
onnxruntime computes on the original model, within 1e-4 * max(1, |y|) on the domain."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from cnn2mlp.references import onnx_runner
from cnn2mlp.comparison import compare
from cnn2mlp.check import random_inputs
from cnn2mlp.cli import main
from cnn2mlp.testing import OnnxBuilder

cv2 = pytest.importorskip("cv2", reason="install the opencv extra (opencv-contrib-python-headless)")


def conv(k=3, s=1, p=1, out=4, g=1, d=1):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (d, d),
            "pads": (p, p, p, p), "group": g, "out_channels": out}


def pool(k=2, s=2, p=0, ceil=False, include_pad=False):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "ceil_mode": ceil, "count_include_pad": include_pad}


def relu_cnn(activation="Relu", avg_at_end=False, softmax=True) -> onnx.ModelProto:
    b = OnnxBuilder((3, 12, 12), batch="batch_size", opset=13, seed=21)
    b.normalize(mean=0.4, std=0.3)
    b.conv(conv(out=6, s=2))
    b.batchnorm()
    b.activation(activation)
    b.pool("MaxPool", pool(k=3, s=1, p=1))
    b.conv(conv(out=6, g=2, d=2, p=2))
    b.activation(activation)
    b.pool("AveragePool", pool(ceil=True, include_pad=False))
    b.flatten("flatten")
    b.dense(12)
    b.activation(activation)
    b.dense(5)
    if softmax:
        b.node("Softmax", [b.current], axis=-1)
    return b.build()


def tanh_cnn(activation="Tanh") -> onnx.ModelProto:
    b = OnnxBuilder((2, 10, 10), opset=13, seed=22)
    b.conv(conv(out=4))
    b.activation(activation)
    b.pool("AveragePool", pool())
    b.conv(conv(out=4, s=2))
    b.activation(activation)
    b.pool("AveragePool", pool(k=3, s=1, p=1, include_pad=True))  # stands alone: linearized
    b.activation(activation)
    b.flatten("flatten")
    b.dense(7)
    b.activation(activation)
    b.dense(3, style="matmul")
    return b.build()


def compile_xml(tmp_path, model, *extra, name="m"):
    src, out, report = tmp_path / f"{name}.onnx", tmp_path / f"{name}.xml", tmp_path / f"{name}.json"
    onnx.save(model, str(src))
    code = main([str(src), "-o", str(out), "--quiet", "--report", str(report), *extra])
    return code, src, out, (json.loads(report.read_text()) if report.exists() else None)


def cv2_predict(xml: Path, x: np.ndarray) -> np.ndarray:
    net = cv2.ml.ANN_MLP_load(str(xml))
    return net.predict(x.reshape(len(x), -1).astype(np.float32))[1]


def assert_matches_onnxruntime(src, xml, report, n=64, domain=(0.0, 1.0)):
    x = random_inputs(tuple(report["input_shape"]), n, *domain, seed=5)
    logits = None
    if any("Softmax" in note for note in report["notes"]):
        graph = onnx.load(str(src)).graph
        logits = next(node.input[0] for node in graph.node if node.op_type == "Softmax")
    reference = onnx_runner(src, logits)(x).reshape(n, -1)
    comparison = compare(reference, cv2_predict(xml, x), 1e-4)
    assert comparison.passed, comparison.describe()
    return reference


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu"])
def test_relu_family_cnn_with_pools_and_negative_logits(tmp_path, activation):
    code, src, out, report = compile_xml(tmp_path, relu_cnn(activation), "--check", "32")
    assert code == 0
    assert report["check"]["passed"] and report["exact"]
    xml = out.read_text()
    name = "RELU" if activation == "Relu" else "LEAKYRELU"
    assert f"<activation_function>{name}</activation_function>" in xml
    if activation == "LeakyRelu":
        assert "<f_param1>0.1" in xml
    reference = assert_matches_onnxruntime(src, out, report)
    assert (reference < 0).any()  # negative logits come through the ReLU output shift
    assert any("shifted" in note for note in report["notes"])
    assert_inverse_output_scale(xml)


def assert_inverse_output_scale(xml: str) -> None:
    """inv_output_scale undoes output_scale (OpenCV uses it when training goes on)."""
    scale, inverse = extract_sequence(xml, "output_scale"), extract_sequence(xml, "inv_output_scale")
    assert len(scale) == len(inverse) and len(scale) % 2 == 0
    # a real scale or shift, so that the check below has something to check
    assert np.any(scale[1::2] != 0) or np.any(scale[0::2] != 1)
    y = np.linspace(-3, 3, len(scale) // 2)
    np.testing.assert_allclose((y * scale[0::2] + scale[1::2]) * inverse[0::2] + inverse[1::2],
                               y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["Tanh", "Sigmoid"])
def test_tanh_and_sigmoid_cnns(tmp_path, activation):
    code, src, out, report = compile_xml(tmp_path, tanh_cnn(activation), "--check", "32")
    assert code == 0, report
    assert "<activation_function>SIGMOID_SYM</activation_function>" in out.read_text()
    assert_inverse_output_scale(out.read_text())  # the linear regime's 1/eps
    assert report["exact"] is False  # a linearized pool and the linear output regime
    assert {a["node"] for a in report["approximations"]}
    assert_matches_onnxruntime(src, out, report)


def test_input_normalization_goes_to_input_scale(tmp_path):
    code, src, out, report = compile_xml(tmp_path, relu_cnn(softmax=False))
    assert code == 0
    net_scale = extract_sequence(out.read_text(), "input_scale")
    assert not np.allclose(net_scale[0::2], 1.0)  # 1/std per input feature
    assert_matches_onnxruntime(src, out, report)


def extract_sequence(xml: str, tag: str) -> np.ndarray:
    body = xml.split(f"<{tag}>")[1].split(f"</{tag}>")[0]
    return np.array([float(v) for v in body.split()])


def test_one_neuron_hidden_layer_gets_an_inert_partner(tmp_path):
    b = OnnxBuilder((6,), opset=13, seed=3)
    b.dense(1)
    b.activation("Relu")
    b.dense(3)
    code, src, out, report = compile_xml(tmp_path, b.build(), "--check", "16")
    assert code == 0
    sizes = extract_sequence(out.read_text(), "layer_sizes")
    assert list(sizes) == [6, 2, 3]
    assert_matches_onnxruntime(src, out, report)


def test_base64_and_text_give_equal_predictions(tmp_path):
    model = relu_cnn()
    assert compile_xml(tmp_path, model, name="text")[0] == 0
    assert compile_xml(tmp_path, model, "--xml-encoding", "base64", name="b64")[0] == 0
    x = random_inputs((3, 12, 12), 16, seed=1)
    np.testing.assert_array_equal(cv2_predict(tmp_path / "text.xml", x),
                                  cv2_predict(tmp_path / "b64.xml", x))
    assert 'type_id="binary"' in (tmp_path / "b64.xml").read_text()


def test_preflight_refuses_dense_weights_that_are_too_large(tmp_path, capsys):
    b = OnnxBuilder((16, 32, 32), opset=13, seed=0)
    b.conv(conv(out=16))
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(10)
    code, *_ = compile_xml(tmp_path, b.build())
    err = capsys.readouterr().err
    assert code == 2
    assert "dense weights" in err and "--target csr" in err and "MiB" in err
    assert not (tmp_path / "m.xml").exists()


def test_activations_that_cannot_be_unified_name_the_layers(tmp_path, capsys):
    b = OnnxBuilder((2, 8, 8), opset=13, seed=0)
    b.conv(conv(out=3))
    b.activation("Tanh")
    b.pool("MaxPool", pool())  # max pooling needs ReLU layers: not under tanh
    b.flatten("flatten")
    b.dense(3)
    code, *_ = compile_xml(tmp_path, b.build())
    err = capsys.readouterr().err
    assert code == 2 and "one activation" in err and "Relu" in err and "Tanh" in err


def readme_program() -> tuple[str, str]:
    """The README's C++ program for the XML, and its g++ line."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = readme[readme.index("#### Using the XML from C++"):]
    program = text[text.index("```cpp\n") + 7:text.index("\n```", text.index("```cpp"))]
    build = text[text.index("```sh\n") + 6:text.index("\n```", text.index("```sh"))]
    return program, build.splitlines()[0]


def test_cpp_loads_the_xml(tmp_path):
    """Where g++ and OpenCV's C++ headers exist (Debian: libopencv-dev), the README's C++
    program reads the XML and prints the CNN's outputs."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "opencv4"], capture_output=True,
                           text=True) if shutil.which("pkg-config") else None
    if not shutil.which("g++") or flags is None or flags.returncode != 0:
        pytest.skip("no g++ or no OpenCV C++ development files (apt install libopencv-dev)")
    code, src, out, report = compile_xml(tmp_path, relu_cnn(softmax=False))
    program, command = readme_program()
    (tmp_path / "load.cpp").write_text(program)
    build = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(tmp_path / "load"), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = np.array([float(v) for v in run.stdout.split()])
    reference = onnx_runner(src)(np.full((1, 3, 12, 12), 0.5, np.float32)).ravel()
    assert compare(reference, got, 1e-4).passed


@pytest.mark.parametrize("name", ["pool--->x", "pool-", "a<b>&c\x01\u00e9-->"])
def test_node_names_cannot_break_the_xml(tmp_path, name):
    """Notes that name nodes go into an XML comment: whatever the name, the file parses."""
    import xml.etree.ElementTree as ET

    model = tanh_cnn()
    pool = next(n for n in model.graph.node if n.op_type == "AveragePool" and
                any(a.name == "count_include_pad" for a in n.attribute))
    pool.name = name
    code, src, out, report = compile_xml(tmp_path, model)
    assert code == 0
    assert any(name in note for note in report["notes"])  # the name did reach the notes
    ET.parse(out)  # raises on a broken comment
    assert cv2.ml.ANN_MLP_load(str(out)).getLayerSizes() is not None


def test_sigmoid_output_layer_has_an_invertible_affine_output_scale(tmp_path):
    """A sigmoid output becomes (1 + tanh(z/2)) / 2: output_scale 0.5 and shift 0.5, both
    non-trivial, so inv_output_scale must undo a real scale and a real shift."""
    b = OnnxBuilder((2, 6, 6), opset=13, seed=23)
    b.conv(conv(out=3))
    b.activation("Sigmoid")
    b.flatten("flatten")
    b.dense(4)
    b.activation("Sigmoid")
    code, src, out, report = compile_xml(tmp_path, b.build(), "--check", "16")
    assert code == 0
    xml = out.read_text()
    scale = extract_sequence(xml, "output_scale")
    assert np.all(scale[0::2] != 1) and np.all(scale[1::2] != 0)
    assert_inverse_output_scale(xml)
    assert_matches_onnxruntime(src, out, report)
