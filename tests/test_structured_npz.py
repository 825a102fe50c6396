"""Format version 4: a convolution's matrix stored as its parts (kernels once), read back
with every index checked, run by every engine and by the standalone kernel module, and
the plain CSR layout on request (``--npz-layout plain``)."""
from __future__ import annotations

import zipfile

import numpy as np
import onnx
import pytest

from cnn2mlp.backends.csr import load, read_csr
from cnn2mlp.backends.npz_reader import ArtifactError
from cnn2mlp.cli import main
from cnn2mlp.ir.weights import is_structured
from cnn2mlp.testing import OnnxBuilder


def geo(out, stride=1):
    return {"kernel_shape": (3, 3), "strides": (stride, stride), "dilations": (1, 1),
            "pads": (1, 1, 1, 1), "group": 1, "out_channels": out}


def residual_model(path, side=12):
    """conv → relu → conv + shortcut → relu → conv (stride 2) → dense: random negative
    weights and non-zero biases."""
    b = OnnxBuilder((3, side, side), opset=13, seed=7)
    b.conv(geo(8))
    first = b.activation("Relu")
    b.conv(geo(8))
    b.node("Add", [b.current, first])
    b.activation("Relu")
    b.conv(geo(6, stride=2))
    b.activation("Relu")
    b.flatten()
    b.dense(5)
    onnx.save(b.build(), str(path))
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("v4")
    model = residual_model(folder / "m.onnx")
    paths = {}
    for layout in ("structured", "plain"):
        paths[layout] = folder / f"{layout}.npz"
        assert main([str(model), "-o", str(paths[layout]), "--npz-layout", layout, "--check",
                     "20", "--quiet"]) == 0
    return model, paths


def test_the_structured_file_stores_parts_and_computes_what_the_csr_one_does(compiled):
    _, paths = compiled
    with zipfile.ZipFile(paths["structured"]) as z:
        names = z.namelist()
    assert any(n.endswith(".parts.npy") for n in names)
    assert any(".kernels0" in n for n in names)
    mlp, _ = read_csr(paths["structured"])
    assert any(is_structured(layer.weight) for layer in mlp.layers)
    plain, _ = read_csr(paths["plain"])
    assert not any(is_structured(layer.weight) for layer in plain.layers)
    # a row two parts write (a conv plus its shortcut on the same source) counts an entry
    # they share twice: at most one a neuron
    structured_nnz = sum(l.weight.nnz for l in mlp.layers)
    plain_nnz = sum(l.weight.nnz for l in plain.layers)
    assert plain_nnz <= structured_nnz <= plain_nnz + sum(l.n_out for l in mlp.layers)
    x = np.random.default_rng(0).uniform(0, 1, (9, 3, 12, 12)).astype(np.float32)
    expected = load(paths["plain"], engine="scipy").predict(x)
    for engine in ("scipy", "numba", "c"):
        got = load(paths["structured"], engine=engine).predict(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_structured_file_is_smaller_at_a_larger_image(tmp_path):
    model = residual_model(tmp_path / "m.onnx", side=48)
    sizes = {}
    for layout in ("structured", "plain"):
        out = tmp_path / f"{layout}.npz"
        assert main([str(model), "-o", str(out), "--npz-layout", layout, "--quiet"]) == 0
        sizes[layout] = out.stat().st_size
    assert sizes["structured"] * 5 < sizes["plain"]


def test_the_kernel_module_runs_a_structured_file(compiled, tmp_path):
    model, paths = compiled
    module = tmp_path / "kernel.py"
    out = tmp_path / "k.npz"
    assert main([str(model), "-o", str(out), "--kernel-py", str(module), "--quiet"]) == 0
    namespace: dict = {"__name__": "kernel", "__file__": str(module)}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    x = np.random.default_rng(1).uniform(0, 1, (4, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(namespace["load"]().predict(x),
                               load(paths["plain"], engine="scipy").predict(x), rtol=1e-5,
                               atol=1e-5)


def forge(source, target, member, change):
    """Copy the .npz with one member's array changed."""
    with np.load(source, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[member] = change(arrays[member])
    np.savez(target, **arrays)


@pytest.mark.parametrize("field, change, words", [
    ("bases", lambda a: a + 10**6, "outside"),
    ("taps", lambda a: a + 10**4, "tap outside"),
    ("base_rows", lambda a: np.zeros_like(a), "writes a row twice"),
    ("offsets", lambda a: a[:-1], "do not fit together"),
])
def test_a_forged_group_is_refused_by_member(compiled, tmp_path, field, change, words):
    _, paths = compiled
    with np.load(paths["structured"], allow_pickle=False) as z:
        member = next(k for k in z.files if k.endswith(f".{field}") and ".part" in k
                      and len(z[k]) > 1)
    bad = tmp_path / "bad.npz"
    forge(paths["structured"], bad, member, change)
    with pytest.raises(ArtifactError, match=words) as error:
        read_csr(bad)
    assert "layer" in str(error.value)


@pytest.fixture(scope="module")
def with_runs(tmp_path_factory):
    """A 24×24 model: its groups' positions and rows are long enough to be stored as runs."""
    folder = tmp_path_factory.mktemp("v5")
    model = residual_model(folder / "m.onnx", side=24)
    out = folder / "m.npz"
    assert main([str(model), "-o", str(out), "--check", "5", "--quiet"]) == 0
    with np.load(out, allow_pickle=False) as z:
        runs = [k for k in z.files if k.endswith(".runs")]
    assert any(k.endswith(".bases.runs") for k in runs), runs
    return model, out, runs


def test_index_runs_load_as_the_arrays_they_hold(with_runs, tmp_path):
    model, out, runs = with_runs
    plain = tmp_path / "plain.npz"
    assert main([str(model), "-o", str(plain), "--npz-layout", "plain", "--quiet"]) == 0
    x = np.random.default_rng(2).uniform(0, 1, (5, 3, 24, 24)).astype(np.float32)
    expected = load(plain, engine="scipy").predict(x)
    for engine in ("scipy", "c"):
        np.testing.assert_allclose(load(out, engine=engine).predict(x), expected, rtol=1e-5,
                                   atol=1e-5)
    module = tmp_path / "kernel.py"
    assert main([str(model), "-o", str(tmp_path / "k.npz"), "--kernel-py", str(module),
                 "--quiet"]) == 0
    namespace: dict = {"__name__": "kernel", "__file__": str(module)}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    np.testing.assert_allclose(namespace["load"]().predict(x), expected, rtol=1e-5, atol=1e-5)


def test_a_version_4_file_without_runs_loads_as_before(with_runs, tmp_path, monkeypatch):
    """What the compiler wrote before runs (format version 4: parts, whole index arrays)."""
    import cnn2mlp.backends.npz_parts as npz_parts

    model, out, _ = with_runs
    monkeypatch.setattr(npz_parts, "encode", lambda a: None)
    old = tmp_path / "v4.npz"
    assert main([str(model), "-o", str(old), "--quiet"]) == 0
    forge(old, old, "format_version", lambda a: np.array(4))
    with np.load(old, allow_pickle=False) as z:
        assert not any(k.endswith(".runs") for k in z.files)
        assert any(".part" in k for k in z.files)
    x = np.random.default_rng(3).uniform(0, 1, (4, 3, 24, 24)).astype(np.float32)
    np.testing.assert_array_equal(load(old, engine="scipy").predict(x),
                                  load(out, engine="scipy").predict(x))


@pytest.mark.parametrize("change, words", [
    (lambda r: np.concatenate([r[:, :2], 0 * r[:, 2:]], axis=1), "run shorter than one"),
    (lambda r: r[:, :2], r"the format wants \(runs, 3\)"),
    (lambda r: r.astype(np.int64) + [0, 0, 2**40], "expands to"),
    (lambda r: r.astype(np.int64) + [2**62, 0, 0], "beyond any index"),
    (lambda r: np.concatenate([r[:, :1] + 10**6, r[:, 1:]], axis=1), "outside"),
])
def test_forged_runs_are_refused_by_member(with_runs, tmp_path, change, words):
    _, out, runs = with_runs
    member = next(k for k in runs if k.endswith(".bases.runs"))
    bad = tmp_path / "bad.npz"
    forge(out, bad, member, change)
    with pytest.raises(ArtifactError, match=words) as error:
        read_csr(bad)
    assert member.rsplit(".", 2)[0] in str(error.value)


def test_parts_in_an_older_version_are_refused(compiled, tmp_path):
    _, paths = compiled
    bad = tmp_path / "old.npz"
    forge(paths["structured"], bad, "format_version", lambda a: np.array(3))
    with pytest.raises(ArtifactError, match="not part of format version 3"):
        read_csr(bad)


def test_a_forged_copy_step_is_refused(tmp_path):
    """A strided run whose step walks past the layer's inputs."""
    from cnn2mlp.backends.csr import save_csr
    from cnn2mlp.ir.mlp import Mlp, MlpLayer
    from cnn2mlp.ir.structured import CopyRuns, StructuredMatrix

    runs = CopyRuns(np.array([0]), np.array([1]), np.array([10]), np.array([2.0], np.float32),
                    np.array([3]))
    weight = StructuredMatrix((10, 40), (runs,), np.dtype(np.float32))
    mlp = Mlp([MlpLayer(weight, np.zeros(10, np.float32))], (40,), (10,))
    good = tmp_path / "good.npz"
    save_csr(mlp, good)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 40)).astype(np.float32)
    np.testing.assert_allclose(load(good, engine="scipy").predict(x), 2 * x[:, 1:31:3])
    bad = tmp_path / "bad.npz"
    forge(good, bad, "layer0.part0.steps", lambda a: a * 5)
    with pytest.raises(ArtifactError, match="layer0.part0.columns.*outside"):
        read_csr(bad)
