"""A convolution at one sample on a big map with positions in vectors
(``runtime/c_position_vectors.py``): four kernels, three vectors of positions at a time,
over stretches of positions whose inputs and rows step alike. A 1x1 convolution's map is
one stretch; a 3x3 convolution's interior is one whose gaps (the border positions between
its rows) are computed and not stored. Every build of the C target, the c engine's
float64 build, chunks cut inside a stretch, and non-finite inputs at the gaps. And with
many taps, six positions' inputs packed once for every block of kernels
(``runtime/c_position_panels.py``)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cnn2mlp
from cnn2mlp.backends.c import CModel
from cnn2mlp.compile import compile_model
from cnn2mlp.runtime import c_position_panels, c_position_vectors
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.c_layers import LayerWriter
from cnn2mlp.runtime.c_position_vectors import stretches
from cnn2mlp.testing import OnnxBuilder

sys.path.insert(0, str(Path(__file__).parent))
from test_c_target import (BUILDS, assert_matches_onnxruntime, conv, cpu_has_avx2,  # noqa: E402
                           save)

needs_compiler = pytest.mark.skipif(find_compiler() is None,
                                    reason="no C compiler (apt install gcc)")

SHAPE = (16, 18, 10)


def big_map(seed: int):
    """A 3x3 convolution 16 -> 32 channels on an 18x10 map (its interior: 128 positions of
    144 taps, 16 rows of 8 two gaps apart: with 16-lane vectors the last few positions'
    vector holds gaps), a 1x1 convolution 32 -> 48 (180 positions, one stretch: three
    vectors, then one, then the last few), a strided one."""
    return three_convolutions(SHAPE, 32, 48, seed)


def three_convolutions(shape: tuple[int, int, int], first: int, second: int, seed: int):
    """3x3 to ``first`` channels, 1x1 to ``second``, 3x3 with stride 2 to 16, each with a
    ReLU, then a dense layer of 5."""
    b = OnnxBuilder(shape, seed=seed)
    b.conv(conv(out=first))
    b.activation("Relu")
    b.conv(conv(k=1, p=0, out=second))
    b.activation("Relu")
    b.conv(conv(out=16, s=2))
    b.activation("Relu")
    b.flatten()
    b.dense(5)
    return b.build()


def test_a_stride_one_maps_interior_is_one_stretch_and_a_strided_ones_is_not():
    side = 6
    interior = [(y * side + x, (y + 1) * side + x + 1) for y in range(4) for x in range(4)]
    bases, rows = (np.array(column) for column in zip(*interior))
    assert stretches(bases, rows) == [(0, 16)]
    strided = np.arange(0, 16, 2)  # inputs two apart, rows one apart
    assert stretches(strided, np.arange(8)) == [(k, k + 1) for k in range(8)]


@needs_compiler
@pytest.mark.parametrize("build", BUILDS)
def test_every_build_computes_what_onnxruntime_does(tmp_path, build):
    if build == "32-byte vectors" and not cpu_has_avx2():
        pytest.skip("this machine has no AVX2")
    path = save(big_map(seed=21), tmp_path / "big.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    assert source.count("for (c = 0; c <") == 2  # the two stride-1 convolutions
    assert "piece_mask" in source  # the 3x3 interior's gaps
    assert "clamp_vector(a0_0 + b0, CLAMP)" in source  # the 1x1 stores its layer's rows
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    assert_matches_onnxruntime(path, model, SHAPE)


@needs_compiler
@pytest.mark.parametrize("build", BUILDS)
def test_eight_kernels_left_over_from_the_blocks_take_vectors_of_positions(tmp_path, build):
    """24 and 40 channels: the eight kernels a convolution's blocks of sixteen leave over
    run four at a time over vectors of positions too (their weights a block of eight, a
    tap's together), where they ran eight kernels in a vector; every build, at batch 21,
    3 and 1, against the MLP in float64 (outputs up to ~360: onnxruntime's float32 is
    itself 8e-05 off, a few small outputs' relative error above the usual 1e-4)."""
    if build == "32-byte vectors" and not cpu_has_avx2():
        pytest.skip("this machine has no AVX2")
    path = save(three_convolutions(SHAPE, 24, 40, seed=29), tmp_path / "left.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    assert source.count("(long)(k / 8) * ") == 2  # the 3x3's and the 1x1's eight
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    compile_model(path, tmp_path / "net.npz")
    x = np.random.default_rng(7).uniform(-1, 1, (21,) + SHAPE).astype(np.float32)
    expected = cnn2mlp.load(tmp_path / "net.npz", engine="scipy").predict(
        x.astype(np.float64), np.float64)
    for got in (model.predict(x), model.predict(x[:3]), model.predict(x[3:4])):
        want = expected[:len(got)] if len(got) > 1 else expected[3:4]
        assert np.abs(got - want).max() <= 2e-6 * np.abs(expected).max()


@needs_compiler
def test_a_stretchs_last_piece_shorter_than_a_vector(tmp_path, monkeypatch):
    """Pieces of 48 positions: the 3x3 interior's stretch (158 positions) leaves a last
    piece of 14, shorter than a 64-byte vector of floats, whose vector starts in the piece
    before."""
    monkeypatch.setattr(c_position_vectors, "CHUNK_BYTES", 1)
    path = save(big_map(seed=26), tmp_path / "big.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS["64-byte vectors"])
    assert_matches_onnxruntime(path, model, SHAPE)


@needs_compiler
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_the_c_engines_float64_build_and_chunks_cut_inside_a_stretch(
        tmp_path, monkeypatch, chunk_bytes):
    """float64 (a mask of 64-bit lanes); with the smallest chunks, a piece of 48 positions
    each: the interior's stretch is cut where a row has gaps."""
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))  # a build of its own
    if chunk_bytes is not None:
        monkeypatch.setattr(c_position_vectors, "CHUNK_BYTES", chunk_bytes)
    path = save(big_map(seed=22), tmp_path / "big.onnx")
    compile_model(path, tmp_path / "big.npz")
    model = cnn2mlp.load(tmp_path / "big.npz", engine="c")
    assert model.engine == "c"
    reference = cnn2mlp.load(tmp_path / "big.npz", engine="scipy")
    # float32 inputs: the float32 build's only difference is its rounding
    x = np.random.default_rng(5).uniform(-1, 1, (3,) + SHAPE).astype(np.float32)
    expected = reference.predict(x.astype(np.float64), np.float64)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        got = np.concatenate([model.predict(x[k:k + 1], dtype) for k in range(3)])
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@needs_compiler
def test_non_finite_inputs_at_the_gaps_stay_where_the_mlp_puts_them(tmp_path, monkeypatch):
    """An infinity and a NaN in the border columns: the interior's vectors read them for
    the gaps' sums, which are not stored; the border rows get what the scipy engine
    gives them, and the rows away from them stay finite."""
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))
    b = OnnxBuilder(SHAPE, seed=23)
    b.conv(conv(out=32))  # no activation: the first layer's rows are the output
    b.flatten()
    path = save(b.build(), tmp_path / "one.onnx")
    compile_model(path, tmp_path / "one.npz")
    model = cnn2mlp.load(tmp_path / "one.npz", engine="c")
    reference = cnn2mlp.load(tmp_path / "one.npz", engine="scipy")
    x = np.random.default_rng(6).uniform(-1, 1, (1,) + SHAPE).astype(np.float32)
    x[0, 3, 5, 0], x[0, 7, 9, 9] = np.inf, np.nan
    got, expected = model.predict(x), reference.predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # NaN where NaN
    maps = got.reshape(32, 18, 10)
    assert np.isfinite(maps[:, :, 2:8]).all()


PANEL_SHAPE = (24, 14, 14)


def many_taps(seed: int):
    """A 3x3 convolution 24 -> 208 channels (216 taps; its interior, 144 positions, in
    panels of six), a 1x1 convolution 208 -> 64 (208 taps, 196 positions: 32 panels and
    four positions left), a strided one."""
    return three_convolutions(PANEL_SHAPE, 208, 64, seed)


@needs_compiler
@pytest.mark.parametrize("tile_bytes", [None, 1])
def test_packed_panels_give_the_bits_of_the_code_they_replace(tmp_path, monkeypatch,
                                                              tile_bytes):
    """With AVX's 32-byte vectors a group of many taps reads its inputs from panels of six
    positions (``c_position_panels.py``), in tiles (the smallest: one panel a tile): the
    same sums in the same order as without them, to the bit, and what onnxruntime
    computes."""
    if tile_bytes is not None:
        monkeypatch.setattr(c_position_panels, "TILE_BYTES", tile_bytes)
    path = save(many_taps(seed=24), tmp_path / "taps.onnx")
    result = compile_model(path, tmp_path / "panels.c", target="c")
    assert (tmp_path / "panels.c").read_text().count("float *restrict pk = ") == 2
    monkeypatch.setattr(c_position_panels, "FEWEST_TAPS", 10 ** 6)
    compile_model(path, tmp_path / "plain.c", target="c")
    assert "float *restrict pk = " not in (tmp_path / "plain.c").read_text()
    build = BUILDS["32-byte vectors, chosen"]
    panels = CModel(tmp_path / "panels.c", result.mlp, extra=build)
    plain = CModel(tmp_path / "plain.c", result.mlp, extra=build)
    x = np.random.default_rng(7).uniform(-1, 1, (3,) + PANEL_SHAPE).astype(np.float32)
    for k in range(3):  # one sample at a time: the code with panels
        np.testing.assert_array_equal(panels.predict(x[k:k + 1]), plain.predict(x[k:k + 1]))
    assert_matches_onnxruntime(path, panels, PANEL_SHAPE)


@needs_compiler
def test_a_layer_its_one_group_stores_gives_the_bits_of_one_that_adds(tmp_path, monkeypatch):
    """The 1x1 convolution writes each of its layer's rows once: its vectors store them
    with the bias and the ReLU (no bias written first, no activation pass after), the
    same bits as adding to the bias and clamping after; so does the scalar build."""
    path = save(big_map(seed=25), tmp_path / "big.onnx")
    result = compile_model(path, tmp_path / "stores.c", target="c")
    assert "clamp_vector(a0_0 + b0, CLAMP)" in (tmp_path / "stores.c").read_text()
    monkeypatch.setattr(LayerWriter, "stores_alone", lambda *args: None)
    compile_model(path, tmp_path / "adds.c", target="c")
    assert "clamp_vector(a0_0" not in (tmp_path / "adds.c").read_text()
    x = np.random.default_rng(8).uniform(-1, 1, (2,) + SHAPE).astype(np.float32)
    for build in ("32-byte vectors, chosen", "portable scalars"):
        stores, adds = (CModel(tmp_path / name, result.mlp, extra=BUILDS[build])
                        for name in ("stores.c", "adds.c"))
        for k in range(2):
            np.testing.assert_array_equal(stores.predict(x[k:k + 1]), adds.predict(x[k:k + 1]))
