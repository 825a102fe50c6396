"""Integer arrays as arithmetic runs: ``(start, step, length)`` triples, where a run holds
``start, start + step, …, start + step·(length − 1)``.

A structured layer's index arrays are mostly such runs: a group's positions (``bases``)
step by one along a map row and jump at its end, its output rows (``base_rows``) step by
one or by a stride, a CSR part's rows and row pointers step evenly. Stored as runs, they
take a few bytes a map row instead of four a neuron (DenseNet121 at 224×224: 13 MB of its
71 MB). The writers store an array as runs where that takes less (:func:`encode`); the
readers expand it (:func:`expand`) after checking it.
"""
from __future__ import annotations

import numpy as np

#: an array is stored as runs only when they take at most this share of its int32 bytes
#: (three int32 a run against one an entry: a run must cover six entries on average)
RUNS_SHARE = 0.5
#: shorter arrays stay as they are (a few bytes saved, a member harder to read)
MIN_ENTRIES = 64


def runs_of(a: np.ndarray, most: int | None = None) -> np.ndarray | None:
    """The greedy runs of ``a`` as an (r, 3) int64 array of (start, step, length), each as
    long as it goes; None when there would be more than ``most``."""
    a = np.asarray(a, np.int64).ravel()
    bounds = run_bounds(a[:, None], most)
    if bounds is None:
        return None
    starts, lengths = bounds
    return np.stack([a[starts], run_steps(a, starts, lengths), lengths], axis=1).reshape(-1, 3)


def run_steps(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
              single: int = 1) -> np.ndarray:
    """Each run's step in ``values`` (its second value less its first), ``single`` for a
    run of one value."""
    ahead = np.minimum(starts + 1, len(values) - 1)
    return np.where(lengths > 1, values[ahead] - values[starts], single)


def run_bounds(columns: np.ndarray, most: int | None = None,
               constant: np.ndarray | None = None) -> tuple | None:
    """(starts, lengths) of the greedy runs of the rows of ``columns`` (n, m): a run goes
    on while every column steps by what it stepped by at the run's start, and ``constant``
    (n,), if given, keeps one value; None when there would be more than ``most``.
    Vectorised to the runs' count: each run ends where the step it starts with stops
    (found for every position at once), so the loop visits one position a run."""
    n = len(columns)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if constant is not None:  # a column too: its stretches of no change hold the runs
        columns = np.column_stack([columns, constant])
    steps = np.diff(columns, axis=0)
    # last[j]: the last diff index of the stretch of equal diffs that holds diff j
    change = np.flatnonzero((steps[1:] != steps[:-1]).any(axis=1))
    stretch_last = np.append(change, n - 2)
    last = stretch_last[np.searchsorted(stretch_last, np.arange(n - 1))]
    # a stretch whose constant column changes holds no run of more than one
    alone = np.zeros(n - 1, bool) if constant is None else np.diff(constant) != 0
    starts, start = [], 0
    while start < n:
        if most is not None and len(starts) >= most:
            return None
        starts.append(start)
        if start == n - 1:
            break
        start = start + 1 if alone[start] else int(last[start]) + 2
    first = np.array(starts, np.int64)
    return first, np.diff(np.append(first, n))


def expand(runs: np.ndarray) -> np.ndarray:
    """The int64 array the (r, 3) runs hold (checked by the caller)."""
    starts, steps, lengths = (np.asarray(runs[:, i], np.int64) for i in range(3))
    total = int(lengths.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.repeat(steps, lengths) * within


def encode(a: np.ndarray) -> np.ndarray | None:
    """``a`` as runs where they take at most RUNS_SHARE of its int32 bytes, else None
    (and for arrays under MIN_ENTRIES)."""
    a = np.asarray(a)
    if a.size < MIN_ENTRIES:
        return None
    most = int(RUNS_SHARE * a.size) // 3
    return runs_of(a, most)


def stored_bytes(a: np.ndarray) -> int:
    """What an index array takes in a file: as runs where :func:`encode` takes them, else
    four bytes an entry."""
    runs = encode(a)
    return 4 * np.asarray(a).size if runs is None else runs.size * int_bytes(runs)


def int_bytes(a: np.ndarray) -> int:
    """Bytes an entry of ``a`` takes as the writers store it: int32 where every value
    fits, else int64."""
    return 8 if a.size and (a.min() < -2**31 or a.max() >= 2**31) else 4


def embedded_source() -> str:
    """:func:`expand` as source, for the standalone kernel module (numpy alone)."""
    import inspect

    return inspect.getsource(expand)
