"""The compiled kernels (numba). Importing this module fails without numba; the engine
then falls back to scipy.

Activations are kept as (features × batch) arrays, contiguous along the batch, so that each
weight is one short, vectorizable multiply-add over the batch. Every kernel writes a row of
``out`` by the plan's rule (``plan.py``): a row that several parts write is added to;
otherwise it is stored with its bias and its clamp ``v = z if z > lo else z * scale``,
``min(v, hi)`` (identity, ReLU, leaky or bounded ReLU); other activations come after, in
``finish_rows``. Each row is computed by one thread in a fixed order: results do not depend
on the number of threads. Indices are unsigned (numba checks signed ones for wrap-around
on every access: 2.5x slower in the CSR loop)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from numba import njit, prange

from . import microkernel
from .activation_kernels import activate
from .variants import prefer_openmp, threaded_and_serial

prefer_openmp()

#: rows a thread takes at a time (amortizes the accumulator)
ROW_BLOCK = 32


@njit(cache=True, inline="always")
def store_row(out, i, acc, batch, store_bias, lo, scale, hi, accumulate):
    """``out[i] = g_i(acc)`` over the batch, by the plan's rule for row ``i``. (Through a
    view of the row: ``out[i, j]`` with an unsigned ``i`` and a signed ``j`` makes numba
    index in floating point. The row's parameters are read before the branch, and the
    branch has no early return: laid out otherwise, numba's inlining made the CSR loop 5x
    and the batch-1 loop 30x slower.)"""
    row = out[i]
    add, low, slope, top = store_bias[i], lo[i], scale[i], hi[i]
    if accumulate[i] == 0:
        for j in range(batch):
            v = acc[j] + add
            v = v if v > low else v * slope
            row[j] = top if v > top else v
    else:
        for j in range(batch):
            row[j] += acc[j]


def _csr_rows(data, indices, indptr, rows, h, out, store_bias, lo, scale, hi, accumulate):
    """``out[rows[i]] = g(W_i h)`` for the CSR rows of a part (row ``i`` of the arrays is
    matrix row ``rows[i]``). Four non-zeros at a time update the accumulator once (1.5-1.7x
    faster than one at a time: the accumulator's loads and stores were the bottleneck)."""
    n_rows, batch = len(rows), out.shape[1]
    n_blocks = (n_rows + ROW_BLOCK - 1) // ROW_BLOCK
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    for block in prange(n_blocks):
        acc = np.empty(batch, dtype=out.dtype)
        for i in range(block * ROW_BLOCK, min(n_rows, (block + 1) * ROW_BLOCK)):
            for j in range(batch):
                acc[j] = 0
            k, stop = np.uint64(indptr[i]), np.uint64(indptr[i + 1])
            while k + four <= stop:
                w0, w1, w2, w3 = data[k], data[k + one], data[k + two], data[k + three]
                # contiguous rows: the loop below vectorizes
                s0, s1 = h[indices[k]], h[indices[k + one]]
                s2, s3 = h[indices[k + two]], h[indices[k + three]]
                for j in range(batch):
                    acc[j] += (w0 * s0[j] + w1 * s1[j]) + (w2 * s2[j] + w3 * s3[j])
                k += four
            while k < stop:
                w, source = data[k], h[indices[k]]
                for j in range(batch):
                    acc[j] += w * source[j]
                k += one
            store_row(out, rows[i], acc, batch, store_bias, lo, scale, hi, accumulate)


@njit(cache=True, inline="always")
def row_dot(data, indices, start, stop, x):
    """``sum(data[k] * x[indices[k]])`` over one CSR row, in four partial sums (one sum
    would wait on the previous multiply-add's latency)."""
    a0 = a1 = a2 = a3 = data.dtype.type(0)
    one, four = np.uint64(1), np.uint64(4)
    k, stop = np.uint64(start), np.uint64(stop)
    while k + four <= stop:
        a0 += data[k] * x[indices[k]]
        a1 += data[k + one] * x[indices[k + one]]
        a2 += data[k + one + one] * x[indices[k + one + one]]
        a3 += data[k + four - one] * x[indices[k + four - one]]
        k += four
    while k < stop:
        a0 += data[k] * x[indices[k]]
        k += one
    return (a0 + a1) + (a2 + a3)


def _csr_rows_vector(data, indices, indptr, rows, x, out, store_bias, lo, scale, hi,
                     accumulate):
    """Batch 1: ``out[rows[i]] = g(W_i x)``. (The store is written out here: called as a
    function of its own, with six arrays for arguments, it cost 40 ns a row.)"""
    for i in prange(len(rows)):
        z = row_dot(data, indices, indptr[i], indptr[i + 1], x)
        r = rows[i]
        add, low, slope, top = store_bias[r], lo[r], scale[r], hi[r]
        if accumulate[r] == 0:
            v = z + add
            v = v if v > low else v * slope
            out[r] = top if v > top else v
        else:
            out[r] += z


def _copy_runs(starts, columns, lengths, weights, steps, h, out, store_bias, lo, scale, hi,
               accumulate):
    """Runs of copies: ``out[starts[r] + i] = g(weights[r] * h[columns[r] + i * steps[r]])``:
    carried values and shortcuts, one multiply a value (no sums)."""
    batch = out.shape[1]
    for r in prange(len(starts)):
        w = weights[r]
        for i in range(lengths[r]):
            row = starts[r] + np.uint64(i)
            source, target = h[columns[r] + np.uint64(i) * steps[r]], out[row]
            add, low, slope, top = store_bias[row], lo[row], scale[row], hi[row]
            if accumulate[row] == 0:
                for j in range(batch):
                    v = w * source[j] + add
                    v = v if v > low else v * slope
                    target[j] = top if v > top else v
                continue
            for j in range(batch):
                target[j] += w * source[j]


def _group_direct(kernels, offsets, bases, shifts, rows, h, out, store_bias, lo, scale, hi,
                  accumulate):
    """A row group with few weights (max-pool pairs, a depthwise convolution's channels),
    without im2col: for each kernel and base, ``sum_t K[k, t] h[shift_k + base +
    offset_t]`` as batch-wide axpys from rows of ``h`` that stay in cache, then stored by
    the row's rule."""
    n_k, taps = kernels.shape
    batch = h.shape[1]
    n_b = len(bases)
    for item in prange(n_k * ((n_b + ROW_BLOCK - 1) // ROW_BLOCK)):
        k = item % n_k
        first = (item // n_k) * ROW_BLOCK
        acc = np.empty(batch, dtype=out.dtype)
        shift = shifts[k]
        for b in range(first, min(n_b, first + ROW_BLOCK)):
            base = bases[b] + shift
            for j in range(batch):
                acc[j] = 0
            t = 0
            while t + 4 <= taps:
                s0, s1 = h[base + offsets[t]], h[base + offsets[t + 1]]
                s2, s3 = h[base + offsets[t + 2]], h[base + offsets[t + 3]]
                w0, w1, w2, w3 = kernels[k, t], kernels[k, t + 1], kernels[k, t + 2], \
                    kernels[k, t + 3]
                for j in range(batch):
                    acc[j] += (w0 * s0[j] + w1 * s1[j]) + (w2 * s2[j] + w3 * s3[j])
                t += 4
            while t < taps:
                w, src = kernels[k, t], h[base + offsets[t]]
                for j in range(batch):
                    acc[j] += w * src[j]
                t += 1
            store_row(out, rows[k, b], acc, batch, store_bias, lo, scale, hi, accumulate)


def _store_rows(rows, values, out, store_bias, lo, scale, hi, accumulate):
    """``out[rows[i]] = g(values[i])`` by each row's rule (after a product made elsewhere:
    im2col and BLAS)."""
    batch = out.shape[1]
    for i in prange(len(rows)):
        store_row(out, rows[i], values[i], batch, store_bias, lo, scale, hi, accumulate)


def _zero_rows(rows, out):
    for i in prange(len(rows)):
        row = out[rows[i]]
        for j in range(out.shape[1]):
            row[j] = 0


def _finish_rows(rows, out, bias, codes, alphas):
    """After the parts: ``out[r] = f_r(out[r] + bias[r])`` for the rows whose activation is
    not a clamp, or that several parts wrote (``bias`` is 0 where the store added it)."""
    batch = out.shape[1]
    for i in prange(len(rows)):
        r = rows[i]
        b, code, alpha, row = bias[r], codes[r], alphas[r], out[r]
        for j in range(batch):
            row[j] = activate(row[j] + b, code, alpha)


# One function, two compilations: threads for big work, none for small (starting a
# parallel region costs more than a small part's work). Each has its own cache entries
# (variants.py).
def _max_runs(runs, offsets, h, out):
    """``out[r] = max_t h[b + offsets[t]]`` for each (first row, row step, first base, base
    step, length) run of a max layer's window shape (``max_blocks.py``), over the batch; a
    NaN in a window gives NaN."""
    n_taps, batch = len(offsets), out.shape[1]
    for i in prange(len(runs)):
        row, row_step, base = runs[i, 0], runs[i, 1], runs[i, 2]
        base_step, length = runs[i, 3], runs[i, 4]
        for p in range(length):
            r, b = np.uint64(row + p * row_step), base + p * base_step
            target = out[r]
            first = h[np.uint64(b + offsets[0])]
            for j in range(batch):
                target[j] = first[j]
            for t in range(1, n_taps):
                tap = h[np.uint64(b + offsets[t])]
                for j in range(batch):
                    v = tap[j]
                    if v > target[j] or v != v:
                        target[j] = v


csr_rows, csr_rows_serial = threaded_and_serial(_csr_rows, cache=True, nogil=True)
csr_rows_vector, csr_rows_vector_serial = threaded_and_serial(_csr_rows_vector, cache=True,
                                                              nogil=True)
copy_runs, copy_runs_serial = threaded_and_serial(_copy_runs, cache=True, nogil=True)
group_direct, group_direct_serial = threaded_and_serial(_group_direct, cache=True, nogil=True)
store_rows, store_rows_serial = threaded_and_serial(_store_rows, cache=True, nogil=True)
zero_rows, zero_rows_serial = threaded_and_serial(_zero_rows, cache=True, nogil=True)
finish_rows, finish_rows_serial = threaded_and_serial(_finish_rows, cache=True, nogil=True)
max_runs, max_runs_serial = threaded_and_serial(_max_runs, cache=True, nogil=True)


@contextmanager
def slp_vectorizer():
    """numba compiles with LLVM's SLP vectorizer off; the blocked kernel needs it to pack
    its scalar sums into vector registers (9x faster measured). Only a compile reads the
    setting: calls that find the kernel compiled (or cached) are not affected."""
    from numba.core import config

    before = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = before


#: (parallel, value and index dtypes) whose blocked kernel is compiled (or loaded from the
#: cache): their calls skip setting the vectorizer (1.4 µs a call, 4% of a small model's
#: time). The index dtypes are in the key because each is a signature of its own: keyed by
#: the value dtype alone, a second signature compiled without the vectorizer, 9x slower.
_compiled_blocked: set = set()


def blocked_group(parallel: bool, run: tuple[int, int], weights, blocks, offsets, bases, rows,
                  h, out, store_bias, lo, scale, hi, accumulate) -> None:
    """The register-blocked kernel (microkernel.py) on a row group, ``run`` (bases, blocks)
    at a time (``blocking.schedule``); ``h`` and ``out`` are C-contiguous (features ×
    batch)."""
    kernel = microkernel.blocked_group if parallel else microkernel.blocked_group_serial
    kind = h.dtype.type
    args = (weights, blocks, offsets, bases, rows, h.reshape(-1), out.reshape(-1), store_bias,
            lo, scale, hi, accumulate, h.shape[1], kind(0), run[0], run[1])
    key = (parallel, h.dtype, rows.dtype, bases.dtype, offsets.dtype)
    if key in _compiled_blocked:
        kernel(*args)
        return
    with slp_vectorizer():
        kernel(*args)
    _compiled_blocked.add(key)
