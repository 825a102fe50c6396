"""A layer's copy runs at one sample (``runtime/c_copies.py``, ``c_stores.py``): where a
run's rows are its own, it stores ``clamp(w * h + bias)`` and the layer writes no bias
first and runs no activation over them; runs that read a channels-last map channel by
channel go through it in tiles of positions. The same bits as adding to the bias and
clamping after, NaN and inf included, and what the float64 MLP computes."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cnn2mlp.backends.csr import CsrModel
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.ir.structured import StructuredMatrix
from cnn2mlp.ir.structured_parts import CopyRuns, CsrRows
from cnn2mlp.runtime import c_copies, c_layers
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.c_source import c_source
from cnn2mlp.runtime.c_stores import merged, outside

needs_compiler = pytest.mark.skipif(find_compiler() is None,
                                    reason="no C compiler (apt install gcc)")

POSITIONS, CHANNELS = 150, 5  # three tiles of 64 positions, the last one short


def densenet_layer(seed: int = 0) -> Mlp:
    """DenseNet121's layer as tf2onnx writes it: a channels-last map carried as it is
    (identity), a BatchNorm and ReLU of each channel, channel by channel (a run of step
    CHANNELS a channel), and a last row of another kind (CSR) that starts from its bias;
    then a dense layer. Random scales, shifts and weights."""
    rng = np.random.default_rng(seed)
    n = POSITIONS * CHANNELS
    scale, shift = rng.uniform(0.5, 1.5, CHANNELS), rng.uniform(-0.5, 0.5, CHANNELS)
    channels = np.arange(CHANNELS)
    runs = CopyRuns(rows=np.r_[0, n + channels * POSITIONS].astype(np.int64),
                    columns=np.r_[0, channels].astype(np.int64),
                    lengths=np.r_[n, np.full(CHANNELS, POSITIONS)].astype(np.int64),
                    weights=np.r_[1.0, scale].astype(np.float32),
                    steps=np.r_[1, np.full(CHANNELS, CHANNELS)].astype(np.int64))
    last = CsrRows(np.array([2 * n]), sp.csr_array(
        (np.float32([0.5, -1.5]), ([0, 0], [3, 17])), shape=(1, n)))
    carry = MlpLayer(StructuredMatrix((2 * n + 1, n), (runs, last), np.dtype(np.float32)),
                     np.r_[np.zeros(n), np.repeat(shift, POSITIONS), 0.25], "mixed", 0.0,
                     ((0, n, "identity", 0.0), (n, 2 * n, "relu", 0.0),
                      (2 * n, 2 * n + 1, "relu", 0.0)))
    dense = MlpLayer(sp.csr_array(rng.uniform(-0.5, 0.5, (4, 2 * n + 1))),
                     rng.uniform(-0.5, 0.5, 4), "identity")
    return Mlp([carry, dense], (n,), (4,))


def test_the_rows_left_to_fill_are_those_no_part_stores():
    stored = merged([(10, 20), (0, 5), (20, 30), (40, 50)])
    assert stored == [(0, 5), (10, 30), (40, 50)]
    assert outside(0, 60, stored) == [(5, 10), (30, 40), (50, 60)]
    assert outside(12, 45, stored) == [(30, 40)]
    assert outside(0, 30, [(0, 30)]) == []


def test_the_strided_runs_store_in_tiles_and_no_bias_is_written_first():
    source = c_source(densenet_layer(), "m", "m.h", "", static_limit=0,
                      dtype=np.float32).source
    start = source.index("LAYER void layer0(const float *restrict h, float *restrict z)\n{")
    layer0 = source[start:source.index("\n}\n", start)]
    assert f"for (t = 0; t < {POSITIONS}; t += {c_copies.TILE})" in layer0
    assert layer0.count("layer_clamp_value(wi * hi[") == 2  # the carry's and the strided
    n = POSITIONS * CHANNELS
    # the bias written first, and the ReLU, in the last row alone
    assert layer0.count("+ i] = v;") == 1 and f"z[{2 * n} + i] = v;" in layer0
    assert layer0.count("const float low") == 1 and f"for (i = {2 * n}; i < {2 * n + 1}; i++)" \
        in layer0


@needs_compiler
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf - inf: NaN, expected
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stored_copies_give_the_bits_of_adding_to_the_bias_and_clamping_after(
        tmp_path, monkeypatch, dtype):
    mlp = densenet_layer(seed=1)
    x = np.random.default_rng(2).uniform(-2, 2, (5, mlp.layers[0].n_in)).astype(dtype)
    x[1, 7], x[2, 300], x[3, 11] = np.inf, np.nan, -np.inf
    outputs = []
    for store in (True, False):
        monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / f"cache_{store}"))
        if not store:
            monkeypatch.setattr(c_layers, "copies_store", lambda plan: None)
        model = CsrModel(mlp, threads=1, engine="c")
        # one sample at a time: the one-sample code
        outputs.append(np.concatenate([model.predict(x[i:i + 1], dtype=dtype)
                                       for i in range(len(x))]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.isnan(outputs[0][2]).all() and not np.isnan(outputs[0][0]).any()
    finite = np.isfinite(x).all(axis=1)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(outputs[0][finite], mlp.forward(x[finite].astype(np.float64)),
                               rtol=tolerance, atol=tolerance)
