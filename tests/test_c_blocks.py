"""A convolution's groups at one sample as one function, blocks outermost, and a map with
no interior storing the union of its corners' taps (``runtime/c_blocks.py``): what the
C code computes is unchanged, in every build."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn2mlp.backends.c import CModel
from cnn2mlp.compile import compile_model
from cnn2mlp.ir.structured import conv_structured
from cnn2mlp.runtime import c_layers, c_padded_maps
from cnn2mlp.runtime.c_blocks import union_of
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.runtime.plan import structured_parts
from cnn2mlp.testing import OnnxBuilder

sys.path.insert(0, str(Path(__file__).parent))
from test_c_target import PORTABLE_BUILDS, BUILDS, assert_matches_onnxruntime, save  # noqa: E402


def conv_groups(size: int, channels: int = 16, seed: int = 0):
    kernel = np.random.default_rng(seed).uniform(-1, 1, (channels, channels, 3, 3))
    matrix, _, _ = conv_structured(kernel.astype(np.float32), None, (channels, size, size),
                                   (1, 1), (1, 1, 1, 1), (1, 1), 1)
    return kernel, structured_parts(matrix)[0][0].groups


def test_a_2x2_maps_corners_store_the_union_of_their_taps():
    kernel, groups = conv_groups(2)
    assert len(groups) == 4 and all(g.kernels.shape[1] == 16 * 4 for g in groups)
    (union, members), = union_of(groups)
    assert {id(g) for g in members} == {id(g) for g in groups}
    assert union.shape == (16, 16 * 9)
    # every tap of the kernel, once
    assert sorted(map(bytes, union.T.astype(np.float32))) == sorted(
        map(bytes, kernel.astype(np.float32).reshape(16, -1).T))


def test_a_union_joins_one_convolutions_groups_not_anothers_written_alike():
    """A 1x1 convolution's group writes its rows as the corners do (SqueezeNet's 1x1 and
    3x3 expansions, side by side): it shares no tap with them, and stays out."""
    _, corners = conv_groups(2)
    kernel = np.random.default_rng(1).uniform(-1, 1, (16, 16, 1, 1)).astype(np.float32)
    matrix, _, _ = conv_structured(kernel, None, (16, 2, 2), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    (pointwise,) = structured_parts(matrix)[0][0].groups
    (union, members), = union_of(corners + [pointwise])
    assert {id(g) for g in members} == {id(g) for g in corners}
    assert union.shape == (16, 16 * 9)


def test_a_map_with_an_interior_stores_the_interiors_taps_alone():
    _, groups = conv_groups(4)
    assert union_of(groups) == []


def small_maps(seed=3):
    """3x3 convolutions on a 4x6 map and a 2x3 one (no position has the whole kernel:
    a 2x2 map's would be a dense layer)."""
    b = OnnxBuilder((8, 8, 12), seed=seed)
    geo = {"kernel_shape": (3, 3), "dilations": (1, 1), "pads": (1, 1, 1, 1), "group": 1}
    b.conv({**geo, "strides": (2, 2), "out_channels": 32})  # 4x6
    b.activation("Relu")
    b.conv({**geo, "strides": (1, 1), "out_channels": 32})
    b.activation("Relu")
    b.conv({**geo, "strides": (2, 2), "out_channels": 48})  # 2x3
    b.activation("Relu")
    b.conv({**geo, "strides": (1, 1), "out_channels": 48})
    b.activation("Relu")
    b.flatten()
    b.dense(5)
    return b.build()


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
@pytest.mark.parametrize("build", PORTABLE_BUILDS)
def test_small_maps_groups_run_as_one_function_and_compute_what_onnxruntime_does(
        tmp_path, build, monkeypatch):
    """(Together whatever their weights' size: a test's are small; not as padded maps,
    which take such maps where they can: ``test_c_padded_maps.py``.)"""
    monkeypatch.setattr(c_layers, "TOGETHER_ABOVE", 0)
    monkeypatch.setattr(c_padded_maps, "MOST_POSITIONS", 0)
    path = save(small_maps(), tmp_path / "small.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    for k in range(4):  # each convolution: one function for all its groups
        layer = source[source.index(f"void layer{k}(const float *restrict h, float *restrict z)\n{{"):]
        layer = layer[:layer.index("\n}\n")]
        assert len(re.findall(rf"    layer{k}_group\d+\(h, z\);", layer)) == 1
    # the 2x3 map's weights: the union of its groups' taps, stored once
    assert len(set(re.findall(r"\bL3_kernels_t_\d+", source))) == 1
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS[build])
    assert_matches_onnxruntime(path, model, (8, 8, 12))


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")
def test_groups_whose_weights_fit_the_cache_keep_a_function_each(tmp_path, monkeypatch):
    monkeypatch.setattr(c_padded_maps, "MOST_POSITIONS", 0)  # (not as padded maps)
    path = save(small_maps(), tmp_path / "small.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    layer = source[source.index("void layer1(const float *restrict h, float *restrict z)\n{"):]
    layer = layer[:layer.index("\n}\n")]
    assert len(re.findall(r"    layer1_group\d+\(h, z\);", layer)) == 9  # a 4x6 map's
    assert_matches_onnxruntime(path, CModel(tmp_path / "net.c", result.mlp), (8, 8, 12))
