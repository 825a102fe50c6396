"""The CSR artifact: round trip, runtime contract, and what load refuses."""
import numpy as np
import pytest
from hypothesis import given

import cnn2mlp
from cnn2mlp.backends.csr import ArtifactError, CsrModel, save_csr
from cnn2mlp.ir.weights import as_csr
from cnn2mlp.ir.mlp import Mlp
from cnn2mlp.backends import get_target
from cnn2mlp.passes import Pipeline
from cnn2mlp.testing import cnn_graphs


def lowered(graph):
    out_shape = graph.shape(graph.output)
    g = graph.copy()
    get_target("csr").pipeline().run(g)
    return Mlp.from_graph(g, out_shape)


@given(graph=cnn_graphs())
def test_round_trip_is_bit_exact(graph, tmp_path_factory):
    mlp = lowered(graph)
    path = tmp_path_factory.mktemp("a") / "m.npz"
    save_csr(mlp, path)
    loaded = cnn2mlp.load(path)
    x = np.random.default_rng(0).uniform(-1, 1, (4,) + tuple(mlp.input_shape))
    np.testing.assert_array_equal(loaded.predict(x), CsrModel(mlp).predict(x))
    assert loaded.predict(x, dtype=np.float64).dtype == np.float64
    for a, b in zip(loaded.layers, mlp.layers):
        assert (as_csr(a.weight) != as_csr(b.weight)).nnz == 0 and \
            a.activation == b.activation


def make_artifact(tmp_path):
    from cnn2mlp.ir import Graph

    g = Graph("x", (2, 3))
    g.append("Reshape", {"shape": (6,)})
    g.append("Dense", {"weight": np.arange(12, dtype=np.float32).reshape(2, 6), "bias": None})
    g.append("Relu")
    path = tmp_path / "m.npz"
    save_csr(lowered(g), path)
    return path


def test_predict_checks_the_input_shape(tmp_path):
    model = cnn2mlp.load(make_artifact(tmp_path))
    assert model.predict(np.ones((5, 2, 3))).shape == (5, 2)
    with pytest.raises(ValueError, match=r"expects \(B, 2, 3\)"):
        model.predict(np.ones((5, 6)))


class WritesMarker:
    """Unpickling this object creates a file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_npz_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled.txt"
    path = tmp_path / "a.npz"
    np.savez(path, format=np.array("cnn2mlp-csr"), format_version=np.array(1),
             meta=np.array([WritesMarker(marker)], dtype=object))
    with pytest.raises(ArtifactError, match="pickled objects, which cnn2mlp never loads"):
        cnn2mlp.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("version, words", [
    (None, "it has no format or no format_version member"),
    (0, "format version 0, this cnn2mlp reads"),
    (99, "format version 99, this cnn2mlp reads")])
def test_wrong_or_missing_format_version(tmp_path, version, words):
    path = make_artifact(tmp_path)
    with np.load(path) as z:
        arrays = dict(z)
    if version is None:
        del arrays["format_version"]
    else:
        arrays["format_version"] = np.array(version)
    np.savez(path, **arrays)
    with pytest.raises(ArtifactError, match=words):
        cnn2mlp.load(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"\x00junk" * 10)
    with pytest.raises(ArtifactError, match="not a cnn2mlp"):
        cnn2mlp.load(path)


def test_a_version_2_file_loads_and_predicts_as_before(tmp_path):
    """A v2 .npz (no input blocks: what the compiler wrote before format version 3), made
    from today's file, loads and gives the same outputs."""
    import onnx

    from cnn2mlp.backends import TargetOptions
    from cnn2mlp.backends.csr import FORMAT_VERSION
    from cnn2mlp.compile import compile_model
    from cnn2mlp.testing.zoo import block_model

    onnx.save(block_model("basic_blocks", size=8, seed=4), str(tmp_path / "m.onnx"))
    compile_model(tmp_path / "m.onnx", tmp_path / "v3.npz",
                  options=TargetOptions(npz_layout="plain"))  # CSR layers, as v2 had
    with np.load(tmp_path / "v3.npz", allow_pickle=False) as files:
        arrays = {k: files[k] for k in files.files if not k.endswith(".input_blocks")}
    assert int(arrays["format_version"]) == FORMAT_VERSION and \
        not any(".part" in k for k in arrays)
    assert len(arrays) < len(np.load(tmp_path / "v3.npz").files)  # blocks were there
    arrays["format_version"] = np.array(2)
    np.savez(tmp_path / "v2.npz", **arrays)
    x = np.random.default_rng(1).uniform(-1, 1, (5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(cnn2mlp.load(tmp_path / "v2.npz").predict(x),
                               cnn2mlp.load(tmp_path / "v3.npz").predict(x), rtol=1e-6,
                               atol=1e-6)
