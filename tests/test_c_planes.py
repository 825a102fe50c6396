"""A depthwise convolution at one sample as padded planes (``runtime/c_planes.py``), and
the eight kernels a block of sixteen leaves over as a half block (``c_positions.py``):
found only where every (kernel, position, tap) of every group is what the plane computes,
and computing what the MLP does in every build of the C code."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import cnn2mlp
from cnn2mlp.backends.c import CModel
from cnn2mlp.compile import compile_model
from cnn2mlp.ir.structured import conv_structured
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.c_planes import find_planes
from cnn2mlp.runtime.plan import structured_parts
from cnn2mlp.runtime.structure import find_parts
from cnn2mlp.testing import OnnxBuilder

sys.path.insert(0, str(Path(__file__).parent))
from test_c_target import BUILDS, PORTABLE_BUILDS, assert_matches_onnxruntime, save  # noqa: E402

needs_compiler = pytest.mark.skipif(find_compiler() is None,
                                    reason="no C compiler (apt install gcc)")

# (kernel, stride, pads (top, left, bottom, right), dilation, map (h, w))
GEOMETRIES = {
    "3x3, PyTorch's padding": (3, 1, (1, 1, 1, 1), 1, (8, 8)),
    "3x3, stride 2": (3, 2, (1, 1, 1, 1), 1, (9, 8)),
    "3x3, stride 2, Keras's SAME": (3, 2, (0, 0, 1, 1), 1, (8, 10)),
    "5x5": (5, 1, (2, 2, 2, 2), 1, (7, 6)),
    "3x3, dilation 2": (3, 1, (2, 2, 2, 2), 2, (9, 9)),
    "3x3, no padding": (3, 1, (0, 0, 0, 0), 1, (6, 7)),
}


def depthwise(geometry, channels=16, seed=0):
    k, stride, pads, dilation, size = geometry
    kernel = np.random.default_rng(seed).uniform(-1, 1, (channels, 1, k, k)).astype(np.float32)
    matrix, _, shape = conv_structured(kernel, None, (channels, *size), (stride, stride),
                                       pads[:2] + pads[2:], (dilation, dilation), channels)
    return kernel, matrix, shape


def groups_product(groups, h: np.ndarray, n_out: int) -> np.ndarray:
    """What the groups add to a layer's rows, in float64."""
    out = np.zeros(n_out)
    for g in groups:
        for k in range(len(g.kernels)):
            columns = g.shifts[k] + g.bases[:, None] + g.offsets[None, :]
            np.add.at(out, g.rows[k], h[columns] @ g.kernels[k].astype(np.float64))
    return out


def planes_product(p, h: np.ndarray, n_out: int) -> np.ndarray:
    """What the planes compute, as the C code does: each map zero-padded, every tap."""
    out = np.zeros(n_out)
    for k in range(len(p.kernels)):
        start = p.shifts[k] + p.origin
        plane = np.zeros((p.padded_h, p.padded_w))
        plane[p.pad_top:p.pad_top + p.height, p.pad_left:p.pad_left + p.width] = \
            h[start:start + p.height * p.width].reshape(p.height, p.width)
        for y in range(p.out_h):
            for x in range(p.out_w):
                window = plane[y * p.stride_y:, x * p.stride_x:][
                    :p.kh * p.dilation:p.dilation, :p.kw * p.dilation:p.dilation]
                out[p.rows[k] + y * p.out_w + x] += window.ravel() @ p.kernels[k]
    return out


def runtime_groups(matrix, source: str) -> list:
    if source == "structured":
        return structured_parts(matrix)[0][0].groups
    # a version 1-3 file: groups found in the rows (corners of all channels together)
    csr = sp.csr_array(matrix.to_csr())
    parts, _ = find_parts(csr.data, csr.indices.astype(np.int64),
                          csr.indptr.astype(np.int64), matrix.shape[1])
    return [g for part in parts for g in part.groups]


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("source", ["structured", "found in CSR"])
def test_the_planes_found_compute_what_their_groups_do(name, source):
    _, matrix, _ = depthwise(GEOMETRIES[name])
    groups = runtime_groups(matrix, source)
    found = find_planes(groups, matrix.shape[1])
    assert found or source != "structured"  # CSR's groups: some (edges) or none
    h = np.random.default_rng(1).standard_normal(matrix.shape[1])
    for planes, replaced in found:
        np.testing.assert_allclose(planes_product(planes, h, matrix.shape[0]),
                                   groups_product(replaced, h, matrix.shape[0]),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_a_depthwise_convolutions_groups_are_found_as_one_with_its_geometry(name):
    k, stride, pads, dilation, size = GEOMETRIES[name]
    kernel, matrix, shape = depthwise(GEOMETRIES[name])
    groups = runtime_groups(matrix, "structured")
    found = find_planes(groups, matrix.shape[1])
    assert len(found) == 1
    planes, replaced = found[0]
    assert {id(g) for g in replaced} == {id(g) for g in groups}
    assert (planes.kh, planes.kw, planes.stride_y, planes.stride_x, planes.dilation) == \
        (k, k, stride, stride, dilation)
    assert (planes.out_h, planes.out_w) == shape[1:]
    assert np.array_equal(planes.kernels, kernel.reshape(len(kernel), -1))
    assert (planes.pad_top, planes.pad_left) == pads[:2]


def test_a_border_weight_that_differs_keeps_the_groups_as_they_are():
    """A corner whose kernel is not the interior's restricted: the plane would compute
    the interior's weight there, so nothing is found."""
    _, matrix, _ = depthwise(GEOMETRIES["3x3, PyTorch's padding"])
    groups = structured_parts(matrix)[0][0].groups
    assert len(find_planes(groups, matrix.shape[1])) == 1
    corner = min(groups, key=lambda g: len(g.offsets))
    corner.kernels = corner.kernels.copy()
    corner.kernels[2, 0] += 0.5
    assert find_planes(groups, matrix.shape[1]) == []


def test_a_kernel_that_is_not_finite_keeps_the_groups_as_they_are():
    """inf * 0 is NaN: a tap the plane pads with zero would make a border sum NaN."""
    _, matrix, _ = depthwise(GEOMETRIES["3x3, stride 2"])
    groups = structured_parts(matrix)[0][0].groups
    interior = max(groups, key=lambda g: len(g.offsets))
    interior.kernels = interior.kernels.copy()
    interior.kernels[1, 4] = np.inf
    assert find_planes(groups, matrix.shape[1]) == []


def inverted_residual(batch="N"):
    """MobileNetV2's blocks: 1x1 expansions, depthwise 3x3 at stride 1 and 2 (PyTorch's
    padding and Keras's SAME), 24-channel 1x1 projections (a block of sixteen kernels and
    eight left over)."""
    b = OnnxBuilder((3, 10, 10), batch=batch, seed=11)
    b.conv({"kernel_shape": (3, 3), "strides": (1, 1), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": 24})
    b.activation("Relu")
    for stride, pads, auto in [(1, (1, 1, 1, 1), None), (2, (0, 0, 1, 1), "SAME_UPPER")]:
        b.conv({"kernel_shape": (1, 1), "strides": (1, 1), "dilations": (1, 1),
                "pads": (0, 0, 0, 0), "group": 1, "out_channels": 48})
        b.node("Clip", [b.current, b.const(np.float32(0)), b.const(np.float32(6))])
        b.conv({"kernel_shape": (3, 3), "strides": (stride, stride), "dilations": (1, 1),
                "pads": pads, "group": 48, "out_channels": 48,
                **({"auto_pad": auto, "resolved_pads": pads} if auto else {})})
        b.node("Clip", [b.current, b.const(np.float32(0)), b.const(np.float32(6))])
        b.conv({"kernel_shape": (1, 1), "strides": (1, 1), "dilations": (1, 1),
                "pads": (0, 0, 0, 0), "group": 1, "out_channels": 24})
    b.flatten()
    b.dense(7)
    return b.build()


@needs_compiler
@pytest.mark.parametrize("build", BUILDS)
def test_planes_and_half_blocks_compute_what_onnxruntime_does_in_every_build(tmp_path, build):
    if build == "32-byte vectors" and " avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this machine has no AVX2")
    path = save(inverted_residual(), tmp_path / "blocks.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    assert source.count("as padded planes") == 2
    assert "const float *restrict w = L" in source and "_half_t_" in source
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    assert_matches_onnxruntime(path, model, (3, 10, 10))


@needs_compiler
@pytest.mark.parametrize("build", PORTABLE_BUILDS)
def test_one_sample_at_a_time_after_a_block_uses_the_scratch_inside_the_work(tmp_path, build):
    """Twenty samples: a block of sixteen, then four one at a time in the block's work
    (the planes' scratch is inside its buffers there), against onnxruntime."""
    from cnn2mlp.references import onnx_runner
    path = save(inverted_residual(), tmp_path / "blocks.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    x = np.random.default_rng(4).uniform(-1, 1, (20, 3, 10, 10)).astype(np.float32)
    expected = onnx_runner(path)(x)
    assert np.max(np.abs(model.predict(x) - expected)) <= 1e-4 * max(1, np.abs(expected).max())


@needs_compiler
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf - inf: NaN, expected
@pytest.mark.parametrize("batch", [1, "N"])
def test_the_c_engine_runs_planes_as_the_mlps_layers_do_inf_and_nan_too(tmp_path, batch,
                                                                       monkeypatch):
    """A fixed batch of 1 and a symbolic one; an inf and a NaN in the input reach the
    outputs whose windows hold them, and only those, as in the float64 MLP."""
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))
    path = save(inverted_residual(batch), tmp_path / "blocks.onnx")
    compile_model(path, tmp_path / "net.npz")
    engine = cnn2mlp.load(tmp_path / "net.npz", engine="c", threads=2)
    reference = cnn2mlp.load(tmp_path / "net.npz", engine="scipy")
    x = np.random.default_rng(5).uniform(-1, 1, (20, 3, 10, 10)).astype(np.float32)
    x[3, 1, 0, 0], x[17, 2, 5, 9] = np.inf, np.nan
    expected = reference.mlp.forward(x.reshape(20, -1))
    for got in (engine.predict(x), np.concatenate([engine.predict(x[i:i + 1])
                                                   for i in range(len(x))])):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@needs_compiler
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf - inf: NaN, expected
@pytest.mark.parametrize("build", PORTABLE_BUILDS)
def test_planes_store_their_rows_with_bias_and_clamp_the_same_bits(tmp_path, build,
                                                                   monkeypatch):
    """MobileNetV2's blocks with a shortcut: each depthwise layer also carries the block's
    input. Its planes store their rows as clamp(sum + bias), and so do the carried rows'
    copies: no row starts from its bias, no activation pass runs; the outputs are the
    bits of the bias written first, the sums added and the clamp applied after, NaN and
    inf included, and what onnxruntime computes."""
    from cnn2mlp.runtime import c_layers
    from cnn2mlp.testing.zoo import block_model

    path = save(block_model("inverted_residual", size=10, seed=3), tmp_path / "ir.onnx")
    result = compile_model(path, tmp_path / "stored.c", target="c")
    stored = (tmp_path / "stored.c").read_text()
    planes = stored.count("as padded planes")
    assert planes >= 2 and stored.count("            const float b = L") == planes
    # a depthwise layer that carries: its carried rows stored by their copies, no row
    # starts from its bias, no activation pass
    carrying = [body for body in stored.split("\nLAYER void layer")[1:]
                if "as padded planes" in body and "zo[j] = layer_clamp_value(" in body]
    assert carrying and all("= v;" not in body and "const float low" not in body
                            for body in carrying)
    monkeypatch.setattr(c_layers, "planes_store", lambda found, plan: None)
    monkeypatch.setattr(c_layers, "copies_store", lambda plan: None)
    compile_model(path, tmp_path / "added.c", target="c")
    assert "layer_clamp_vector(s0" not in (tmp_path / "added.c").read_text()
    models = [CModel(tmp_path / f"{name}.c", result.mlp, extra=BUILDS[build])
              for name in ("stored", "added")]
    x = np.random.default_rng(9).uniform(-3, 3, (5, 3, 10, 10)).astype(np.float32)
    x[1, 0, 4, 4], x[2, 2, 0, 9], x[3, 1, 9, 0] = np.inf, np.nan, -np.inf
    for batch in (1, 5):  # the one-sample code, and the batched code's
        got = [np.concatenate([m.predict(x[i:i + batch]) for i in range(0, 5, batch)])
               for m in models]
        np.testing.assert_array_equal(got[0], got[1])
        assert np.isnan(got[0][2]).any()
    assert_matches_onnxruntime(path, models[0], (3, 10, 10))
