"""Integer arrays as arithmetic runs (``ir/index_runs.py``): the runs hold the array, as few
as there can be, and are used only where they take less."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn2mlp.ir.index_runs import MIN_ENTRIES, encode, expand, runs_of, stored_bytes


def fewest_runs(a: np.ndarray) -> int:
    """The fewest runs that hold ``a`` (dynamic programming over every cut)."""
    best = [0] + [len(a) + 1] * len(a)
    for end in range(1, len(a) + 1):
        for start in range(end):
            piece = a[start:end]
            if len(piece) <= 2 or len(set(np.diff(piece).tolist())) == 1:
                best[end] = min(best[end], best[start] + 1)
    return best[-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 1, 2, -3, 7]), max_size=30),
       st.integers(-2**40, 2**40))
def test_the_runs_hold_the_array_in_as_few_runs_as_can_be(steps, start):
    a = start + np.cumsum(np.array(steps, np.int64))
    runs = runs_of(a)
    assert runs.shape[1:] == (3,) and (len(runs) == 0 or runs[:, 2].min() >= 1)
    np.testing.assert_array_equal(expand(runs), a)
    assert len(runs) == fewest_runs(a)


def test_a_map_of_positions_is_a_run_a_map_row():
    """A group's positions in a 56 × 56 map padded to 114 columns: 56 runs."""
    bases = np.concatenate([114 * row + np.arange(56) for row in range(56)])
    runs = encode(bases)
    assert runs is not None and len(runs) == 56
    np.testing.assert_array_equal(expand(runs), bases)
    assert stored_bytes(bases) == 56 * 3 * 4 < bases.size * 4


def test_arrays_without_long_runs_or_short_ones_stay_as_they_are():
    rng = np.random.default_rng(0)
    scattered = rng.integers(0, 10**6, 1000)
    assert encode(scattered) is None and stored_bytes(scattered) == 4000
    assert encode(np.arange(MIN_ENTRIES - 1)) is None
    assert encode(np.arange(MIN_ENTRIES)) is not None
    assert runs_of(scattered, most=10) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 1, 3]), st.sampled_from([1, 2, 2, 3])),
                max_size=30))
def test_runs_keep_a_constant_column_constant(rows):
    """CSR rows in runs (``c_indices.csr_runs``): rows and row pointers step evenly along a
    run and every row of it holds as many entries, the last one too (a run of 3, 3, 3, 1
    entries once took the 1 for a 3)."""
    from cnn2mlp.ir.index_runs import run_bounds

    counts = np.array([c for _, c in rows], np.int64)
    columns = np.stack([np.cumsum([s for s, _ in rows]), np.cumsum(counts) - counts], axis=1)
    starts, lengths = run_bounds(columns.reshape(-1, 2), constant=counts)
    assert lengths.sum() == len(rows) and (len(rows) == 0 or lengths.min() >= 1)
    for start, length in zip(starts, lengths):
        piece = columns[start:start + length]
        assert len(np.unique(counts[start:start + length])) == 1
        assert len(piece) <= 2 or (np.diff(piece, axis=0) == piece[1] - piece[0]).all()
