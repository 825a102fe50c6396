"""The C code's rows and biases without an entry per neuron (``runtime/c_indices.py``): a
group's rows as kernel row + position row, a bias filled from runs, and the bias a batched
store reads per kernel, per copy run and per CSR row; with an entry per pair wherever they
do not factor; copy runs with a column step kept as copies in the plan. Each form against
the MLP's float64 evaluation, at batch 1 (the single-sample code) and 16 and 21 (the
batched code and the samples left over)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import scipy.sparse as sp

import cnn2mlp
from cnn2mlp.backends.c import CModel
from cnn2mlp.backends.csr import read_csr, save_csr
from cnn2mlp.cli import main
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.ir.structured import CopyRuns, CsrRows, StructuredMatrix, conv_structured
from cnn2mlp.ir.structured import ProductGroup as StructuredGroup
from cnn2mlp.references import onnx_runner
from cnn2mlp.ir.weights import as_csr, vstack
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.c_indices import bias_fill, pair_bias, row_index, run_bias
from cnn2mlp.runtime.c_source import c_source
from cnn2mlp.runtime.plan import plan_layer
from cnn2mlp.testing import OnnxBuilder

RNG = np.random.default_rng(11)


def names():
    made = []

    def add(what, values):
        made.append((what, np.asarray(values)))
        return f"{what}_{len(made)}"
    return add, made


def test_a_convolutions_rows_factor_and_a_permuted_groups_do_not():
    rows = np.arange(4)[:, None] * 100 + np.array([0, 1, 2, 5, 6])[None, :]
    add, made = names()
    index = row_index(rows, add)
    assert index.full is None and [w for w, _ in made] == ["kernel_rows", "base_rows"]
    assert made[0][1].tolist() == [0, 100, 200, 300] and made[1][1].tolist() == [0, 1, 2, 5, 6]
    assert index.at("o", 2, "j") == "(o[2] + base_rows_2[j])"
    swapped = rows.copy()
    swapped[1, [0, 1]] = swapped[1, [1, 0]]
    add, made = names()
    index = row_index(swapped, add)
    assert index.full == "rows_1" and made[0][1].size == swapped.size
    assert index.at("o", 2, "j") == "o[10 + j]"


def test_a_bias_per_kernel_only_where_every_position_has_it_bit_for_bit():
    rows = np.arange(6).reshape(2, 3)
    add, made = names()
    assert pair_bias(np.array([1, 1, 1, 2, 2, 2], np.float32), rows, add).by_kernel
    assert made[0][1].tolist() == [1, 2]
    add, made = names()
    signed_zero = np.array([0.0, -0.0, 0.0, 2, 2, 2], np.float32)  # 0.0 == -0.0, not bitwise
    assert pair_bias(signed_zero, rows, add).full
    assert made[0][1].shape == (2, 3)


def test_a_bias_fills_from_runs_only_when_they_are_few():
    add, made = names()
    fill = bias_fill(np.repeat(np.float32([3, -1, 3]), 8), add, add)
    assert fill.plain is None and fill.n_runs == 3
    assert [v.tolist() for _, v in made] == [[3, -1, 3], [8, 16, 24]]
    add, made = names()
    assert bias_fill(RNG.normal(size=24).astype(np.float32), add, add).plain
    starts, lengths = np.array([0, 10]), np.array([4, 3])
    bias = np.zeros(13, np.float32)
    assert run_bias(bias, starts, lengths).tolist() == [0, 0]
    bias[12] = 1
    assert run_bias(bias, starts, lengths) is None


def conv_layer(bias_kind: str, permute: bool) -> tuple[MlpLayer, int]:
    """A 3x3 convolution of 3 channels to 20 on a 9x9 map (a block of sixteen kernels and
    four left over, border groups), ReLU, its bias per channel or per row; its rows in
    order, or permuted in a plain CSR matrix (the runtime finds the groups, whose rows do
    not factor)."""
    kernel = RNG.normal(size=(20, 3, 3, 3)).astype(np.float32)
    w, _, out_shape = conv_structured(kernel, None, (3, 9, 9), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    n_out = int(np.prod(out_shape))
    if permute:
        w = as_csr(w)[RNG.permutation(n_out)]
    if bias_kind == "channel":
        bias = np.repeat(RNG.normal(size=20), n_out // 20).astype(np.float32)
    else:
        bias = RNG.normal(size=n_out).astype(np.float32)
    return MlpLayer(w, bias, "relu"), n_out


def depthwise_and_carried(n_in: int) -> MlpLayer:
    """A depthwise 3x3 convolution of the 20 channels beside their copy (DenseNet's carried
    values), ReLU: groups of kernels with positions of their own, copy runs, and a few
    CSR rows, each storing its rows with their bias."""
    kernel = RNG.normal(size=(20, 1, 3, 3)).astype(np.float32)
    w, _, _ = conv_structured(kernel, None, (20, 9, 9), (1, 1), (1, 1, 1, 1), (1, 1), 20)
    structured = vstack([w, sp.eye_array(n_in, format="csr", dtype=np.float32),
                         sp.random_array((5, n_in), density=0.05, rng=RNG, dtype=np.float32)],
                        np.float32)
    bias = np.r_[np.repeat(RNG.normal(size=20), 81), np.zeros(n_in), RNG.normal(size=5)]
    return MlpLayer(structured, bias.astype(np.float32), "relu")


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
@pytest.mark.parametrize("bias_kind", ["channel", "row"])
@pytest.mark.parametrize("permute", [False, True])
def test_every_form_of_rows_and_bias_computes_the_mlp(tmp_path, bias_kind, permute):
    first, n_out = conv_layer(bias_kind, permute)
    second = depthwise_and_carried(n_out)
    mlp = Mlp([first, second], (3, 9, 9), (second.n_out,))  # every neuron compared
    made = c_source(mlp, "net", "net.h", "test model", static_limit=1 << 30)
    source = made.source
    assert ("L0_rows_" in source) == permute  # the interior group factors unless permuted
    assert ("L0_bias_values" in source) == (bias_kind == "channel")
    assert ("L0_pair_bias" in source) == (bias_kind == "row" or permute)
    for second_layers in ("L1_kernel_rows", "L1_bias_values", "L1_kernel_bias", "L1_copy_bias",
                          "L1_csr_bias"):
        assert second_layers in source
    (tmp_path / "net.c").write_text(source)
    (tmp_path / "net.h").write_text(made.header)
    model = CModel(tmp_path / "net.c", mlp)
    for batch in (1, 16, 21):
        x = RNG.uniform(-1, 1, (batch, 3, 9, 9)).astype(np.float32)
        expected = mlp.forward(x.reshape(batch, -1))
        got = model.predict(x).reshape(batch, -1)
        assert np.max(np.abs(got - expected) / np.maximum(1, np.abs(expected))) < 1e-5


def channels_last_to_first(channels: int, positions: int) -> MlpLayer:
    """A channels-last map read channels-first (a transpose: each channel one strided copy
    run of step ``channels``) with weights of its own per channel, ReLU, random biases per
    channel."""
    runs = CopyRuns(np.arange(channels) * positions, np.arange(channels),
                    np.full(channels, positions), RNG.uniform(-2, 2, channels),
                    np.full(channels, channels))
    n = channels * positions
    weight = StructuredMatrix((n, n), (runs,), np.dtype(np.float32))
    bias = np.repeat(RNG.normal(size=channels), positions).astype(np.float32)
    return MlpLayer(weight, bias, "relu")


@pytest.mark.parametrize("engine", ["c", "numba", "scipy"])
def test_strided_copy_runs_run_as_copies_in_every_engine(tmp_path, engine):
    if engine == "c" and find_compiler() is None:
        pytest.skip("no C compiler (apt install gcc)")
    layer = channels_last_to_first(6, 40)
    parts = plan_layer(layer, np.float32).parts
    assert sum(len(p.rest_rows) for p in parts) == 0  # no CSR row: copies with their step
    assert sum(int(p.copies[2].sum()) for p in parts) == 240
    mlp = Mlp([layer], (40, 6), (240,))
    save_csr(mlp, tmp_path / "t.npz")
    model = cnn2mlp.load(tmp_path / "t.npz", engine=engine, threads=1)
    for batch in (1, 16, 21):
        x = RNG.uniform(-1, 1, (batch, 40, 6)).astype(np.float32)
        expected = mlp.forward(x.reshape(batch, -1))
        np.testing.assert_allclose(model.predict(x).reshape(batch, -1), expected,
                                   rtol=1e-6, atol=1e-6)


def stem_with_max_pool(path):
    """ResNet's and DenseNet's stem, small: conv, ReLU, a 3x3 stride-2 max pool padded by
    one, then a convolution and a dense head."""
    def window(stride: int, **more) -> dict:  # 3x3, padded by one
        return {"kernel_shape": (3, 3), "strides": (stride, stride), "dilations": (1, 1),
                "pads": (1, 1, 1, 1), **more}

    b = OnnxBuilder((3, 48, 48), seed=12)
    for layer in (window(2, group=1, out_channels=8), window(2, ceil_mode=0),
                  window(1, group=1, out_channels=6)):
        if "ceil_mode" in layer:
            b.pool("MaxPool", layer)
        else:
            b.conv(layer)
            b.activation("Relu")
    b.flatten()
    b.dense(5)
    onnx.save(b.build(), str(path))
    return path


def test_a_max_pools_tournament_is_stored_and_run_as_groups(tmp_path):
    """The tournament's first rows (+-1 at a few columns, repeated at every position) are
    written as one-kernel groups, not CSR, and every engine and the C target run them as
    groups, computing what onnxruntime computes."""
    model = stem_with_max_pool(tmp_path / "stem.onnx")
    assert main([str(model), "-o", str(tmp_path / "stem.npz"), "--quiet"]) == 0
    mlp, _ = read_csr(tmp_path / "stem.npz")
    pairs = [p for layer in mlp.layers if isinstance(layer.weight, StructuredMatrix)
             for p in layer.weight.parts
             if isinstance(p, StructuredGroup) and len(p.kernels) == 1
             and set(np.abs(p.kernels).ravel().tolist()) == {1.0}]
    csr_entries = sum(p.nnz for layer in mlp.layers if isinstance(layer.weight, StructuredMatrix)
                      for p in layer.weight.parts if isinstance(p, CsrRows))
    tournament = sum(p.nnz for p in pairs)
    assert pairs and tournament > csr_entries / 2  # the later levels' rows stay CSR
    reference = onnx_runner(model)
    x = RNG.uniform(-1, 1, (21, 3, 48, 48)).astype(np.float32)
    expected = reference(x)
    engines = ["numba", "scipy"] + (["c"] if find_compiler() else [])
    for engine in engines:
        got = cnn2mlp.load(tmp_path / "stem.npz", engine=engine, threads=1).predict(x)
        assert np.max(np.abs(got - expected)) < 1e-4 * max(1, np.abs(expected).max()), engine
    if find_compiler():
        assert main([str(model), "-o", str(tmp_path / "stem.c"), "--check", "8", "--quiet"]) == 0


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
@pytest.mark.parametrize("static_limit", [1 << 30, 0])  # weights in the source, in a file
def test_signs_rows_and_positions_computed_not_stored(tmp_path, static_limit):
    """The stem's C code keeps the tournament's later levels (CSR rows of +-1) as one
    byte a weight, computes evenly stepping CSR rows and row pointers (in runs of rows
    where they step evenly in parts) and a group's rows along its runs of positions, and
    computes the MLP (float64) at batch 1, 16 and 21."""
    model = stem_with_max_pool(tmp_path / "stem.onnx")
    assert main([str(model), "-o", str(tmp_path / "stem.npz"), "--quiet"]) == 0
    mlp, _ = read_csr(tmp_path / "stem.npz")
    # the tournament as layers: the runtime runs this pool as a max (test_max_layers.py),
    # not a pool whose first level shares a layer with other rows (GoogLeNet's inception)
    made = c_source(mlp, "net", "net.h", "test model", static_limit=static_limit,
                    max_layers=False)
    source = made.source
    assert "(float)L1_csr_signs_" in source  # the tournament's second level
    assert "row0 + " in source  # rows computed in runs of positions
    assert "(0L + (long)(i + 1) * " in source  # a row pointer computed
    assert "_csr_run_first_" in source  # CSR rows in runs of evenly stepping rows
    (tmp_path / "net.c").write_text(source)
    (tmp_path / "net.h").write_text(made.header)
    if made.weights is not None:
        (tmp_path / "net.weights").write_bytes(made.weights)
    c_model = CModel(tmp_path / "net.c", mlp)
    for batch in (1, 16, 21):
        x = RNG.uniform(-1, 1, (batch, 3, 48, 48)).astype(np.float32)
        expected = mlp.forward(x.reshape(batch, -1).astype(np.float64))
        got = c_model.predict(x).reshape(batch, -1)
        assert np.max(np.abs(got - expected)) < 1e-5 * max(1, np.abs(expected).max())


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
def test_csr_rows_in_runs_keep_each_rows_entries(tmp_path):
    """CSR rows whose row pointers step evenly up to a row of fewer entries (3, 3, ..., 3,
    then 2: GoogLeNet's pool branches): each run's rows hold as many entries, the short row
    starts a run of its own (it was once read as a row of 3)."""
    n_in, counts = 64, np.array(([3] * 40 + [2]) * 4 + [3] * 40)
    rows = np.repeat(np.arange(len(counts)), counts)
    cols = np.concatenate([RNG.choice(n_in, c, replace=False) for c in counts])
    matrix = sp.csr_array((RNG.uniform(-1, 1, len(cols)).astype(np.float32), (rows, cols)),
                          shape=(len(counts), n_in))
    layer = MlpLayer(matrix, RNG.normal(size=len(counts)).astype(np.float32), "relu")
    mlp = Mlp([layer], (n_in,), (len(counts),))
    made = c_source(mlp, "net", "net.h", "test model", static_limit=1 << 30)
    assert "_csr_run_first_" in made.source
    (tmp_path / "net.c").write_text(made.source)
    (tmp_path / "net.h").write_text(made.header)
    model = CModel(tmp_path / "net.c", mlp)
    for batch in (1, 16, 21):
        x = RNG.uniform(-1, 1, (batch, n_in)).astype(np.float32)
        expected = mlp.forward(x.astype(np.float64))
        assert np.max(np.abs(model.predict(x) - expected)) < 1e-5
