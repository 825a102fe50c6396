"""Verifier targets: the MLP as ONNX (MatMul/Add/Relu) and as .nnet, read by a real verifier
(Marabou, through maraboupy), giving the same values and the same verdicts as on the CNN."""
import numpy as np
import onnx
import pytest

from cnn2mlp.references import onnx_runner
from cnn2mlp.comparison import compare
from cnn2mlp.check import random_inputs
from cnn2mlp.cli import main
from cnn2mlp.testing import OnnxBuilder

VERIFIER_OPS = {"MatMul", "Gemm", "Add", "Relu", "Reshape", "Flatten"}


def conv(k=3, s=1, p=1, out=4, g=1):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "group": g, "out_channels": out}


def pool(k=2, s=2, p=0):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "ceil_mode": False, "count_include_pad": False}


def small_cnn(kind: str, normalize: bool = True) -> onnx.ModelProto:
    """Small CNNs as PyTorch exports them (batch 1, as VNN-COMP benchmarks ship them), with
    a per-channel input normalization unless ``normalize`` is False (Marabou's own ONNX
    parser refuses its broadcasting Sub, so the CNNs it reads directly go without)."""
    b = OnnxBuilder((1, 6, 6), batch=1, opset=13, seed=40)
    if normalize:
        b.normalize(0.4, 0.3)
    b.conv(conv(out=2))
    if kind in ("batchnorm", "everything"):
        b.batchnorm()
    b.activation("Relu")
    if kind in ("maxpool", "everything"):
        b.pool("MaxPool", pool())
    if kind in ("avgpool", "everything"):
        b.conv(conv(out=3))
        b.activation("Relu")
        b.pool("AveragePool", pool(k=3, s=1, p=1))
    if kind == "residual":
        stem = b.current
        b.conv(conv(out=2))
        b.activation("Relu")
        b.conv(conv(out=2))
        b.node("Add", [b.current, stem])
        b.activation("Relu")
    b.flatten("flatten")
    b.dense(8)
    b.activation("Relu")
    b.dense(3)
    return b.build()


KINDS = ["plain", "batchnorm", "maxpool", "avgpool", "residual", "everything"]


def compile_for_verifiers(tmp_path, model, name="m"):
    src = tmp_path / f"{name}.onnx"
    onnx.save(model, str(src))
    for suffix in ("mlp.onnx", "mlp.nnet"):
        out = tmp_path / f"{name}_{suffix}"
        assert main([str(src), "-o", str(out), "--check", "16", "--quiet"]) == 0
    return src, tmp_path / f"{name}_mlp.onnx", tmp_path / f"{name}_mlp.nnet"


@pytest.mark.parametrize("kind", KINDS)
def test_emitted_onnx_is_plain_and_exact(tmp_path, kind):
    src, mlp_onnx, _ = compile_for_verifiers(tmp_path, small_cnn(kind))
    model = onnx.load(str(mlp_onnx))
    onnx.checker.check_model(model)
    assert {n.op_type for n in model.graph.node} <= VERIFIER_OPS
    assert model.opset_import[0].version >= 13
    source = onnx.load(str(src))
    assert model.graph.input[0].name == source.graph.input[0].name
    assert model.graph.output[0].name == source.graph.output[0].name
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 6, 6]
    x = random_inputs((1, 6, 6), 32, seed=3)
    reference = onnx_runner(src)(x)
    assert compare(reference, onnx_runner(mlp_onnx)(x), 1e-5).passed  # any batch


def test_tanh_and_mixed_layers_use_their_own_ops(tmp_path):
    """A tanh residual block: a value carried through a tanh layer rides on identity
    neurons; the ONNX target splits that layer so that every node has one activation.
    .nnet holds ReLU networks only: refused, naming the layer."""
    b = OnnxBuilder((2, 5, 5), opset=13, seed=41)
    stem = b.conv(conv(out=2))
    b.activation("Tanh")
    b.conv(conv(out=2))
    b.node("Add", [b.current, stem])
    b.activation("Tanh")
    b.flatten("flatten")
    b.dense(3)
    src = tmp_path / "t.onnx"
    onnx.save(b.build(), str(src))
    assert main([str(src), "-o", str(tmp_path / "t_mlp.onnx"), "--check", "16", "--quiet"]) == 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "t_mlp.onnx")).graph.node}
    assert "Tanh" in ops and ops <= VERIFIER_OPS | {"Tanh"}
    assert main([str(src), "-o", str(tmp_path / "t_mlp.nnet")]) == 2


def test_approximate_networks_need_allow_approximate(tmp_path, capsys):
    b = OnnxBuilder((2, 6, 6), opset=13, seed=42)
    b.conv(conv(out=2))
    b.activation("Tanh")
    b.pool("AveragePool", pool())
    b.activation("Tanh")
    b.flatten("flatten")
    b.dense(3)
    src = tmp_path / "a.onnx"
    onnx.save(b.build(), str(src))
    passes = ("eliminate-identity,avgpool-linearize,conv-to-dense,layout-to-permutation,"
              "fold-stride,lower-linear,fuse-dense,eliminate-dead")
    out = tmp_path / "a_mlp.onnx"
    assert main([str(src), "-o", str(out), "--passes", passes]) == 2
    assert "must not be given an approximate network silently" in capsys.readouterr().err
    assert not out.exists()
    assert main([str(src), "-o", str(out), "--passes", passes, "--allow-approximate",
                 "--quiet"]) == 0


def test_dense_size_preflight_for_verifier_targets(tmp_path, capsys):
    b = OnnxBuilder((16, 32, 32), opset=13, seed=0)
    b.conv(conv(out=16))
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(10)
    src = tmp_path / "big.onnx"
    onnx.save(b.build(), str(src))
    assert main([str(src), "-o", str(tmp_path / "b.nnet"), "--max-dense-bytes", "64M"]) == 2
    err = capsys.readouterr().err
    assert "as an NNet file" in err and "stores dense weights" in err and "--target csr" in err


def test_nnet_reader_applies_the_formats_normalization(tmp_path):
    """An .nnet file as ACAS Xu ships them, with means and ranges: read by our reader."""
    from cnn2mlp.backends.nnet import read_nnet

    text = "\n".join([
        "// a 2-2-1 network", "2,2,1,2,", "2,2,1,", "0,", "-1.0,-1.0,", "1.0,1.0,",
        "0.5,-0.5,10.0,", "2.0,4.0,3.0,",
        "1.0,2.0,", "-1.0,1.0,", "0.5,", "0.0,",
        "1.0,-2.0,", "0.25,", ""])
    path = tmp_path / "acas.nnet"
    path.write_text(text)
    mlp = read_nnet(path)
    x = np.array([[0.3, -0.7], [-1.0, 1.0]])
    z = (x - [0.5, -0.5]) / [2.0, 4.0]
    h = np.maximum(z @ np.array([[1.0, 2.0], [-1.0, 1.0]]).T + [0.5, 0.0], 0)
    expected = (h @ np.array([1.0, -2.0]) + 0.25) * 3.0 + 10.0
    np.testing.assert_allclose(mlp.forward(x).ravel(), expected, rtol=1e-6)


# ------------------------------------------------------------------ Marabou itself
# maraboupy's import switches TensorFlow to v1 behaviour for the whole process (it calls
# disable_v2_behavior), which would break every later Keras test: Marabou runs in a child
# process, fed and read through JSON.
MARABOU = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
from maraboupy import Marabou

job = json.loads(sys.stdin.read())

def read(path):
    return Marabou.read_nnet(path, normalize=False) if path.endswith(".nnet") \
        else Marabou.read_onnx(path)

def evaluate(path, x):
    net = read(path)
    x = np.asarray(x, np.float32)
    if path.endswith(".nnet"):
        return np.ravel(net.evaluateWithoutMarabou(x.ravel())).tolist()
    return np.ravel(net.evaluateWithoutMarabou([x])[0]).tolist()

def verdict(path, x0, radius, top, runner):
    net = read(path)
    inputs, outputs = net.inputVars[0].ravel(), net.outputVars[0].ravel()
    for var, centre in zip(inputs, np.ravel(x0)):
        net.setLowerBound(var, float(centre) - radius)
        net.setUpperBound(var, float(centre) + radius)
    net.addInequality([outputs[top], outputs[runner]], [1.0, -1.0], 0.0)  # top <= runner
    code, _, _ = net.solve(verbose=False, options=Marabou.createOptions(
        verbosity=0, timeoutInSeconds=300))
    return code

def box(path):
    net = read(path)
    inputs = net.inputVars[0].ravel()
    return [[float(net.inputMinimums[i]) for i in range(len(inputs))],
            [float(net.inputMaximums[i]) for i in range(len(inputs))]]

calls = {"evaluate": evaluate, "verdict": verdict, "box": box}
print(json.dumps([calls[name](*args) for name, args in job]))
"""


def marabou(*calls: tuple) -> list:
    """Run ``(name, *args)`` calls in one child process (importing maraboupy is slow)."""
    import json
    import subprocess
    import sys

    job = [(name, list(args)) for name, *args in calls]
    proc = subprocess.run([sys.executable, "-c", MARABOU], input=json.dumps(job),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def has_marabou():
    import importlib.util

    if importlib.util.find_spec("maraboupy") is None:
        pytest.skip("install the verify extra (maraboupy)")


def evaluation_jobs(folder, kind):
    """Marabou's evaluation of both MLP files of ``kind`` on three inputs."""
    src, mlp_onnx, mlp_nnet = compile_for_verifiers(folder, small_cnn(kind))
    inputs = [random_inputs((1, 6, 6), 1, seed=seed) for seed in range(3)]
    jobs = {(i, path.suffix): ("evaluate", str(path), x.tolist())
            for i, x in enumerate(inputs) for path in (mlp_onnx, mlp_nnet)}
    return (src, inputs), jobs


def verdict_jobs(folder, kind):
    """Can the runner-up class reach the top class in the L-infinity box around a
    sample, on the CNN (which Marabou reads directly) and on both MLP files?"""
    src, mlp_onnx, mlp_nnet = compile_for_verifiers(folder, small_cnn(kind, normalize=False))
    x0 = random_inputs((1, 6, 6), 1, seed=1)
    order = np.argsort(-onnx_runner(src)(x0).ravel())
    top, runner = int(order[0]), int(order[1])
    jobs = {(radius, path.name): ("verdict", str(path), x0.tolist(), radius, top, runner)
            for radius in (0.002, 0.3) for path in (src, mlp_onnx, mlp_nnet)}
    return None, jobs


def box_jobs(folder, _):
    """The .nnet header's input box of a model compiled with --input-range -1,2."""
    from cnn2mlp.cli import main

    b = OnnxBuilder((5,), opset=13, seed=21)
    b.dense(4)
    b.activation("Relu")
    b.dense(2)
    src, out = folder / "m.onnx", folder / "m.nnet"
    onnx.save(b.build(), str(src))
    assert main([str(src), "-o", str(out), "--input-range", "-1,2", "--check", "8",
                 "--quiet"]) == 0
    return out, {"box": ("box", str(out))}


CASES = [("evaluate", kind, evaluation_jobs) for kind in KINDS] + [
    ("verdict", kind, verdict_jobs) for kind in ("plain", "maxpool")] + [
    ("box", "", box_jobs)]


@pytest.fixture(scope="module")
def marabou_results(tmp_path_factory, has_marabou):
    """Every Marabou call of this module's tests, in one child process (importing
    maraboupy takes 8 s: a child a call took 90 s of the suite). Per case: what its test
    needs, and the results by job."""
    prepared, calls = {}, {}
    for what, kind, prepare in CASES:
        context, jobs = prepare(tmp_path_factory.mktemp(f"{what}-{kind}"), kind)
        prepared[what, kind] = context
        calls.update({(what, kind, key): call for key, call in jobs.items()})
    results = dict(zip(calls, marabou(*calls.values())))
    return {case: (context, {key[2]: value for key, value in results.items()
                             if key[:2] == case})
            for case, context in prepared.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_marabou_evaluates_both_formats_like_onnxruntime_on_the_cnn(marabou_results, kind):
    (src, inputs), results = marabou_results["evaluate", kind]
    run = onnx_runner(src)
    for i, x in enumerate(inputs):
        reference = run(x).ravel()
        for suffix in (".onnx", ".nnet"):
            got = np.array(results[i, suffix])
            assert compare(reference, got, 1e-5).passed, (suffix, reference, got)


@pytest.mark.parametrize("kind", ["plain", "maxpool"])
def test_marabou_gives_the_same_verdict_on_the_mlp_as_on_the_cnn(marabou_results, kind):
    """'unsat': the runner-up cannot reach the top class (robust); 'sat': a
    counterexample exists. The same on the CNN and on both MLP files."""
    _, results = marabou_results["verdict", kind]
    verdicts = set()
    for radius in (0.002, 0.3):
        found = [value for (r, _), value in results.items() if r == radius]
        assert len(found) == 3 and len(set(found)) == 1, (radius, found)
        verdicts.add(found[0])
    assert verdicts == {"unsat", "sat"}  # robust in the small box, not in the large one


def test_nnet_input_box_is_what_input_range_says(marabou_results):
    """The header's minimums and maximums, as Marabou and the project's reader read them:
    swapped, a verifier would get an empty box and "prove" anything."""
    from cnn2mlp.backends.nnet import read_input_box

    out, results = marabou_results["box", ""]
    lows, highs = read_input_box(out)
    assert lows.tolist() == [-1.0] * 5 and highs.tolist() == [2.0] * 5
    assert results["box"] == [[-1.0] * 5, [2.0] * 5]
