"""CSR backend: the MLP as one ``.npz`` of CSR arrays, and its numpy/scipy runtime.

File layout (format ``cnn2mlp-csr``, version 2), every entry a plain array so that
``np.load(path, allow_pickle=False)`` reads it:

- ``format`` (str), ``format_version`` (int), ``meta`` (JSON str: notes, source, version,
  carried neurons per layer)
- ``input_shape``, ``output_shape`` (int64): per sample, in the model's own layout
- ``activations`` (str per layer), ``alphas`` (float64 per layer)
- ``layer{i}.data`` (float32, or float64 for a double model), ``layer{i}.indices``,
  ``layer{i}.indptr`` (int32 or int64), ``layer{i}.shape`` (n_out, n_in), ``layer{i}.bias``
  (the data's dtype)
- ``dtype`` (str, optional): "float32" or "float64", the precision the model computes in;
  absent means float32 (files before it was recorded)
- version 2: a layer whose activation is ``mixed`` has one activation per run of neurons:
  ``layer{i}.segment_stops`` (int64, the end of each run), ``layer{i}.segment_activations``
  (str), ``layer{i}.segment_alphas`` (float64). Version 1 files (no mixed layers) load too.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._io import atomic_write
from ..ir.mlp import ACTIVATION_NAMES, Mlp, MlpLayer
from .npz_reader import ArtifactError, SafeNpz

FORMAT = "cnn2mlp-csr"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


KNOWN_ACTIVATIONS = tuple(ACTIVATION_NAMES.values())
MIXED = "mixed"


def save_csr(mlp: Mlp, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "meta": np.array(json.dumps({"notes": mlp.notes,
                                     "carried": [layer.carried for layer in mlp.layers],
                                     **(meta or {})})),
        "input_shape": np.array(mlp.input_shape, np.int64),
        "output_shape": np.array(mlp.output_shape, np.int64),
        "activations": np.array([layer.activation for layer in mlp.layers]),
        "alphas": np.array([layer.alpha for layer in mlp.layers], np.float64),
        "dtype": np.array(mlp.dtype.name),
    }
    for i, layer in enumerate(mlp.layers):
        w = layer.weight
        arrays[f"layer{i}.data"] = np.asarray(w.data, mlp.dtype)
        arrays[f"layer{i}.indices"] = w.indices
        arrays[f"layer{i}.indptr"] = w.indptr
        arrays[f"layer{i}.shape"] = np.array(w.shape, np.int64)
        arrays[f"layer{i}.bias"] = np.asarray(layer.bias, mlp.dtype)
        if layer.segments is not None:
            arrays[f"layer{i}.segment_stops"] = np.array([g[1] for g in layer.segments],
                                                         np.int64)
            arrays[f"layer{i}.segment_activations"] = np.array([g[2] for g in layer.segments])
            arrays[f"layer{i}.segment_alphas"] = np.array([g[3] for g in layer.segments],
                                                          np.float64)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def read_csr(path: str | Path, max_bytes: int | None = None) -> tuple[Mlp, dict[str, Any]]:
    """Read a CSR artifact, validating every member before it is used: nothing is
    unpickled, no member is read before its size is checked, only the members the format
    defines are read, and a damaged file raises :class:`ArtifactError` naming the member
    instead of crashing ``predict``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ArtifactError(f"{path}: not a cnn2mlp .npz file (not a zip archive); "
                                "compile the model with cnn2mlp")
    limit = max_bytes if max_bytes is not None else default_load_limit()
    with SafeNpz(path, limit) as npz:
        version = check_format(npz)
        meta = read_meta(npz)
        mlp = read_layers(npz, meta, version)
    return mlp, meta


def default_load_limit() -> int:
    """Half the physical memory: a file claiming more is refused before it is read."""
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def check_format(npz: SafeNpz) -> int:
    if "format" not in npz or "format_version" not in npz:
        raise ArtifactError(f"{npz.path}: not a cnn2mlp CSR file (it has no format or no "
                            "format_version member); compile the model with cnn2mlp")
    if str(npz.array("format", "U", ndim=0)) != FORMAT:
        raise ArtifactError(f"{npz.path}: not a cnn2mlp CSR file (format is not {FORMAT!r})")
    version = int(npz.integers("format_version", ndim=0))
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"{npz.path}: format version {version}, this cnn2mlp reads "
                            f"versions {', '.join(map(str, READABLE_VERSIONS))}; recompile "
                            "the model or upgrade cnn2mlp")
    return version


def read_meta(npz: SafeNpz) -> dict[str, Any]:
    text = str(npz.array("meta", "U", ndim=0))
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise npz.fail("meta", f"is not JSON ({type(exc).__name__})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("notes", []), list):
        raise npz.fail("meta", "is not a JSON object with a list of notes")
    return meta


def read_layers(npz: SafeNpz, meta: dict[str, Any], version: int) -> Mlp:
    input_shape = read_shape(npz, "input_shape")
    output_shape = read_shape(npz, "output_shape")
    activations = npz.array("activations", "U", ndim=1)
    alphas = npz.array("alphas", "f", ndim=1)
    if len(activations) == 0 or len(alphas) != len(activations):
        raise npz.fail("alphas", f"has {len(alphas)} entries for {len(activations)} layers")
    allowed = set(KNOWN_ACTIVATIONS) | ({MIXED} if version >= 2 else set())
    unknown = sorted({str(a) for a in activations} - allowed)
    if unknown:
        raise npz.fail("activations", f"names unknown activations {unknown}")
    if not np.isfinite(alphas).all():
        raise npz.fail("alphas", "holds NaN or Inf")
    dtype = read_dtype(npz)
    layers, n_in = [], math.prod(input_shape)
    carried = meta.get("carried") if isinstance(meta.get("carried"), list) else []
    for i, (act, alpha) in enumerate(zip(activations, alphas)):
        weight, bias = read_layer(npz, i, n_in, dtype)
        segs = read_segments(npz, i, weight.shape[0]) if str(act) == MIXED else None
        count = carried[i] if i < len(carried) and isinstance(carried[i], int) else 0
        layers.append(MlpLayer(weight, bias, str(act), float(alpha), segs, count))
        n_in = weight.shape[0]
    if n_in != math.prod(output_shape):
        raise npz.fail(f"layer{len(layers) - 1}.shape",
                       f"gives {n_in} outputs, but output_shape {output_shape} holds "
                       f"{math.prod(output_shape)}")
    return Mlp(layers, input_shape, output_shape, [str(n) for n in meta.get("notes", [])])


def read_segments(npz: SafeNpz, i: int, n_out: int) -> tuple:
    """The runs of a mixed layer: they must tile [0, n_out) with known activations."""
    key = f"layer{i}.segment"
    stops = npz.integers(f"{key}_stops", ndim=1)
    names = npz.array(f"{key}_activations", "U", ndim=1)
    alphas = npz.array(f"{key}_alphas", "f", ndim=1)
    if not (len(stops) == len(names) == len(alphas) > 0) or np.any(np.diff(stops) < 0) or \
            stops[0] < 0 or stops[-1] != n_out:
        raise npz.fail(f"{key}_stops", f"do not tile the layer's {n_out} neurons")
    unknown = sorted({str(a) for a in names} - set(KNOWN_ACTIVATIONS))
    if unknown or not np.isfinite(alphas).all():
        raise npz.fail(f"{key}_activations", f"name unknown activations {unknown} or "
                                             "non-finite slopes")
    starts = np.concatenate([[0], stops[:-1]])
    return tuple((int(a), int(b), str(n), float(al))
                 for a, b, n, al in zip(starts, stops, names, alphas))


def read_dtype(npz: SafeNpz) -> np.dtype:
    """The model's precision; files written before it was recorded are float32."""
    if "dtype" not in npz:
        return np.dtype(np.float32)
    name = str(npz.array("dtype", "U", ndim=0))
    if name not in ("float32", "float64"):
        raise npz.fail("dtype", f"is {name[:20]!r}, not float32 or float64")
    return np.dtype(name)


def read_shape(npz: SafeNpz, key: str) -> tuple[int, ...]:
    dims = npz.integers(key, ndim=1)
    if len(dims) > 32 or np.any(dims <= 0):
        raise npz.fail(key, f"is not a shape of positive dims ({dims.tolist()[:8]})")
    return tuple(int(d) for d in dims)


def read_layer(npz: SafeNpz, i: int, n_in: int,
               dtype=np.float32) -> tuple[sp.csr_array, np.ndarray]:
    """One layer's CSR arrays, checked to form a valid (n_out, n_in) matrix before any of
    its data is read."""
    key = f"layer{i}"
    shape = npz.integers(f"{key}.shape", ndim=1)
    if len(shape) != 2 or shape[0] <= 0 or int(shape[1]) != n_in:
        raise npz.fail(f"{key}.shape", f"is {shape.tolist()}, but the layer before gives "
                                       f"{n_in} inputs")
    n_out = int(shape[0])
    sizes = {part: npz.header(f"{key}.{part}")[0] for part in ("data", "indices", "indptr",
                                                                "bias")}
    (nnz,) = sizes["data"] if len(sizes["data"]) == 1 else (-1,)
    if sizes["indices"] != (nnz,) or sizes["indptr"] != (n_out + 1,) or \
            sizes["bias"] != (n_out,):
        raise npz.fail(key, f"arrays do not fit together for {n_out} rows: "
                            + ", ".join(f"{part} {shape}" for part, shape in sizes.items()))
    indptr = npz.integers(f"{key}.indptr", ndim=1)
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise npz.fail(f"{key}.indptr", "is not a non-decreasing row pointer from 0 to the "
                                        "number of non-zeros")
    indices = npz.integers(f"{key}.indices", ndim=1)
    if len(indices) and (indices.min() < 0 or indices.max() >= n_in):
        raise npz.fail(f"{key}.indices", f"holds a column outside 0..{n_in - 1}")
    data = npz.array(f"{key}.data", "f", ndim=1).astype(dtype, copy=False)
    bias = npz.array(f"{key}.bias", "f", ndim=1).astype(dtype, copy=False)
    index_type = np.int32 if max(n_in, nnz) < 2**31 - 1 else np.int64
    weight = sp.csr_array((data, indices.astype(index_type, copy=False),
                           indptr.astype(index_type, copy=False)), shape=(n_out, n_in))
    return weight, bias


class CsrModel:
    """A compiled MLP ready to run: ``predict(x)`` with x shaped ``(B, *input_shape)``.

    ``engine`` says what runs it: "numba" (compiled, multi-threaded) when numba is
    installed, else "scipy"; ``threads`` defaults to ``CNN2MLP_THREADS`` or all cores."""

    def __init__(self, mlp: Mlp, meta: dict[str, Any] | None = None,
                 threads: int | None = None, engine: str | None = None) -> None:
        from ..runtime import make_engine

        self.mlp = mlp
        self.meta = meta or {}
        self._engine = make_engine(mlp, engine, threads)

    @property
    def engine(self) -> str:
        return self._engine.name

    @property
    def threads(self) -> int:
        return self._engine.threads

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.mlp.input_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.mlp.output_shape)

    @property
    def layers(self) -> list[MlpLayer]:
        return self.mlp.layers

    @property
    def dtype(self) -> np.dtype:
        """The precision the model computes in (float64 for a double source model)."""
        return self.mlp.dtype

    def predict(self, x: np.ndarray, dtype=None) -> np.ndarray:
        """``dtype`` defaults to the model's own precision."""
        dtype = self.mlp.dtype if dtype is None else dtype
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"predict expects (B, {', '.join(map(str, self.input_shape))}); "
                             f"got {x.shape}")
        y = self._engine.run(x.reshape(len(x), -1), dtype)
        return y.reshape((len(x),) + self.output_shape)


def load(path: str | Path, threads: int | None = None, engine: str | None = None) -> CsrModel:
    mlp, meta = read_csr(path)
    return CsrModel(mlp, meta, threads, engine)


KERNEL_TEMPLATE = '''"""Standalone runtime for a cnn2mlp CSR artifact: needs numpy only.

    model = load()          # the artifact named in ARTIFACT, or load(path)
    y = model.predict(x)    # x shaped (B, *model.input_shape)
"""
from __future__ import annotations

import json

import numpy as np

FORMAT_VERSIONS = (1, {version})
ARTIFACT = {artifact}   # beside this module unless absolute
INPUT_SHAPE = {input_shape}


def _erf(h):
    import math

    return np.frompyfunc(math.erf, 1, 1)(h).astype(h.dtype)


def _softplus(h):
    return np.logaddexp(0, h)


def _sigmoid(h):
    return 0.5 * (1.0 + np.tanh(0.5 * h))


ACTIVATIONS = {{
    "relu": lambda h, a: np.maximum(h, 0),
    "leaky_relu": lambda h, a: np.where(h >= 0, h, a * h),
    "tanh": lambda h, a: np.tanh(h),
    "sigmoid": lambda h, a: _sigmoid(h),
    "identity": lambda h, a: h,
    "elu": lambda h, a: np.where(h > 0, h, a * np.expm1(np.minimum(h, 0))),
    "softplus": lambda h, a: _softplus(h),
    "softsign": lambda h, a: h / (1 + np.abs(h)),
    "hard_swish": lambda h, a: h * np.clip(h / 6 + 0.5, 0, 1),
    "mish": lambda h, a: h * np.tanh(_softplus(h)),
    "gelu": lambda h, a: 0.5 * h * (1 + _erf(h / np.sqrt(2))),
    "gelu_tanh": lambda h, a: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3))),
    "thresholded_relu": lambda h, a: np.where(h > a, h, 0 * h),
    "swish": lambda h, a: h * _sigmoid(h),
    "erf": lambda h, a: _erf(h),
}}


def _activate(name, alpha, h):
    return ACTIVATIONS[name](h, alpha)


def _segments(z, i, act, alpha):
    """(start, stop, activation, alpha) runs of a layer: one for the whole layer, or the
    runs of a mixed layer (format version 2)."""
    n_out = int(z[f"layer{{i}}.shape"][0])
    if act != "mixed":
        return [(0, n_out, act, alpha)]
    stops = [int(s) for s in z[f"layer{{i}}.segment_stops"]]
    starts = [0] + stops[:-1]
    return list(zip(starts, stops, [str(a) for a in z[f"layer{{i}}.segment_activations"]],
                    [float(a) for a in z[f"layer{{i}}.segment_alphas"]]))


def _ell_groups(data, indices, indptr):
    """The rows of a CSR matrix in groups of similar length (within 2x), each as column
    and value tables (slot, row) padded with zeros: ELLPACK per group."""
    counts = np.diff(indptr)
    bucket = np.where(counts > 0, np.ceil(np.log2(np.maximum(counts, 1))), -1).astype(int)
    groups = []
    for b in np.unique(bucket[bucket >= 0]):
        rows = np.flatnonzero(bucket == b)
        width = int(counts[rows].max())
        slot = np.arange(width)[:, None]
        valid = slot < counts[rows][None, :]
        position = np.where(valid, indptr[rows][None, :] + slot, 0)
        groups.append((rows, np.where(valid, indices[position], 0),
                       np.where(valid, data[position], 0)))
    return groups


def _ell_matmul(groups, n_out, h):
    """W @ h for h (n_in, B), features by batch: one (rows × B) multiply-add per slot, so
    temporaries stay the size of the output."""
    out = np.zeros((n_out, h.shape[1]), dtype=h.dtype)
    for rows, cols, vals in groups:
        acc = np.zeros((len(rows), h.shape[1]), dtype=h.dtype)
        tmp = np.empty_like(acc)
        for k in range(len(cols)):
            np.multiply(h[cols[k]], vals[k][:, None], out=tmp)
            acc += tmp
        out[rows] = acc
    return out


# -- convolution-like row groups, run as im2col + GEMM (the same code as cnn2mlp's runtime)
{structure}


# -- equal columns, summed by a layer of their own (the same code as cnn2mlp's runtime)
{columns}


def _runtime_arrays(data, indices, indptr, n_out, n_in, bias, segments):
    """The layer's arrays, preceded by a summing layer's when its equal columns pay to merge."""
    found = merged_columns(data, indices, indptr, n_in)
    if found is None:
        return [(data, indices, indptr, n_out, n_in, bias, segments)]
    class_of, first = found
    n_classes = len(first)
    order = np.argsort(class_of, kind="stable")
    summing = (np.ones(n_in, data.dtype), order, np.searchsorted(class_of[order], np.arange(n_classes + 1)),
               n_classes, n_in, np.zeros(n_classes, data.dtype), [(0, n_classes, "identity", 0.0)])
    renumber = np.full(n_in, -1, np.int64)
    renumber[first] = np.arange(n_classes)
    keep = renumber[indices] >= 0
    rows = np.repeat(np.arange(n_out), np.diff(indptr))
    lengths = np.bincount(rows[keep], minlength=n_out)
    merged = (data[keep], renumber[indices[keep]], np.concatenate([[0], np.cumsum(lengths)]),
              n_out, n_classes, bias, segments)
    return [summing, merged]


def _rows_of(data, indices, indptr, rows):
    """The CSR arrays of a subset of rows."""
    lengths = np.diff(indptr)[rows]
    firsts = np.repeat(indptr[rows], lengths)
    take = firsts + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return data[take], indices[take], np.concatenate([[0], np.cumsum(lengths)])


class _Layer:
    """A layer as the kernel runs it: dense (BLAS) when more than a third is non-zero, else
    convolution-like row groups by GEMM and the other rows by ELL."""

    def __init__(self, data, indices, indptr, n_out, n_in, bias, segments, dtype):
        data = data.astype(dtype)
        self.n_out, self.bias, self.segments = n_out, bias.astype(dtype), segments
        self.dense, self.groups = None, []
        self.rest_rows = np.arange(n_out)
        if len(data) > 0.3 * n_out * n_in:
            self.dense = np.zeros((n_out, n_in), dtype)
            rows = np.repeat(np.arange(n_out), np.diff(indptr))
            np.add.at(self.dense, (rows, indices), data)
            return
        if len(data):
            groups, rest = find_groups(data, indices, indptr)
            if sum(g.rows.size for g in groups) >= 0.5 * n_out:
                self.groups, self.rest_rows = groups, rest
        self.rest = _ell_groups(*_rows_of(data, indices, indptr, self.rest_rows))

    def __call__(self, h):
        if self.dense is not None:
            z = self.dense @ h
        else:
            z = np.empty((self.n_out, h.shape[1]), dtype=h.dtype)
            for group in self.groups:
                run_group(group, h, z)
            if len(self.rest_rows):
                z[self.rest_rows] = _ell_matmul(self.rest, len(self.rest_rows), h)
        z += self.bias[:, None]
        for start, stop, act, alpha in self.segments:
            if act == "relu":  # in place: no temporary the size of the layer
                np.maximum(z[start:stop], 0, out=z[start:stop])
            else:
                z[start:stop] = _activate(act, alpha, z[start:stop])
        return z


class Model:
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != "cnn2mlp-csr" or int(z["format_version"]) not in FORMAT_VERSIONS:
                raise ValueError(f"{{path}}: not a cnn2mlp CSR file of versions {{FORMAT_VERSIONS}}")
            self.input_shape = tuple(int(d) for d in z["input_shape"])
            self.output_shape = tuple(int(d) for d in z["output_shape"])
            self.arrays = [(z[f"layer{{i}}.data"], z[f"layer{{i}}.indices"], z[f"layer{{i}}.indptr"],
                            int(z[f"layer{{i}}.shape"][0]), int(z[f"layer{{i}}.shape"][1]),
                            z[f"layer{{i}}.bias"], _segments(z, i, str(act), float(alpha)))
                           for i, (act, alpha) in enumerate(zip(z["activations"], z["alphas"]))]
            self._layers = {{}}
            self.meta = json.loads(str(z["meta"]))

    def predict(self, x, dtype=None):
        """dtype defaults to the model's own precision (float32, or float64)."""
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"expected (B, *{{self.input_shape}}), got {{x.shape}}")
        key = np.dtype(self.arrays[0][0].dtype if dtype is None else dtype)
        if key not in self._layers:  # prepared once per dtype
            self._layers[key] = [_Layer(*runtime, dtype=key) for arrays in self.arrays
                                 for runtime in _runtime_arrays(*arrays)]
        h = np.ascontiguousarray(x.reshape(len(x), -1).T, dtype=key)  # features × batch
        for layer in self._layers[key]:
            h = layer(h)
        return h.T.reshape((len(x),) + self.output_shape)


def load(path=None):
    if path is None:
        import os

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), ARTIFACT)
    return Model(path)
'''


def write_kernel(path: str | Path, artifact: str | Path, mlp: Mlp,
                 module_path: str | Path | None = None) -> None:
    """Write a standalone numpy-only ``.py`` module that runs the artifact. ``module_path``
    is where the module will finally live (when ``path`` is a staging file): the artifact
    is found relative to it."""
    path = Path(path)
    home = Path(module_path or path).absolute().parent
    relative = os.path.relpath(Path(artifact).absolute(), home)
    # Every value enters the code through repr(): a file name cannot become code.
    from ..runtime import columns, structure

    text = KERNEL_TEMPLATE.format(artifact=repr(relative), version=repr(FORMAT_VERSION),
                                  input_shape=repr(tuple(int(d) for d in mlp.input_shape)),
                                  structure=structure.embedded_source(),
                                  columns=columns.embedded_source())
    with atomic_write(path, "w") as handle:
        handle.write(text)
