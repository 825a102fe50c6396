"""The C target: the emitted source builds with the system C compiler under
-std=c99 -Wall -Wextra -Werror -pedantic and computes what the original does."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cnn2mlp.backends.c import CModel, CTarget
from cnn2mlp.runtime.c_build import find_compiler, source_units
from cnn2mlp.runtime.c_activation import expression_uses_only_z_and_a
from cnn2mlp.runtime.c_groups import KernelIndex, kernels_within
from cnn2mlp.runtime.structure import ProductGroup
from cnn2mlp.runtime.c_source import STATIC_LIMIT, c_identifier, c_source
from cnn2mlp.cli import main
from cnn2mlp.compile import compile_model
from cnn2mlp.errors import CompileError
from cnn2mlp.ir.activations import CATALOGUE
from cnn2mlp.comparison import compare
from cnn2mlp.references import onnx_runner, truth_runner
from cnn2mlp.testing import OnnxBuilder
from cnn2mlp.testing.zoo import block_model

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")

sys.path.insert(0, str(Path(__file__).parent))
from test_precision import double_cnn  # noqa: E402


def conv(k=3, s=1, p=1, out=4, g=1):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1),
            "pads": (p, p, p, p), "group": g, "out_channels": out}


def pool(k=2, s=2):
    return {"kernel_shape": (k, k), "strides": (s, s), "dilations": (1, 1), "pads": (0, 0, 0, 0),
            "ceil_mode": 0}


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def compiled_c(model_path: Path, tmp_path: Path, name: str = "net.c") -> CModel:
    out = tmp_path / name
    result = compile_model(model_path, out, target="c")
    return CModel(out, result.mlp)


def assert_matches_onnxruntime(model_path: Path, c_model: CModel, shape, tol=1e-4, seed=0):
    """A batch of 21 (sixteen samples interleaved, then five padded to sixteen), a batch
    of 3 (one sample at a time) and a lone sample against onnxruntime, judged as
    ``--check`` judges: within ``tol`` of onnxruntime, or, where onnxruntime's float32
    result is itself that far from a float64 evaluation of the model, within twice its
    error of that evaluation (random weights without normalization give outputs in the
    hundreds, whose float32 sums two engines round apart)."""
    x = np.random.default_rng(seed).uniform(-1, 1, (21,) + tuple(shape)).astype(np.float32)
    reference = onnx_runner(model_path)(x)
    got = np.concatenate([c_model.predict(x), c_model.predict(x[:3]), c_model.predict(x[3:4])])
    expected = np.concatenate([reference, reference[:3], reference[3:4]])
    judged = compare(expected, got, tol)
    if judged.max_rel_error <= tol:
        return
    run_truth, why_not = truth_runner(model_path, None, False, 0)
    assert run_truth is not None, f"{judged.describe()}; {why_not}"
    truth = run_truth(x)
    judged = compare(expected, got, tol, truth=np.concatenate([truth, truth[:3], truth[3:4]]))
    assert judged.failures == 0, judged.describe()


def test_a_cnn_with_max_pooling(tmp_path):
    b = OnnxBuilder((3, 8, 8), seed=1)
    b.conv(conv(out=6))
    b.activation("Relu")
    b.pool("MaxPool", pool())
    b.conv(conv(out=5, s=2))
    b.activation("Relu")
    b.flatten()
    b.dense(4)
    path = save(b.build(), tmp_path / "cnn.onnx")
    assert_matches_onnxruntime(path, compiled_c(path, tmp_path), (3, 8, 8))


@pytest.mark.parametrize("block", ["basic_blocks", "inverted_residual", "dense_block",
                                   "grouped"])
def test_dags_with_carried_values_and_shortcuts(tmp_path, block):
    path = save(block_model(block, size=8, seed=2), tmp_path / f"{block}.onnx")
    shape = onnx_shape(path)
    assert_matches_onnxruntime(path, compiled_c(path, tmp_path), shape)


def cpu_has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


BUILDS = {"16-byte vectors": [], "portable scalars": ["-DCNN2MLP_PORTABLE"],
          "32-byte vectors": ["-mavx2", "-mfma"],
          # AVX-512's width; GCC splits the vectors where the machine has narrower ones
          "64-byte vectors": ["-DCNN2MLP_VECTOR_BYTES=64"],
          "32-byte vectors, chosen": ["-DCNN2MLP_VECTOR_BYTES=32"]}


@pytest.mark.parametrize("build", BUILDS)
def test_each_form_of_the_convolution_sums_computes_the_same(tmp_path, build):
    """The convolution blocks' sums as 16-byte vectors (the default build: no -march), as
    32-byte vectors (AVX), as 64-byte ones (AVX-512) and as scalars (no GNU C, or
    -DCNN2MLP_PORTABLE); the kernels a block leaves over a few at a time, and the last
    few of those."""
    if build == "32-byte vectors" and not cpu_has_avx2():
        pytest.skip("this machine has no AVX2")
    b = OnnxBuilder((3, 8, 8), seed=7)
    b.conv(conv(out=21))  # a block of sixteen kernels and five left over
    b.activation("Relu")
    b.conv(conv(out=32, s=2))
    b.activation("Relu")
    b.flatten()
    b.dense(6)
    path = save(b.build(), tmp_path / "wide.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    assert "VECTOR_BYTES == 32" in source and "VECTOR_BYTES == 64" in source
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    assert_matches_onnxruntime(path, model, (3, 8, 8))


def test_border_kernels_share_the_stored_weights_only_where_every_weight_is_there():
    """A group whose kernels are another's with some taps, in another order, reads that
    group's weights through a tap index; one whose taps mix the other's columns does not."""
    rng = np.random.default_rng(3)
    full = rng.normal(size=(32, 9)).astype(np.float32)
    source = ProductGroup(full, np.arange(9), np.arange(4), np.arange(128).reshape(32, 4))
    order, taps = rng.permutation(32), np.array([4, 5, 7, 8])  # a corner: four taps
    corner = ProductGroup(full[order][:, taps], np.arange(4), np.arange(1),
                          np.arange(200, 232)[order].reshape(32, 1))
    ordered, found = kernels_within(corner, KernelIndex(source.kernels))
    assert np.array_equal(found, taps)
    assert np.array_equal(ordered.kernels, full[:, taps])  # each kernel with its row
    assert np.array_equal(ordered.rows.ravel(), np.arange(200, 232))
    mixed = full[:, taps].copy()
    mixed[0, [0, 1]] = mixed[0, [1, 0]]  # kernel 0 has the weights, at other taps
    assert kernels_within(ProductGroup(mixed, np.arange(4), np.arange(1),
                                       np.arange(32).reshape(32, 1)), KernelIndex(full)) is None


def test_kernels_named_by_a_few_taps_still_have_every_weight_checked():
    """The first taps name a kernel; a weight of another kernel at a later tap, in a
    blocked kernel or in one left over from the blocks, still refuses the sharing."""
    rng = np.random.default_rng(4)
    full = rng.normal(size=(40, 9)).astype(np.float32)  # two blocks and eight left over
    index = KernelIndex(full)

    def group(kernels):
        return ProductGroup(kernels, np.arange(9), np.arange(1), np.arange(40).reshape(40, 1))

    order = rng.permutation(40)
    ordered, taps = kernels_within(group(full[order]), index)
    assert np.array_equal(taps, np.arange(9)) and np.array_equal(ordered.kernels, full)
    for kernel in (0, 35):  # blocked, left over
        borrowed = full.copy()
        borrowed[kernel, 8] = full[kernel + 1, 8]
        assert kernels_within(group(borrowed), index) is None


SANITIZED_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "net.h"
/* each batch size in its own exact allocation: the sanitizer stops at any read past it */
int main(void)
{
    int sizes[] = {1, 3, 5, 16, 21}, k;
    long i;
    for (k = 0; k < 5; k++) {
        int n = sizes[k];
        float *in = malloc(sizeof(float) * NET_INPUT_SIZE * n);
        float *out = malloc(sizeof(float) * NET_OUTPUT_SIZE * n);
        for (i = 0; i < (long)NET_INPUT_SIZE * n; i++) in[i] = (float)((i * 37 % 101) / 50.0 - 1);
        if (net_predict(in, out, n) != 0) return 3;
        for (i = 0; i < (long)NET_OUTPUT_SIZE * n; i++) printf("%.9g\n", out[i]);
        free(in);
        free(out);
    }
    return 0;
}
"""


def sanitizers_work(tmp_path: Path) -> bool:
    (tmp_path / "probe.c").write_text("int main(void) { return 0; }\n")
    return subprocess.run(["gcc", "-fsanitize=address,undefined", "probe.c", "-o", "probe"],
                          cwd=tmp_path, capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_no_batch_size_reads_or_writes_past_its_arrays(tmp_path):
    """Batches of 1, 3 (one at a time), 5 (padded to sixteen), 16 and 21 under
    AddressSanitizer and UBSan, each
    in an allocation of exactly its size; the values match the library's."""
    if not sanitizers_work(tmp_path):
        pytest.skip("gcc has no AddressSanitizer here")
    path = save(block_model("inverted_residual", size=8, seed=6), tmp_path / "ir.onnx")
    model = compiled_c(path, tmp_path)
    (tmp_path / "main.c").write_text(SANITIZED_DRIVER)
    subprocess.run(["gcc", "-std=c99", "-O1", "-g", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "main.c", "net.c", "-o", "checked", "-lm"],
                   cwd=tmp_path, check=True)
    done = subprocess.run(["./checked"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    printed = np.array(done.stdout.split(), np.float32)
    n_in = int(np.prod(onnx_shape(path)))
    expected = []
    for n in (1, 3, 5, 16, 21):
        x = ((np.arange(n_in * n) * 37 % 101) / 50.0 - 1).astype(np.float32)
        expected.append(model.predict(x.reshape(n, n_in)).ravel())
    np.testing.assert_allclose(printed, np.concatenate(expected), rtol=1e-5, atol=1e-6)


def onnx_shape(path: Path) -> tuple[int, ...]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[1:]
    return tuple(d.dim_value for d in dims)


@pytest.mark.parametrize("op", ["Tanh", "Sigmoid", "Elu", "Softplus", "LeakyRelu", "Softsign"])
def test_element_wise_activations(tmp_path, op):
    b = OnnxBuilder((2, 6, 6), seed=3)
    b.conv(conv(out=3))
    b.activation(op)
    b.flatten()
    b.dense(5)
    b.activation(op)
    b.dense(3)
    path = save(b.build(), tmp_path / f"{op}.onnx")
    assert_matches_onnxruntime(path, compiled_c(path, tmp_path), (2, 6, 6))


# the builds any machine runs (-mavx2 code would not run without AVX2; the 32-byte code
# is built by -DCNN2MLP_VECTOR_BYTES=32 as well)
PORTABLE_BUILDS = [name for name in BUILDS if name != "32-byte vectors"]


@pytest.mark.parametrize("build", PORTABLE_BUILDS)
def test_a_bounded_relus_bound_holds_in_every_build(tmp_path, build):
    """Clip(0, 0.25): most sums pass its upper bound, as each part stores its rows (a
    block of kernels, the kernels left over, a dense layer) and in the copies of a
    carried value."""
    b = OnnxBuilder((3, 6, 6), seed=5)
    b.conv(conv(out=19))
    clip = [b.const(np.float32(0)), b.const(np.float32(0.25))]
    b.node("Clip", [b.current] + clip)
    b.flatten()
    b.dense(12)
    b.node("Clip", [b.current] + clip)
    b.dense(3)
    path = save(b.build(), tmp_path / "clip.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    assert_matches_onnxruntime(path, model, (3, 6, 6))


def test_relu6_is_one_bounded_neuron(tmp_path):
    b = OnnxBuilder((2, 6, 6), seed=4)
    b.conv(conv(out=4))
    b.node("Clip", [b.current, b.const(np.float32(0)), b.const(np.float32(6))])
    b.flatten()
    b.dense(3)
    path = save(b.build(), tmp_path / "relu6.onnx")
    model = compiled_c(path, tmp_path)
    assert "v > (float)6.0 ? (float)6.0 : v" in (tmp_path / "net.c").read_text()
    assert_matches_onnxruntime(path, model, (2, 6, 6))


def test_float64_models_stay_double(tmp_path):
    path = save(double_cnn(), tmp_path / "double.onnx")
    out = tmp_path / "precise.c"
    result = compile_model(path, out, target="c")
    assert "int precise_predict(const double *in, double *out, int batch);" in \
        out.with_suffix(".h").read_text()
    c_model = CModel(out, result.mlp)
    x = np.random.default_rng(5).uniform(-1, 1, (6, 2, 6, 6))
    from onnx.reference import ReferenceEvaluator

    reference = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x})[0]
    got = c_model.predict(x)
    assert got.dtype == np.float64
    assert np.max(np.abs(got - reference) / np.maximum(1, np.abs(reference))) <= 1e-12


def conv_relu_dense(path: Path, seed: int, convs: int = 1, side: int = 6) -> Path:
    """``convs`` 3x3 convolutions to 4 channels each with a ReLU, on a 2-channel map of
    ``side``, then a dense layer of 3."""
    b = OnnxBuilder((2, side, side), seed=seed)
    for _ in range(convs):
        b.conv(conv(out=4))
        b.activation("Relu")
    b.flatten()
    b.dense(3)
    return save(b.build(), path)


def test_big_weights_go_to_a_checked_file(tmp_path, monkeypatch):
    """Above the static limit, the weights are a file beside the source: init checks its
    size and checksum, and predict refuses to run without it."""
    import cnn2mlp.runtime.c_source as c_module

    monkeypatch.setattr(c_module, "STATIC_LIMIT", 0)
    path = conv_relu_dense(tmp_path / "m.onnx", seed=6)
    out = tmp_path / "big.c"
    assert main([str(path), "-o", str(out), "--check", "10", "--quiet"]) == 0
    weights = out.with_suffix(".weights")
    assert weights.exists() and "((const float *)(const void *)(big_blob + " in out.read_text()
    result = compile_model(path)
    assert_matches_onnxruntime(path, CModel(out, result.mlp), (2, 6, 6))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CompileError, match="init returned -3"):
        CModel(out, result.mlp)
    weights.write_bytes(bytes(data[:-1]))
    with pytest.raises(CompileError, match="init returned -3"):
        CModel(out, result.mlp)
    weights.unlink()
    with pytest.raises(CompileError, match="init returned -1"):
        CModel(out, result.mlp)
    assert STATIC_LIMIT == 4 * 2**20


def test_the_weights_go_where_c_weights_says(tmp_path, monkeypatch):
    """--c-weights file: a weights file even for a small model; source: static arrays even
    above the limit (a microcontroller with a big flash); auto: by size. Each passes
    --check."""
    import cnn2mlp.runtime.c_source as c_module

    path = conv_relu_dense(tmp_path / "m.onnx", seed=9)
    for choice, limit, external in (("file", None, True), ("source", 0, False),
                                    ("auto", None, False), ("auto", 0, True)):
        if limit is not None:
            monkeypatch.setattr(c_module, "STATIC_LIMIT", limit)
        out = tmp_path / f"{choice}_{limit}" / "m.c"
        out.parent.mkdir()
        assert main([str(path), "-o", str(out), "--c-weights", choice, "--check", "5",
                     "--quiet"]) == 0
        assert out.with_suffix(".weights").exists() == external, choice
        assert ("static const float L0_" in out.read_text()) != external
        monkeypatch.undo()


def test_a_source_written_in_units_builds_in_parallel_and_as_one_program(tmp_path,
                                                                          monkeypatch):
    """With its weights in a file, the target is written in units (as many as cores):
    --check builds them in parallel, a user's compiler without CNN2MLP_UNIT builds one
    program; both compute what onnxruntime does."""
    import cnn2mlp.backends.c as c_target

    monkeypatch.setattr(c_target, "build_units", lambda layers: 3)
    path = conv_relu_dense(tmp_path / "m.onnx", seed=13, convs=2, side=8)
    out = tmp_path / "m.c"
    assert main([str(path), "-o", str(out), "--c-weights", "file", "--check", "5",
                 "--quiet"]) == 0
    assert source_units(out.read_text()) == 3
    mlp = compile_model(path).mlp
    assert_matches_onnxruntime(path, CModel(out, mlp), (2, 8, 8))
    assert_matches_onnxruntime(path, CModel(out, mlp, units=3), (2, 8, 8))


def test_names_from_the_model_never_reach_the_code(tmp_path):
    assert c_identifier("3 bad-name;") == "m_3_bad_name"
    assert c_identifier("int") == "m_int"
    assert c_identifier("") == "model"
    assert c_identifier("évil*/#include") == "vil_include"
    assert c_identifier("double") == "m_double"
    b = OnnxBuilder((2, 4, 4), seed=7)
    b.conv(conv(out=2))
    b.activation("Relu")
    b.flatten()
    b.dense(2)
    path = save(b.build(), tmp_path / "m.onnx")
    out = tmp_path / "9 lives*.c"
    assert main([str(path), "-o", str(out), "--quiet"]) == 0
    assert "int m_9_lives_predict(" in out.with_suffix(".h").read_text()
    assert main([str(path), "-o", str(tmp_path / "x.c"), "--c-prefix", "robot arm",
                 "--quiet"]) == 0
    assert "#define ROBOT_ARM_INPUT_SIZE 32" in (tmp_path / "x.h").read_text()


def test_the_catalogues_c_expressions_can_be_renamed():
    assert all(expression_uses_only_z_and_a(a.c) for a in CATALOGUE)
    assert not expression_uses_only_z_and_a("fabsz(z)")


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    """Source and header are staged together: when --check fails, neither appears."""
    b = OnnxBuilder((2, 4, 4), seed=8)
    b.conv(conv(out=2))
    b.activation("Relu")
    b.flatten()
    b.dense(2)
    path = save(b.build(), tmp_path / "m.onnx")
    built_predict = CModel.predict
    monkeypatch.setattr(CModel, "predict", lambda self, x: built_predict(self, x) + 1.0)
    assert main([str(path), "-o", str(tmp_path / "m.c"), "--check", "5", "--quiet"]) != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_the_readmes_cpp_program_prints_what_predict_returns(tmp_path):
    text = README[README.index("### Using the C target from C++"):]
    program = text[text.index("```cpp\n") + 7:text.index("\n```", text.index("```cpp"))]
    build = text[text.index("```sh\n") + 6:text.index("\n```", text.index("```sh"))]
    b = OnnxBuilder((3, 8, 8), seed=9)
    b.conv(conv(out=4))
    b.activation("Relu")
    b.pool("MaxPool", pool())
    b.flatten()
    b.dense(10)
    path = save(b.build(), tmp_path / "model.onnx")
    result = compile_model(path, tmp_path / "model.c")
    (tmp_path / "main.cpp").write_text(program)
    for command in build.splitlines():
        subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    printed = subprocess.run(["./app"], cwd=tmp_path, capture_output=True, text=True,
                             check=True).stdout.split()
    x = np.full((1, 3, 8, 8), 0.5, np.float32)
    expected = CModel(tmp_path / "model.c", result.mlp).predict(x).ravel()
    np.testing.assert_allclose(np.array(printed, float), expected, rtol=1e-5, atol=1e-6)


def test_a_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    b = OnnxBuilder((2, 4, 4), seed=10)
    b.flatten()
    b.dense(2)
    path = save(b.build(), tmp_path / "m.onnx")
    result = compile_model(path, tmp_path / "m.c")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(CompileError, match="cannot run the C compiler"):
        CModel(tmp_path / "m.c", result.mlp)


def test_the_target_is_registered_by_its_suffix():
    from cnn2mlp.backends import target_for

    assert isinstance(target_for("robot.c"), CTarget)
    assert c_source  # the module's entry point for the benchmark


def test_two_models_in_units_link_into_one_program(tmp_path):
    """Each model's own names (its weights' buffer among them) carry its prefix: two
    models' sources written in units, their weights in files, link into one library."""
    compiler = find_compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    objects = []
    for prefix, seed in (("first", 1), ("second", 2)):
        mlp = compile_model(conv_relu_dense(tmp_path / f"{prefix}.onnx", seed=seed, convs=2)).mlp
        made = c_source(mlp, prefix, f"{prefix}.h", "", static_limit=0, units=2)
        assert source_units(made.source) == 2
        (tmp_path / f"{prefix}.c").write_text(made.source)
        (tmp_path / f"{prefix}.h").write_text(made.header)
        for unit in range(2):
            objects.append(f"{prefix}{unit}.o")
            subprocess.run([compiler, "-std=c99", "-O1", "-fPIC", f"-DCNN2MLP_UNIT={unit}", "-c",
                            f"{prefix}.c", "-o", objects[-1]], cwd=tmp_path, check=True)
    linked = subprocess.run([compiler, "-shared", *objects, "-o", "both.so", "-lm"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert linked.returncode == 0, linked.stderr
