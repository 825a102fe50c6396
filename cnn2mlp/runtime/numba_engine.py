"""The numba engine: the plan's parts on compiled kernels (``numba_kernels.py``), threaded.

From a batch of 16 (``LANES``), row groups and dense layers run on the register-blocked
kernel (``microkernel.py``: a block of up to 16 kernels × 16 batch columns keeps its sums in
registers over all taps, reading each input row once per block, no im2col, no scatter;
bias and clamp applied as it stores). Small groups (max-pool pairs, a depthwise
convolution's channels) run as direct batch-wide axpys, and below 16 columns big groups run
as im2col + one BLAS product. Copies run as copies, the other rows as CSR. Rows spread over
``threads``; work below ``PARALLEL_WORK`` multiply-adds runs on one thread (a parallel region
costs more than small work).
"""
from __future__ import annotations

import threading

import numpy as np

from . import numba_kernels as k
from . import variants
from .blocking import LANES, kernel_blocks, schedule
from .kernel_cache import announce_first_compile
from .engine import Engine, features_by_batch, register_engine
from .max_blocks import MaxLayer
from .plan import LayerPlan
from .program import Program
from .structure import ProductGroup, group_patches

#: multiply-adds below which a layer runs on one thread: starting a parallel region costs
#: 2 µs with OpenMP here, about the time of 2^17 multiply-adds; threads pay off from a few
#: times that
PARALLEL_WORK = 1 << 21
#: a CSR non-zero (or row store) costs about this many of the blocked kernel's
#: multiply-adds (CSR rows ran at 5-8 G/s here, the blocked kernel at 60-75): what decides
#: whether a layer of max-pool pairs is worth two threads
CSR_COST = 8
#: at a batch of LANES or more, groups with more weights than this run on the blocked
#: kernel, the others on the direct one
MIN_BLOCKED_WEIGHTS = 4
#: groups with at most this many weights (kernels × taps) run as direct axpys below
#: LANES columns, larger ones as gather + GEMM
DIRECT_MAX_WEIGHTS = 256
#: dense layers up to this many entries also run on the blocked kernel (a packed copy of
#: the weights); larger ones as a BLAS product
BLOCKED_DENSE_ENTRIES = 1 << 24


def unsigned(a: np.ndarray) -> np.ndarray:
    """Unsigned indices for the kernels (a view when it can be: no copy)."""
    a = np.ascontiguousarray(a)
    kind = {np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}.get(a.dtype)
    return a.view(kind) if kind is not None else a.astype(np.uint64)


def index64(a: np.ndarray) -> np.ndarray:
    """Unsigned 64-bit indices: a small array's copy, so that a kernel compiles once for
    every plan (a convolution's int32 rows and a dense layer's int64 ones had made numba
    compile the blocked kernel twice)."""
    return np.ascontiguousarray(a, np.uint64)


class BlockedGroup:
    """A row group's arrays for the register-blocked kernel: its blocks of kernels (first
    kernel, size, start of its weights, shift: a block's kernels share a shift), the
    weights packed block by block and tap by tap (a block reads them in one sweep, as
    BLAS packs a matrix), unsigned indices."""

    def __init__(self, group: ProductGroup, dtype) -> None:
        taps = len(group.offsets)
        blocks, packed, start = [], [], 0
        shifts = group.shifts
        cuts = np.flatnonzero(np.diff(shifts)) + 1
        for first, stop in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(shifts)]])):
            for k0, size in kernel_blocks(int(stop - first)):
                k0 += int(first)
                blocks.append((k0, size, start, int(shifts[k0])))
                packed.append(group.kernels[k0:k0 + size].T.astype(dtype).ravel())
                start += size * taps
        # 64-bit indices whatever the plan's (small arrays): one compiled kernel for all
        self.arrays = (np.concatenate(packed), np.array(blocks, np.uint64).reshape(-1, 4),
                       index64(group.offsets), index64(group.bases), index64(group.rows))
        self.n_blocks, self.n_bases = len(blocks), len(group.bases)
        # the input rows the group reads: from its lowest to its highest
        self.span = int(group.bases.max() - group.bases.min() + group.offsets.max()
                        + group.shifts.max() - group.shifts.min() + 1)
        self.itemsize = np.dtype(dtype).itemsize

    def run(self, batch: int, threads: int) -> tuple[int, int]:
        return schedule(self.n_blocks, self.n_bases, self.span * batch * self.itemsize,
                        threads)


class GroupRun:
    """One row group and how it runs at each batch size."""

    def __init__(self, group: ProductGroup, dtype) -> None:
        self.group = group
        self.blocked = BlockedGroup(group, dtype) if group.kernels.size > MIN_BLOCKED_WEIGHTS \
            else None
        # one array of the kernels for both paths (already in dtype: no copy at all)
        self.kernels = np.ascontiguousarray(group.kernels, dtype=dtype)
        self.direct = (self.kernels, unsigned(group.offsets),
                       unsigned(group.bases), unsigned(group.shifts), unsigned(group.rows))
        self.small = group.kernels.size <= DIRECT_MAX_WEIGHTS or group.shifted
        self.rows = unsigned(group.rows.ravel())
        self.work = group.rows.size * len(group.offsets)

    def path(self, batch: int) -> str:
        if self.blocked is not None and batch >= LANES:
            return "blocked"
        return "direct" if self.small else "gemm"


class LayerRun:
    """A layer's plan with the arrays the kernels take."""

    def __init__(self, plan: LayerPlan) -> None:
        dtype = plan.bias.dtype
        self.plan = plan
        self.n_out = plan.n_out
        self.rule = (plan.store_bias, plan.lo, plan.scale, plan.hi, plan.accumulate)
        self.shared = unsigned(plan.shared)
        self.finish = unsigned(plan.finish)
        self.finish_args = (plan.finish_bias, plan.codes, plan.alphas)
        self.dense = plan.dense
        self.blocked_dense = None
        if plan.dense is not None and plan.dense.size <= BLOCKED_DENSE_ENTRIES:
            n_out, n_in = plan.dense.shape
            self.blocked_dense = BlockedGroup(ProductGroup(
                plan.dense, np.arange(n_in), np.zeros(1, np.int64),
                np.arange(n_out)[:, None]), dtype)
        self.every_row = unsigned(np.arange(plan.n_out))
        self.groups = [GroupRun(g, dtype) for part in plan.parts for g in part.groups]
        self.copies = [(unsigned(c[0]), unsigned(c[1]), unsigned(c[2]), c[3].astype(dtype),
                        unsigned(c[4]))
                       for c in (part.copies for part in plan.parts) if len(c[0])]
        self.rests = [(part.rest[0].astype(dtype), unsigned(part.rest[1]),
                       unsigned(part.rest[2]), unsigned(part.rest_rows))
                      for part in plan.parts if len(part.rest_rows)]
        self.work = plan.dense.size if plan.dense is not None else (
            sum(run.work for run in self.groups) + sum(int(c[2].sum()) for c in self.copies)
            + CSR_COST * sum(len(r[0]) + len(r[3]) for r in self.rests))


class MaxRun:
    """A max layer (``max_blocks.py``) with the arrays its kernel takes: each window
    shape's runs of rows."""

    def __init__(self, plan: MaxLayer) -> None:
        self.plan, self.n_out = plan, plan.n_out
        self.shapes = [(group.runs(), group.offsets.astype(np.int64)) for group in plan.groups]
        self.work = CSR_COST * sum(len(g.rows) * len(g.offsets) for g in plan.groups)


@register_engine
class NumbaEngine(Engine):
    name = "numba"

    def __init__(self, mlp, threads: int) -> None:
        super().__init__(mlp, threads)
        self._local = threading.local()  # each calling thread's buffers
        self._programs: dict[np.dtype, list] = {}  # Programs and the MaxRuns between

    def prepare(self, plan: LayerPlan) -> "LayerRun | MaxRun":
        return MaxRun(plan) if isinstance(plan, MaxLayer) else LayerRun(plan)

    def run(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        import numba

        announce_first_compile()
        layers = self.plans(dtype)
        batch = len(x)
        h = features_by_batch(np.asarray(x, dtype))  # (n_in, B): once
        buffers = self.buffers(max(layer.n_out for layer in layers) * batch, dtype)
        if batch < LANES:  # small batches: the MLP in one compiled call a stretch of layers
            for program in self.programs(dtype):
                if isinstance(program, MaxRun):
                    out = np.empty((program.n_out, batch), h.dtype)
                    self.layer(program, h, out, batch, False)
                    h = out
                else:
                    h = program.run(h, batch, buffers)
            return h.T.copy()
        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        for index, layer in enumerate(layers):
            out = buffers[index % 2][:layer.n_out * batch].reshape(-1, batch)
            parallel = self.threads > 1 and layer.work * batch >= PARALLEL_WORK and \
                not variants.forked_after_threads
            self.layer(layer, h, out, batch, parallel, self.threads if parallel else 1)
            h = out
        return h.T.copy()

    def programs(self, dtype) -> list:
        """For small batches: a packed program for each stretch of layers, and the max
        layers between them (made at the first such batch, per precision)."""
        key = np.dtype(dtype)
        if key not in self._programs:
            stretches: list = []
            for layer in self.plans(dtype):
                if isinstance(layer, MaxRun):
                    stretches.append(layer)
                elif stretches and isinstance(stretches[-1], list):
                    stretches[-1].append(layer.plan)
                else:
                    stretches.append([layer.plan])
            self._programs[key] = [s if isinstance(s, MaxRun) else Program(s, key)
                                   for s in stretches]
        return self._programs[key]

    def buffers(self, size: int, dtype) -> list[np.ndarray]:
        """The two ping-pong buffers of this thread, kept between calls: fresh ones would
        cost a page fault a page at every call (0.3 ms for a 1 MiB layer at batch 16)."""
        key = (np.dtype(dtype), size)
        kept = getattr(self._local, "buffers", None)
        if kept is None or kept[0] != key:
            kept = (key, [np.empty(size, dtype), np.empty(size, dtype)])
            self._local.buffers = kept
        return kept[1]

    @staticmethod
    def layer(layer: LayerRun, h, out, batch: int, parallel: bool, threads: int = 1) -> None:
        def pick(name):  # the threaded or the serial compilation of a kernel
            return getattr(k, name if parallel else name + "_serial")

        if isinstance(layer, MaxRun):
            for runs, offsets in layer.shapes:
                pick("max_runs")(runs, offsets, h, out)
            return
        if len(layer.shared):
            pick("zero_rows")(layer.shared, out)
        if layer.dense is not None:
            if layer.blocked_dense is not None and batch >= LANES:
                blocked = layer.blocked_dense
                k.blocked_group(parallel, blocked.run(batch, threads), *blocked.arrays, h, out,
                                *layer.rule)
            else:  # (numpy's matmul into ``out`` skipped BLAS: 100x slower at batch 1)
                pick("store_rows")(layer.every_row, layer.dense @ h, out, *layer.rule)
        for run in layer.groups:
            path = run.path(batch)
            if path == "blocked":
                k.blocked_group(parallel, run.blocked.run(batch, threads), *run.blocked.arrays,
                                h, out, *layer.rule)
            elif path == "direct":
                pick("group_direct")(*run.direct, h, out, *layer.rule)
            else:
                product = np.matmul(run.kernels, group_patches(run.group, h))
                pick("store_rows")(run.rows, product.reshape(-1, batch), out, *layer.rule)
        for copies in layer.copies:
            pick("copy_runs")(*copies, h, out, *layer.rule)
        for data, indices, indptr, rows in layer.rests:
            if batch == 1:
                pick("csr_rows_vector")(data, indices, indptr, rows, h.reshape(-1),
                                        out.reshape(-1), *layer.rule)
            else:
                pick("csr_rows")(data, indices, indptr, rows, h, out, *layer.rule)
        if len(layer.finish):
            pick("finish_rows")(layer.finish, out, *layer.finish_args)
