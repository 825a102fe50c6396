"""The default engine: the model's C code where a C compiler works (built once, cached under
a key made from the MLP's arrays, so a cached load generates no source), numba where not,
with one line saying why when a build fails; ``CNN2MLP_ENGINE`` and ``engine=`` choose."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import cnn2mlp
from cnn2mlp.compile import compile_model
from cnn2mlp.ir.weights import weight_arrays
from cnn2mlp.references import onnx_runner
from cnn2mlp.runtime import c_engine
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.testing.zoo import block_model

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")


@pytest.fixture
def artifact(tmp_path, monkeypatch):
    """A residual block compiled to .npz; the default engine unpinned, a private cache."""
    monkeypatch.delenv("CNN2MLP_ENGINE", raising=False)
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.onnx"
    onnx.save(block_model("basic_blocks", size=8, seed=5), str(model))
    out = tmp_path / "m.npz"
    compile_model(model, out)
    return model, out


def inputs(n=7):
    return np.random.default_rng(n).uniform(-1, 1, (n, 3, 8, 8)).astype(np.float32)


@needs_cc
def test_the_default_is_the_c_engine_and_matches_the_original(artifact):
    model, out = artifact
    loaded = cnn2mlp.load(out)
    assert loaded.engine == "c"
    expected = onnx_runner(model)(inputs())
    got = loaded.predict(inputs())
    assert np.max(np.abs(got - expected) / np.maximum(1, np.abs(expected))) < 1e-4


def test_without_a_compiler_the_default_is_numba_with_the_same_results(artifact, monkeypatch,
                                                                       tmp_path):
    pytest.importorskip("numba")
    model, out = artifact
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cc, gcc or clang to find
    assert find_compiler() is None
    loaded = cnn2mlp.load(out)
    assert loaded.engine == "numba"
    expected = onnx_runner(model)(inputs())
    assert np.max(np.abs(loaded.predict(inputs()) - expected)
                  / np.maximum(1, np.abs(expected))) < 1e-4


@needs_cc
def test_a_failing_compiler_falls_back_with_one_line(artifact, monkeypatch, capsys):
    pytest.importorskip("numba")
    _, out = artifact
    monkeypatch.setenv("CC", "false")
    loaded = cnn2mlp.load(out)
    assert loaded.engine == "numba"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the c engine could not build this model" in err[0]
    assert "'false' failed" in err[0] and "running it on numba" in err[0]


def test_the_engine_variable_and_argument_choose(artifact, monkeypatch):
    _, out = artifact
    monkeypatch.setenv("CNN2MLP_ENGINE", "scipy")
    assert cnn2mlp.load(out).engine == "scipy"
    monkeypatch.setenv("CNN2MLP_ENGINE", "fortran")
    with pytest.raises(ValueError, match="CNN2MLP_ENGINE='fortran'"):
        cnn2mlp.load(out)
    assert cnn2mlp.load(out, engine="scipy").engine == "scipy"


@needs_cc
def test_a_cached_load_generates_and_builds_nothing(artifact, monkeypatch):
    _, out = artifact
    first = cnn2mlp.load(out, engine="c").predict(inputs())
    generated = c_engine.BuiltModel.generated

    def no_build(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(c_engine, "build_library", no_build)
    again = cnn2mlp.load(out, engine="c").predict(inputs())
    assert c_engine.BuiltModel.generated == generated
    np.testing.assert_array_equal(first, again)


@needs_cc
def test_the_cache_key_changes_with_the_weights_the_flags_and_the_compiler(artifact,
                                                                          monkeypatch):
    _, out = artifact
    mlp = cnn2mlp.load(out, engine="scipy").mlp
    key = c_engine.mlp_digest(mlp)
    layer = mlp.layers[len(mlp.layers) // 2]
    # the first stored weight array (a CSR's data, or a structured layer's kernels)
    values = next(a for a in weight_arrays(layer.weight) if a.dtype.kind == "f" and a.size > 3)
    values.flat[3] = np.nextafter(values.flat[3], np.float32(np.inf))
    assert c_engine.mlp_digest(mlp) != key  # one ulp of one weight
    layer.bias[0] += 1
    changed = c_engine.mlp_digest(mlp)
    layer.activation = "identity" if layer.activation != "identity" else "relu"
    assert c_engine.mlp_digest(mlp) != changed
    compiler = find_compiler()
    before = c_engine.machine_key(compiler)
    monkeypatch.setattr(c_engine, "FLAGS", c_engine.FLAGS + ["-fno-unroll-loops"])
    c_engine.machine_key.cache_clear()
    assert c_engine.machine_key(compiler) != before
    c_engine.machine_key.cache_clear()
    monkeypatch.undo()
    assert c_engine.machine_key(compiler + " ") != c_engine.machine_key(compiler)
    c_engine.machine_key.cache_clear()
