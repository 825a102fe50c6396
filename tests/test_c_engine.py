"""The c engine: ``cnn2mlp.load(path, engine="c")`` builds the model's C code once for this
machine (a cached library keyed by what it was built from), runs batches over threads in
whole blocks of samples, and computes what the original computes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import scipy.sparse as sp

import cnn2mlp
from cnn2mlp.backends.csr import CsrModel
from cnn2mlp.compile import compile_model
from cnn2mlp.errors import CompileError
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.references import onnx_runner
from cnn2mlp.runtime import c_engine
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.testing.zoo import block_model

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "c-cache"))


def one_layer(seed: int) -> Mlp:
    """The same sparsity pattern for every seed, other weights."""
    pattern = sp.random_array((30, 20), density=0.3, rng=np.random.default_rng(0),
                              format="csr", dtype=np.float32)
    rng = np.random.default_rng(seed)
    pattern.data = rng.normal(size=pattern.nnz).astype(np.float32)
    layer = MlpLayer(pattern, rng.uniform(-1, 1, 30).astype(np.float32), "relu")
    return Mlp([layer], (20,), (30,))


@pytest.mark.parametrize("block", ["inverted_residual", "dense_block", "shuffle_units", "fire"])
def test_architecture_blocks_match_onnxruntime(tmp_path, block):
    model_path = tmp_path / "m.onnx"
    onnx.save(block_model(block, size=12, seed=3), str(model_path))
    compile_model(model_path, tmp_path / "m.npz")
    shape = (3, 12, 12)  # the zoo's input: three channels
    reference = onnx_runner(model_path)
    for threads in (1, 2):
        model = cnn2mlp.load(tmp_path / "m.npz", engine="c", threads=threads)
        assert model.engine == "c"
        for batch in (1, 37, 64):
            x = np.random.default_rng(batch).uniform(-1, 1, (batch,) + shape).astype(np.float32)
            expected = reference(x)
            got = model.predict(x)
            scale = np.maximum(1.0, np.abs(expected))
            assert np.max(np.abs(got - expected) / scale) < 1e-4


def test_models_of_one_shape_and_other_weights_get_their_own_library():
    x = np.random.default_rng(5).normal(size=(40, 20))
    for seed in (1, 2):
        mlp = one_layer(seed)
        got = CsrModel(mlp, engine="c").predict(x, dtype=np.float64)
        np.testing.assert_allclose(got, mlp.forward(x), rtol=1e-10, atol=1e-10)


def test_a_second_load_builds_nothing(monkeypatch):
    mlp = one_layer(3)
    CsrModel(mlp, engine="c")

    def no_build(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(c_engine, "build_library", no_build)
    x = np.random.default_rng(6).normal(size=(3, 20)).astype(np.float32)
    np.testing.assert_allclose(CsrModel(mlp, engine="c").predict(x), mlp.forward(x),
                               rtol=1e-5, atol=1e-5)


def test_without_a_compiler_the_load_says_what_to_do(monkeypatch):
    monkeypatch.setattr(c_engine, "find_compiler", lambda: None)
    with pytest.raises(ValueError, match="c engine needs a C compiler"):
        CsrModel(one_layer(1), engine="c")


@pytest.mark.parametrize("batch, threads, chunks", [
    (64, 2, [(0, 32), (32, 64)]), (37, 2, [(0, 16), (16, 37)]), (20, 2, [(0, 20)]),
    (64, 1, [(0, 64)]), (50, 3, [(0, 16), (16, 32), (32, 50)]), (1, 4, [(0, 1)])])
def test_a_batch_spreads_over_threads_in_whole_blocks(batch, threads, chunks):
    engine = c_engine.CEngine.__new__(c_engine.CEngine)
    engine.threads = threads
    assert engine.chunks(batch) == chunks


def test_a_failing_build_says_so_at_load(monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    with pytest.raises(CompileError,
                       match=r"C compiler .false. failed \(exit status 1\): it printed nothing"):
        CsrModel(one_layer(4), engine="c")


def test_a_build_split_into_units_computes_what_one_unit_does(tmp_path, monkeypatch):
    """The c engine compiles its source as units in parallel (one a core): three units
    give the same outputs as one, and the library exports only the model's functions."""
    import subprocess

    model_path = tmp_path / "m.onnx"
    onnx.save(block_model("dense_block", size=8, seed=2), str(model_path))
    compile_model(model_path, tmp_path / "m.npz")
    x = np.random.default_rng(9).uniform(-1, 1, (21, 3, 8, 8)).astype(np.float32)
    outputs = {}
    for units in (1, 3):
        monkeypatch.setattr(c_engine, "build_units", lambda layers, units=units: units)
        monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / f"cache{units}"))
        model = cnn2mlp.load(tmp_path / "m.npz", engine="c")
        outputs[units] = model.predict(x)
        (library,) = (tmp_path / f"cache{units}").glob("*.so")
        exported = subprocess.run(["nm", "-D", "--defined-only", str(library)],
                                  capture_output=True, text=True, check=True).stdout
        names = {line.split()[-1] for line in exported.splitlines() if " T " in line}
        assert names == {"mlp_init", "mlp_predict", "mlp_predict_with", "mlp_work_size"}
    np.testing.assert_array_equal(outputs[1], outputs[3])
    expected = onnx_runner(model_path)(x)
    assert np.max(np.abs(outputs[3] - expected) / np.maximum(1, np.abs(expected))) < 1e-4


def test_read_only_and_sliced_inputs_give_what_a_fresh_array_gives():
    """The arrays' addresses come through the buffer protocol, or numpy's ctypes view for
    a read-only array (``c_build.address``): a view into a larger batch, a read-only one
    and a fresh copy compute the same."""
    from cnn2mlp.runtime.c_build import address

    mlp = one_layer(5)
    model = CsrModel(mlp, engine="c", threads=1)
    batch = np.random.default_rng(6).normal(size=(40, mlp.layers[0].n_in)).astype(np.float32)
    expected = model.predict(batch[7:25].copy())
    frozen = batch.copy()
    frozen.setflags(write=False)
    assert np.array_equal(model.predict(frozen[7:25]), expected)
    assert np.array_equal(model.predict(batch[7:25]), expected)  # a view: its own address
    assert address(batch[7:25]) == batch[7:25].ctypes.data
    assert address(frozen[7:25]) == frozen[7:25].ctypes.data
    np.testing.assert_allclose(expected, mlp.forward(batch[7:25].astype(np.float64)),
                               rtol=1e-4, atol=1e-4)
