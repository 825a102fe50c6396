"""A convolution on a small map at one sample over zero-padded copies of its input maps
(``runtime/c_padded_maps.py``): found only where every group's every position has
exactly the kernel taps inside the map, each read where the geometry puts it, and then
computing what the MLP does, in every build of the C code, in float64, with non-finite
inputs at the borders."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import cnn2mlp
from cnn2mlp.backends.c import CModel
from cnn2mlp.compile import compile_model
from cnn2mlp.runtime import c_padded_maps
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.c_padded_maps import Member, find_padded
from cnn2mlp.runtime.c_source import c_source
from cnn2mlp.runtime.structure import ProductGroup
from cnn2mlp.testing import OnnxBuilder

sys.path.insert(0, str(Path(__file__).parent))
from test_c_target import BUILDS, assert_matches_onnxruntime, save  # noqa: E402

needs_compiler = pytest.mark.skipif(find_compiler() is None,
                                    reason="no C compiler (apt install gcc)")

# (kernel, stride, pads (top, left, bottom, right), dilation, map (h, w), channels in)
GEOMETRIES = {
    "3x3 on 8x8": (3, 1, (1, 1, 1, 1), 1, (8, 8), 5),
    "3x3 on 2x3 (no interior)": (3, 1, (1, 1, 1, 1), 1, (2, 3), 6),
    "3x3, stride 2": (3, 2, (1, 1, 1, 1), 1, (7, 8), 4),
    "3x3, stride 2, Keras's SAME": (3, 2, (0, 0, 1, 1), 1, (8, 6), 3),
    "5x5 on 4x5": (5, 1, (2, 2, 2, 2), 1, (4, 5), 2),
    "3x3, dilation 2": (3, 1, (2, 2, 2, 2), 2, (6, 6), 3),
    "2x2, one side padded": (2, 1, (0, 0, 1, 1), 1, (5, 4), 4),
}


def one_convolution(geometry, out: int = 16, seed: int = 0):
    k, stride, pads, dilation, size, channels = geometry
    b = OnnxBuilder((channels, *size), seed=seed)
    b.conv({"kernel_shape": (k, k), "strides": (stride, stride),
            "dilations": (dilation, dilation), "pads": pads, "group": 1, "out_channels": out})
    b.flatten()
    return b.build()


def captured(mlp, monkeypatch, dtype=np.float32) -> list:
    """The (members, found) of every ``find_padded`` call as the C source is written."""
    calls = []

    def spy(members, n_in, shift):
        found = find_padded(members, n_in, shift)
        calls.append((members, found))
        return found

    monkeypatch.setattr(c_padded_maps, "find_padded", spy)
    c_source(mlp, "net", "net.h", "x", static_limit=0, dtype=dtype)
    return calls


def members_product(members, h: np.ndarray, n_out: int) -> np.ndarray:
    """What the groups add to a layer's rows, in float64."""
    out = np.zeros(n_out)
    for m in members:
        g = m.group
        for k in range(len(g.kernels)):
            columns = g.shifts[k] + g.bases[:, None] + g.offsets[None, :]
            np.add.at(out, g.rows[k], h[columns] @ np.asarray(g.kernels[k], np.float64))
    return out


def padded_product(p, h: np.ndarray, shift: int, n_out: int) -> np.ndarray:
    """What the padded form computes, as the C code does: the maps copied into zeroed
    planes, every position with every stored tap."""
    planes = np.zeros((p.channels, p.padded_h, p.padded_w))
    rows, columns = min(p.height, p.padded_h - p.pad_top), min(p.width, p.padded_w - p.pad_left)
    for c in range(p.channels):
        start = shift + p.origin + c * p.channel_step
        planes[c, p.pad_top:p.pad_top + rows, p.pad_left:p.pad_left + columns] = \
            h[start:start + p.height * p.width].reshape(p.height, p.width)[:rows, :columns]
    g = p.group()
    flat = planes.ravel()
    out = np.zeros(n_out)
    for k in range(len(g.kernels)):
        np.add.at(out, g.rows[k], flat[g.bases[:, None] + g.offsets[None, :]]
                  @ np.asarray(g.kernels[k], np.float64))
    return out


def compiled(geometry, tmp_path, seed=0):
    path = save(one_convolution(geometry, seed=seed), tmp_path / "conv.onnx")
    return path, compile_model(path, tmp_path / "conv.npz").mlp


@pytest.mark.parametrize("name", GEOMETRIES)
def test_each_geometry_is_found_and_computes_what_its_groups_do(tmp_path, monkeypatch, name):
    _, mlp = compiled(GEOMETRIES[name], tmp_path)
    (members, found), = captured(mlp, monkeypatch)
    assert found is not None and len(members) > 1
    k, stride, pads, dilation, size, channels = GEOMETRIES[name]
    assert (found.kh, found.kw, found.dilation, found.stride_y, found.channels) == \
        (k, k, dilation, stride, channels)
    assert (found.height, found.width) == size
    layer = mlp.layers[0]
    h = np.random.default_rng(1).standard_normal(layer.n_in)
    np.testing.assert_allclose(padded_product(found, h, 0, layer.n_out),
                               members_product(members, h, layer.n_out), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(2, 4), stride=st.integers(1, 2), dilation=st.integers(1, 2),
       pads=st.tuples(*[st.integers(0, 2)] * 4), height=st.integers(2, 7),
       width=st.integers(2, 7), channels=st.integers(1, 3), seed=st.integers(0, 99),
       centred=st.booleans())
@example(k=3, stride=1, dilation=1, pads=(0, 0, 0, 0), height=5, width=6, channels=2, seed=1,
         centred=True)
@example(k=3, stride=2, dilation=1, pads=(0, 0, 1, 1), height=6, width=7, channels=3, seed=2,
         centred=False)
def test_random_geometries_when_found_compute_what_their_groups_do(
        tmp_path_factory, monkeypatch, k, stride, dilation, pads, height, width, channels,
        seed, centred):
    """Any convolution the compiler lowers: where the padded form is found, it adds to
    every row what the groups add (float64); the usual ones are found."""
    extent = (k - 1) * dilation
    pads = (extent // 2,) * 4 if centred else tuple(min(p, extent) for p in pads)
    out_h = (height + pads[0] + pads[2] - extent - 1) // stride + 1
    out_w = (width + pads[1] + pads[3] - extent - 1) // stride + 1
    if out_h < 1 or out_w < 1:
        return
    tmp_path = tmp_path_factory.mktemp("random")
    _, mlp = compiled((k, stride, pads, dilation, (height, width), channels), tmp_path, seed)
    calls = captured(mlp, monkeypatch)
    layer = mlp.layers[0]
    h = np.random.default_rng(seed).standard_normal(layer.n_in)
    for members, found in calls:
        if found is not None:
            np.testing.assert_allclose(
                padded_product(found, h, 0, layer.n_out),
                members_product(members, h, layer.n_out), rtol=1e-12, atol=1e-12)
    usual = centred and k == 3 and dilation == 1 and min(height, width) >= 3 and channels > 1
    assert not usual or any(found is not None for _, found in calls)


def moved(m: Member, **changes) -> Member:
    g = m.group
    parts = {"kernels": g.kernels, "offsets": g.offsets, "bases": g.bases, "rows": g.rows,
             "shifts": g.shifts, **changes}
    return Member(ProductGroup(*(np.asarray(parts[f]) for f in
                                 ("kernels", "offsets", "bases", "rows", "shifts"))), m.index)


def test_groups_that_are_not_one_padded_convolution_are_refused(tmp_path, monkeypatch):
    """A weight off, a tap read at another pixel, a border position with a tap too many
    or too few, a non-finite weight: each breaks one thing the C code relies on."""
    _, mlp = compiled(GEOMETRIES["3x3 on 8x8"], tmp_path)
    (members, found), = captured(mlp, monkeypatch)
    n_in = mlp.layers[0].n_in
    assert find_padded(members, n_in, 0) is not None
    edge = min(range(len(members)), key=lambda i: len(members[i].index))  # a corner
    m = members[edge]

    def refused(changed: Member) -> bool:
        return find_padded(members[:edge] + [changed] + members[edge + 1:], n_in, 0) is None

    kernels = np.array(m.group.kernels)
    kernels[3, 2] += 0.5
    assert refused(moved(m, kernels=kernels))
    offsets = np.array(m.group.offsets)
    offsets[1] += 1  # the next pixel
    assert refused(moved(m, offsets=offsets))
    assert refused(Member(ProductGroup(m.group.kernels[:, 1:], m.group.offsets[1:],
                                       m.group.bases, m.group.rows, m.group.shifts),
                          m.index[1:]))
    # a weight infinite in every group that reads it: its products with the padding's
    # zeros would be NaN
    tap = m.index[0]
    infinite = []
    for other in members:
        kernels = np.array(other.group.kernels)
        kernels[0, other.index == tap] = np.inf
        infinite.append(moved(other, kernels=kernels))
    assert find_padded(infinite, n_in, 0) is None


@needs_compiler
@pytest.mark.parametrize("build", BUILDS)
def test_small_maps_in_every_build_compute_what_onnxruntime_does(tmp_path, build):
    if build == "32-byte vectors" and " avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this machine has no AVX2")
    b = OnnxBuilder((6, 8, 12), seed=4)
    for geometry in ({"strides": (1, 1), "pads": (1, 1, 1, 1), "out_channels": 32},
                     {"strides": (2, 2), "pads": (0, 0, 1, 1), "out_channels": 24},
                     {"strides": (1, 1), "pads": (1, 1, 1, 1), "out_channels": 16}):
        b.conv({"kernel_shape": (3, 3), "dilations": (1, 1), "group": 1, **geometry})
        b.activation("Relu")
    b.conv({"kernel_shape": (3, 3), "strides": (2, 2), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 16})  # to 2x3: no interior
    b.activation("Relu")
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 20})
    b.flatten()
    b.dense(5)
    path = save(b.build(), tmp_path / "small.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    assert source.count("_padded(plane, z);") == 5  # every convolution
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    assert_matches_onnxruntime(path, model, (6, 8, 12))


@needs_compiler
def test_the_c_engines_float64_build_and_non_finite_inputs_at_the_borders(
        tmp_path, monkeypatch):
    """float64 against the scipy engine to 1e-10; an infinity in a map's corner and a NaN
    on its edge reach the rows whose windows hold them, as the MLP's layer puts them,
    and no other (the padding's zeros are not the inputs beside them)."""
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))
    geometry = GEOMETRIES["3x3 on 8x8"]
    compiled(geometry, tmp_path, seed=7)
    model = cnn2mlp.load(tmp_path / "conv.npz", engine="c")
    reference = cnn2mlp.load(tmp_path / "conv.npz", engine="scipy")
    x = np.random.default_rng(8).uniform(-1, 1, (2, 5, 8, 8)).astype(np.float32)
    expected = reference.predict(x.astype(np.float64), np.float64)
    got = np.concatenate([model.predict(x[k:k + 1], np.float64) for k in range(2)])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    x[0, 2, 0, 7], x[0, 4, 5, 0] = np.inf, np.nan
    got, expected = model.predict(x[:1]), reference.predict(x[:1])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # NaN where NaN
    maps = got.reshape(16, 8, 8)
    assert not np.isfinite(maps[:, 0:2, 6:8]).any() and not np.isfinite(maps[:, 4:7, 0:2]).any()
    finite = np.ones((8, 8), bool)
    finite[0:2, 6:8] = finite[4:7, 0:2] = False
    assert np.isfinite(maps[:, finite]).all()
