"""Broken, hostile and wrong inputs: a one-line error, exit 2, nothing written or clobbered."""
import io
import os
import resource
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn2mlp.cli import main
from cnn2mlp.testing import OnnxBuilder

PREVIOUS = b"an earlier artifact that must survive"


def small_model(nan=False, batch="N", spatial=(8, 8)) -> onnx.ModelProto:
    b = OnnxBuilder((2,) + spatial, batch=batch, opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 3})
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(4)
    model = b.build()
    if nan:
        init = model.graph.initializer[0]
        w = onnx.numpy_helper.to_array(init).copy()
        w.flat[3] = np.nan
        init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    return model


def run_cli(*args) -> subprocess.CompletedProcess:
    """The CLI's ``main`` in this process (a child a call took 3.5 s of imports, 30 calls
    in this file), its exit status and output as a child's would be: argparse's exit
    included. ``run_cli_process`` runs ``python -m cnn2mlp.compile`` itself."""
    from contextlib import redirect_stdout

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def run_cli_process(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnn2mlp.compile", *map(str, args)],
                          capture_output=True, text=True)


PEAK = ("import resource, subprocess, sys\n"
        "proc = subprocess.run([sys.executable, '-m', 'cnn2mlp.compile', *sys.argv[1:]])\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(proc.returncode)")


def run_cli_peak(*args) -> tuple[subprocess.CompletedProcess, int]:
    """The CLI in a child of its own, and that child's peak memory (KiB): the test process's
    RUSAGE_CHILDREN would mix in every child any test started before."""
    proc = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], capture_output=True,
                          text=True)
    return proc, int(proc.stdout.split()[-1])


def assert_clean_failure(proc, *words, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cnn2mlp: error:"), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def out(tmp_path) -> Path:
    path = tmp_path / "out.npz"
    path.write_bytes(PREVIOUS)
    yield path
    assert path.read_bytes() == PREVIOUS  # an existing output is never clobbered
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.npz")]  # no temp left


def test_missing_file(tmp_path, out):
    assert_clean_failure(run_cli(tmp_path / "nope.onnx", "-o", out), "nope.onnx", "no such file")


def test_empty_file(tmp_path, out):
    model = tmp_path / "m0.onnx"
    model.write_bytes(b"")
    assert_clean_failure(run_cli(model, "-o", out), "m0.onnx", "the file is empty")


def test_initializer_whose_data_does_not_match_its_dims(tmp_path, out):
    """Found by the fuzz test: dims that disagree with the data are bad input (exit 2)."""
    m = small_model()
    name = m.graph.initializer[0].name
    m.graph.initializer[0].dims[0] = 2
    model = tmp_path / "m.onnx"
    model.write_bytes(m.SerializeToString())
    assert_clean_failure(run_cli(model, "-o", out), name, "is damaged", "export the model again")


def test_random_bytes(tmp_path, out):
    model = tmp_path / "noise.onnx"
    model.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_clean_failure(run_cli(model, "-o", out), "noise.onnx")


def test_truncated_file(tmp_path, out):
    model = tmp_path / "cut.onnx"
    model.write_bytes(small_model().SerializeToString()[:700])
    assert_clean_failure(run_cli(model, "-o", out), "cut.onnx")


def test_invalid_graph_is_reported_by_the_checker(tmp_path, out):
    m = small_model()
    m.graph.node[1].input[0] = "does_not_exist"
    model = tmp_path / "invalid.onnx"
    model.write_bytes(m.SerializeToString())
    assert_clean_failure(run_cli(model, "-o", out), "invalid ONNX model", "does_not_exist")


def test_unsupported_op_names_op_node_and_the_way_out(tmp_path, out):
    m = small_model()
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "LRN"
    relu.attribute.append(onnx.helper.make_attribute("size", 3))
    relu.name = "my_lrn"
    model = tmp_path / "lrn.onnx"
    onnx.save(m, str(model))
    proc = run_cli(model, "-o", out)
    before = relu.input[0]
    assert_clean_failure(proc, "op LRN", "my_lrn", "has no converter", "Supported ONNX ops",
                         f"--output-tensor {before}")
    assert "Conv, " not in proc.stderr  # no list of forty op names


def test_symbolic_dims_need_input_shape(tmp_path, out):
    m = small_model()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param = "height"
    model = tmp_path / "sym.onnx"
    onnx.save(m, str(model))
    assert_clean_failure(run_cli(model, "-o", out), "--input-shape", "unknown dims")


def test_input_shape_that_contradicts_the_model(tmp_path, out):
    model = tmp_path / "m.onnx"
    onnx.save(small_model(), str(model))
    assert_clean_failure(run_cli(model, "-o", out, "--input-shape", "3,8,8"), "contradicts")


def test_output_folder_missing_or_a_file(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(small_model(), str(model))
    assert_clean_failure(run_cli(model, "-o", tmp_path / "no" / "dir" / "o.npz"),
                         "does not exist")
    (tmp_path / "afile").write_text("x")
    assert_clean_failure(run_cli(model, "-o", tmp_path / "afile" / "o.npz"), "does not exist")


def test_output_folder_not_writable(tmp_path, monkeypatch):
    # Tests run as root in CI, where chmod does not stop writes: ask os.access instead.
    model = tmp_path / "m.onnx"
    onnx.save(small_model(), str(model))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    err = io.StringIO()
    with redirect_stderr(err):
        assert main([str(model), "-o", str(tmp_path / "o.npz")]) == 2
    assert "not writable" in err.getvalue() and not (tmp_path / "o.npz").exists()


def test_far_too_large_is_refused_from_the_shapes(tmp_path, out):
    """A Conv 64→64 3×3 on a 1024×1024 map is 38 G non-zeros, stored as its kernel and
    positions in 17 MB plus 67 M neurons: above --max-bytes 100M, refused before any of
    it is built."""
    b = OnnxBuilder((64, 1024, 1024), opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 64})
    b.activation("Relu")
    model = tmp_path / "huge.onnx"
    onnx.save(b.build(), str(model))
    proc, peak_kib = run_cli_peak(model, "-o", out, "--max-bytes", "100M")
    assert_clean_failure(proc, "38,6", "non-zeros", "GiB stored", "--max-bytes")
    assert peak_kib < 1_000_000  # under 1 GiB: nothing was built


def test_max_bytes_is_the_users_to_set(tmp_path, out):
    model = tmp_path / "m.onnx"
    onnx.save(small_model(), str(model))
    assert_clean_failure(run_cli(model, "-o", out, "--max-bytes", "1K"), "limit")


def test_non_finite_weights_name_the_tensor(tmp_path, out):
    m = small_model(nan=True)
    model = tmp_path / "nan.onnx"
    onnx.save(m, str(model))
    name = m.graph.initializer[0].name
    assert_clean_failure(run_cli(model, "-o", out), name, "NaN/Inf", "--allow-non-finite")
    ok = tmp_path / "ok.npz"
    assert run_cli(model, "-o", ok, "--allow-non-finite", "--quiet").returncode == 0


def test_bad_usage_exits_2(tmp_path):
    proc = run_cli_process("--check", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_cli_process(tmp_path / "m.onnx", "-o", tmp_path / "o.unknown")
    assert_clean_failure(proc, "target")


def test_internal_errors_exit_1_and_ask_for_a_report(tmp_path, monkeypatch):
    from cnn2mlp.backends import get_target

    model = tmp_path / "m.onnx"
    onnx.save(small_model(), str(model))

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(get_target("csr"), "write", broken)
    err = io.StringIO()
    with redirect_stderr(err):
        assert main([str(model), "-o", str(tmp_path / "o.npz")]) == 1
    assert "internal error" in err.getvalue() and "report" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    with pytest.raises(ZeroDivisionError):
        main([str(model), "-o", str(tmp_path / "o.npz"), "--debug"])


VALID = small_model().SerializeToString()


def keras_bytes(fmt: str) -> bytes:
    """A small Dense model as Keras writes it (.keras zip or legacy .h5), made with h5py."""
    import json
    import zipfile

    import h5py

    layers = [{"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 6]}},
              {"class_name": "Dense", "config": {"name": "dense", "units": 3,
                                                 "activation": "relu"}},
              {"class_name": "Dense", "config": {"name": "dense_1", "units": 2}}]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    rng = np.random.default_rng(0)
    weights = {"dense": [rng.normal(size=(6, 3)), rng.normal(size=3)],
               "dense_1": [rng.normal(size=(3, 2)), rng.normal(size=2)]}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        if fmt == "keras":
            for name, values in weights.items():
                group = handle.create_group(f"layers/{name}/vars")
                for i, value in enumerate(values):
                    group[str(i)] = value.astype(np.float32)
        else:
            handle.attrs["model_config"] = json.dumps(config)
            for name, values in weights.items():
                group = handle.create_group(f"model_weights/{name}")
                group.attrs["weight_names"] = [f"{name}/kernel:0".encode(),
                                               f"{name}/bias:0".encode()]
                group[f"{name}/kernel:0"] = values[0].astype(np.float32)
                group[f"{name}/bias:0"] = values[1].astype(np.float32)
    if fmt == "h5":
        return buffer.getvalue()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", buffer.getvalue())
    return archive.getvalue()


def npz_bytes() -> bytes:
    import scipy.sparse as sp

    from cnn2mlp.backends.csr import save_csr
    from cnn2mlp.ir.mlp import Mlp, MlpLayer

    rng = np.random.default_rng(0)
    layers = [MlpLayer(sp.csr_array(rng.normal(size=(5, 6)).astype(np.float32)),
                       rng.normal(size=5).astype(np.float32), "relu"),
              MlpLayer(sp.csr_array(rng.normal(size=(2, 5)).astype(np.float32)),
                       rng.normal(size=2).astype(np.float32), "identity")]
    with __import__("tempfile").TemporaryDirectory() as tmp:
        save_csr(Mlp(layers, (6,), (2,)), Path(tmp, "a.npz"))
        return Path(tmp, "a.npz").read_bytes()


SEEDS = {"onnx": small_model().SerializeToString()}


def seed_bytes(fmt: str) -> bytes:
    if fmt not in SEEDS:
        SEEDS[fmt] = npz_bytes() if fmt == "npz" else keras_bytes(fmt)
    return SEEDS[fmt]


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at] = 0
        if not data:
            break
    return bytes(data)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(blob=mutated(VALID))
def test_fuzzed_onnx_gives_clean_errors_or_correct_results(blob, tmp_path):
    model, target = tmp_path / "fuzz.onnx", tmp_path / "fuzz.npz"
    model.write_bytes(blob)
    target.unlink(missing_ok=True)
    err = io.StringIO()
    with redirect_stderr(err):
        # --check: a compile that succeeds must also agree with onnxruntime
        code = main([str(model), "-o", str(target), "--quiet", "--check", "3",
                     "--input-range=-1,1"])
    assert code in (0, 2), err.getvalue()
    if code == 2:
        assert err.getvalue().startswith("cnn2mlp: error:") and not target.exists()
    else:
        assert target.exists()


# ------------------------------------------------------------------ outputs are never lost
@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(small_model(), str(path))
    return path


@pytest.mark.parametrize("spelling", ["same", "dot", "dotdot", "link"])
def test_output_that_is_the_model_is_refused(model, tmp_path, spelling):
    before = model.read_bytes()
    if spelling == "link":
        (tmp_path / "alias.npz").symlink_to(model)
    target = {"same": model, "dot": tmp_path / "." / model.name,
              "dotdot": tmp_path / ".." / tmp_path.name / model.name,
              "link": tmp_path / "alias.npz"}[spelling]
    proc = run_cli(model, "-o", target, "--target", "csr")
    assert_clean_failure(proc, "is the model file itself")
    assert model.read_bytes() == before


def test_report_or_kernel_may_not_be_the_artifact_or_the_model(model, tmp_path):
    out = tmp_path / "o.npz"
    assert_clean_failure(run_cli(model, "-o", out, "--report", out), "are the same file")
    assert_clean_failure(run_cli(model, "-o", out, "--kernel-py", tmp_path / "m.onnx"),
                         "is the model file itself")
    assert not out.exists()


@pytest.mark.parametrize("flag, name, words", [
    ("-o", "other.onnx", "suffix .onnx names an ONNX model, but this output is a CSR"),
    ("--report", "r.npz", "suffix .npz names a CSR artifact, but this output is a JSON"),
    ("--kernel-py", "k.json", "suffix .json names a JSON report, but this output is a Python")])
def test_output_suffix_must_not_name_another_format(model, tmp_path, flag, name, words):
    args = ["-o", tmp_path / "o.npz"] if flag != "-o" else ["--target", "csr"]
    proc = run_cli(model, flag, tmp_path / name, *args)
    assert_clean_failure(proc, words)
    assert not (tmp_path / name).exists() and not (tmp_path / "o.npz").exists()


def test_output_that_is_a_fifo_is_refused_without_blocking(model, tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(model), "-o", str(fifo)],
                          capture_output=True, text=True, timeout=60)
    assert_clean_failure(proc, "not a regular file")


def test_output_through_a_symlink_writes_its_target(model, tmp_path):
    real, link = tmp_path / "real.npz", tmp_path / "link.npz"
    real.write_bytes(PREVIOUS)
    link.symlink_to(real)
    assert run_cli(model, "-o", link, "--quiet").returncode == 0
    assert link.is_symlink() and real.read_bytes() != PREVIOUS
    import cnn2mlp

    assert cnn2mlp.load(link).input_shape == (2, 8, 8)


def test_report_failure_keeps_the_previous_artifact(model, tmp_path, monkeypatch):
    """All outputs of a run are committed together: a report that cannot be written leaves
    the artifact as it was."""
    import cnn2mlp.cli as cli_module

    out, report = tmp_path / "o.npz", tmp_path / "r.json"
    out.write_bytes(PREVIOUS)

    def broken_report(*args, **kwargs):
        raise OSError(28, "No space left on device", str(report))

    monkeypatch.setattr(cli_module, "report_dict", broken_report)
    err = io.StringIO()
    with redirect_stderr(err):
        assert main([str(model), "-o", str(out), "--report", str(report), "--quiet"]) == 2
    assert "No space left on device" in err.getvalue() and "Traceback" not in err.getvalue()
    assert out.read_bytes() == PREVIOUS and not report.exists()
    assert [p.name for p in tmp_path.iterdir() if ".stage" in p.name] == []


def test_file_size_limit_is_a_clean_error(model, tmp_path):
    """RLIMIT_FSIZE makes a write fail with EFBIG: exit 2 with the OS's words, no temp file."""
    import signal

    out = tmp_path / "o.npz"
    out.write_bytes(PREVIOUS)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # cnn2mlp itself must ignore it

    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(model), "-o", str(out)],
                          capture_output=True, text=True, preexec_fn=limit)
    assert_clean_failure(proc, "File too large")
    assert out.read_bytes() == PREVIOUS
    assert [p.name for p in tmp_path.iterdir() if ".stage" in p.name] == []


def test_sigterm_removes_staged_files(tmp_path):
    """SIGTERM while the staged artifact is being checked: nothing is left behind."""
    import signal
    import time

    # A batch-1 model: the reference check runs one short onnxruntime call per sample, so
    # the signal is handled within milliseconds (Python runs handlers between C calls).
    b = OnnxBuilder((4, 16, 16), batch=1, opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 4})
    b.activation("Relu")
    model = tmp_path / "big.onnx"
    onnx.save(b.build(), str(model))
    out = tmp_path / "o.npz"
    proc = subprocess.Popen([sys.executable, "-m", "cnn2mlp.compile", str(model), "-o", str(out),
                             "--check", "100000", "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.iterdir() if ".stage" in p.name]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, proc.stderr.read()
    assert "terminated; nothing was written" in proc.stderr.read()
    assert [p.name for p in tmp_path.iterdir()] == ["big.onnx"]


@pytest.mark.parametrize("args, words", [
    (["--input-range", "-1"], "not LO,HI"), (["--input-range", "nan,1"], "finite"),
    (["--input-range", "1,1"], "LO must be below HI"), (["--input-range", ""], "not LO,HI"),
    (["--max-bytes", "infG"], "positive, finite size"), (["--max-bytes", "-5M"], "positive"),
    (["--check", "-5"], "cannot be negative"), (["--tolerance", "nan"], "finite number"),
    (["--epsilon", "0"], "finite number > 0")])
def test_bad_numbers_are_exit_2(model, tmp_path, args, words):
    proc = run_cli(model, "-o", tmp_path / "o.npz", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert words in proc.stderr, proc.stderr
    assert not (tmp_path / "o.npz").exists()


def test_negative_input_range_is_accepted(model, tmp_path):
    proc = run_cli(model, "-o", tmp_path / "o.npz", "--input-range", "-1,1", "--check", "4")
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------- what the model computes
def test_non_finite_values_created_by_the_model_name_the_node(tmp_path, out):
    """A negative variance (sqrt of a negative) and a division by zero make NaN/Inf during
    compilation, not in the file's weights: refused like NaN weights."""
    b = OnnxBuilder((2, 6, 6), opset=13, seed=0)
    b.node("BatchNormalization", [b.current, b.const(np.ones(2, np.float32)),
                                  b.const(np.zeros(2, np.float32)),
                                  b.const(np.zeros(2, np.float32)),
                                  b.const(np.array([1.0, -3.0], np.float32))], epsilon=1e-3)
    bn = b.current
    b.flatten("flatten")
    b.dense(2)
    model = tmp_path / "var.onnx"
    onnx.save(b.build(), str(model))
    assert_clean_failure(run_cli(model, "-o", out), bn, "NaN/Inf", "--allow-non-finite")
    b = OnnxBuilder((4,), opset=13, seed=0)
    b.node("Div", [b.current, b.const(np.array([1.0, 0.0, 2.0, 1.0], np.float32))])
    div = b.current
    b.dense(2)
    onnx.save(b.build(), str(model))
    assert_clean_failure(run_cli(model, "-o", out), div, "NaN/Inf")


@pytest.mark.parametrize("opset", [6, 99])
def test_opset_outside_the_supported_range(tmp_path, out, opset):
    m = small_model()
    m.opset_import[0].version = opset
    model = tmp_path / "m.onnx"
    model.write_bytes(m.SerializeToString())
    proc = run_cli(model, "-o", out)
    assert_clean_failure(proc, f"opset {opset}", "version_converter")


def test_float16_weights_feeding_a_float_input(tmp_path, out):
    m = small_model()
    init = m.graph.initializer[0]
    half = onnx.numpy_helper.to_array(init).astype(np.float16)
    init.CopyFrom(onnx.numpy_helper.from_array(half, init.name))
    model = tmp_path / "m.onnx"
    model.write_bytes(m.SerializeToString())
    assert_clean_failure(run_cli(model, "-o", out), init.name, "float16", "Cast")


@pytest.mark.parametrize("missing", ["type", "shape"])
def test_output_without_declared_type_or_shape_still_compiles(tmp_path, missing):
    m = small_model()
    if missing == "type":
        m.graph.output[0].ClearField("type")
    else:
        m.graph.output[0].type.tensor_type.ClearField("shape")
    model, out, report = tmp_path / "m.onnx", tmp_path / "o.npz", tmp_path / "r.json"
    model.write_bytes(m.SerializeToString())
    proc = run_cli(model, "-o", out, "--check", "4", "--report", report)
    assert proc.returncode == 0, proc.stderr
    import json

    assert any("declares no type or shape" in n for n in json.loads(report.read_text())["notes"])


def test_check_runs_models_with_external_data(tmp_path):
    """--check on a model whose weights live in an external file (and whose final Softmax
    makes the checker read an inner tensor) runs the original from its own folder."""
    b = OnnxBuilder((2, 6, 6), opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 3})
    b.activation("Relu")
    b.flatten("flatten")
    b.dense(4)
    b.node("Softmax", [b.current], axis=-1)
    folder = tmp_path / "model"
    folder.mkdir()
    m = b.build()
    onnx.external_data_helper.convert_model_to_external_data(
        m, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save(m, str(folder / "m.onnx"))
    assert (folder / "weights.bin").stat().st_size > 0
    proc = run_cli(folder / "m.onnx", "-o", tmp_path / "o.npz", "--check", "8")
    assert proc.returncode == 0, proc.stderr
    assert "check passed" in proc.stdout


def test_constant_folding_is_bounded(tmp_path, out):
    """A ConstantOfShape of [10^6, 10^6] in a 1 KB file is refused before it is made."""
    b = OnnxBuilder((4,), opset=13, seed=0)
    huge = b.node("ConstantOfShape", [b.const(np.array([10**6, 10**6], np.int64))])
    corner = b.node("Slice", [huge, b.const(np.array([0, 0], np.int64)),
                              b.const(np.array([1, 4], np.int64))])
    b.node("Add", ["input", corner])  # x + a (1, 4) corner of the huge constant
    b.dense(2)
    model = tmp_path / "m.onnx"
    onnx.save(b.build(), str(model))
    proc, peak_kib = run_cli_peak(model, "-o", out)
    assert peak_kib < 2_000_000
    assert_clean_failure(proc, "ConstantOfShape", "1,000,000,000,000 values")


def test_matmul_on_a_map_is_bounded_before_it_is_built(tmp_path, out):
    """A 16 KB weight applied to each of 200,000 rows: 819 M non-zeros, never built."""
    b = OnnxBuilder((200_000, 64), opset=13, seed=0)
    b.node("MatMul", [b.current, b.const(np.ones((64, 64), np.float32))])
    b.shape = (200_000, 64)
    model = tmp_path / "m.onnx"
    onnx.save(b.build(), str(model))
    proc, peak_kib = run_cli_peak(model, "-o", out, "--max-bytes", "1G")
    assert_clean_failure(proc, "819,200,000 non-zeros", "--max-bytes")
    assert peak_kib < 1_000_000


def test_opencv_dense_size_is_refused_before_fusion(tmp_path):
    """N → 1 → N with no activation: 160 KB of weights fuse into an N×N dense matrix."""
    n = 20000
    b = OnnxBuilder((n,), opset=13, seed=0)
    b.dense(1)
    b.dense(n)
    model, out = tmp_path / "m.onnx", tmp_path / "o.xml"
    onnx.save(b.build(), str(model))
    proc, peak_kib = run_cli_peak(model, "-o", out)
    assert_clean_failure(proc, "dense weights", "--max-dense-bytes", "20000-20000")
    assert peak_kib < 1_500_000


FUZZ_SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzzed_keras_files_give_clean_errors(fmt, data, tmp_path):
    blob = data.draw(mutated(seed_bytes(fmt)))
    model, target = tmp_path / f"fuzz.{fmt}", tmp_path / "fuzz.npz"
    model.write_bytes(blob)
    target.unlink(missing_ok=True)
    err = io.StringIO()
    with redirect_stderr(err):
        code = main([str(model), "-o", str(target), "--quiet"])
    assert code in (0, 2), err.getvalue()
    assert (code == 0) == target.exists()
    if code == 2:
        assert err.getvalue().startswith("cnn2mlp: error:")


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzzed_artifacts_load_cleanly_or_refuse(data, tmp_path):
    """A damaged .npz either loads into a valid MLP that predicts, or is an ArtifactError;
    never a crash, a segfault or a raw numpy error."""
    import cnn2mlp
    from cnn2mlp.backends.csr import ArtifactError

    path = tmp_path / "fuzz.npz"
    path.write_bytes(data.draw(mutated(seed_bytes("npz"))))
    try:
        model = cnn2mlp.load(path)
    except ArtifactError:
        return
    y = model.predict(np.ones((3,) + model.input_shape, np.float32))
    assert y.shape == (3,) + model.output_shape


def test_pool_with_a_huge_kernel_is_refused_from_its_window_tables(tmp_path, out):
    """A 30000×30000 max pool over a padded 4×4 map: 16 windows, but 9·10^8 offsets each."""
    b = OnnxBuilder((1, 4, 4), opset=13, seed=0)
    b.node("MaxPool", [b.current], kernel_shape=[30000, 30000],
           pads=[14999, 14999, 15000, 15000])
    b.shape = (1, 4, 4)
    b.flatten("flatten")
    b.dense(2)
    model = tmp_path / "m.onnx"
    onnx.save(b.build(), str(model))
    proc, peak_kib = run_cli_peak(model, "-o", out)
    assert_clean_failure(proc, "MaxPool", "--max-bytes")
    assert peak_kib < 1_000_000


def test_nothing_is_committed_after_sigterm_even_if_the_exception_was_swallowed(tmp_path):
    """A signal handler's exception can vanish where it lands (inside an import); the
    recorded request still stops the commit, and the staged file goes."""
    from cnn2mlp import _io

    try:
        with pytest.raises(_io.Terminated):
            with _io.StagedOutputs() as outputs:
                outputs.stage(tmp_path / "o.npz").write_bytes(b"partial")
                _io.request_termination()  # what on_sigterm records before raising
        assert list(tmp_path.iterdir()) == []
    finally:
        _io._termination["requested"] = False
