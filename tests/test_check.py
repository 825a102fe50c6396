"""The comparison behind --check and assert_equivalent, at the edge of its tolerance."""
import numpy as np
import pytest

from cnn2mlp.comparison import compare

TOL = 1e-4


@pytest.mark.parametrize("reference", [0.0, 0.5, -1.0, 10.0, -250.0])
def test_error_is_relative_to_max_one_and_the_reference(reference):
    scale = max(1.0, abs(reference))
    inside = compare(np.array([[reference]]), np.array([[reference + 0.99 * TOL * scale]]), TOL)
    outside = compare(np.array([[reference]]), np.array([[reference + 1.01 * TOL * scale]]), TOL)
    assert inside.passed and not outside.passed
    assert outside.max_rel_error == pytest.approx(1.01 * TOL, rel=1e-6)
    assert outside.max_abs_error == pytest.approx(1.01 * TOL * scale, rel=1e-6)


def test_the_worst_element_is_reported():
    reference = np.zeros((3, 4))
    got = reference.copy()
    got[2, 1] = 0.5
    got[0, 3] = 0.25
    comparison = compare(reference, got, TOL)
    assert comparison.worst_index == (2, 1) and comparison.worst_got == 0.5
    assert "reference 0, got 0.5" in comparison.describe()


def test_nan_and_infinity():
    assert not compare(np.array([[1.0]]), np.array([[np.nan]]), TOL).passed
    assert not compare(np.array([[1.0]]), np.array([[np.inf]]), TOL).passed
    assert compare(np.array([[np.nan, np.inf]]), np.array([[np.nan, np.inf]]), TOL).passed


def test_shapes_must_agree():
    with pytest.raises(AssertionError, match="shapes differ"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)), TOL)


def test_the_artifact_is_let_go_before_the_reference_starts(tmp_path, monkeypatch):
    """--check runs the written file on every input first and frees it before it starts
    the original's runtime: their memory never adds up. The result is the same check."""
    import gc
    import weakref

    import onnx

    import cnn2mlp.check as check
    from cnn2mlp.backends import get_target
    from cnn2mlp.cli import main
    from cnn2mlp.testing.zoo import block_model

    onnx.save(block_model("basic_blocks", size=8, seed=3), str(tmp_path / "m.onnx"))
    loaded, alive_at_reference = [], []
    target = get_target("csr")
    real_load, real_runner = type(target).load, check.original_runner

    def load(self, mlp, path):
        predictor = real_load(self, mlp, path)
        loaded.append(weakref.ref(predictor))
        return predictor

    def runner(result, model):
        gc.collect()
        alive_at_reference.append(any(ref() is not None for ref in loaded))
        return real_runner(result, model)

    monkeypatch.setattr(type(target), "load", load)
    monkeypatch.setattr(check, "original_runner", runner)
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.npz"), "--check", "40",
                 "--quiet"]) == 0
    assert loaded and alive_at_reference == [False]
