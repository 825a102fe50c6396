"""Hand-made hostile files: Keras weights that point at other files, damaged or lying
compiled artifacts, zip bombs. Each is refused with a message naming what is wrong, and
never crashes, hangs or reads another file."""
import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import scipy.sparse as sp

import cnn2mlp
from cnn2mlp.backends.csr import ArtifactError, save_csr
from cnn2mlp.errors import CompileError
from cnn2mlp.frontends.keras import load_keras
from cnn2mlp.ir.mlp import Mlp, MlpLayer

SECRET = b"SECRET-BYTES-0123456789abcdefghij"

CONFIG = {"class_name": "Sequential", "config": {"name": "s", "layers": [
    {"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 4]}},
    {"class_name": "Dense", "config": {"name": "dense", "units": 2, "use_bias": True,
                                       "activation": "linear"}}]}}


def keras_archive(path: Path, fill_weights) -> Path:
    """A .keras zip whose model.weights.h5 is made by ``fill_weights(vars_group, file)``."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        fill_weights(handle.create_group("layers/dense/vars"), handle)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(CONFIG))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def honest(group, handle):
    group["0"] = np.ones((4, 2), np.float32)
    group["1"] = np.full(2, 0.5, np.float32)


def test_an_honest_archive_loads(tmp_path):
    graph = load_keras(keras_archive(tmp_path / "ok.keras", honest))
    assert graph.shape(graph.output) == (2,)


def test_external_storage_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)

    def external(group, handle):
        group.create_dataset("0", shape=(4, 2), dtype="f4", external=[(str(secret), 0, 32)])
        group["1"] = np.zeros(2, np.float32)

    with pytest.raises(CompileError, match="keeps its data in another file"):
        load_keras(keras_archive(tmp_path / "ext.keras", external))


@pytest.mark.parametrize("kind", ["external link", "soft link"])
def test_links_that_are_not_hard_links_are_refused(tmp_path, kind):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["w"] = np.ones((4, 2), np.float32)

    def linked(group, handle):
        handle["real"] = np.ones((4, 2), np.float32)
        group["0"] = h5py.ExternalLink(str(other), "/w") if kind == "external link" else \
            h5py.SoftLink("/real")
        group["1"] = np.zeros(2, np.float32)

    word = "ExternalLink" if kind == "external link" else "SoftLink"
    with pytest.raises(CompileError, match=f"is a {word} to outside the weights"):
        load_keras(keras_archive(tmp_path / "link.keras", linked))


def test_virtual_dataset_is_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["w"] = np.ones((4, 2), np.float32)

    def virtual(group, handle):
        layout = h5py.VirtualLayout(shape=(4, 2), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "w", shape=(4, 2))
        group.create_virtual_dataset("0", layout)
        group["1"] = np.zeros(2, np.float32)

    with pytest.raises(CompileError, match="virtual dataset"):
        load_keras(keras_archive(tmp_path / "vds.keras", virtual))


def test_legacy_h5_external_storage_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    path = tmp_path / "m.h5"
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Dense", "config": {"name": "dense", "units": 2,
                                           "batch_input_shape": [None, 4]}}]}}
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
        group = handle.create_group("model_weights/dense")
        group.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        group.create_dataset("dense/kernel:0", shape=(4, 2), dtype="f4",
                             external=[(str(secret), 0, 32)])
        group["dense/bias:0"] = np.zeros(2, np.float32)
    with pytest.raises(CompileError, match="keeps its data in another file"):
        load_keras(path)


def test_weight_shape_is_checked_against_the_config_before_reading(tmp_path):
    """A kernel claiming (100000, 100000) for a Dense 4 → 2: refused from its shape."""
    def huge(group, handle):
        group.create_dataset("0", shape=(100_000, 100_000), dtype="f4", chunks=(100, 100),
                             compression="gzip")
        group["1"] = np.zeros(2, np.float32)

    path = keras_archive(tmp_path / "huge.keras", huge)
    assert path.stat().st_size < 200_000
    with pytest.raises(CompileError, match=r"has shape \(100000, 100000\), the layer's config "
                                           r"says \(4, 2\)"):
        load_keras(path)


def test_zip_bomb_member_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps(CONFIG))
        archive.writestr("model.weights.h5", b"\0" * (200 * 2**20))
    assert path.stat().st_size < 2**20
    with pytest.raises(CompileError, match="a zip bomb"):
        load_keras(path)
    with pytest.raises(CompileError, match="above the limit"):
        load_keras(path, max_bytes=2**20)


@pytest.mark.parametrize("config, words", [
    ("[" * 100000 + "]" * 100000, "not valid JSON"),
    ('{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", '
     '"config": 5}]}}', "malformed"),
    ('{"class_name": "Functional", "config": {"layers": [{"class_name": "Dense", "name": "d", '
     '"config": {"name": "d", "units": 2}, "inbound_nodes": [[["nowhere", 0, 0, {}]]]}]}}',
     "malformed"),
    ("[1, 2]", "not a JSON object")])
def test_malformed_configs_are_clean_errors(tmp_path, config, words):
    path = tmp_path / "bad.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", config)
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(CompileError, match=words):
        load_keras(path)


# ------------------------------------------------------------------ compiled artifacts
def artifact(tmp_path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    layers = [MlpLayer(sp.csr_array(rng.normal(size=(3, 4)).astype(np.float32)),
                       np.ones(3, np.float32), "relu"),
              MlpLayer(sp.csr_array(rng.normal(size=(2, 3)).astype(np.float32)),
                       np.zeros(2, np.float32), "identity")]
    path = tmp_path / "a.npz"
    save_csr(Mlp(layers, (4,), (2,)), path)
    with np.load(path) as z:
        return path, dict(z)


def rewrite(path: Path, arrays: dict) -> None:
    np.savez(path, **arrays)


@pytest.mark.parametrize("member, value, words", [
    ("layer0.indices", np.array([0, 1, 2, 3, 0, 1, 2, 99, 0, 1, 2, 3], np.int32),
     "'layer0.indices' holds a column outside 0..3"),
    ("layer0.indices", np.array([0, 1, 2, 3, 0, 1, 2, -1, 0, 1, 2, 3], np.int32),
     "'layer0.indices' holds a column outside"),
    ("layer0.indptr", np.array([0, 4, 8, 40], np.int32), "'layer0.indptr' is not a"),
    ("layer0.indptr", np.array([0, 8, 4, 12], np.int32), "'layer0.indptr' is not a"),
    ("layer0.shape", np.array([3, 5]), "'layer0.shape' is [3, 5], but the layer before"),
    ("layer1.shape", np.array([2, 4]), "'layer1.shape' is [2, 4]"),
    ("layer0.bias", np.ones(5, np.float32), "'layer0.bias' holds 5 values for"),
    ("format_version", np.array(1.5), "'format_version' has dtype float64"),
    ("activations", np.array(["relu", "swish9"]), "unknown activations ['swish9']"),
    ("alphas", np.array([0.0]), "'alphas' has 1 entries for 2 layers"),
    ("output_shape", np.array([3]), "'layer1.shape' gives 2 outputs"),
    ("input_shape", np.array([2, -2]), "'input_shape' is not a shape"),
    ("meta", np.array("{not json"), "'meta' is not JSON"),
    ("layer1.data", np.ones(6, np.int64), "'layer1.data' has dtype int64"),
])
def test_damaged_artifact_names_the_member(tmp_path, member, value, words):
    path, arrays = artifact(tmp_path)
    arrays[member] = value
    rewrite(path, arrays)
    with pytest.raises(ArtifactError, match=words.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        cnn2mlp.load(path)


def test_missing_member_is_named(tmp_path):
    path, arrays = artifact(tmp_path)
    del arrays["layer1.bias"]
    rewrite(path, arrays)
    with pytest.raises(ArtifactError, match="'layer1.bias' is missing"):
        cnn2mlp.load(path)


def lying_header(count: int) -> bytes:
    """An .npy member whose header claims ``count`` float64 values but holds two."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(2))
    header["shape"] = (count,)
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + np.zeros(2).tobytes()


@pytest.mark.parametrize("count", [10**10, 5])
def test_header_claiming_more_than_the_member_holds(tmp_path, count):
    path, _ = artifact(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["alphas.npy"] = lying_header(count)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ArtifactError, match="'alphas' claims"):
        cnn2mlp.load(path)


def test_truncated_artifact(tmp_path):
    path, _ = artifact(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ArtifactError):
        cnn2mlp.load(path)


def test_only_defined_members_are_read(tmp_path):
    """An extra member (even a pickle) is never read."""
    path, arrays = artifact(tmp_path)
    arrays["payload"] = np.array([{"x": 1}], dtype=object)
    np.savez(path, **arrays)
    model = cnn2mlp.load(path)
    assert model.predict(np.ones((2, 4))).shape == (2, 2)


@settings(deadline=None, max_examples=40)
@given(st.sampled_from(["<f4", "<f8", "<i4", "<i8", "|i1", "|u1", "|b1", ">f4", "<c8", "<u2"]),
       st.lists(st.integers(0, 3), max_size=3), st.booleans())
def test_member_headers_read_as_numpy_reads_them(tmp_path_factory, dtype, shape, fortran):
    """The headers np.save writes are read by a pattern (numpy's reader evaluates them as
    literals); any other goes to numpy's reader: either way, the array np.load gives."""
    from cnn2mlp.backends.npz_reader import SafeNpz

    a = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape, order="F" if fortran
                                                             else "C")
    path = tmp_path_factory.mktemp("h") / "m.npz"
    np.savez(path, m=a)
    with SafeNpz(path, 2**20) as npz:
        got = npz.array("m", "fiubc")
    assert got.dtype == a.dtype and got.shape == a.shape
    np.testing.assert_array_equal(got, a)


def test_a_plain_header_claiming_more_than_its_member_holds_is_refused(tmp_path):
    from cnn2mlp.backends.npz_reader import SafeNpz

    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16)
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as z:
        z.writestr("m.npy", member)
    with SafeNpz(tmp_path / "m.npz", 2**20) as npz:
        with pytest.raises(ArtifactError, match="claims 4,000,000,000,000 bytes of data"):
            npz.array("m", "f")
