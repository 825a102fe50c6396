"""Hardening, round 3: ``--check`` judges every output on its own and never crashes, the C
target and the c engine's cache cannot be turned against the host, and the input domain
read off a model is one its data plausibly fills."""
from __future__ import annotations

import ctypes
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cnn2mlp import check as check_module
from cnn2mlp.cli import main
from cnn2mlp.comparison import compare
from cnn2mlp.compile import compile_model
from cnn2mlp.errors import CompileError
from cnn2mlp.frontends import load_model
from cnn2mlp.ir.domain import infer_input_domain
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.c_source import c_identifier
from cnn2mlp.testing import OnnxBuilder

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
GEO = {"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1),
       "group": 1, "out_channels": 3}


def small_cnn(path: Path, preprocess=None, activation: str = "Relu", **attrs) -> Path:
    """Conv, an activation, Flatten, Gemm: negative weights and non-zero biases."""
    b = OnnxBuilder((3, 4, 4), batch="N", opset=13, seed=11)
    if preprocess is not None:
        preprocess(b)
    b.conv(GEO)
    b.node(activation, [b.current], **attrs)
    b.flatten()
    b.dense(3)
    onnx.save(b.build(), str(path))
    return path


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnn2mlp.compile", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)


def assert_clean_refusal(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


# ------------------------------------------------------------------------------ --check
def test_one_overflowing_output_widens_no_other():
    """The float32 reference overflows at output 0; the MLP doubles output 1. The
    overflow's infinite error widens no slack: output 1 fails."""
    truth = np.array([[3.5e38, 2.0, -1.0]])
    reference = np.array([[np.inf, 2.0, -1.0]])
    got = np.array([[np.inf, 4.0, -1.0]])
    judged = compare(reference, got, 1e-4, truth=truth, nan_agrees=False)
    assert not judged.passed and judged.failures == 1
    fine = compare(reference, np.array([[np.inf, 2.0, -1.0]]), 1e-4, truth=truth,
                   nan_agrees=False)
    assert fine.passed


def test_float32_noise_is_judged_against_the_float64_truth():
    truth = np.array([[1000.0, 1.0]])
    reference = np.array([[1000.5, 1.0]])   # the float32 reference off by 5e-4
    got = np.array([[999.6, 1.0]])          # the MLP off by 4e-4 the other way
    assert compare(reference, got, 1e-4, truth=truth).passed
    assert not compare(reference, got, 1e-4, truth=truth, float32_slack=False).passed


def test_nan_in_the_reference_never_passes_a_check():
    both = compare(np.array([[np.nan, 1.0]]), np.array([[np.nan, 1.0]]), 1e-4, nan_agrees=False)
    assert not both.passed and both.reference_nans == 1
    assert "NaN" in both.describe()


def test_a_failing_float64_evaluation_is_said_and_the_check_judges_float32(
        tmp_path, monkeypatch, capsys):
    model = small_cnn(tmp_path / "m.onnx")

    def broken(*args):
        def evaluate(x):
            raise RuntimeError("Concat: shapes do not match")
        return evaluate, ""

    monkeypatch.setattr(check_module, "truth_runner", broken)
    assert main([str(model), "-o", str(tmp_path / "m.npz"), "--check", "4"]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out
    assert "no float64 evaluation: it failed (Concat: shapes do not match)" in out


def test_a_float64_evaluation_that_cannot_start_is_said(tmp_path, monkeypatch, capsys):
    model = small_cnn(tmp_path / "m.onnx")

    def cannot(*args):
        raise ValueError("no kernel")

    monkeypatch.setattr(check_module, "truth_runner", cannot)
    assert main([str(model), "-o", str(tmp_path / "m.npz"), "--check", "4"]) == 0
    assert "no float64 evaluation: it failed (no kernel)" in capsys.readouterr().out


# ------------------------------------------------------------------------- the C target
@needs_cc
@pytest.mark.parametrize("name", ['q"uote.c', "line\nbreak.c", "ret\rurn.c", "sep\u2028.c",
                                  "back\\slash.c"])
def test_output_names_an_include_cannot_carry_are_refused(tmp_path, name):
    model = small_cnn(tmp_path / "m.onnx")
    proc = run(model, "-o", tmp_path / name)
    assert_clean_refusal(proc, "#include")
    assert not list(tmp_path.glob("*.c")) and not list(tmp_path.glob("*.h"))


def test_prefixes_avoid_the_c_library_and_differ_in_more_than_case():
    for reserved in ("sem", "mtx", "pthread_mutex", "pthread_attr", "cnd", "thrd", "strlen",
                     "memo", "isdigit", "tolower"):
        assert c_identifier(reserved) == f"m_{reserved}"
    assert c_identifier("Net") == c_identifier("NET") == "net"
    assert c_identifier("semantic") == "semantic" and c_identifier("model") == "model"


@needs_cc
def test_the_header_guard_is_the_projects_own(tmp_path):
    model = small_cnn(tmp_path / "m.onnx")
    assert main([str(model), "-o", str(tmp_path / "model.c"), "--quiet"]) == 0
    header = (tmp_path / "model.h").read_text()
    assert "#ifndef CNN2MLP_MODEL_H" in header and "#ifndef MODEL_H" not in header
    assert main([str(model), "-o", str(tmp_path / "s.c"), "--c-prefix", "sem", "--quiet"]) == 0
    assert "int m_sem_init(" in (tmp_path / "s.h").read_text()


@needs_cc
def test_two_models_whose_prefixes_differ_in_case_link_into_one_program(tmp_path):
    model = small_cnn(tmp_path / "m.onnx")
    for prefix in ("Net", "net2"):
        assert main([str(model), "-o", str(tmp_path / f"{prefix}.c"), "--c-prefix", prefix,
                     "--quiet"]) == 0
    program = tmp_path / "both.c"
    program.write_text('#include "Net.h"\n#include "net2.h"\n'
                       "int main(void) { return NET_INPUT_SIZE == NET2_INPUT_SIZE ? 0 : 1; }\n")
    subprocess.run([find_compiler(), "-std=c99", "-Wall", "-Werror", str(program),
                    str(tmp_path / "Net.c"), str(tmp_path / "net2.c"), "-lm", "-o",
                    str(tmp_path / "both")], check=True, capture_output=True)
    assert subprocess.run([str(tmp_path / "both")]).returncode == 0


@needs_cc
@pytest.mark.parametrize("alpha", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_parameters_are_written_as_c_that_compiles(tmp_path, alpha):
    model = small_cnn(tmp_path / "m.onnx", activation="LeakyRelu", alpha=alpha)
    out = tmp_path / "leaky.c"
    proc = run(model, "-o", out, "--allow-non-finite", "--quiet")
    assert proc.returncode == 0, proc.stderr
    source = out.read_text()
    assert "nanf" not in source and "inff" not in source and "(float)inf" not in source
    subprocess.run([find_compiler(), "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                    "-c", str(out), "-o", str(tmp_path / "leaky.o")], check=True,
                   capture_output=True)


@needs_cc
def test_non_finite_weights_are_written_as_c_that_compiles(tmp_path):
    b = OnnxBuilder((4,), batch="N", opset=13, seed=2)
    b.dense(3)
    b.activation("Relu")
    b.dense(2)
    proto = b.build()
    weights = onnx.numpy_helper.to_array(proto.graph.initializer[0]).copy()
    weights[0, 0], weights[1, 1] = np.inf, np.nan
    proto.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(
        weights, proto.graph.initializer[0].name))
    onnx.save(proto, str(tmp_path / "m.onnx"))
    out = tmp_path / "w.c"
    assert run(tmp_path / "m.onnx", "-o", out, "--allow-non-finite", "--quiet").returncode == 0
    subprocess.run([find_compiler(), "-std=c99", "-Wall", "-Werror", "-c", str(out), "-o",
                    str(tmp_path / "w.o")], check=True, capture_output=True)


def build_external(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A C target whose weights (and index arrays) are in its .weights file, built as a
    shared library."""
    import cnn2mlp.runtime.c_source as c_source
    from cnn2mlp.runtime.c_build import build_library

    monkeypatch.setattr(c_source, "STATIC_LIMIT", 0)
    model = small_cnn(tmp_path / "m.onnx")
    out = tmp_path / "ext.c"
    assert main([str(model), "-o", str(out), "--quiet"]) == 0
    folder = tmp_path / "build"
    folder.mkdir()
    return build_library(out, folder), out.with_suffix(".weights")


@needs_cc
def test_a_forged_weights_file_is_refused_before_its_indices_are_used(tmp_path, monkeypatch):
    """Two words changed so that the old linear checksum (word i times 2i+1) still matches,
    and an index set to 2**30: init refuses both (-3), so predict never runs on them."""
    library, weights = build_external(tmp_path, monkeypatch)
    data = bytearray(weights.read_bytes())
    good = bytes(data)
    words = np.frombuffer(bytes(data[:len(data) - len(data) % 8]), "<u8").copy()
    i, j = 1, 2  # d_i (2i+1) + d_j (2j+1) = 0 mod 2^64 with d_i = 5, d_j = -3
    words[i] += np.uint64(5)
    words[j] -= np.uint64(3)
    forged = words.tobytes() + bytes(data[len(words) * 8:])
    for variant in (forged, good[:8] + (2**30).to_bytes(4, "little") + good[12:]):
        weights.write_bytes(variant)
        lib = ctypes.CDLL(str(library))
        lib.ext_init.argtypes = [ctypes.c_char_p]
        assert lib.ext_init(str(weights).encode()) == -3
    weights.write_bytes(good)


@needs_cc
def test_a_second_init_with_another_path_is_refused(tmp_path, monkeypatch):
    library, weights = build_external(tmp_path, monkeypatch)
    other = tmp_path / "copy.weights"
    other.write_bytes(weights.read_bytes())
    lib = ctypes.CDLL(str(library))
    lib.ext_init.argtypes = [ctypes.c_char_p]
    assert lib.ext_init(str(weights).encode()) == 0
    assert lib.ext_init(str(weights).encode()) == 0
    assert lib.ext_init(str(other).encode()) == -4


def test_index_arrays_beyond_int32_are_refused():
    from cnn2mlp.runtime.c_arrays import Arrays
    from cnn2mlp.runtime.c_source import check_fits_int32

    arrays = Arrays("float")
    arrays.add("rows", np.array([0, 2**31], np.int64))
    with pytest.raises(CompileError, match="32-bit ints"):
        check_fits_int32(arrays)


@needs_cc
def test_a_companion_that_cannot_be_written_replaces_nothing(tmp_path, monkeypatch):
    """The header is a link into another folder; moving it there fails: the old source and
    header both stay."""
    import shutil

    from cnn2mlp import _io

    model = small_cnn(tmp_path / "m.onnx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "real.h").write_text("old header")
    (tmp_path / "m.c").write_text("old source")
    (tmp_path / "m.h").symlink_to(elsewhere / "real.h")
    real_move = shutil.move

    def failing(src, dst):
        if Path(dst).parent == elsewhere:
            raise OSError(18, "Invalid cross-device link")
        return real_move(src, dst)

    monkeypatch.setattr(shutil, "move", failing)
    with pytest.raises(CompileError, match="nothing was replaced"):
        with _io.StagedOutputs() as outputs:
            staged = outputs.stage(tmp_path / "m.c")
            outputs.adopt(staged.with_suffix(".h"), tmp_path / "m.h")
            staged.write_text("new source")
            staged.with_suffix(".h").write_text("new header")
    assert (tmp_path / "m.c").read_text() == "old source"
    assert (elsewhere / "real.h").read_text() == "old header"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "m.c", "m.h", "m.onnx"]
    assert [p.name for p in elsewhere.iterdir()] == ["real.h"]
    monkeypatch.setattr(shutil, "move", real_move)  # across folders, it works
    assert main([str(model), "-o", str(tmp_path / "m.c"), "--quiet"]) == 0
    assert "CNN2MLP_M_H" in (elsewhere / "real.h").read_text()


# ------------------------------------------------------------------- the c engine's cache
@pytest.fixture
def c_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(folder))
    return folder


def tiny_model(shift: float = 0.0):
    """One ReLU layer, its biases moved by ``shift``."""
    import scipy.sparse as sp

    from cnn2mlp.ir.mlp import Mlp, MlpLayer

    rng = np.random.default_rng(4)
    weight = sp.random_array((6, 5), density=0.6, rng=rng, format="csr", dtype=np.float32)
    weight.data = rng.normal(size=weight.nnz).astype(np.float32)
    bias = (rng.uniform(-1, 1, 6) + shift).astype(np.float32)
    return Mlp([MlpLayer(weight, bias, "relu")], (5,), (6,))


def c_model(mlp):
    from cnn2mlp.backends.csr import CsrModel

    return CsrModel(mlp, engine="c")


LOAD_IN_A_CHILD = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_hardening3 import c_model, tiny_model
mlp = tiny_model(float(sys.argv[2]))
x = np.linspace(-2, 2, 15, dtype=np.float32).reshape(3, 5)
got = c_model(mlp).predict(x)
print("same" if np.allclose(got, mlp.forward(x), rtol=1e-5, atol=1e-6) else "DIFFERENT")
"""


def load_in_a_child(shift: float) -> str:
    """Each load in a fresh process: this one has the library mapped already, and dlopen
    would give back the mapped one whatever the file now holds."""
    proc = subprocess.run([sys.executable, "-c", LOAD_IN_A_CHILD, str(Path(__file__).parent),
                           str(shift)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@needs_cc
def test_a_planted_or_junk_library_is_rebuilt_not_run(c_cache):
    assert load_in_a_child(0.0) == "same"
    (library,) = c_cache.glob("*.so")
    good = library.read_bytes()
    for junk in (b"", b"not a library", good[:200]):
        library.write_bytes(junk)
        assert load_in_a_child(0.0) == "same"
    # another model's library (other biases) under this model's name is not run
    assert load_in_a_child(1.0) == "same"
    planted = [p for p in c_cache.glob("*.so") if p != library][0]
    library.write_bytes(planted.read_bytes())
    assert load_in_a_child(0.0) == "same"


@needs_cc
def test_a_cache_others_can_write_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(shared))
    with pytest.raises(CompileError, match="others can write it"):
        c_model(tiny_model())
    inner = shared / "mine"
    inner.mkdir(mode=0o700)
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(inner))
    with pytest.raises(CompileError, match="others can write the folder"):
        c_model(tiny_model())


@needs_cc
def test_a_cache_variable_naming_a_file_is_said(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "file"))
    with pytest.raises(CompileError, match="CNN2MLP_C_CACHE=.*cannot use it as a folder"):
        c_model(tiny_model())


@needs_cc
def test_a_read_only_cache_falls_back_and_cleans_up(c_cache, monkeypatch):
    """A private cache folder that cannot be written (simulated: as root, which CI runs as,
    a read-only folder is writable) gives way to a temporary folder, removed once loaded."""
    import tempfile

    from cnn2mlp.runtime import c_engine

    made = []
    real_mkdtemp = tempfile.mkdtemp

    def recording(*args, **kwargs):
        made.append(Path(real_mkdtemp(*args, **kwargs)))
        return str(made[-1])

    real_build = c_engine.BuiltModel.build

    def refusing(made_source, cache, library, weights, units=1):
        if cache == c_cache:
            raise PermissionError(13, "Permission denied")
        return real_build(made_source, cache, library, weights, units)

    monkeypatch.setattr(c_engine.tempfile, "mkdtemp", recording)
    monkeypatch.setattr(c_engine.BuiltModel, "build", staticmethod(refusing))
    mlp = tiny_model()
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(c_model(mlp).predict(x), mlp.forward(x), rtol=1e-5, atol=1e-6)
    assert made and not any(p.exists() for p in made)


@needs_cc
@pytest.mark.parametrize("compiler,words", [
    ("false", ["'false' failed (exit status 1)", "it printed nothing"]),
    ("true", ["'true' exited 0 but wrote no library"]),
])
def test_a_broken_compiler_is_named_with_what_it_did(c_cache, monkeypatch, compiler, words):
    monkeypatch.setenv("CC", compiler)
    with pytest.raises(CompileError) as raised:
        c_model(tiny_model())
    for word in words:
        assert word in str(raised.value)
    assert not list(c_cache.glob("*.so"))


@needs_cc
def test_a_compiler_that_reports_errors_shows_its_last_lines(c_cache, monkeypatch, tmp_path):
    script = tmp_path / "cc.sh"
    script.write_text("#!/bin/sh\necho 'first line' >&2\necho 'model.c:1: error: broken' >&2\n"
                      "exit 3\n")
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    with pytest.raises(CompileError, match=r"exit status 3\): first line \| model.c:1: error"):
        c_model(tiny_model())


@needs_cc
def test_a_hanging_compiler_is_stopped(c_cache, monkeypatch, tmp_path):
    script = tmp_path / "cc.sh"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    monkeypatch.setenv("CNN2MLP_C_BUILD_TIMEOUT", "1")
    with pytest.raises(CompileError, match="did not finish in 1 s"):
        c_model(tiny_model())


@needs_cc
def test_a_library_that_kills_its_loader_is_refused_and_not_cached(c_cache, monkeypatch,
                                                                    tmp_path):
    """A compiler whose library aborts the process that loads it (as -fsanitize=address's
    does in a Python not started under ASan): checked in a child, never cached."""
    compiler = find_compiler()
    script = tmp_path / "cc.sh"
    die = tmp_path / "die.c"
    die.write_text("__attribute__((constructor)) static void die(void) { __builtin_trap(); }\n")
    script.write_text(f'#!/bin/sh\nexec {compiler} "$@" {die}\n')
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    with pytest.raises(CompileError, match="does not load in a Python process"):
        c_model(tiny_model())
    assert not list(c_cache.glob("*.so"))


# --------------------------------------------------------------------- the input domain
def domain(tmp_path, preprocess):
    model = small_cnn(tmp_path / "d.onnx", preprocess)
    return infer_input_domain(load_model(model))


def channel_scale(values):
    def preprocess(b):
        b.node("Mul", [b.current, b.const(np.array(values, np.float32).reshape(1, 3, 1, 1))])
    return preprocess


def test_a_channel_scaled_by_zero_leaves_the_domain_to_the_others(tmp_path):
    found = domain(tmp_path, channel_scale([1 / 255, 1 / 255, 0.0]))
    assert found.range == (0.0, 255.0)


@pytest.mark.parametrize("scale", [255.0, 1e30])
def test_a_leading_scale_above_one_is_not_a_domain(tmp_path, scale):
    found = domain(tmp_path, channel_scale([scale] * 3))
    assert found.range == (0.0, 1.0) and "--input-range" in found.source
    assert "no data plausibly fills" in found.source


def test_a_domain_past_float32_is_not_inferred(tmp_path):
    found = domain(tmp_path, channel_scale([1e-40] * 3))
    assert found.range == (0.0, 1.0) and "no data plausibly fills" in found.source


def test_an_input_range_past_float32_is_refused(tmp_path):
    model = small_cnn(tmp_path / "m.onnx")
    proc = run(model, "-o", tmp_path / "m.npz", "--input-range", "0,1e39", "--check", "2")
    assert_clean_refusal(proc, "--input-range", "overflow float32")


def test_a_zeroed_channel_gives_opencv_the_right_box(tmp_path):
    """BatchNorm-style per-channel scale with one zero: the OpenCV target is exact on the
    0..255 pixels the other channels say (it fell back to [0, 1] and was 98 % off)."""
    pytest.importorskip("cv2", reason="install the opencv extra (the XML's --check runs it)")

    model = small_cnn(tmp_path / "m.onnx", channel_scale([1 / 255, 1 / 255, 0.0]))
    proc = run(model, "-o", tmp_path / "m.xml", "--check", "20")
    assert proc.returncode == 0, proc.stderr
    assert "[0, 255]" in proc.stdout and "check passed" in proc.stdout


def test_a_nan_activation_parameter_needs_allow_non_finite(tmp_path):
    model = small_cnn(tmp_path / "m.onnx", activation="LeakyRelu", alpha=float("nan"))
    assert_clean_refusal(run(model, "-o", tmp_path / "m.npz"), "alpha", "--allow-non-finite")
    # allowed, it is refused by the .npz writer (cnn2mlp.load would refuse the file)
    assert_clean_refusal(run(model, "-o", tmp_path / "m.npz", "--allow-non-finite"),
                         "activation parameter is NaN or infinite")
    assert not (tmp_path / "m.npz").exists()


def test_a_nan_scale_with_opencv_and_check_is_a_clean_refusal(tmp_path):
    model = small_cnn(tmp_path / "m.onnx", channel_scale([np.nan, 1.0, 1.0]))
    proc = run(model, "-o", tmp_path / "m.xml", "--check", "3")
    assert_clean_refusal(proc, "NaN")


# ---------------------------------------------------------------------------- the bench
def bench(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnn2mlp.bench", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)


def test_the_bench_never_plots_over_its_model(tmp_path):
    model = small_cnn(tmp_path / "m.onnx")
    before = model.read_bytes()
    (tmp_path / "plot.png").symlink_to(model)
    proc = bench(model, "--plot", tmp_path / "plot.png", "--repeats", "1", "--batch", "1")
    assert proc.returncode == 2 and "destroy" in proc.stderr and "Traceback" not in proc.stderr
    assert model.read_bytes() == before


def test_the_bench_refuses_a_plot_in_a_missing_folder_before_timing(tmp_path):
    model = small_cnn(tmp_path / "m.onnx")
    proc = bench(model, "--plot", tmp_path / "no" / "plot.png", "--repeats", "1")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and "ms" not in proc.stdout


def test_the_bench_refuses_zero_repeats(tmp_path):
    model = small_cnn(tmp_path / "m.onnx")
    proc = bench(model, "--repeats", "0")
    assert proc.returncode == 2 and "--repeats 0" in proc.stderr and "nan" not in proc.stdout


def test_compile_model_api_refuses_a_range_past_float32(tmp_path):
    model = small_cnn(tmp_path / "m.onnx")
    with pytest.raises(CompileError, match="overflow float32"):
        compile_model(model, tmp_path / "m.npz", input_range=(0.0, 1e35))
    assert not (tmp_path / "m.npz").exists()
    assert stat.S_ISREG(model.stat().st_mode)


@needs_cc
def test_batches_above_the_c_int_are_split_not_wrapped(c_cache, monkeypatch):
    """The C functions take the batch as an int: a larger one goes in parts (shown with
    the limit lowered to 5: a batch of 13 runs as 5 + 5 + 3, and gives what one call does)."""
    from cnn2mlp.runtime import c_build

    mlp = tiny_model()
    x = np.random.default_rng(2).normal(size=(13, 5)).astype(np.float32)
    whole = c_model(mlp).predict(x)
    calls = []
    library = c_model(mlp)._engine.built(np.float32).library
    real_run = library._run

    def counting(x_pointer, out_pointer, batch, work):
        calls.append(batch)
        return real_run(x_pointer, out_pointer, batch, work)

    monkeypatch.setattr(c_build, "MAX_BATCH", 5)
    monkeypatch.setattr(library, "_run", counting)
    out = np.empty((13, 6), np.float32)
    library.run(np.ascontiguousarray(x), out, np.empty(library.work_size(13), np.float32))
    assert calls == [5, 5, 3]
    np.testing.assert_array_equal(out, whole)
