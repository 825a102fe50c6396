"""The command line: compile, check, report, IR dumps, kernel module, errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import cnn2mlp
from cnn2mlp.references import softmax
from cnn2mlp.check import random_inputs
from cnn2mlp.cli import main
from cnn2mlp.testing import OnnxBuilder, assert_equivalent

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_path(tmp_path) -> Path:
    b = OnnxBuilder((3, 10, 10), opset=13, seed=0, nhwc=True)
    b.normalize()
    b.conv({"kernel_shape": (3, 3), "strides": (2, 2), "dilations": (1, 1), "pads": (1, 0, 1, 2),
            "group": 1, "out_channels": 6})
    b.batchnorm()
    b.activation("Relu")
    b.flatten("tf2onnx")
    b.dense(5)
    b.node("Softmax", [b.current], axis=-1)
    path = tmp_path / "model.onnx"
    onnx.save(b.build(), str(path))
    return path


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnn2mlp.compile", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_compile_check_report_as_a_user_runs_it(model_path, tmp_path):
    out, report = tmp_path / "model.npz", tmp_path / "report.json"
    proc = cli(model_path, "-o", out, "--check", 20, "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert "check passed" in proc.stdout and "non-zeros" in proc.stdout
    assert "Softmax dropped" in proc.stderr
    data = json.loads(report.read_text())
    assert data["check"]["passed"] and data["check"]["max_rel_error"] < 1e-4
    assert data["target"] == "csr" and data["totals"]["nnz"] > 0
    assert [p["name"] for p in data["passes"]][:2] == ["eliminate-identity", "drop-final-softmax"]
    assert any("Softmax" in n for n in data["notes"])
    model = cnn2mlp.load(out)
    assert model.input_shape == (10, 10, 3)  # the model's own NHWC layout
    # The Softmax was dropped: the MLP's softmax must give the model's probabilities.
    assert_equivalent(model_path, lambda x: softmax(model.predict(x)), n=8,
                      inputs=random_inputs(model.input_shape, 8, seed=3))


def test_main_is_importable_and_quiet(model_path, tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main([str(model_path), "-o", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert out.exists()


def test_print_ir_after_all_and_custom_passes(model_path, tmp_path):
    out = tmp_path / "m.npz"
    passes = ("eliminate-identity,drop-final-softmax,fold-batchnorm,conv-to-dense,"
              "layout-to-permutation,fold-stride,fold-affine,lower-linear,eliminate-dead")
    proc = cli(model_path, "-o", out, "--passes", passes, "--print-ir-after-all", "--check", 5)
    assert proc.returncode == 0, proc.stderr
    assert "=== IR after conv-to-dense ===" in proc.stderr
    assert "fuse-dense" not in proc.stdout


def test_unknown_pass_is_a_clean_error(model_path, tmp_path):
    proc = cli(model_path, "-o", tmp_path / "m.npz", "--passes", "conv-to-dense,no-such-pass")
    assert proc.returncode == 2
    assert "unknown pass 'no-such-pass'" in proc.stderr and "Traceback" not in proc.stderr


def test_kernel_module_runs_with_numpy_alone(model_path, tmp_path):
    out, kernel = tmp_path / "m.npz", tmp_path / "mlp_kernel.py"
    assert cli(model_path, "-o", out, "--kernel-py", kernel, "--quiet").returncode == 0
    script = ("import sys, numpy as np; sys.modules['scipy'] = None; sys.modules['cnn2mlp'] = None\n"
              "import mlp_kernel\n"
              "x = np.random.default_rng(0).uniform(0, 1, (4, 10, 10, 3)).astype(np.float32)\n"
              "np.save('y.npy', mlp_kernel.load('m.npz').predict(x))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(0).uniform(0, 1, (4, 10, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), cnn2mlp.load(out).predict(x),
                               rtol=1e-5, atol=1e-5)


def test_failed_check_writes_nothing(model_path, tmp_path):
    out = tmp_path / "m.npz"
    out.write_bytes(b"previous")
    proc = cli(model_path, "-o", out, "--check", 5, "--tolerance", "1e-30")
    assert proc.returncode == 1
    assert "--check failed" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_bytes() == b"previous"


def test_linearized_pool_is_reported_approximate(tmp_path):
    b = OnnxBuilder((2, 8, 8), opset=13, seed=1)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1),
            "group": 1, "out_channels": 3})
    b.activation("Tanh")
    b.pool("AveragePool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                           "pads": (0, 0, 0, 0), "ceil_mode": False})
    model, out, report = tmp_path / "m.onnx", tmp_path / "m.npz", tmp_path / "r.json"
    onnx.save(b.build(), str(model))
    passes = ("eliminate-identity,avgpool-linearize,conv-to-dense,layout-to-permutation,"
              "fold-stride,lower-linear,fuse-dense,eliminate-dead")
    proc = cli(model, "-o", out, "--passes", passes, "--check", 50, "--epsilon", "1e-3",
               "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert "APPROXIMATE" in proc.stdout and "approximate:" in proc.stderr
    data = json.loads(report.read_text())
    assert data["exact"] is False
    (entry,) = data["approximations"]
    assert entry["epsilon"] == 1e-3
    assert data["check"]["max_abs_error"] <= entry["bound_at_output"] + 1e-4


def test_maxpool_neurons_are_reported(tmp_path):
    b = OnnxBuilder((1, 8, 8), opset=13, seed=1)
    b.activation("Relu")
    b.pool("MaxPool", {"kernel_shape": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                       "pads": (0, 0, 0, 0), "ceil_mode": False})
    model, out, report = tmp_path / "m.onnx", tmp_path / "m.npz", tmp_path / "r.json"
    onnx.save(b.build(), str(model))
    proc = cli(model, "-o", out, "--check", 20, "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert "maxpool-to-relu added 96 neurons in 2 ReLU layers" in proc.stdout
    assert json.loads(report.read_text())["exact"] is True


def test_kernel_module_computes_every_activation(tmp_path):
    """The standalone module has its own activation formulas: check each one, with signed
    pre-activations so that both sides of every kink are used."""
    import scipy.sparse as sp

    from cnn2mlp.backends.csr import CsrModel, save_csr, write_kernel
    from cnn2mlp.ir.mlp import Mlp, MlpLayer

    rng = np.random.default_rng(5)
    acts = [("leaky_relu", 0.3), ("sigmoid", 0.0), ("relu", 0.0), ("tanh", 0.0),
            ("identity", 0.0)]
    layers, n = [], 6
    for act, alpha in acts:
        w = sp.csr_array(rng.normal(size=(n, n)).astype(np.float32) * 2)
        layers.append(MlpLayer(w, rng.normal(size=n).astype(np.float32), act, alpha))
    mlp = Mlp(layers, (n,), (n,))
    save_csr(mlp, tmp_path / "acts.npz")
    write_kernel(tmp_path / "acts_kernel.py", tmp_path / "acts.npz", mlp)
    script = ("import sys, numpy as np; sys.modules['scipy'] = None; sys.modules['cnn2mlp'] = None\n"
              "import acts_kernel\n"
              "x = np.load('x.npy')\n"
              "np.save('y.npy', acts_kernel.load('acts.npz').predict(x, dtype=np.float64))\n")
    x = rng.normal(size=(32, n)) * 3
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               CsrModel(mlp).predict(x, dtype=np.float64), rtol=1e-9, atol=1e-9)


def test_output_name_cannot_become_code_in_the_kernel_module(model_path, tmp_path):
    """The kernel module embeds the artifact's name: a crafted name must stay a string."""
    marker = tmp_path / "injected.txt"
    crafted = 'x"); open("injected.txt", "w"); ("\\n""" + \'\'\'.npz'
    out, kernel = tmp_path / crafted, tmp_path / "k.py"
    assert main([str(model_path), "-o", str(out), "--kernel-py", str(kernel), "--quiet"]) == 0
    script = "import k\nm = k.load()\nprint(m.input_shape)"
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(10, 10, 3)"
    assert not marker.exists()
