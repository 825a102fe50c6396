"""What a new user meets first: --help, usage errors, files the tool does not read, install
hints, the console command."""
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from cnn2mlp.cli import build_parser, main
from cnn2mlp.passes import PASSES
from cnn2mlp.testing import OnnxBuilder


def run(*args, command=(sys.executable, "-m", "cnn2mlp.compile")):
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True)


def test_a_typo_gets_one_line_and_the_option_it_was_meant_to_be(tmp_path):
    proc = run(tmp_path / "m.onnx", "-o", tmp_path / "m.npz", "--chek", "10")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--chek" in lines[0] and "did you mean --check?" in lines[0] and "--help" in lines[0]


def test_a_missing_output_is_one_line_too(tmp_path):
    proc = run(tmp_path / "m.onnx")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "-o/--output" in proc.stderr


def test_help_groups_the_options_lists_the_passes_and_ends_with_examples():
    text = build_parser().format_help()
    for group in ("the model:", "the output:", "checking:", "limits:", "passes and debugging:"):
        assert group in text
    flat = " ".join(text.split())
    for name in PASSES:
        assert name in flat, f"--help does not list the pass {name}"
    for default in ("auto (default)", "text with 17 digits (default)", "default 1G"):
        assert default in flat
    examples = text[text.index("examples:"):]
    assert examples.count("-o model.") >= 3 and "--check" in examples


@pytest.mark.parametrize("suffix, words", [
    (".pt", ("PyTorch", "torch.onnx.export", "README")),
    (".pth", ("PyTorch", "torch.onnx.export")),
    (".pkl", ("pickle", ".onnx")),
    (".safetensors", ("structure", "ONNX")),
])
def test_files_of_other_frameworks_say_how_to_get_a_model_in(tmp_path, suffix, words, capsys):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x02not a model")
    assert main([str(path), "-o", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    for word in words:
        assert word in err


def test_install_hints_use_the_readmes_spelling():
    from cnn2mlp.errors import install_hint

    assert install_hint("fast") == 'pip install -e ".[fast]" (in the cnn2mlp checkout)'
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    sources = "\n".join(p.read_text() for p in (root / "cnn2mlp").rglob("*.py"))
    assert "pip install 'cnn2mlp[" not in sources and "pip install cnn2mlp[" not in sources
    assert 'pip install -e ".[' in (root / "README.md").read_text()


def test_the_console_command_names_itself(tmp_path):
    import shutil

    command = shutil.which("cnn2mlp") or str(pathlib_bin() / "cnn2mlp")
    proc = run("--help", command=(command,))
    assert proc.returncode == 0 and proc.stdout.startswith("usage: cnn2mlp ")
    assert "python -m" not in proc.stdout.splitlines()[0]


def pathlib_bin():
    import pathlib

    return pathlib.Path(sys.executable).parent


def test_two_input_keras_models_are_refused_in_a_full_sentence(tmp_path, capsys):
    keras = pytest.importorskip("keras", reason="install the tensorflow extra")
    a, b = keras.Input((4,), name="left"), keras.Input((4,), name="right")
    model = keras.Model([a, b], keras.layers.Add()([a, b]))
    model.save(tmp_path / "two.keras")
    assert main([str(tmp_path / "two.keras"), "-o", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "2 inputs" in err and "models with one input" in err


def test_the_table_and_the_output_line_say_what_the_bytes_are(tmp_path, capsys):
    b = OnnxBuilder((1, 4, 4), seed=2)
    b.flatten()
    b.dense(3)
    onnx.save(b.build(), str(tmp_path / "m.onnx"))
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.xml")]) == 0
    out = capsys.readouterr().out
    assert "CSR bytes" in out and f"wrote {tmp_path / 'm.xml'} (" in out


def test_the_first_compile_of_the_kernels_is_announced_once_on_a_terminal(tmp_path, monkeypatch):
    pytest.importorskip("numba")
    import io

    from numba.core import config

    from cnn2mlp.runtime import kernel_cache

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))  # nothing cached here
    monkeypatch.setattr(kernel_cache, "_announced", False)
    terminal = Terminal()
    kernel_cache.announce_first_compile(terminal)
    kernel_cache.announce_first_compile(terminal)
    assert terminal.getvalue().count("first use only") == 1
    (tmp_path / "runtime_abc").mkdir()
    (tmp_path / "runtime_abc" / "numba_kernels.f-1.py311.nbi").write_bytes(b"")
    monkeypatch.setattr(kernel_cache, "_announced", False)
    warm = Terminal()
    kernel_cache.announce_first_compile(warm)
    assert warm.getvalue() == ""


def test_the_check_shows_its_steps_on_a_terminal_and_clears_them(tmp_path, monkeypatch, capsys):
    import io

    from cnn2mlp import progress as progress_module

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(progress_module.sys, "stderr", terminal)
    b = OnnxBuilder((1, 4, 4), seed=2)
    b.flatten()
    b.dense(3)
    onnx.save(b.build(), str(tmp_path / "m.onnx"))
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.npz"), "--check", "8"]) == 0
    shown = terminal.getvalue()
    assert "check: starting the reference" in shown and "check: 0/8 inputs" in shown
    assert shown.endswith("\r")  # the status line is blanked before the table


def test_the_example_script_reproduces_the_shipped_model_byte_for_byte():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "make_example.py"
    spec = importlib.util.spec_from_file_location("make_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = path.with_name("small_cnn.onnx").read_bytes()
    assert module.build().SerializeToString() == shipped


@pytest.mark.parametrize("suffix,words", [(".npz", ["cnn2mlp.load", "--artifact"]),
                                          (".nnet", ["verifier", "original"])])
def test_an_artifact_given_as_the_model_says_what_it_is(tmp_path, suffix, words):
    artifact = tmp_path / f"model{suffix}"
    artifact.write_bytes(b"PK\x03\x04")
    proc = run(artifact, "-o", tmp_path / "out.npz")
    assert proc.returncode == 2 and "unknown model format" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in proc.stderr
    bench = run(artifact, command=(sys.executable, "-m", "cnn2mlp.bench"))
    assert bench.returncode == 2 and words[0] in bench.stderr


def test_a_dense_target_says_its_size_before_writing(tmp_path):
    model = tmp_path / "m.onnx"
    b = OnnxBuilder((2, 6, 6), seed=5)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 4})
    b.activation("Relu")
    b.flatten()
    b.dense(3)
    onnx.save(b.build(), str(model))
    for suffix in (".onnx", ".nnet"):
        proc = run(model, "-o", tmp_path / f"out{suffix}")
        assert proc.returncode == 0, proc.stderr
        line = next(l for l in proc.stderr.splitlines() if l.startswith("writing "))
        assert "dense weights" in line and "non-zeros" in line and "--max-dense-bytes" in line
    quiet = run(model, "-o", tmp_path / "q.nnet", "--quiet")
    assert "writing " not in quiet.stderr


def test_the_bench_says_why_it_skips_opencv_in_its_own_terms():
    from cnn2mlp.bench import opencv_skip_reason
    from cnn2mlp.errors import CompileError

    why = opencv_skip_reason(CompileError(
        "m.onnx: as a dense opencv network this MLP needs 9 weights (300 MiB), above "
        "--max-dense-bytes 256 MiB; its widest layer is 3x3. The opencv format stores dense "
        "weights: use --target csr (sparse), or raise --max-dense-bytes"))
    assert "--max-dense-bytes" not in why and "256 MiB" in why and why.endswith(")")


def test_the_readme_gives_the_npz_format_version_the_writer_writes():
    import re

    from cnn2mlp.backends.csr import FORMAT_VERSION

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    stated = re.findall(r"a format version \((\d+)\)", readme)
    assert stated == [str(FORMAT_VERSION)], stated
