"""Small batches as one compiled call: the whole MLP packed into a program.

Below 16 batch columns a layer's work is small, and calling a kernel from Python costs a
few microseconds: for 50 to 200 layers that is more than the arithmetic. So the plan of
every layer is packed once into flat arrays (a table of operations, one pool of weights,
one pool of indices, the rows' store rules end to end) and one numba function runs them all:

- ``LAYER``: the next layer (ping-pong buffers);
- ``ZERO`` / ``FINISH``: rows several parts write, zeroed first and finished last (bias and
  activation), and rows whose activation is not a clamp;
- ``DENSE``: a dense layer, a dot product a row;
- ``LANES``: a row group whose kernels share their inputs, 32 kernels in the lanes of two
  vectors (``lanes.py``), 6 (position, column) pairs at a time;
- ``DIRECT``: a group of kernels that each read their own inputs (depthwise convolutions),
  a loop over the positions a kernel and a tap;
- ``COPY``: runs of copies (a column step each); ``CSR``: the other rows.

Every row is stored by the plan's rule (``plan.py``): bias and clamp, or added to.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import lanes
from .activation_kernels import activate
from .numba_kernels import slp_vectorizer
from .plan import LayerPlan
from .structure import ProductGroup

LAYER, ZERO, DENSE, LANES, DIRECT, COPY, CSR, FINISH = range(8)
#: op table columns: the code and up to 9 arguments
ARGS = 10
#: groups whose kernels share inputs run in the lanes from this many kernels; fewer (or
#: kernels with shifts of their own) run direct
LANE_KERNELS = 8
#: kernels a call of the lanes kernel takes (two vectors of 16)
BLOCK = lanes.SHAPES[0][0] * lanes.LANES
#: (position, column) pairs a call takes
PAIRS = lanes.SHAPES[0][1]


class Packer:
    """Builds the program's arrays."""

    def __init__(self, dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.ops: list[list[int]] = []
        self.floats: list[np.ndarray] = []
        self.ints: list[np.ndarray] = []
        self.n_floats = self.n_ints = 0
        self.rows = 0  # rows of the layers packed so far (the rules' offset)
        self.rules: list[np.ndarray] = []
        self.accumulate: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.widest = 0
        self.scratch = 64

    def f(self, values) -> int:
        """Append floats to the pool; their offset."""
        values = np.ascontiguousarray(values, self.dtype).ravel()
        start = self.n_floats
        self.floats.append(values)
        self.n_floats += len(values)
        return start

    def i(self, values) -> int:
        values = np.ascontiguousarray(values, np.int64).ravel()
        start = self.n_ints
        self.ints.append(values)
        self.n_ints += len(values)
        return start

    def op(self, code: int, *args: int) -> None:
        self.ops.append([code, *args] + [0] * (ARGS - 1 - len(args)))

    def layer(self, plan: LayerPlan) -> None:
        self.op(LAYER, plan.n_out, self.rows)
        self.widest = max(self.widest, plan.n_out)
        self.rules.append(np.stack([plan.store_bias, plan.lo, plan.scale, plan.hi,
                                    plan.finish_bias, plan.alphas]).astype(self.dtype))
        self.accumulate.append(plan.accumulate.astype(np.uint8))
        self.codes.append(plan.codes.astype(np.int8))
        if len(plan.shared):
            self.op(ZERO, self.i(plan.shared), len(plan.shared))
        if plan.dense is not None:
            self.op(DENSE, self.f(plan.dense), plan.n_out, plan.n_in)
            self.scratch = max(self.scratch, plan.n_in)
        for part in plan.parts:
            for group in part.groups:
                self.group(group)
            starts, columns, lengths, weights, steps = part.copies
            if len(starts):
                self.op(COPY, self.i(starts), self.i(columns), self.i(lengths), self.f(weights),
                        len(starts), self.i(steps))
            if len(part.rest_rows):
                data, indices, indptr = part.rest
                self.op(CSR, self.f(data), self.i(indices), self.i(indptr),
                        self.i(part.rest_rows), len(part.rest_rows))
        if len(plan.finish):
            self.op(FINISH, self.i(plan.finish), len(plan.finish))
        self.rows += plan.n_out

    def group(self, group: ProductGroup) -> None:
        n_k, taps = group.kernels.shape
        n_b = len(group.bases)
        offsets, bases, rows = self.i(group.offsets), self.i(group.bases), self.i(group.rows)
        self.scratch = max(self.scratch, n_b)
        if n_k < LANE_KERNELS or len(np.unique(group.shifts)) * 4 > n_k:
            self.op(DIRECT, self.f(group.kernels), n_k, taps, offsets, bases, n_b, rows,
                    self.i(group.shifts))
            return
        packed, blocks = [], []
        cuts = np.flatnonzero(np.diff(group.shifts)) + 1
        for first, stop in zip(np.concatenate([[0], cuts]),
                               np.concatenate([cuts, [n_k]])):
            for k0 in range(int(first), int(stop), BLOCK):
                valid = min(BLOCK, int(stop) - k0)
                block = np.zeros((taps, BLOCK))
                block[:, :valid] = group.kernels[k0:k0 + valid].T
                packed.append(block)
                blocks.append((k0, valid, int(group.shifts[k0])))
        self.op(LANES, self.f(np.stack(packed)), len(blocks), taps, offsets, bases, n_b, rows,
                self.i(np.array(blocks)), n_k)

    def arrays(self):
        rules = np.concatenate(self.rules, axis=1)
        return (np.array(self.ops, np.uint64), np.concatenate(self.floats or [np.zeros(0)])
                .astype(self.dtype), np.concatenate(self.ints or [np.zeros(0, np.int64)])
                .astype(np.uint64), rules, np.concatenate(self.accumulate),
                np.concatenate(self.codes))


class Program:
    """The packed MLP for batches below 16 columns."""

    def __init__(self, plans: list[LayerPlan], dtype) -> None:
        packer = Packer(dtype)
        for plan in plans:
            packer.layer(plan)
        self.arrays = packer.arrays()
        self.widest = packer.widest
        self.scratch = packer.scratch
        self.n_out = plans[-1].n_out
        self.dtype = np.dtype(dtype)

    def run(self, h: np.ndarray, batch: int, buffers: list[np.ndarray]) -> np.ndarray:
        """``h`` (n_in × batch), flat → (n_out × batch)."""
        scratch = np.empty(max(self.scratch, 64) * batch, self.dtype)
        with slp_vectorizer():  # for lanes.py's first compile; cheap once compiled
            last = run_program(*self.arrays, h.reshape(-1), buffers[0], buffers[1],
                               np.uint64(batch), scratch, self.dtype.type(0))
        return buffers[last][:self.n_out * batch].reshape(-1, batch)


@njit(cache=True, nogil=True)
def run_program(ops, fp, ip, rules, accumulate, codes, x, buf0, buf1, nb, scratch, zero):
    """Every layer's operations in turn; returns which buffer holds the output. Indices are
    unsigned throughout (numba checks signed ones for wrap-around on every access, and an
    unsigned index mixed with a signed one becomes a float)."""
    h, out = x, buf0
    which, first_layer, ro = 0, True, np.uint64(0)
    sums = np.empty(PAIRS * BLOCK, fp.dtype)
    for index in range(len(ops)):
        a = ops[index]
        op = a[0]
        if op == LAYER:
            if not first_layer:
                h = out
                which = 1 - which
                out = buf1 if which == 1 else buf0
            first_layer = False
            ro = a[2]
        elif op == ZERO:
            for r in range(a[2]):
                row = ip[a[1] + np.uint64(r)]
                for j in range(nb):
                    out[row * nb + np.uint64(j)] = zero
        elif op == DENSE:
            run_dense(a, fp, h, out, nb, ro, rules, accumulate, scratch, zero)
        elif op == LANES:
            run_lanes(a, fp, ip, h, out, nb, ro, rules, accumulate, sums, zero)
        elif op == DIRECT:
            run_direct(a, fp, ip, h, out, nb, ro, rules, accumulate, scratch, zero)
        elif op == COPY:
            for r in range(a[5]):
                ur = np.uint64(r)
                start, column, w = ip[a[1] + ur], ip[a[2] + ur], fp[a[4] + ur]
                step = ip[a[6] + ur]
                for i in range(ip[a[3] + ur]):
                    ui = np.uint64(i)
                    for j in range(nb):
                        uj = np.uint64(j)
                        store(out, start + ui, uj, w * h[(column + ui * step) * nb + uj], nb,
                              ro, rules, accumulate)
        elif op == CSR:
            run_csr(a, fp, ip, h, out, nb, ro, rules, accumulate, zero)
        elif op == FINISH:
            for r in range(a[2]):
                row = ip[a[1] + np.uint64(r)]
                g = ro + row
                b, code, alpha = rules[4, g], codes[g], rules[5, g]
                for j in range(nb):
                    d = row * nb + np.uint64(j)
                    out[d] = activate(out[d] + b, code, alpha)
    return which


#: the sums over many terms (dense rows, CSR rows) may be reassociated, so that LLVM
#: vectorizes them (with "contract" alone a dot product stays scalar: 3 G/s); the order is
#: the compiled code's, the same at every call
SUMS = dict(cache=True, nogil=True, fastmath={"contract", "reassoc"})


@njit(**SUMS)
def run_dense(a, fp, h, out, nb, ro, rules, accumulate, columns, zero):
    """A dense layer: a dot product a row and column, four rows at a time (each input read
    once for four rows), on the inputs of each column made contiguous first."""
    w0, n_out, n_in = a[1], a[2], a[3]
    one = np.uint64(1)
    for j in range(nb):
        uj = np.uint64(j)
        x = h
        if nb > one:  # this column's inputs, contiguous
            x = columns[:n_in]
            for k in range(n_in):
                x[k] = h[np.uint64(k) * nb + uj]
        i = np.uint64(0)
        while i + np.uint64(4) <= n_out:
            r0 = w0 + i * n_in
            r1, r2, r3 = r0 + n_in, r0 + n_in + n_in, r0 + n_in + n_in + n_in
            s0 = s1 = s2 = s3 = zero
            for k in range(n_in):
                v = x[k]
                s0 += fp[r0 + np.uint64(k)] * v
                s1 += fp[r1 + np.uint64(k)] * v
                s2 += fp[r2 + np.uint64(k)] * v
                s3 += fp[r3 + np.uint64(k)] * v
            store(out, i, uj, s0, nb, ro, rules, accumulate)
            store(out, i + one, uj, s1, nb, ro, rules, accumulate)
            store(out, i + one + one, uj, s2, nb, ro, rules, accumulate)
            store(out, i + np.uint64(3), uj, s3, nb, ro, rules, accumulate)
            i += np.uint64(4)
        while i < n_out:
            r0 = w0 + i * n_in
            s0 = zero
            for k in range(n_in):
                s0 += fp[r0 + np.uint64(k)] * x[k]
            store(out, i, uj, s0, nb, ro, rules, accumulate)
            i += one


@njit(cache=True, nogil=True, inline="always")
def store(out, row, j, value, nb, ro, rules, accumulate):
    """The plan's rule for one value of ``row`` (if/else, no early return: numba's inliner
    lays an early return out slowly)."""
    g = ro + row
    add, low, slope, top = rules[0, g], rules[1, g], rules[2, g], rules[3, g]
    d = row * nb + j
    if accumulate[g] == 0:
        v = value + add
        v = v if v > low else v * slope
        out[d] = top if v > top else v
    else:
        out[d] += value


@njit(cache=True, nogil=True)
def run_lanes(a, fp, ip, h, out, nb, ro, rules, accumulate, sums, zero):
    """A group in the lanes: for each block of 32 kernels, the (position, column) pairs 6
    at a time (``lanes.lanes_2x6``), then 1 at a time."""
    w0, n_blocks, taps, offs, bases, n_b, rows, table = (a[1], a[2], a[3], a[4], a[5], a[6],
                                                          a[7], a[8])
    pairs = n_b * nb
    three, width, six = np.uint64(3), np.uint64(BLOCK), np.uint64(6)
    one = np.uint64(1)
    for blk in range(n_blocks):
        ub = np.uint64(blk)
        k0 = ip[table + three * ub]
        valid = ip[table + three * ub + one]
        shift = ip[table + three * ub + one + one]
        start = w0 + ub * taps * width
        p = np.uint64(0)
        while p + six <= pairs:
            lanes.lanes_2x6(fp, start, ip, offs, taps, h, nb,
                            ip[bases + p // nb] + shift, p % nb,
                            ip[bases + (p + one) // nb] + shift, (p + one) % nb,
                            ip[bases + (p + np.uint64(2)) // nb] + shift, (p + np.uint64(2)) % nb,
                            ip[bases + (p + np.uint64(3)) // nb] + shift, (p + np.uint64(3)) % nb,
                            ip[bases + (p + np.uint64(4)) // nb] + shift, (p + np.uint64(4)) % nb,
                            ip[bases + (p + np.uint64(5)) // nb] + shift, (p + np.uint64(5)) % nb,
                            sums, zero)
            for q in range(6):
                pq = p + np.uint64(q)
                b, c = pq // nb, pq % nb
                for lane in range(valid):
                    row = ip[rows + (k0 + np.uint64(lane)) * n_b + b]
                    store(out, row, c, sums[q * BLOCK + lane], nb, ro, rules, accumulate)
            p += six
        while p < pairs:
            b, c = p // nb, p % nb
            lanes.lanes_2x1(fp, start, ip, offs, taps, h, nb, ip[bases + b] + shift, c, sums,
                            zero)
            for lane in range(valid):
                row = ip[rows + (k0 + np.uint64(lane)) * n_b + b]
                store(out, row, c, sums[lane], nb, ro, rules, accumulate)
            p += one


@njit(**SUMS)
def run_csr(a, fp, ip, h, out, nb, ro, rules, accumulate, zero):
    """The rows no group takes: a sparse dot product a row and column."""
    d0, i0, p0, r0 = a[1], a[2], a[3], a[4]
    one = np.uint64(1)
    for r in range(a[5]):
        ur = np.uint64(r)
        lo, hi_ = ip[p0 + ur], ip[p0 + ur + one]
        row = ip[r0 + ur]
        for j in range(nb):
            uj = np.uint64(j)
            s = zero
            k = lo
            while k < hi_:
                s += fp[d0 + k] * h[ip[i0 + k] * nb + uj]
                k += one
            store(out, row, uj, s, nb, ro, rules, accumulate)


@njit(cache=True, nogil=True)
def run_direct(a, fp, ip, h, out, nb, ro, rules, accumulate, acc, zero):
    """A group kernel by kernel: for each tap, the positions in one loop (vectorized over
    the positions, with gathered inputs)."""
    w0, n_k, taps, offs, bases, n_b, rows, shifts = (a[1], a[2], a[3], a[4], a[5], a[6], a[7],
                                                     a[8])
    for k in range(n_k):
        uk = np.uint64(k)
        shift = ip[shifts + uk]
        for c in range(nb):
            uc = np.uint64(c)
            for b in range(n_b):
                acc[b] = zero
            for t in range(taps):
                ut = np.uint64(t)
                w = fp[w0 + uk * taps + ut]
                s = shift + ip[offs + ut]
                for b in range(n_b):
                    acc[b] += w * h[(s + ip[bases + np.uint64(b)]) * nb + uc]
            for b in range(n_b):
                store(out, ip[rows + uk * n_b + np.uint64(b)], uc, acc[b], nb, ro, rules,
                      accumulate)
