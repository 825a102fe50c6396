"""The default engine: the model's C code where a C compiler works (built once, cached under
a key made from the file's bytes, so a cached load reads no layer and generates no source),
numba where not,
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


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A residual block compiled to .npz once for the module (its C code built once, in
    the module's cache, by the first test that loads it)."""
    folder = tmp_path_factory.mktemp("default-engine")
    model = folder / "m.onnx"
    onnx.save(block_model("basic_blocks", size=8, seed=5), str(model))
    out = folder / "m.npz"
    compile_model(model, out)
    return model, out, folder / "cache"


@pytest.fixture
def artifact(compiled, tmp_path, monkeypatch):
    """The compiled block copied for the test (which may change it); the default engine
    unpinned; the module's cache (a test that damages cached files takes a copy of it:
    ``own_cache``)."""
    model, out, cache = compiled
    monkeypatch.delenv("CNN2MLP_ENGINE", raising=False)
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(cache))
    copy = tmp_path / "m.npz"
    copy.write_bytes(out.read_bytes())
    return model, copy


def own_cache(tmp_path, monkeypatch):
    """A copy of the module's cache for the test alone (one whose files it damages)."""
    import os
    import shutil

    own = tmp_path / "cache"
    shutil.copytree(os.environ["CNN2MLP_C_CACHE"], own)
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(own))
    return own


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


@needs_cc
def test_a_cached_load_reads_no_layer_of_the_file(artifact, monkeypatch):
    """The cache key is the file's digest: a hit runs without reading the layers; the
    layers are read when asked for, and equal the file's."""
    from cnn2mlp.backends import csr

    _, out = artifact
    first = cnn2mlp.load(out, engine="c").predict(inputs())
    reader = csr.read_layers

    def no_reading(*args, **kwargs):
        raise AssertionError("the layers were read")

    monkeypatch.setattr(csr, "read_layers", no_reading)
    loaded = cnn2mlp.load(out)
    assert loaded.engine == "c" and loaded.input_shape == (3, 8, 8)
    np.testing.assert_array_equal(loaded.predict(inputs()), first)
    monkeypatch.setattr(csr, "read_layers", reader)
    expected, _ = csr.read_csr(out)
    assert len(loaded.layers) == len(expected.layers)
    np.testing.assert_array_equal(loaded.mlp.forward(inputs()), expected.forward(inputs()))


@needs_cc
def test_any_byte_of_the_file_makes_a_new_key(artifact):
    """Another note in the file's meta (the same arrays) is another file: built again;
    the same file again is not."""
    from cnn2mlp.backends import csr

    _, out = artifact
    cnn2mlp.load(out, engine="c")
    generated = c_engine.BuiltModel.generated
    cnn2mlp.load(out, engine="c")
    assert c_engine.BuiltModel.generated == generated
    mlp, meta = csr.read_csr(out)
    other = out.with_name("other.npz")
    csr.save_csr(mlp, other, {**meta, "source": "elsewhere"})
    np.testing.assert_array_equal(cnn2mlp.load(other, engine="c").predict(inputs()),
                                  cnn2mlp.load(out, engine="c").predict(inputs()))
    assert c_engine.BuiltModel.generated == generated + 1


@needs_cc
def test_a_file_replaced_after_a_cached_load_is_not_read_as_the_loaded_one(artifact):
    from cnn2mlp.backends import csr
    from cnn2mlp.backends.npz_reader import ArtifactError

    _, out = artifact
    cnn2mlp.load(out, engine="c")
    loaded = cnn2mlp.load(out)
    mlp, meta = csr.read_csr(out)
    mlp.layers[0].bias[0] += 1
    csr.save_csr(mlp, out, meta)
    with pytest.raises(ArtifactError, match="changed after it was loaded"):
        loaded.layers


@needs_cc
def test_a_damaged_file_fails_the_default_load_as_itself(artifact, capsys):
    """Not read at open, a damaged layer still fails the load, with the member named,
    and is never reported as a build that fell back."""
    from cnn2mlp.backends import csr
    from cnn2mlp.backends.npz_reader import ArtifactError

    _, out = artifact
    mlp, meta = csr.read_csr(out)
    arrays = dict(np.load(out))
    damaged = next(k for k in arrays if k.endswith(".shape") and k != "layer0.shape")
    arrays[damaged] = arrays[damaged] + 1
    np.savez(out, **arrays)
    with pytest.raises(ArtifactError, match=f"'{damaged[:-6]}"):
        cnn2mlp.load(out)
    assert "could not build" not in capsys.readouterr().err


@needs_cc
def test_a_damaged_cached_weights_file_is_rebuilt_not_run(artifact, tmp_path, monkeypatch):
    _, out = artifact
    expected = cnn2mlp.load(out, engine="c").predict(inputs())
    for weights in own_cache(tmp_path, monkeypatch).glob("*.weights"):  # this model's too
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x40
        weights.write_bytes(bytes(data))
    generated = c_engine.BuiltModel.generated
    got = cnn2mlp.load(out, engine="c").predict(inputs())
    assert c_engine.BuiltModel.generated == generated + 1
    np.testing.assert_array_equal(got, expected)


CACHED_LOAD = """
import sys
import numpy as np
import cnn2mlp
model = cnn2mlp.load(sys.argv[1])
model.predict(np.zeros((1,) + model.input_shape, np.float32))
heavy = ("scipy", "cnn2mlp.runtime.c_source", "cnn2mlp.runtime.plan", "cnn2mlp.ir.mlp")
print(model.engine, sorted(k for k in sys.modules if k.startswith(heavy)))
"""


@needs_cc
def test_a_cached_load_imports_neither_scipy_nor_the_generator(artifact):
    """scipy's import alone was a quarter second of a cached start that aims at half a
    second: a cached load and predict import no scipy, no C generator, no MLP layers."""
    import subprocess
    import sys

    _, out = artifact
    cnn2mlp.load(out, engine="c")  # built, or found in the module's cache
    proc = subprocess.run([sys.executable, "-c", CACHED_LOAD, str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["c", "[]"], proc.stdout
