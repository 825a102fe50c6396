"""Engines: numba (compiled kernels: register-blocked for row groups and dense layers from a
batch of 16, direct and CSR kernels otherwise) or scipy (CSR products, im2col + GEMM for
row groups, dense layers through BLAS)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..ir.activations import CATALOGUE
from ..ir.mlp import Mlp, MlpLayer, activate_layer
from .blocking import LANES, kernel_blocks
from .columns import runtime_layers
from .structure import ProductGroup, Structure, find_structure, run_group

#: layers with more non-zeros than this fraction of their entries run as dense GEMM
#: (measured in benchmarks/bench_runtime.py: CSR loses to BLAS above about a third)
DENSE_THRESHOLD = 0.3
#: ...unless the dense copy would exceed this many bytes
DENSE_LIMIT = 256 * 2**20
#: a layer runs its row groups as GEMM when they cover this share of its rows
STRUCTURE_MIN_COVER = 0.5
#: multiply-adds below which a layer runs on one thread: starting a parallel region costs
#: 12 µs with numba's default TBB layer here (2 µs with NUMBA_THREADING_LAYER=omp), about
#: the time of 2^19 multiply-adds; threads pay off from a few times that
PARALLEL_WORK = 1 << 21
#: outputs below which bias and activation run on one thread (one pass over them is cheap)
PARALLEL_FINISH = 1 << 19
#: the runtime code of each activation name (the catalogue's)
CODES = {entry.name: entry.code for entry in CATALOGUE}


def available_engines() -> list[str]:
    try:
        from . import numba_kernels  # noqa: F401
    except ImportError:
        return ["scipy"]
    return ["numba", "scipy"]


def default_threads() -> int:
    """``CNN2MLP_THREADS`` when set (a whole number >= 1), else all cores."""
    value = os.environ.get("CNN2MLP_THREADS")
    if value is None or not value.strip():
        return os.cpu_count() or 1
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"CNN2MLP_THREADS={value!r}: give a whole number of threads, 1 or "
                         "more (or unset it to use every core)")
    return threads


def checked_threads(threads: int | None) -> int:
    """The thread count to run with: ``threads`` if given (a whole number >= 1), else
    :func:`default_threads`. Checked at load, not at the first predict."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads={threads!r}: give a whole number of threads, 1 or more")
    return int(threads)


def make_engine(mlp: Mlp, engine: str | None = None, threads: int | None = None) -> "Engine":
    """The fastest engine available (``engine`` forces one: "numba" or "scipy")."""
    names = available_engines()
    if engine is not None and engine not in ("numba", "scipy"):
        raise ValueError(f"unknown engine {engine!r}: numba or scipy")
    if engine == "numba" and "numba" not in names:
        raise ValueError("the numba engine needs numba: pip install 'cnn2mlp[fast]'")
    name = engine or names[0]
    return Engine(mlp, name, checked_threads(threads))


@dataclass
class _Layer:
    csr: sp.csr_array
    dense: np.ndarray | None
    bias: np.ndarray
    codes: np.ndarray
    alphas: np.ndarray
    source: MlpLayer
    structure: Structure | None = None  # convolution-like row groups, run as GEMM
    rest_plain: tuple[np.ndarray, np.ndarray] | None = None  # zero bias, identity codes
    vector_plan: "VectorPlan | None" = None  # batch 1: big groups as GEMM, the rest CSR
    #: (None without a big group: the layer runs as plain CSR at batch 1)
    kernel_csr: tuple | None = None      # (data, indices, indptr), unsigned, for numba
    kernel_rest: tuple | None = None     # the same for the structure's rest rows
    direct_groups: list | None = None    # per group: arrays for the direct kernel, or None
    blocked_groups: list | None = None   # per group: "BlockedGroup" arrays, or None
    blocked_dense: "BlockedGroup | None" = None  # a dense layer as one blocked group
    zero_bias: np.ndarray | None = None  # what the blocked kernel adds when not fusing
    rest_fused: tuple | None = None      # (bias, codes, alphas) of the structure's rest rows
    uniform: int | None = None           # the activation code every neuron has, if one

    @property
    def fusable(self) -> bool:
        """Bias and activation can ride with the blocked kernel's stores."""
        return self.uniform in (CODES["relu"], CODES["identity"])


#: at batch 1, a group runs as a GEMM when it has this many non-zeros; smaller ones (a
#: convolution's thin borders) join the CSR rows: below it, the calls of a gather and a
#: GEMM (~5 µs) cost more than the CSR loop over its entries (~1 ns each)
VECTOR_GROUP_NNZ = 6000


#: at a batch of LANES or more, groups with more weights than this run on the blocked
#: kernel, the others on the direct one
MIN_BLOCKED_WEIGHTS = 4


#: groups with at most this many weights (kernels × taps) run as direct axpys, larger ones
#: as gather + GEMM (measured in benchmarks/bench_runtime.py's models: LeNet's 6×25 kernel
#: and max-pool pairs gain 1.4-6x direct, a 16×128 kernel loses 1.8x)
DIRECT_MAX_WEIGHTS = 256


def direct_arrays(group, dtype) -> tuple | None:
    if group.kernels.size > DIRECT_MAX_WEIGHTS:
        return None
    return (group.kernels.astype(dtype), group.offsets.astype(np.uint64),
            group.bases.astype(np.uint64), group.rows.astype(np.uint64))


class BlockedGroup:
    """A row group's arrays for the register-blocked kernel (``microkernel.py``): its
    blocks of kernels (first kernel, size, start of its weights), the weights packed block
    by block and tap by tap (a block reads its weights in one sweep, as BLAS packs a
    matrix: 25% faster on a 128 × 2304 dense layer, whose weights exceed L2), unsigned
    indices."""

    def __init__(self, group, dtype) -> None:
        taps = len(group.offsets)
        blocks, packed, start = [], [], 0
        for k0, size in kernel_blocks(len(group.kernels)):
            blocks.append((k0, size, start))
            packed.append(group.kernels[k0:k0 + size].T.astype(dtype).ravel())
            start += size * taps
        self.arrays = (np.concatenate(packed), np.array(blocks, np.uint64).reshape(-1, 3),
                       group.offsets.astype(np.uint64), group.bases.astype(np.uint64),
                       group.rows.astype(np.uint64))


def group_path(blocked: "BlockedGroup | None", direct: tuple | None, batch: int) -> str:
    """How a row group runs at this batch size: "blocked", "direct" or "gemm"."""
    if blocked is not None and batch >= LANES:
        return "blocked"
    return "direct" if direct is not None else "gemm"


def blocked_arrays(group, dtype) -> BlockedGroup | None:
    """Groups with more than MIN_BLOCKED_WEIGHTS weights run blocked (at a batch of LANES
    or more); smaller ones (max-pool pairs) stay on the direct kernel."""
    return BlockedGroup(group, dtype) if group.kernels.size > MIN_BLOCKED_WEIGHTS else None


#: dense layers up to this many entries also run on the blocked kernel at a batch of
#: LANES or more (measured at batch 64: 7-20% faster than numpy's OpenBLAS GEMM on the
#: benchmark's dense layers); it keeps a packed copy of the weights
BLOCKED_DENSE_ENTRIES = 1 << 24


def blocked_dense(dense: np.ndarray, dtype) -> BlockedGroup | None:
    """A dense layer as one row group: every row reads every column from base 0."""
    if dense.size > BLOCKED_DENSE_ENTRIES:
        return None
    n_out, n_in = dense.shape
    group = ProductGroup(dense, np.arange(n_in), np.zeros(1, np.int64),
                         np.arange(n_out)[:, None])
    return blocked_arrays(group, dtype)


def finish_layer(layer: "_Layer", out: np.ndarray, parallel: bool) -> None:
    """In place: bias and activation after a product. A layer whose neurons all share ReLU
    or the identity takes a kernel without per-element dispatch (measured: 2.5x faster at
    batch 1, 1.2-1.3x at batch 64)."""
    from . import numba_kernels as k

    parallel = parallel and out.size >= PARALLEL_FINISH
    if layer.uniform == CODES["relu"]:
        (k.bias_relu if parallel else k.bias_relu_serial)(out, layer.bias)
    elif layer.uniform == CODES["identity"]:
        (k.bias_only if parallel else k.bias_only_serial)(out, layer.bias)
    else:
        (k.bias_activation if parallel else k.bias_activation_serial)(
            out, layer.bias, layer.codes, layer.alphas)


def unsigned_csr(m: sp.csr_array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, indices, indptr) with unsigned indices for the numba kernels: a signed index
    makes numba check for negative (wrap-around) indexing on every access, which cost
    2.5x in the batch-1 CSR loop."""
    def unsigned(a: np.ndarray) -> np.ndarray:  # a view when it can be: no copy
        kind = {np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}.get(a.dtype)
        return a.view(kind) if kind is not None else a.astype(np.uint64)

    return m.data, unsigned(m.indices), unsigned(m.indptr)


class VectorPlan:
    """How a structured layer runs at batch 1: each big group gathers its patches from
    the input vector (one take), multiplies by its kernels and scatters the rows; every
    other row is one CSR product."""

    def __init__(self, w: sp.csr_array, structure: Structure) -> None:
        def is_big(g):
            return g.rows.size * len(g.offsets) >= VECTOR_GROUP_NNZ

        big = [g for g in structure.groups if is_big(g)]
        self.groups = [(g.kernels, (g.bases[None, :] + g.offsets[:, None]).astype(np.intp),
                        g.rows.ravel().astype(np.intp)) for g in big]
        small = [g.rows.ravel() for g in structure.groups if not is_big(g)]
        self.rows = np.sort(np.concatenate([structure.rest_rows.astype(np.int64)]
                                           + [r.astype(np.int64) for r in small]))
        self.csr = unsigned_csr(sp.csr_array(w[self.rows]))
        self.rows = self.rows.astype(np.uint64)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out`` (n_out,) = W x, without bias or activation."""
        from . import numba_kernels as k

        for kernels, index, rows in self.groups:
            out[rows] = (kernels @ np.take(x, index)).ravel()
        if len(self.rows):
            k.csr_rows_vector_serial(*self.csr, self.rows, x, out)


def vector_plan(w: sp.csr_array, structure: Structure) -> VectorPlan | None:
    """The batch-1 plan of a structured layer; None when no group is big enough for a
    GEMM: the whole layer is then one CSR call with its bias and activation fused."""
    plan = VectorPlan(w, structure)
    return plan if plan.groups else None


def row_activations(layer: MlpLayer) -> tuple[np.ndarray, np.ndarray]:
    codes = np.empty(layer.n_out, np.int8)
    alphas = np.empty(layer.n_out, np.float64)
    runs = layer.segments or ((0, layer.n_out, layer.activation, layer.alpha),)
    for start, stop, name, alpha in runs:
        codes[start:stop] = CODES[name]
        alphas[start:stop] = alpha
    return codes, alphas


def features_by_batch(x: np.ndarray) -> np.ndarray:
    """``x.T`` made contiguous. When a row of ``x`` spans a multiple of 2 KiB, the rows a
    transpose reads together fall into one cache set and evict each other (a 64 × 3072
    float32 transpose took 0.56 ms); copying them first into rows padded by one cache line
    spreads them over the sets (0.085 ms)."""
    if x.ndim != 2 or x.shape[0] < 8 or (x.shape[1] * x.itemsize) % 2048:
        return np.ascontiguousarray(x.T)
    pad = 64 // x.itemsize
    padded = np.empty((x.shape[0], x.shape[1] + pad), x.dtype)
    padded[:, :x.shape[1]] = x
    out = np.empty((x.shape[1], x.shape[0]), x.dtype)
    np.copyto(out, padded[:, :x.shape[1]].T)
    return out


class Engine:
    """Runs an MLP on batches; ``name`` is "numba" or "scipy"."""

    def __init__(self, mlp: Mlp, name: str, threads: int) -> None:
        self.mlp, self.name, self.threads = mlp, name, threads
        self._typed: dict[np.dtype, list[_Layer]] = {}

    def layers(self, dtype) -> list[_Layer]:
        key = np.dtype(dtype)
        if key not in self._typed:
            typed = []
            for layer in runtime_layers(self.mlp.layers):
                w = layer.weight.astype(key, copy=False)
                dense = None
                if w.nnz > DENSE_THRESHOLD * w.shape[0] * w.shape[1] and \
                        w.shape[0] * w.shape[1] * key.itemsize <= DENSE_LIMIT:
                    dense = np.ascontiguousarray(w.toarray())
                codes, alphas = row_activations(layer)
                structure = None
                if dense is None and w.nnz:
                    found = find_structure(w)
                    if found.covered >= STRUCTURE_MIN_COVER * w.shape[0]:
                        structure = found
                plain = None
                if structure is not None:
                    n_rest = len(structure.rest_rows)
                    plain = (np.zeros(n_rest, key), np.zeros(n_rest, np.int8))
                compiled = self.name == "numba"  # what only the numba kernels read
                structured = compiled and structure is not None
                typed.append(_Layer(
                    w, dense, layer.bias.astype(key), codes, alphas.astype(key), layer,
                    structure, plain, vector_plan(w, structure) if structured else None,
                    unsigned_csr(w) if compiled and dense is None else None,
                    unsigned_csr(structure.rest) if structured else None,
                    [direct_arrays(g, key) for g in structure.groups] if structured else None,
                    [blocked_arrays(g, key) for g in structure.groups] if structured else None,
                    blocked_dense=(blocked_dense(dense, key) if compiled and dense is not None
                                   else None),
                    uniform=(int(codes[0]) if len(codes) and (codes == codes[0]).all()
                             else None)))
            for item in typed:
                if item.blocked_groups is not None or item.blocked_dense is not None:
                    item.zero_bias = np.zeros(item.csr.shape[0], key)
                if item.structure is not None and self.name == "numba":
                    rest = item.structure.rest_rows
                    item.rest_fused = (item.bias[rest], item.codes[rest], item.alphas[rest])
            self._typed[key] = typed
        return self._typed[key]

    def run(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        """``x`` (B, n_in) → (B, n_out)."""
        layers = self.layers(dtype)
        batch = len(x)
        h = features_by_batch(np.asarray(x, dtype))  # (n_in, B): once
        if self.name == "numba":
            return self._run_numba(layers, h, batch, dtype).T.copy()
        return self._run_scipy(layers, h, dtype).T.copy()

    def _run_numba(self, layers, h, batch, dtype):
        import numba

        from . import numba_kernels as k
        from . import variants

        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        widest = max(layer.csr.shape[0] for layer in layers)
        buffers = [np.empty(widest * batch, dtype), np.empty(widest * batch, dtype)]
        for index, layer in enumerate(layers):
            out = buffers[index % 2][:layer.csr.shape[0] * batch].reshape(-1, batch)
            work = (layer.csr.nnz if layer.dense is None else layer.dense.size) * batch
            parallel = self.threads > 1 and work >= PARALLEL_WORK and \
                not variants.forked_after_threads
            if layer.dense is not None and layer.blocked_dense is not None and \
                    batch >= LANES:
                self._run_blocked(layer, layer.blocked_dense, h, out, parallel,
                                  layer.fusable)
                if not layer.fusable:
                    finish_layer(layer, out, parallel)
            elif layer.dense is not None:
                np.matmul(layer.dense, h, out=out)
                finish_layer(layer, out, parallel)
            elif batch == 1 and layer.vector_plan is not None:
                self._structured_vector(layer, h, out, parallel)
            elif batch == 1:
                (k.csr_vector if parallel else k.csr_vector_serial)(
                    *layer.kernel_csr, layer.bias, layer.codes, layer.alphas, h.reshape(-1),
                    out.reshape(-1))
            elif layer.structure is not None:
                self._structured(layer, h, out, batch, parallel)
            else:
                (k.csr_layer if parallel else k.csr_layer_serial)(
                    *layer.kernel_csr, layer.bias, layer.codes, layer.alphas, h, out)
            h = out
        return h

    def _structured(self, layer, h, out, batch, parallel):
        """Row groups by the blocked kernel (at a batch of LANES or more; all but the
        smallest groups), the direct kernel (small ones) or im2col + GEMM; the other rows by
        the CSR kernel. A layer whose neurons share ReLU or the identity takes its bias and
        activation in those kernels when every group runs blocked; otherwise in one pass
        afterwards."""
        from . import numba_kernels as k

        structure = layer.structure
        paths = [group_path(blocked, direct, batch) for blocked, direct in
                 zip(layer.blocked_groups, layer.direct_groups)]
        # bias and activation ride with the blocked kernel's stores when it runs every
        # group (measured: doing the same in the direct kernel gained nothing)
        fused = layer.fusable and all(path == "blocked" for path in paths)
        direct_kernel = k.group_direct if parallel else k.group_direct_serial
        for group, direct, blocked, path in zip(structure.groups, layer.direct_groups,
                                                layer.blocked_groups, paths):
            if path == "blocked":
                self._run_blocked(layer, blocked, h, out, parallel, fused)
            elif path == "gemm":
                run_group(group, h, out)
            else:
                direct_kernel(*direct, h, out)
        if len(structure.rest_rows):
            rest = structure.rest
            partial = np.empty((rest.shape[0], batch), out.dtype)
            if fused:
                bias, codes, alphas = layer.rest_fused
            else:  # no bias, the identity: both come after
                bias, codes = layer.rest_plain
                alphas = bias
            (k.csr_layer if parallel else k.csr_layer_serial)(
                *layer.kernel_rest, bias, codes, alphas, h, partial)
            out[structure.rest_rows] = partial
        if not fused:
            finish_layer(layer, out, parallel)

    @staticmethod
    def _run_blocked(layer, blocked: BlockedGroup, h, out, parallel, fused) -> None:
        """With ``fused``, the layer's bias and (uniform) activation come with the stores."""
        from . import numba_kernels as k

        if fused:
            k.blocked_group(parallel, *blocked.arrays, h, out, layer.bias,
                            layer.uniform == CODES["relu"])
        else:
            k.blocked_group(parallel, *blocked.arrays, h, out, layer.zero_bias, False)

    def _structured_vector(self, layer, h, out, parallel):
        """Batch 1: big groups as gather + GEMM, all other rows in one compiled CSR call,
        then bias and activation."""

        layer.vector_plan.run(h.reshape(-1), out.reshape(-1))
        finish_layer(layer, out, parallel)

    def _run_scipy(self, layers, h, dtype):
        for layer in layers:
            if layer.structure is not None:
                z = np.empty((layer.csr.shape[0], h.shape[1]), h.dtype)
                for group in layer.structure.groups:
                    run_group(group, h, z)
                if len(layer.structure.rest_rows):
                    z[layer.structure.rest_rows] = np.asarray(layer.structure.rest @ h)
            else:
                z = layer.dense @ h if layer.dense is not None else np.asarray(layer.csr @ h)
            z += layer.bias[:, None]
            h = activate_layer(layer.source, z.T).T.astype(dtype, copy=False)
        return h
