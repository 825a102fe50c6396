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
from hypothesis import HealthCheck, given, settings, strategies as st

from cnn2mlp.compile import main
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
    return subprocess.run([sys.executable, "-m", "cnn2mlp.compile", *map(str, args)],
                          capture_output=True, text=True)


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


def test_unsupported_op_names_op_node_and_the_supported_list(tmp_path, out):
    m = small_model()
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "Celu"
    relu.name = "my_celu"
    model = tmp_path / "celu.onnx"
    onnx.save(m, str(model))
    assert_clean_failure(run_cli(model, "-o", out), "Celu", "my_celu", "supported ops:", "Conv")


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
    """A Conv 64→64 3×3 on a 1024×1024 map is 38 G non-zeros: refused before any of it."""
    b = OnnxBuilder((64, 1024, 1024), opset=13, seed=0)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 64})
    b.activation("Relu")
    model = tmp_path / "huge.onnx"
    onnx.save(b.build(), str(model))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = run_cli(model, "-o", out)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert_clean_failure(proc, "38,6", "non-zeros", "GiB", "--max-bytes")
    assert max(before, peak_kib) < 1_000_000  # under 1 GiB: nothing was built


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
    proc = run_cli("--check", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_cli(tmp_path / "m.onnx", "-o", tmp_path / "o.unknown")
    assert_clean_failure(proc, "target")


def test_internal_errors_exit_1_and_ask_for_a_report(tmp_path, monkeypatch):
    import cnn2mlp.compile as compile_module

    model = tmp_path / "m.onnx"
    onnx.save(small_model(), str(model))

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(compile_module, "write_target", broken)
    err = io.StringIO()
    with redirect_stderr(err):
        assert main([str(model), "-o", str(tmp_path / "o.npz")]) == 1
    assert "internal error" in err.getvalue() and "report" in err.getvalue()
    assert "Traceback" not in err.getvalue()
    with pytest.raises(ZeroDivisionError):
        main([str(model), "-o", str(tmp_path / "o.npz"), "--debug"])


VALID = small_model().SerializeToString()


@st.composite
def mutated_models(draw) -> bytes:
    data = bytearray(VALID)
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
@given(blob=mutated_models())
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
