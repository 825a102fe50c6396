"""The C target for microcontrollers: sizes as constant expressions in the header, a build
with no allocator or stdio (-DCNN2MLP_NO_MALLOC), read-only weights, self-test vectors
computed by the original model's own runtime, and a Cortex-M4 build."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cnn2mlp.cli import main
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.testing.zoo import block_model

sys.path.insert(0, str(Path(__file__).parent))
from test_batch_shapes import conv_chain  # noqa: E402

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
ROOT = Path(__file__).resolve().parent.parent
ARM_GCC = shutil.which("arm-none-eabi-gcc")
CORTEX_M4 = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os",
             "-std=c99", "-Wall", "-Wextra", "-Werror", "-DCNN2MLP_NO_MALLOC"]
#: what a build without an allocator or stdio must not call
FORBIDDEN = {"malloc", "calloc", "realloc", "free", "fopen", "fread", "printf", "fprintf"}


def model_files(tmp_path: Path) -> dict[str, Path]:
    """The example model, a conv chain (a fixed batch of 1) and a residual block."""
    chain = tmp_path / "chain.onnx"
    onnx.save(conv_chain(1), str(chain))
    residual = tmp_path / "residual.onnx"
    onnx.save(block_model("basic_blocks", size=8, seed=3), str(residual))
    return {"example": ROOT / "examples" / "small_cnn.onnx", "chain": chain,
            "residual": residual}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """Each model as C with 5 self-test vectors, checked against its original."""
    folder = tmp_path_factory.mktemp("mcu")
    out = {}
    for name, model in model_files(folder).items():
        source = folder / f"{name}.c"
        assert main([str(model), "-o", str(source), "--c-self-test", "5", "--check", "5",
                     "--quiet"]) == 0
        out[name] = source
    return out


def compile_and_run(tmp_path: Path, source: Path, program: str, *flags: str) -> str:
    main_c = tmp_path / f"main_{source.stem}.c"
    main_c.write_text(program)
    binary = tmp_path / f"app_{source.stem}"
    subprocess.run([find_compiler(), "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
                    f"-I{source.parent}", *flags, str(main_c), str(source), "-lm", "-o",
                    str(binary)], check=True, capture_output=True, text=True)
    return subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("name", ["example", "chain", "residual"])
def test_the_size_macros_are_constant_and_bound_work_size(written, tmp_path, name):
    source = written[name]
    prefix = source.stem
    upper = prefix.upper()
    program = f"""#include <stdio.h>
#include "{prefix}.h"
static float work1[{upper}_WORK_FLOATS(1)];
static float work16[{upper}_WORK_FLOATS(16)];
static const unsigned long weights = {upper}_WEIGHTS_BYTES;
int main(void) {{
    int batches[4] = {{1, 3, 16, 21}}, i;
    for (i = 0; i < 4; i++)
        if ((size_t){upper}_WORK_FLOATS(batches[i]) < {prefix}_work_size(batches[i])) return 1;
    printf("%lu %lu %lu\\n", (unsigned long)sizeof work1, (unsigned long)sizeof work16, weights);
    return 0;
}}
"""
    printed = compile_and_run(tmp_path, source, program)
    work1, work16, weights = map(int, printed.split())
    assert 0 < work1 < work16 and weights > 0
    header = source.with_suffix(".h").read_text()
    assert f"{upper}_WEIGHTS_BYTES" in header and f"{upper}_WORK_FLOATS(batch)" in header


@pytest.mark.parametrize("name", ["example", "chain", "residual"])
def test_the_self_test_passes_in_the_native_build(written, tmp_path, name):
    source = written[name]
    program = f"""#include <stdio.h>
#include "{source.stem}.h"
int main(void) {{ printf("%.9g\\n", (double){source.stem}_self_test()); return 0; }}
"""
    error = float(compile_and_run(tmp_path, source, program))
    assert 0 <= error <= 1e-4


def test_a_self_test_fails_when_the_build_is_wrong(written, tmp_path):
    """A weight changed in the source: the self-test reports it (the vectors are the
    original model's outputs, not the MLP's)."""
    source = written["chain"]
    broken = tmp_path / "broken" / source.name
    broken.parent.mkdir()
    shutil.copy(source.with_suffix(".h"), broken.with_suffix(".h"))
    text = source.read_text()
    start = text.index("= {\n", text.index("static const float ")) + 4
    end = text.index(",", start)
    program = f"""#include <stdio.h>
#include "{source.stem}.h"
int main(void) {{ printf("%.9g\\n", (double){source.stem}_self_test()); return 0; }}
"""
    broken.write_text(text[:start] + "1.0e+03f" + text[end:])
    assert float(compile_and_run(tmp_path, broken, program)) > 1e-3
    broken.write_text(text[:start] + "NAN" + text[end:])  # a NaN output never passes
    assert float(compile_and_run(tmp_path, broken, program)) == float("inf")


def test_a_keras_self_test_compares_probabilities(tmp_path):
    keras = pytest.importorskip("keras", reason="install the tensorflow extra")
    L = keras.layers
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, activation="relu")(inp)
    model = keras.Model(inp, L.Dense(4, activation="softmax")(L.Flatten()(x)))
    for w in model.weights:
        if "bias" in (getattr(w, "path", None) or w.name):
            w.assign(np.linspace(-0.5, 0.4, int(np.prod(w.shape))).reshape(tuple(w.shape)))
    model.save(tmp_path / "k.keras")
    source = tmp_path / "k.c"
    assert main([str(tmp_path / "k.keras"), "-o", str(source), "--c-self-test", "3",
                 "--quiet"]) == 0
    program = """#include <stdio.h>
#include "k.h"
int main(void) { printf("%.9g\\n", (double)k_self_test()); return 0; }
"""
    assert 0 <= float(compile_and_run(tmp_path, source, program)) <= 1e-4


@pytest.mark.parametrize("name", ["example", "chain", "residual"])
def test_no_malloc_builds_name_no_allocator_or_stdio(written, tmp_path, name):
    source = written[name]
    obj = tmp_path / f"{name}.o"
    subprocess.run([find_compiler(), "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                    "-O2", "-DCNN2MLP_NO_MALLOC", "-c", str(source), "-o", str(obj)],
                   check=True, capture_output=True, text=True)
    nm = subprocess.run(["nm", "-u", str(obj)], check=True, capture_output=True, text=True)
    undefined = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    assert not undefined & FORBIDDEN, undefined & FORBIDDEN
    defined = subprocess.run(["nm", str(obj)], check=True, capture_output=True,
                             text=True).stdout
    assert f"{name}_predict_with" in defined and f" {name}_predict\n" not in defined
    # the weights are read-only: no writable data section holds them
    sizes = subprocess.run(["size", "-A", str(obj)], check=True, capture_output=True,
                           text=True).stdout
    rows = {r.split()[0]: int(r.split()[1]) for r in sizes.splitlines()
            if r.startswith(".") and len(r.split()) >= 2 and r.split()[1].isdigit()}
    read_only = sum(v for k, v in rows.items() if k.startswith((".rodata", ".text")))
    assert read_only > 0 and rows.get(".data", 0) < 1024, rows


def test_no_malloc_with_a_weights_file_is_a_clear_build_error(tmp_path, monkeypatch):
    import cnn2mlp.runtime.c_source as c_source

    monkeypatch.setattr(c_source, "STATIC_LIMIT", 0)
    onnx.save(conv_chain("N"), str(tmp_path / "m.onnx"))
    source = tmp_path / "ext.c"
    assert main([str(tmp_path / "m.onnx"), "-o", str(source), "--quiet"]) == 0
    proc = subprocess.run([find_compiler(), "-std=c99", "-DCNN2MLP_NO_MALLOC", "-c",
                           str(source), "-o", str(tmp_path / "ext.o")], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "weights in the source" in proc.stderr


@pytest.mark.skipif(ARM_GCC is None,
                    reason="no arm-none-eabi-gcc (apt install gcc-arm-none-eabi "
                           "libnewlib-arm-none-eabi)")
@pytest.mark.parametrize("name", ["example", "chain", "residual"])
def test_a_cortex_m4_build_keeps_the_weights_read_only(written, tmp_path, name):
    source = written[name]
    obj = tmp_path / f"{name}.o"
    subprocess.run([ARM_GCC, *CORTEX_M4, "-c", str(source), "-o", str(obj)], check=True,
                   capture_output=True, text=True)
    size = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], check=True,
                          capture_output=True, text=True).stdout
    rows = {r.split()[0]: int(r.split()[1]) for r in size.splitlines()
            if r.startswith(".") and len(r.split()) >= 2 and r.split()[1].isdigit()}
    weights = int(next(line.split()[-1] for line in source.with_suffix(".h").read_text()
                       .splitlines() if "_WEIGHTS_BYTES " in line))
    read_only = sum(v for k, v in rows.items() if k.startswith((".rodata", ".text")))
    assert read_only >= weights and rows.get(".data", 0) < 64, rows
    nm = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], check=True, capture_output=True,
                        text=True).stdout
    assert not {line.split()[-1] for line in nm.splitlines() if line.strip()} & FORBIDDEN


def test_the_cli_reports_flash_and_ram(tmp_path, capsys):
    onnx.save(conv_chain("N"), str(tmp_path / "m.onnx"))
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.c")]) == 0
    out = capsys.readouterr().out
    assert "read-only: flash" in out and "(RAM)" in out


def test_self_test_vectors_need_the_c_target(tmp_path):
    onnx.save(conv_chain("N"), str(tmp_path / "m.onnx"))
    proc = subprocess.run([sys.executable, "-m", "cnn2mlp.compile", str(tmp_path / "m.onnx"),
                           "-o", str(tmp_path / "m.npz"), "--c-self-test", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "-o FILE.c" in proc.stderr
