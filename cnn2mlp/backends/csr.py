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
- version 3: the activation ``bounded_relu`` (``min(max(z, 0), alpha)``), and optionally
  ``layer{i}.input_blocks`` (int64): where the sources the layer reads begin and end among
  its inputs (a hint for the runtime's structure finder; the MLP's function does not
  depend on it).
- version 4: a layer may be stored as the parts that generate its matrix instead of CSR
  (``layer{i}.parts`` and the members ``npz_parts.py`` lists): a convolution's kernels
  once, not once an output position. Versions 1 to 3 load too.
- version 5: a part's integer member may be stored as arithmetic runs (``<member>.runs``:
  start, step, length), where that takes less.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np

from .._io import atomic_write
from ..errors import CompileError
from ..ir.activations import BY_NAME, IDENTITY
from ..ir.graph import GraphMeta
from ..ir.deferred import DeferredMlp, resolve
from .npz_reader import ArtifactError, SafeNpz
from .registry import Target, TargetOptions, register_target

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ..ir.mlp import Mlp, MlpLayer
    from ..passes.base import PassOptions

FORMAT = "cnn2mlp-csr"
FORMAT_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
#: how a structured layer is written: as its parts, or as the plain CSR it makes
LAYOUTS = ("structured", "plain")


KNOWN_ACTIVATIONS = tuple(BY_NAME)
MIXED = "mixed"


def save_csr(mlp: Mlp, path: str | Path, meta: dict[str, Any] | None = None,
             layout: str = "structured") -> None:
    """Write the MLP; ``layout="plain"`` writes every layer as plain CSR arrays (the raw
    matrices, materialized under the materialize limit)."""
    from ..ir.weights import as_csr, compact, is_structured
    from .npz_parts import bias_members, structured_members

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
        arrays[f"layer{i}.shape"] = np.array(w.shape, np.int64)
        if layout == "structured":
            w = compact(w)  # copies, patterns and CSR rows as the parts that take least
            arrays.update(bias_members(f"layer{i}", layer.bias, mlp.dtype))
        else:
            arrays[f"layer{i}.bias"] = np.asarray(layer.bias, mlp.dtype)
        if is_structured(w) and layout == "structured":
            arrays.update(structured_members(f"layer{i}", w, mlp.dtype))
        else:
            w = as_csr(w)
            arrays[f"layer{i}.data"] = np.asarray(w.data, mlp.dtype)
            arrays[f"layer{i}.indices"] = w.indices
            arrays[f"layer{i}.indptr"] = w.indptr
        if layer.input_blocks is not None:
            arrays[f"layer{i}.input_blocks"] = np.array(layer.input_blocks, np.int64)
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
    path = check_zip(Path(path))
    with SafeNpz(path, load_limit(max_bytes)) as npz:
        version = check_format(npz)
        meta = read_meta(npz)
        mlp = read_layers(npz, meta, version)
    return mlp, meta


def open_csr(path: str | Path, max_bytes: int | None = None) -> tuple[DeferredMlp, dict]:
    """A CSR artifact's MLP deferred: the file's digest, its format, notes, shapes,
    precision and activations read and checked now, its layers when something needs them
    (a load whose C code is cached never does). The layers are read from the bytes the
    digest was taken of, or not at all: a file changed since is refused."""
    path = check_zip(Path(path))
    limit = load_limit(max_bytes)
    with open(path, "rb") as handle:
        digest = stream_digest(handle)
        with SafeNpz(path, limit, handle) as npz:
            version = check_format(npz)
            meta = read_meta(npz)
            summary = read_summary(npz, version)
    read = functools.partial(read_unchanged, path, limit, digest)
    return DeferredMlp(digest, summary.input_shape, summary.output_shape, summary.dtype,
                       len(summary.activations), read), meta


def read_unchanged(path: Path, limit: int, digest: str) -> Mlp:
    """The layers of the file whose digest was ``digest``, hashed and read through one
    handle (a file replaced by another since is refused, not read)."""
    with open(path, "rb") as handle:
        if stream_digest(handle) != digest:
            raise ArtifactError(f"{path}: the file changed after it was loaded; load it "
                                "again")
        with SafeNpz(path, limit, handle) as npz:
            return read_layers(npz, read_meta(npz), check_format(npz))


def stream_digest(handle: BinaryIO) -> str:
    """A SHA-256 of the open file's bytes, read in blocks; the handle is left at 0."""
    digest = hashlib.file_digest(handle, "sha256").hexdigest()
    handle.seek(0)
    return digest


def check_zip(path: Path) -> Path:
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ArtifactError(f"{path}: not a cnn2mlp .npz file (not a zip archive); "
                                "compile the model with cnn2mlp")
    return path


def load_limit(max_bytes: int | None) -> int:
    return max_bytes if max_bytes is not None else default_load_limit()


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


class Summary(NamedTuple):
    """What a CSR file says of its MLP besides the layers' arrays."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    activations: np.ndarray
    alphas: np.ndarray
    dtype: np.dtype


def read_summary(npz: SafeNpz, version: int) -> Summary:
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
    return Summary(input_shape, output_shape, activations, alphas, read_dtype(npz))


def read_layers(npz: SafeNpz, meta: dict[str, Any], version: int) -> Mlp:
    # the layers' modules import scipy: loaded here, not for a load that reads no layer
    from ..ir.mlp import Mlp, MlpLayer

    input_shape, output_shape, activations, alphas, dtype = read_summary(npz, version)
    layers, n_in = [], math.prod(input_shape)
    carried = meta.get("carried") if isinstance(meta.get("carried"), list) else []
    for i, (act, alpha) in enumerate(zip(activations, alphas)):
        weight, bias = read_layer(npz, i, n_in, dtype)
        segs = read_segments(npz, i, weight.shape[0]) if str(act) == MIXED else None
        count = carried[i] if i < len(carried) and isinstance(carried[i], int) else 0
        blocks = read_input_blocks(npz, i, n_in) if version >= 3 else None
        if version < 4 and f"layer{i}.parts" in npz:
            raise npz.fail(f"layer{i}.parts", f"is not part of format version {version}")
        layers.append(MlpLayer(weight, bias, str(act), float(alpha), segs, count, blocks))
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


def read_input_blocks(npz: SafeNpz, i: int, n_in: int) -> tuple[int, ...] | None:
    """Where the sources layer ``i`` reads begin (format version 3, optional): from 0 up to
    the layer's inputs, increasing."""
    key = f"layer{i}.input_blocks"
    if key not in npz:
        return None
    blocks = npz.integers(key, ndim=1)
    if len(blocks) < 2 or blocks[0] != 0 or blocks[-1] != n_in or np.any(np.diff(blocks) <= 0):
        raise npz.fail(key, f"is not an increasing list of boundaries from 0 to {n_in}")
    return tuple(int(b) for b in blocks)


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
    import scipy.sparse as sp

    from .npz_parts import read_bias, read_structured

    key = f"layer{i}"
    shape = npz.integers(f"{key}.shape", ndim=1)
    if len(shape) != 2 or shape[0] <= 0 or int(shape[1]) != n_in:
        raise npz.fail(f"{key}.shape", f"is {shape.tolist()}, but the layer before gives "
                                       f"{n_in} inputs")
    n_out = int(shape[0])
    if f"{key}.parts" in npz:
        bias = read_bias(npz, key, n_out, dtype)
        return read_structured(npz, key, (n_out, n_in), dtype), bias
    sizes = {part: npz.header(f"{key}.{part}")[0] for part in ("data", "indices", "indptr")}
    (nnz,) = sizes["data"] if len(sizes["data"]) == 1 else (-1,)
    if sizes["indices"] != (nnz,) or sizes["indptr"] != (n_out + 1,):
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
    bias = read_bias(npz, key, n_out, dtype)
    index_type = np.int32 if max(n_in, nnz) < 2**31 - 1 else np.int64
    weight = sp.csr_array((data, indices.astype(index_type, copy=False),
                           indptr.astype(index_type, copy=False)), shape=(n_out, n_in))
    return weight, bias


class CsrModel:
    """A compiled MLP ready to run: ``predict(x)`` with x shaped ``(B, *input_shape)``.

    ``engine`` says what runs it (``runtime.make_engine``: the model's C code where a C
    compiler is found, else numba, else scipy); ``threads`` defaults to
    ``CNN2MLP_THREADS`` or all cores."""

    def __init__(self, mlp: Mlp | DeferredMlp, meta: dict[str, Any] | None = None,
                 threads: int | None = None, engine: str | None = None) -> None:
        from ..runtime import make_engine

        self._source = mlp
        self.meta = meta or {}
        self._engine = make_engine(mlp, engine, threads)

    @property
    def mlp(self) -> Mlp:
        """The MLP's layers (read from the file at the first use when the engine did not
        need them)."""
        return resolve(self._source)

    @property
    def engine(self) -> str:
        return self._engine.name

    @property
    def threads(self) -> int:
        return self._engine.threads

    @functools.cached_property  # read at every predict
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._source.input_shape)

    @functools.cached_property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._source.output_shape)

    @property
    def layers(self) -> list[MlpLayer]:
        return self.mlp.layers

    @property
    def dtype(self) -> np.dtype:
        """The precision the model computes in (float64 for a double source model)."""
        return self._source.dtype

    def predict(self, x: np.ndarray, dtype=None) -> np.ndarray:
        """``dtype`` defaults to the model's own precision."""
        dtype = self.dtype if dtype is None else dtype
        x = np.asarray(x)
        shape = self.input_shape
        if x.shape[1:] != shape:
            raise ValueError(f"predict expects (B, {', '.join(map(str, shape))}); "
                             f"got {x.shape}")
        y = self._engine.run(x.reshape(len(x), -1), dtype)
        return y.reshape((len(x),) + self.output_shape)


def load(path: str | Path, threads: int | None = None, engine: str | None = None) -> CsrModel:
    """The artifact, its layers read only if the engine needs them (see :func:`open_csr`)."""
    mlp, meta = open_csr(path)
    return CsrModel(mlp, meta, threads, engine)


def write_kernel(path: str | Path, artifact: str | Path, mlp: Mlp,
                 module_path: str | Path | None = None) -> None:
    """Write a standalone numpy-only ``.py`` module that runs the artifact: the source of
    ``backends/standalone.py`` with its settings made this artifact's and the code it
    imports embedded. ``module_path`` is where the module will finally live (when ``path``
    is a staging file): the artifact is found relative to it."""
    path = Path(path)
    home = Path(module_path or path).absolute().parent
    relative = os.path.relpath(Path(artifact).absolute(), home)
    with atomic_write(path, "w") as handle:
        handle.write(kernel_module_source(relative, mlp.input_shape))


def kernel_module_source(artifact: str, input_shape) -> str:
    """The standalone module's text. Every value enters the code through repr(): a file
    name cannot become code."""
    import inspect

    from ..ir import activations, index_runs
    from ..runtime import columns, structure
    from . import standalone

    text = inspect.getsource(standalone)
    settings = {"FORMAT_VERSIONS = (1, 2, 3, 4, 5)": f"FORMAT_VERSIONS = {READABLE_VERSIONS!r}",
                'ARTIFACT = "model.npz"': f"ARTIFACT = {artifact!r}",
                "INPUT_SHAPE: tuple = ()":
                    f"INPUT_SHAPE = {tuple(int(d) for d in input_shape)!r}"}
    for old, new in settings.items():
        text = replace_once(text, old, new)
    begin = text.index("# -- embedded:")
    end = text.index("# -- end embedded\n") + len("# -- end embedded\n")
    embedded = "\n\n".join([activations.embedded_source(), structure.embedded_source(),
                             columns.embedded_source(), index_runs.embedded_source()])
    return text[:begin] + embedded + text[end:]


def replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"the standalone module lost its setting {old!r}")
    return text.replace(old, new)


@register_target
class CsrTarget(Target):
    """The sparse MLP as a .npz of CSR arrays, run by ``cnn2mlp.load``: linear maps fused
    only where the size model allows, carried values as identity neurons, ReLU6/Clip as
    one bounded-ReLU neuron (the format has an activation per neuron)."""

    name, suffix, kind = "csr", ".npz", "a CSR artifact"
    fusion = "cost"
    runs_in_kernel_module = True
    replace = {"clip-to-relu": "clip-to-bounded-relu"}

    def pass_options(self) -> PassOptions:
        from ..passes.base import PassOptions

        return PassOptions(carry=IDENTITY.name)

    def write(self, mlp: Mlp, meta: GraphMeta, path: str | Path, options: TargetOptions,
              provenance: dict[str, str]) -> None:
        if meta.input_affine is not None or meta.uniform is not None:
            raise CompileError("extract-input-affine and unify-activation prepare a graph for "
                               "the opencv target; leave them out of --passes for csr")
        alphas = [layer.alpha for layer in mlp.layers] + [
            a for layer in mlp.layers for *_, a in (layer.segments or ())]
        if not np.isfinite(alphas).all():  # cnn2mlp.load refuses such a file
            raise CompileError(f"{provenance.get('source', '')}: an activation parameter is "
                               "NaN or infinite (a LeakyRelu alpha?), which the .npz format "
                               "does not hold; fix the model, or write -o FILE.c")
        save_csr(mlp, path, provenance, options.npz_layout)

    def load(self, mlp: Mlp, path: Path) -> CsrModel:
        """The written file for --check, on the scipy engine (``$CNN2MLP_ENGINE`` if set):
        the check is of the file's numbers, which every engine computes alike (they are
        tested against each other); building its C code would add seconds to a minute to
        every compile, and the compiled engines' prepared copies of the weights would
        double the check's memory (ResNet50 at 224x224: numba 4.6 GB, scipy 1.7 GB)."""
        from ..runtime.engine import ENGINE_VARIABLE

        return load(path, engine=os.environ.get(ENGINE_VARIABLE) or "scipy")
