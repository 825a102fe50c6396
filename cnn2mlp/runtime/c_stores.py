"""The rows of a layer that its one-sample C code stores as a part computes them.

A layer's function starts from its bias in every row, its parts add to their rows, and its
activations run after, one pass over the output each. Where one part alone writes a row,
it may instead store ``clamp(sum + bias)``: the same bits (the sum added to the bias, then
the same clamp) in one pass. The parts that do (``c_planes.planes_store``, the copies
here; a lone group's stretches in ``c_position_vectors`` store the whole layer) say which
rows they store; the layer's bias is then written first, and its activations run, only in
the rows left (``outside``). DenseNet121's layer functions' own loops (the bias, its
carried features' copies and each channel's BatchNorm and ReLU, the activations) were a
fifth of its time at 224x224, batch 1.
"""
from __future__ import annotations

import numpy as np

from .c_indices import float_bits


#: ranges of rows left to start from the bias: beyond, the stores are not taken (a fill
#: and an activation loop each, in the code)
MOST_RANGES = 16


def copies_store(plan) -> tuple[tuple[np.ndarray, ...], list[tuple[int, int]]] | None:
    """Each copy run's (bias, lo, scale, hi) and the runs' rows as ranges, where every
    run's rows are its part's alone (``plan.accumulate`` is 0), finished by no pass after
    and each run has one bias and one clamp; else None."""
    runs = [part.copies for part in plan.parts
            if part.copies is not None and len(part.copies[0])]
    if plan.dense is not None or len(runs) != 1:
        return None
    starts, lengths = np.asarray(runs[0][0], np.int64), np.asarray(runs[0][2], np.int64)
    finished = np.zeros(plan.n_out, bool)
    finished[np.asarray(plan.finish, np.int64)] = True
    if counted(np.asarray(plan.accumulate) != 0, starts, lengths).any() or \
            counted(finished, starts, lengths).any():
        return None
    values = [np.ascontiguousarray(v) for v in (plan.bias, plan.lo, plan.scale, plan.hi)]
    changes = np.zeros(plan.n_out, bool)  # a row whose bias or clamp is not the last row's
    for v in values:
        bits = float_bits(v)
        changes[1:] |= bits[1:] != bits[:-1]
    if counted(changes, starts + 1, lengths - 1).any():
        return None
    return tuple(v[starts] for v in values), [
        (int(r), int(r) + int(n)) for r, n in zip(starts, lengths)]


def counted(flags: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """How many of ``flags`` each run (``starts``, ``lengths``) holds."""
    total = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return total[starts + lengths] - total[starts]


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges sorted, those that touch joined."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def outside(start: int, stop: int, stored: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges of ``start`` to ``stop`` that no range of ``stored`` (merged) holds."""
    out, at = [], start
    for a, b in stored:
        if b <= at or a >= stop:
            continue
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < stop:
        out.append((at, stop))
    return out
