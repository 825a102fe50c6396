"""The compiled kernels (numba). Importing this module fails without numba; the engine
then falls back to scipy."""
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


def _csr_layer(data, indices, indptr, bias, codes, alphas, h, out):
    """``out = f(W h + b)`` for CSR ``W`` (data, indices, indptr) and ``h`` (n_in × batch).

    Four non-zeros at a time update the accumulator once (1.5-1.7x faster than one at a
    time: the accumulator's loads and stores were the bottleneck). Each row is computed by
    one thread in a fixed order: results do not depend on the number of threads."""
    n_out, batch = out.shape
    n_blocks = (n_out + ROW_BLOCK - 1) // ROW_BLOCK
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    for block in prange(n_blocks):
        acc = np.empty(batch, dtype=out.dtype)
        for i in range(block * ROW_BLOCK, min(n_out, (block + 1) * ROW_BLOCK)):
            b = bias[i]
            for j in range(batch):
                acc[j] = b
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
            code, alpha = codes[i], alphas[i]
            for j in range(batch):
                out[i, j] = activate(acc[j], code, alpha)


def _bias_activation(out, bias, codes, alphas):
    """In place: ``out = f(out + b)`` row by row (after a dense GEMM)."""
    n_out, batch = out.shape
    for i in prange(n_out):
        b, code, alpha = bias[i], codes[i], alphas[i]
        for j in range(batch):
            out[i, j] = activate(out[i, j] + b, code, alpha)


@njit(cache=True, inline="always")
def row_dot(data, indices, start, stop, x):
    """``sum(data[k] * x[indices[k]])`` over one CSR row, in four partial sums (one sum
    would wait on the previous multiply-add's latency). Positions are unsigned 64-bit
    throughout: numba turns unsigned + signed into a float."""
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


def _csr_vector(data, indices, indptr, bias, codes, alphas, x, out):
    """Batch 1: ``out = f(W x + b)``."""
    for i in prange(out.shape[0]):
        z = row_dot(data, indices, indptr[i], indptr[i + 1], x) + bias[i]
        out[i] = activate(z, codes[i], alphas[i])


# One function, two compilations: threads for big layers, none for small ones (starting a
# parallel region costs more than a small layer's work). Each has its own cache entries
# (variants.py).
csr_layer, csr_layer_serial = threaded_and_serial(_csr_layer, cache=True, nogil=True)
bias_activation, bias_activation_serial = threaded_and_serial(_bias_activation, cache=True, nogil=True)
csr_vector, csr_vector_serial = threaded_and_serial(_csr_vector, cache=True, nogil=True)


def _csr_rows_vector(data, indices, indptr, rows, x, out):
    """Batch 1: ``out[rows[i]] = (W x)_i`` for the rows no group covers (no bias yet)."""
    for i in prange(len(rows)):
        out[rows[i]] = row_dot(data, indices, indptr[i], indptr[i + 1], x)


csr_rows_vector, csr_rows_vector_serial = threaded_and_serial(_csr_rows_vector, cache=True, nogil=True)


def _group_direct(kernels, offsets, bases, rows, h, out):
    """A row group with a small kernel matrix, without im2col: ``out[rows[k, b]] =
    sum_t K[k, t] h[bases[b] + offsets[t]]``, as batch-wide axpys from rows of ``h``
    that stay in cache (measured: faster than gather + GEMM up to a few hundred weights,
    as for max-pool pairs or a 6×25 LeNet kernel). Four taps' input rows are read once for
    all kernels and summed straight into the output rows (256 bytes each at batch 64: they
    stay in L1), the first four assigned rather than added: no accumulator to clear or
    copy."""
    n_k, taps = kernels.shape
    batch = h.shape[1]
    n_b = len(bases)
    n_blocks = (n_b + ROW_BLOCK - 1) // ROW_BLOCK
    for block in prange(n_blocks):
        for b in range(block * ROW_BLOCK, min(n_b, (block + 1) * ROW_BLOCK)):
            base = bases[b]
            t = 0
            while t + 4 <= taps:
                s0, s1 = h[base + offsets[t]], h[base + offsets[t + 1]]
                s2, s3 = h[base + offsets[t + 2]], h[base + offsets[t + 3]]
                for k in range(n_k):
                    w0, w1, w2, w3 = kernels[k, t], kernels[k, t + 1], kernels[k, t + 2], \
                        kernels[k, t + 3]
                    row = out[rows[k, b]]
                    if t == 0:
                        for j in range(batch):
                            row[j] = (w0 * s0[j] + w1 * s1[j]) + (w2 * s2[j] + w3 * s3[j])
                    else:
                        for j in range(batch):
                            row[j] += (w0 * s0[j] + w1 * s1[j]) + (w2 * s2[j] + w3 * s3[j])
                t += 4
            while t < taps:
                src = h[base + offsets[t]]
                for k in range(n_k):
                    w, row = kernels[k, t], out[rows[k, b]]
                    if t == 0:
                        for j in range(batch):
                            row[j] = w * src[j]
                    else:
                        for j in range(batch):
                            row[j] += w * src[j]
                t += 1


group_direct, group_direct_serial = threaded_and_serial(_group_direct, cache=True, nogil=True)


def _bias_relu(out, bias):
    """In place ``out = max(out + b, 0)`` (the common uniform ReLU layer): no per-element
    dispatch on the activation code, so it vectorises."""
    n_out, batch = out.shape
    for i in prange(n_out):
        b = bias[i]
        for j in range(batch):
            z = out[i, j] + b
            out[i, j] = z if z > 0 else z * 0


def _bias_only(out, bias):
    n_out, batch = out.shape
    for i in prange(n_out):
        b = bias[i]
        for j in range(batch):
            out[i, j] += b


bias_relu, bias_relu_serial = threaded_and_serial(_bias_relu, cache=True, nogil=True)
bias_only, bias_only_serial = threaded_and_serial(_bias_only, cache=True, nogil=True)


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


def activation_bounds(relu: bool, kind) -> tuple:
    """(lo, scale) of ``v if v > lo else v * scale``: ReLU, or the identity."""
    return (kind(0), kind(0)) if relu else (kind(-np.inf), kind(1))


#: (parallel, dtype) pairs whose blocked kernel is compiled (or loaded from the cache):
#: their calls skip setting the vectorizer (1.4 µs a call, 4% of a small model's time)
_compiled_blocked: set = set()


def blocked_group(parallel: bool, weights, blocks, offsets, bases, rows, h, out, bias,
                  relu: bool) -> None:
    """The register-blocked kernel (microkernel.py) on a row group, adding ``bias`` (one
    entry per row of ``out``) and then ReLU (``relu``) or nothing; ``h`` and ``out`` are
    C-contiguous (features × batch)."""
    kernel = microkernel.blocked_group if parallel else microkernel.blocked_group_serial
    kind = h.dtype.type
    lo, scale = activation_bounds(relu, kind)
    args = (weights, blocks, offsets, bases, rows, h.reshape(-1), out.reshape(-1), bias, lo,
            scale, h.shape[1], kind(0))
    key = (parallel, h.dtype)
    if key in _compiled_blocked:
        kernel(*args)
        return
    with slp_vectorizer():
        kernel(*args)
    _compiled_blocked.add(key)
