"""The c engine's choice between blocks of sixteen samples and one sample at a time
(``runtime/c_batching.py``): timed once at the build for a model whose batched buffers
outgrow the caches, kept beside the library, and either way exact."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import cnn2mlp
from cnn2mlp.compile import compile_model
from cnn2mlp.references import onnx_runner
from cnn2mlp.runtime import c_batching, c_engine
from cnn2mlp.runtime.c_build import CLibrary, find_compiler
from cnn2mlp.testing.zoo import block_model

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.onnx"
    onnx.save(block_model("inverted_residual", size=12, seed=4), str(path))
    compile_model(path, tmp_path / "m.npz")
    return path, tmp_path / "m.npz"


def counting_runs(monkeypatch) -> list[int]:
    """The batch of every call of the C library's predict."""
    batches: list[int] = []
    run = CLibrary.run

    def counted(self, x, out, work):
        batches.append(len(x))
        run(self, x, out, work)

    monkeypatch.setattr(CLibrary, "run", counted)
    return batches


@pytest.mark.parametrize("faster", [c_batching.ONE, c_batching.BLOCKS])
def test_a_big_model_is_timed_once_and_runs_the_faster_way_exactly(model, monkeypatch, faster):
    onnx_path, npz = model
    monkeypatch.setattr(c_batching, "MEASURE_ABOVE", 0)  # this small model counts as big
    # the clock's readings (a block's start and end, the single samples' start and end)
    # made to say ``faster``
    readings = {c_batching.ONE: [0, 1000, 1000, 1001],
                c_batching.BLOCKS: [0, 1, 1, 1001]}[faster]
    monkeypatch.setattr(c_batching, "clock", iter(map(float, readings)).__next__)
    batches = counting_runs(monkeypatch)
    model = cnn2mlp.load(npz, engine="c", threads=1)
    assert batches == [16, 1] + [1] * c_batching.SINGLES  # timed at the build: a block, then ones
    (choice,) = (npz.parent / "cache").glob("*.batching")
    assert choice.read_text().split() == [faster]
    batches.clear()
    again = cnn2mlp.load(npz, engine="c", threads=1)  # cached: nothing timed, choice read
    assert batches == []
    x = np.random.default_rng(3).uniform(-1, 1, (37, 3, 12, 12)).astype(np.float32)
    for loaded in (model, again):
        batches.clear()
        got = loaded.predict(x)
        assert batches == ([1] * 37 if faster == c_batching.ONE else [37])
        expected = onnx_runner(onnx_path)(x)
        assert np.max(np.abs(got - expected) / np.maximum(1, np.abs(expected))) < 1e-4


def test_one_at_a_time_spreads_over_threads_exactly(model, monkeypatch):
    onnx_path, npz = model
    monkeypatch.setattr(c_engine, "measured", lambda *args: c_batching.ONE)
    model = cnn2mlp.load(npz, engine="c", threads=2)
    assert model._engine.chunks(21, 1) == [(0, 10), (10, 21)]
    x = np.random.default_rng(5).uniform(-1, 1, (21, 3, 12, 12)).astype(np.float32)
    expected = onnx_runner(onnx_path)(x)
    got = model.predict(x)
    assert np.max(np.abs(got - expected) / np.maximum(1, np.abs(expected))) < 1e-4


def test_a_small_model_is_not_timed_and_runs_in_blocks_as_with_a_damaged_choice(
        model, monkeypatch):
    _, npz = model
    batches = counting_runs(monkeypatch)
    cnn2mlp.load(npz, engine="c", threads=1).predict(np.zeros((20, 3, 12, 12), np.float32))
    assert batches == [20]
    (choice,) = (npz.parent / "cache").glob("*.batching")
    assert choice.read_text().split() == [c_batching.BLOCKS]
    choice.write_text(c_batching.ONE + "\x00junk")
    batches.clear()
    cnn2mlp.load(npz, engine="c", threads=1).predict(np.zeros((20, 3, 12, 12), np.float32))
    assert batches == [20]
