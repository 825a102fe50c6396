"""A dense layer at one sample (``runtime/c_dense.py``): four rows together, each with its
two vectors of partial sums in the order one row alone has them, so the same bits, and
what onnxruntime computes in every build; rows and columns past the last whole four rows
and pair of vectors included."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cnn2mlp.backends.c import CModel
from cnn2mlp.compile import compile_model
from cnn2mlp.runtime import c_dense
from cnn2mlp.runtime.c_build import find_compiler
from cnn2mlp.testing import OnnxBuilder

sys.path.insert(0, str(Path(__file__).parent))
from test_c_target import BUILDS, assert_matches_onnxruntime, cpu_has_avx2, save  # noqa: E402

needs_compiler = pytest.mark.skipif(find_compiler() is None,
                                    reason="no C compiler (apt install gcc)")

SHAPE = (3, 5, 7)  # 105 inputs: six 16-lane vectors and nine columns past them


def dense_model(path: Path) -> Path:
    """Dense layers of 39 rows (nine fours and three), 8 (two fours) and 3 (none)."""
    b = OnnxBuilder(SHAPE, seed=31)
    b.flatten()
    b.dense(39)
    b.activation("Relu")
    b.dense(8)
    b.activation("Relu")
    b.dense(3)
    return save(b.build(), path)


@needs_compiler
@pytest.mark.parametrize("build", BUILDS)
def test_every_build_computes_what_onnxruntime_does(tmp_path, build):
    if build == "32-byte vectors" and not cpu_has_avx2():
        pytest.skip("this machine has no AVX2")
    path = dense_model(tmp_path / "dense.onnx")
    result = compile_model(path, tmp_path / "net.c", target="c")
    assert "row3 + j" in (tmp_path / "net.c").read_text()  # four rows together
    assert_matches_onnxruntime(path, CModel(tmp_path / "net.c", result.mlp,
                                            extra=BUILDS[build]), SHAPE)


@needs_compiler
@pytest.mark.parametrize("build", ["16-byte vectors", "portable scalars",
                                   "32-byte vectors, chosen"])
def test_four_rows_together_give_the_bits_of_one_row_at_a_time(tmp_path, monkeypatch,
                                                               build):
    path = dense_model(tmp_path / "dense.onnx")
    x = np.random.default_rng(3).standard_normal((3,) + SHAPE).astype(np.float32)
    outputs = []
    for rows in (1, c_dense.ROWS):
        monkeypatch.setattr(c_dense, "ROWS", rows)
        source = tmp_path / f"rows{rows}.c"
        result = compile_model(path, source, target="c")
        model = CModel(source, result.mlp, extra=BUILDS[build])
        outputs.append(np.concatenate([model.predict(x[k:k + 1]) for k in range(3)]))
    assert outputs[0].tobytes() == outputs[1].tobytes()
