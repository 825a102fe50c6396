"""CSR backend: the MLP as one ``.npz`` of CSR arrays, and its numpy/scipy runtime.

File layout (format ``cnn2mlp-csr``, version 1), every entry a plain array so that
``np.load(path, allow_pickle=False)`` reads it:

- ``format`` (str), ``format_version`` (int), ``meta`` (JSON str: notes, source, version)
- ``input_shape``, ``output_shape`` (int64): per sample, in the model's own layout
- ``activations`` (str per layer), ``alphas`` (float64 per layer)
- ``layer{i}.data`` (float32), ``layer{i}.indices``, ``layer{i}.indptr`` (int32 or int64),
  ``layer{i}.shape`` (n_out, n_in), ``layer{i}.bias`` (float32)
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._io import atomic_write
from ..errors import CompileError
from ..ir.mlp import Mlp, MlpLayer, activate

FORMAT = "cnn2mlp-csr"
FORMAT_VERSION = 1


class ArtifactError(CompileError):
    """A compiled file that cnn2mlp cannot load."""


def save_csr(mlp: Mlp, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "meta": np.array(json.dumps({"notes": mlp.notes, **(meta or {})})),
        "input_shape": np.array(mlp.input_shape, np.int64),
        "output_shape": np.array(mlp.output_shape, np.int64),
        "activations": np.array([layer.activation for layer in mlp.layers]),
        "alphas": np.array([layer.alpha for layer in mlp.layers], np.float64),
    }
    for i, layer in enumerate(mlp.layers):
        w = layer.weight
        arrays[f"layer{i}.data"] = np.asarray(w.data, np.float32)
        arrays[f"layer{i}.indices"] = w.indices
        arrays[f"layer{i}.indptr"] = w.indptr
        arrays[f"layer{i}.shape"] = np.array(w.shape, np.int64)
        arrays[f"layer{i}.bias"] = np.asarray(layer.bias, np.float32)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def read_csr(path: str | Path) -> tuple[Mlp, dict[str, Any]]:
    """Read a CSR artifact without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ArtifactError(f"{path}: not a cnn2mlp .npz file (not a zip archive); "
                                "compile the model with cnn2mlp")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        raise ArtifactError(f"{path}: holds pickled objects, which cnn2mlp never loads "
                            f"({exc}); recompile the model") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{path}: not a cnn2mlp .npz file ({exc})") from exc
    if str(arrays.get("format", "")) != FORMAT or "format_version" not in arrays:
        raise ArtifactError(f"{path}: not a cnn2mlp CSR file (no format/format_version); "
                            "compile the model with cnn2mlp")
    version = int(arrays["format_version"])
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format version {version}, this cnn2mlp reads version "
                            f"{FORMAT_VERSION}; recompile the model or upgrade cnn2mlp")
    try:
        layers = [MlpLayer(sp.csr_array((arrays[f"layer{i}.data"], arrays[f"layer{i}.indices"],
                                         arrays[f"layer{i}.indptr"]),
                                        shape=tuple(arrays[f"layer{i}.shape"])),
                           arrays[f"layer{i}.bias"], str(act), float(alpha))
                  for i, (act, alpha) in enumerate(zip(arrays["activations"], arrays["alphas"]))]
        meta = json.loads(str(arrays["meta"]))
        mlp = Mlp(layers, tuple(arrays["input_shape"]), tuple(arrays["output_shape"]),
                  meta.get("notes", []))
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: damaged cnn2mlp file ({exc}); recompile the model") from exc
    return mlp, meta


class CsrModel:
    """A compiled MLP ready to run: ``predict(x)`` with x shaped ``(B, *input_shape)``."""

    def __init__(self, mlp: Mlp, meta: dict[str, Any] | None = None) -> None:
        self.mlp = mlp
        self.meta = meta or {}
        self._weights: dict[Any, list[sp.csr_array]] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.mlp.input_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.mlp.output_shape)

    @property
    def layers(self) -> list[MlpLayer]:
        return self.mlp.layers

    def _cast(self, dtype) -> list[sp.csr_array]:
        key = np.dtype(dtype)
        if key not in self._weights:
            self._weights[key] = [layer.weight.astype(key, copy=False) for layer in self.mlp.layers]
        return self._weights[key]

    def predict(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"predict expects (B, {', '.join(map(str, self.input_shape))}); "
                             f"got {x.shape}")
        h = x.reshape(len(x), -1).astype(dtype, copy=False)
        for layer, weight in zip(self.mlp.layers, self._cast(dtype)):
            h = np.asarray((weight @ h.T).T) + layer.bias.astype(dtype)
            h = activate(layer.activation, layer.alpha, h).astype(dtype, copy=False)
        return h.reshape((len(x),) + self.output_shape)


def load(path: str | Path) -> CsrModel:
    mlp, meta = read_csr(path)
    return CsrModel(mlp, meta)


KERNEL_TEMPLATE = '''"""Standalone runtime for a cnn2mlp CSR artifact: needs numpy only.

    import {module}
    model = {module}.load("{artifact}")
    y = model.predict(x)   # x shaped (B, {input_shape})
"""
import json

import numpy as np

FORMAT_VERSION = {version}


def _activate(name, alpha, h):
    if name == "relu":
        return np.maximum(h, 0)
    if name == "leaky_relu":
        return np.where(h >= 0, h, alpha * h)
    if name == "tanh":
        return np.tanh(h)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * h))
    return h


def _csr_matmul(data, indices, indptr, n_out, h, chunk_entries=1 << 24):
    """(W @ h.T).T for CSR W and a batch h (B, n_in), chunked to bound memory."""
    out = np.zeros((h.shape[0], n_out), dtype=h.dtype)
    rows = np.nonzero(np.diff(indptr))[0]
    if len(rows) == 0:
        return out
    step = max(1, chunk_entries // max(len(data), 1))
    for start in range(0, h.shape[0], step):
        part = h[start:start + step, indices] * data
        out[start:start + step, rows] = np.add.reduceat(part, indptr[rows], axis=1)
    return out


class Model:
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != "cnn2mlp-csr" or int(z["format_version"]) != FORMAT_VERSION:
                raise ValueError(f"{{path}}: not a cnn2mlp CSR file of version {{FORMAT_VERSION}}")
            self.input_shape = tuple(int(d) for d in z["input_shape"])
            self.output_shape = tuple(int(d) for d in z["output_shape"])
            self.layers = [(z[f"layer{{i}}.data"], z[f"layer{{i}}.indices"], z[f"layer{{i}}.indptr"],
                            int(z[f"layer{{i}}.shape"][0]), z[f"layer{{i}}.bias"], str(act),
                            float(alpha))
                           for i, (act, alpha) in enumerate(zip(z["activations"], z["alphas"]))]
            self.meta = json.loads(str(z["meta"]))

    def predict(self, x, dtype=np.float32):
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"expected (B, *{{self.input_shape}}), got {{x.shape}}")
        h = x.reshape(len(x), -1).astype(dtype)
        for data, indices, indptr, n_out, bias, act, alpha in self.layers:
            h = _csr_matmul(data.astype(dtype), indices, indptr, n_out, h) + bias.astype(dtype)
            h = _activate(act, alpha, h)
        return h.reshape((len(x),) + self.output_shape)


def load(path="{artifact}"):
    return Model(path)
'''


def write_kernel(path: str | Path, artifact: str | Path, mlp: Mlp) -> None:
    """Write a standalone numpy-only ``.py`` module that runs the artifact."""
    path = Path(path)
    text = KERNEL_TEMPLATE.format(module=path.stem, artifact=Path(artifact).name,
                                  version=FORMAT_VERSION,
                                  input_shape=", ".join(map(str, mlp.input_shape)))
    with atomic_write(path, "w") as handle:
        handle.write(text)
