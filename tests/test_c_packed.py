"""A convolution at sixteen samples with AVX's 32-byte vectors (``runtime/c_packed.py``):
a tap block's inputs are packed once for a group of blocks of kernels, each block keeping
its own sums between tap blocks. Groups of several blocks, a last group with fewer, and
tap blocks with kept sums compute what onnxruntime does, in the C target and in the c
engine's float64 build."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import cnn2mlp
from cnn2mlp.backends.c import CModel
from cnn2mlp.compile import compile_model
from cnn2mlp.runtime import c_engine, c_packed
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.testing import OnnxBuilder

sys.path.insert(0, str(Path(__file__).parent))
from test_c_target import BUILDS, assert_matches_onnxruntime, conv, save  # noqa: E402

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (apt install gcc)")

#: a 3x3 convolution of 16 channels: 144 taps, more than a tap block (kept sums)
TAPS = 144


def five_blocks(seed: int = 11):
    """16 -> 80 channels (five blocks of sixteen kernels) on a 6x6 map, then 80 -> 37
    (two blocks and five kernels left over)."""
    b = OnnxBuilder((16, 6, 6), seed=seed)
    b.conv(conv(out=80))
    b.activation("Relu")
    b.conv(conv(out=37))
    b.activation("Relu")
    b.flatten()
    b.dense(6)
    return b.build()


def test_taps_in_blocks_and_groups_of_two_blocks_compute_what_onnxruntime_does(
        tmp_path, monkeypatch):
    # two blocks' weights of the first convolution's interior: groups of 2, 2 and 1
    monkeypatch.setattr(c_packed, "GROUP_WEIGHT_BYTES", 2 * TAPS * 16 * 4)
    assert c_packed.group_of_blocks(5, TAPS * 16 * 4, 32) == 2
    assert c_packed.group_of_blocks(5, 1, 32) == 5  # within the kept sums' budget
    assert c_packed.group_of_blocks(5, 10 ** 9, 32) == 1
    path = save(five_blocks(), tmp_path / "five.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    source = (tmp_path / "net.c").read_text()
    assert re.search(r"for \(ig = 0; ig < 5; ig \+= 2\)", source)
    assert re.search(r"for \(tb = 0; tb < 144; tb \+= 72\)", source)  # sums kept between
    model = CModel(tmp_path / "net.c", result.mlp, extra=BUILDS["32-byte vectors, chosen"])
    assert_matches_onnxruntime(path, model, (16, 6, 6))


@pytest.mark.parametrize("group", [2, 5])
def test_groups_in_the_c_engines_float64_build(tmp_path, monkeypatch, group):
    """float64: four vectors a kernel's sums, two kernels a pass."""
    monkeypatch.setenv("CNN2MLP_C_CACHE", str(tmp_path / "cache"))  # a build of its own
    monkeypatch.setattr(c_engine, "FLAGS", c_engine.FLAGS + ["-DCNN2MLP_VECTOR_BYTES=32"])
    monkeypatch.setattr(c_packed, "GROUP_WEIGHT_BYTES", group * TAPS * 16 * 8)
    path = save(five_blocks(seed=12), tmp_path / "five.onnx")
    compile_model(path, tmp_path / "five.npz")
    model = cnn2mlp.load(tmp_path / "five.npz", engine="c")
    assert model.engine == "c"
    reference = cnn2mlp.load(tmp_path / "five.npz", engine="scipy")
    x = np.random.default_rng(4).uniform(-1, 1, (37, 16, 6, 6))
    got = model.predict(x, np.float64)
    np.testing.assert_allclose(got, reference.predict(x, np.float64), rtol=1e-10, atol=1e-10)
