"""Reading ``.keras`` and ``.h5`` files safely: zip members and JSON within size limits,
weights through HDF5 hard links only, read lazily after their shapes and storage are
checked. Nothing in a file is executed."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ...errors import CompileError

#: config.json larger than this is refused before it is read
MAX_CONFIG_BYTES = 64 * 2**20


#: a compressed zip member may inflate this much (plus a MiB) before it counts as a bomb
MAX_INFLATION = 1000


def read_keras_file(path: Path, max_bytes: int) -> tuple[dict, "WeightSource"]:
    if not path.is_file():
        raise CompileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CompileError(f"{path}: the file is empty")
    try:
        import h5py
    except ImportError as exc:
        raise CompileError("reading Keras files needs h5py: pip install h5py") from exc
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                config = parse_config(path, read_member(path, archive, "config.json",
                                                        MAX_CONFIG_BYTES))
                version = archive_version(path, archive)
                blob = read_member(path, archive, "model.weights.h5", max_bytes)
            handle = h5py.File(io.BytesIO(blob), "r")
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise CompileError(f"{path}: not a Keras .keras archive ({exc}); it needs "
                               "config.json and model.weights.h5") from exc
        return config, WeightSource(path, handle, keras3=True, max_bytes=max_bytes,
                                    keras_version=version)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CompileError(f"{path}: neither a .keras zip nor an HDF5 .h5 file ({exc})") from exc
    raw = handle.attrs.get("model_config")
    if raw is None:
        raise CompileError(f"{path}: this HDF5 file holds no model_config (weights only?); "
                           "save the whole model with model.save(...)")
    config = parse_config(path, raw.decode() if isinstance(raw, bytes) else str(raw))
    version = handle.attrs.get("keras_version", b"2")
    version = version.decode() if isinstance(version, bytes) else str(version)
    return config, WeightSource(path, handle, keras3=False, max_bytes=max_bytes,
                                keras_version=version)


def archive_version(path: Path, archive: zipfile.ZipFile) -> str:
    """The Keras version a .keras archive records (metadata.json), "3" if it says none."""
    try:
        meta = json.loads(read_member(path, archive, "metadata.json", 2**20))
        return str(meta.get("keras_version", "3")) if isinstance(meta, dict) else "3"
    except (KeyError, ValueError, CompileError):
        return "3"


def read_member(path: Path, archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A zip member, its declared size checked before a byte is inflated."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise CompileError(f"{path}: the archive member {name} holds {info.file_size:,} bytes, "
                           f"above the limit of {limit:,}; raise --max-bytes if it is genuine")
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > MAX_INFLATION * info.compress_size + 2**20:
        raise CompileError(f"{path}: the archive member {name} inflates {info.compress_size:,} "
                           f"bytes to {info.file_size:,} (a zip bomb?); refused")
    return archive.read(info)


def parse_config(path: Path, text: str | bytes) -> dict:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CompileError(f"{path}: the model config is not valid JSON "
                           f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(config, dict):
        raise CompileError(f"{path}: the model config is not a JSON object")
    return config


class WeightSource:
    """The weights of a layer, in the order Keras lists them, as HDF5 datasets that are
    read only once their shape is checked (:meth:`read`).

    Every HDF5 object is reached through hard links inside the file: soft and external
    links, datasets whose data lies in other files (external storage) and virtual datasets
    are refused, so that a model file cannot pull another file's bytes into the weights.
    """

    def __init__(self, path: Path, handle, keras3: bool, max_bytes: int,
                 keras_version: str = "3") -> None:
        self.path = path
        self.handle = handle
        self.keras3 = keras3
        self.keras_version = keras_version  # what wrote the file: some semantics differ
        self.budget = max_bytes  # bytes of weights still allowed to be read
        self._vars_index: dict[str, str] | None = None  # layer name → its vars group

    def of(self, name: str, key: str) -> list:
        """Weights of the layer ``name``; Keras 3 files file them under ``key`` instead."""
        if self.keras3:
            group = self.vars_group(key) or self.vars_group(name)
            if group is None:
                return []
            keys = sorted((k for k in group.keys() if k.isdigit()), key=int)
            return [self.child(group, k) for k in keys]
        root = self.child(self.handle, "model_weights") or self.handle
        group = self.child(root, name)
        if group is None:
            return []
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]
        return [self.child(group, n, required=True) for n in names]

    def vars_group(self, name: str):
        """Keras 3 stores a layer's variables at layers/<name>/vars (older: nested paths,
        found through an index of every ``.../<name>/vars`` group, made in one walk of
        the file: walking it once per layer took minutes on a file of many groups)."""
        for path in (f"layers/{name}/vars", f"_layer_checkpoint_dependencies/{name}/vars"):
            group = self.child(self.handle, path)
            if group is not None:
                return group
        if self._vars_index is None:
            self._vars_index = {}

            def visit(key, obj):  # h5py's visit follows hard links only
                parts = key.split("/")
                if len(parts) >= 2 and parts[-1] == "vars":
                    self._vars_index.setdefault(parts[-2], key)

            self.handle.visititems(visit)
        found = self._vars_index.get(name)
        return self.child(self.handle, found) if found else None

    def child(self, group, path: str, required: bool = False):
        """The object at ``path`` below ``group``, reached through hard links only."""
        import h5py

        node = group
        for part in [p for p in path.split("/") if p]:
            link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
            if link is None:
                if required:
                    raise CompileError(f"{self.path}: the weights file has no {path!r} below "
                                       f"{group.name!r}")
                return None
            if not isinstance(link, h5py.HardLink):
                raise CompileError(f"{self.path}: {node.name.rstrip('/')}/{part} is a "
                                   f"{type(link).__name__} to outside the weights; refused "
                                   "(a model file must not read other files)")
            node = node[part]
        if isinstance(node, h5py.Dataset):
            self.check_storage(node)
        return node

    def check_storage(self, dataset) -> None:
        if dataset.external:
            raise CompileError(f"{self.path}: dataset {dataset.name} keeps its data in another "
                               f"file ({dataset.external[0][0]!s}); refused (a model file must "
                               "not read other files)")
        if dataset.is_virtual:
            raise CompileError(f"{self.path}: dataset {dataset.name} is a virtual dataset "
                               "(data mapped from other files); refused")

    def read(self, dataset, what: str, shape: tuple[int, ...] | None) -> np.ndarray:
        """The values of ``dataset``, after its shape is checked against ``shape`` (from the
        layer's config) and its size against what may still be read."""
        import h5py

        if not isinstance(dataset, h5py.Dataset):
            raise CompileError(f"{self.path}: {what} ({getattr(dataset, 'name', '?')}) is not "
                               "a dataset")
        self.check_storage(dataset)
        if shape is not None and tuple(dataset.shape) != tuple(shape):
            raise CompileError(f"{self.path}: {what} ({dataset.name}) has shape "
                               f"{tuple(dataset.shape)}, the layer's config says {tuple(shape)}")
        if dataset.dtype.kind not in "fiu":
            raise CompileError(f"{self.path}: {what} ({dataset.name}) holds {dataset.dtype}, "
                               "not numbers")
        nbytes = int(np.prod(dataset.shape, dtype=np.int64)) * 8
        if nbytes > self.budget:
            raise CompileError(f"{self.path}: {what} ({dataset.name}) needs {nbytes:,} bytes, "
                               "above what --max-bytes leaves for the weights")
        self.budget -= nbytes
        return np.asarray(dataset[()], np.float64)
