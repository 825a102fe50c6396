"""The structured weight type (ir/structured.py) against scipy CSR on random convolutions:
strides, dilations, groups, padding and borders, 1D and 2D, float32 and float64. Every
operation a pass needs gives the matrix CSR gives, and keeps the structure where it can."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from cnn2mlp.errors import CompileError
from cnn2mlp.ir import weights
from cnn2mlp.ir.conv_matrix import conv_matrix
from cnn2mlp.ir.precision import working_precision
from cnn2mlp.ir.structured import (CopyRuns, CsrRows, ProductGroup, StructuredMatrix,
                                   conv_structured)
from cnn2mlp.testing.strategies import conv_geometries, input_shapes


@st.composite
def convolutions(draw):
    """(structured, CSR, output shape) of one random convolution, random weights with
    negative values and non-zero biases."""
    in_shape = draw(input_shapes(ranks=(1, 2), max_channels=4, min_size=3, max_size=8))
    geo = draw(conv_geometries(in_shape))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    c_group = in_shape[0] // geo["group"]
    kernel = rng.uniform(-1, 1, (geo["out_channels"], c_group) + geo["kernel_shape"])
    bias = rng.uniform(-1, 1, geo["out_channels"])
    nd = len(in_shape) - 1
    pads = geo["pads"]
    structured, s_bias, shape = conv_structured(kernel, bias, in_shape, geo["strides"], pads,
                                                geo["dilations"], geo["group"], dtype)
    with working_precision(np.dtype(dtype)):  # conv_matrix builds in the working precision
        csr, c_bias, c_shape = conv_matrix(kernel, bias, in_shape, geo["strides"], pads,
                                           geo["dilations"], geo["group"])
    assert tuple(shape) == tuple(c_shape) and len(pads) == 2 * nd
    assert csr.dtype == dtype and s_bias.dtype == dtype
    np.testing.assert_array_equal(s_bias, c_bias)
    return structured, sp.csr_array(csr, dtype=dtype), rng


def same(a: sp.csr_array, b: sp.csr_array) -> None:
    """Equal entries, up to the rounding of a float32 product (exactly where no
    arithmetic happened: float64 both)."""
    assert a.shape == b.shape
    bar = 1e-12 if a.dtype == b.dtype == np.float64 else 1e-6
    difference = abs(sp.csr_array(a, dtype=np.float64) - sp.csr_array(b, dtype=np.float64))
    largest = abs(b).max() if b.nnz else 0.0
    assert (difference.max() if difference.nnz else 0.0) <= bar * max(1.0, largest)


@given(convolutions())
def test_a_convolution_is_built_as_the_csr_is(case):
    structured, csr, _ = case
    same(structured.to_csr(), csr)
    assert structured.nnz == csr.nnz
    assert all(isinstance(p, ProductGroup) for p in structured.parts)


@given(convolutions(), st.integers(1, 5))
def test_apply_matches_csr_in_both_precisions(case, batch):
    structured, csr, rng = case
    for dtype in (np.float32, np.float64):
        h = rng.uniform(-2, 2, (structured.shape[1], batch)).astype(dtype)
        got = structured.apply(h)
        assert got.dtype == dtype
        expected = csr.astype(np.float64) @ h.astype(np.float64)
        tolerance = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


@given(convolutions(), st.data())
def test_row_selection(case, data):
    structured, csr, rng = case
    n = structured.shape[0]
    how = data.draw(st.sampled_from(["stride", "random", "all"]))
    if how == "stride":
        keep = np.arange(0, n, data.draw(st.integers(1, 3)))
    elif how == "random":
        keep = rng.permutation(n)[:data.draw(st.integers(1, n))]
    else:
        keep = np.arange(n)
    selected = structured.select_rows(keep)
    same(selected.to_csr(), csr[keep])
    h = rng.uniform(-1, 1, (structured.shape[1], 2))
    np.testing.assert_allclose(selected.apply(h), csr[keep] @ h, rtol=1e-5, atol=1e-5)
    if how == "all":  # nothing to fall back for
        assert all(isinstance(p, ProductGroup) for p in selected.parts)


@given(convolutions())
def test_a_strided_selection_of_positions_keeps_groups(case):
    structured, csr, _ = case
    first = structured.parts[0]
    keep = np.sort(first.rows[:, ::2].ravel())  # every kernel at every other position
    selected = structured.select_rows(keep)
    same(selected.to_csr(), csr[keep])
    assert isinstance(selected.parts[0], ProductGroup)


@given(convolutions(), st.booleans())
def test_row_scaling_per_channel_keeps_groups_and_any_scaling_is_exact(case, per_channel):
    structured, csr, rng = case
    n_out = structured.shape[0]
    n_channels = len(structured.parts[0].kernels)
    if per_channel:  # a BatchNorm after the convolution
        scale = np.repeat(rng.uniform(-2, 2, n_channels), n_out // n_channels)
    else:
        scale = rng.uniform(-2, 2, n_out)
    scaled = structured.scale_rows(scale)
    same(scaled.to_csr(), sp.csr_array(sp.diags_array(scale) @ csr))
    h = rng.uniform(-1, 1, (structured.shape[1], 2))
    np.testing.assert_allclose(scaled.apply(h), (sp.diags_array(scale) @ csr) @ h, rtol=1e-5,
                               atol=1e-5)
    if per_channel:
        assert all(isinstance(p, ProductGroup) for p in scaled.parts)


@given(convolutions(), st.booleans())
def test_column_scaling(case, per_channel):
    structured, csr, rng = case
    n_in = structured.shape[1]
    scale = rng.uniform(-2, 2, n_in)
    if per_channel:  # a normalization before the convolution: one scale an input channel
        scale = np.repeat(scale[:1], n_in) * 1.5
    scaled = structured.scale_columns(scale)
    same(scaled.to_csr(), sp.csr_array(csr @ sp.diags_array(scale)))
    if per_channel:
        assert all(isinstance(p, ProductGroup) for p in scaled.parts)


def test_column_scaling_per_input_channel_keeps_groups():
    rng = np.random.default_rng(3)
    kernel = rng.uniform(-1, 1, (4, 2, 3, 3))
    structured, _, _ = conv_structured(kernel, None, (2, 6, 6), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    scale = np.repeat(rng.uniform(0.5, 2, 2), 36)
    scaled = structured.scale_columns(scale)
    assert all(isinstance(p, ProductGroup) for p in scaled.parts)
    same(scaled.to_csr(), sp.csr_array(structured.to_csr() @ sp.diags_array(scale)))


@given(convolutions(), st.booleans())
def test_column_remapping(case, whole_channels):
    structured, csr, rng = case
    n_in = structured.shape[1]
    if whole_channels:  # the input laid out with its channels in another order
        new_of_old = np.arange(n_in)
    else:
        new_of_old = rng.permutation(n_in)
    remapped = structured.remap_columns(new_of_old, n_in)
    expected = sp.csr_array(sp.coo_array((csr.tocoo().data, (csr.tocoo().row,
                                                            new_of_old[csr.tocoo().col])),
                                         shape=csr.shape))
    same(remapped.to_csr(), expected)
    if whole_channels:
        assert all(isinstance(p, ProductGroup) for p in remapped.parts)


@given(convolutions())
def test_the_product_with_another_matrix(case):
    structured, csr, rng = case
    other = sp.random_array((structured.shape[1], 5), density=0.5, rng=rng, format="csr")
    product = weights.product(structured, other, structured.dtype)
    same(weights.as_csr(product), sp.csr_array(csr @ other))
    left = StructuredMatrix.from_csr(sp.random_array((3, structured.shape[0]), density=0.5,
                                                     rng=rng, format="csr"))
    same(weights.as_csr(weights.product(left, structured, structured.dtype)),
         sp.csr_array(left.to_csr() @ csr))


def test_copies_and_csr_rows_add_to_a_group():
    """A convolution plus its shortcut (copies) plus a leftover row: rows add up."""
    rng = np.random.default_rng(5)
    conv, _, _ = conv_structured(rng.uniform(-1, 1, (2, 2, 3)), None, (2, 6), (1,), (1, 1),
                                 (1,), 1, np.float64)
    copies = CopyRuns(np.array([0, 6]), np.array([0, 6]), np.array([6, 6]),
                      np.array([1.0, -0.5]))
    extra = CsrRows(np.array([3]), sp.csr_array(rng.uniform(-1, 1, (1, 12))))
    whole = StructuredMatrix(conv.shape, conv.parts + (copies, extra), conv.dtype)
    expected = conv.to_csr().toarray()
    expected[np.arange(6), np.arange(6)] += 1.0
    expected[np.arange(6, 12), np.arange(6, 12)] += -0.5
    expected[3] += extra.matrix.toarray()[0]
    np.testing.assert_allclose(whole.to_csr().toarray(), expected)
    h = rng.uniform(-1, 1, (12, 3))
    np.testing.assert_allclose(whole.apply(h), expected @ h, rtol=1e-12)
    assert whole.nnz == conv.nnz + 12 + 12
    for keep in (np.arange(0, 12, 2), np.array([3, 1, 7])):
        np.testing.assert_allclose(whole.select_rows(keep).to_csr().toarray(),
                                   expected[keep])
    scale = rng.uniform(-1, 1, 12)
    np.testing.assert_allclose(whole.scale_rows(scale).to_csr().toarray(),
                               scale[:, None] * expected)
    np.testing.assert_allclose(whole.scale_columns(scale).to_csr().toarray(),
                               expected * scale[None, :])


def test_stored_bytes_follow_the_parameters_not_the_image():
    """A 3x3 convolution at 64x64 and at 128x128: the CSR grows fourfold, the stored
    parts by the bases and rows only (kernels once per border pattern)."""
    rng = np.random.default_rng(0)
    kernel = rng.uniform(-1, 1, (16, 16, 3, 3)).astype(np.float32)
    sizes = []
    for side in (64, 128):
        matrix, _, _ = conv_structured(kernel, None, (16, side, side), (1, 1), (1, 1, 1, 1),
                                       (1, 1), 1)
        sizes.append((matrix.stored_bytes, matrix.nnz))
    (small_bytes, small_nnz), (big_bytes, big_nnz) = sizes
    assert big_nnz > 3.9 * small_nnz
    assert small_bytes < small_nnz * 8 / 20  # far below CSR's (value + index) per non-zero


def test_to_csr_checks_the_size_before_allocating():
    kernel = np.ones((64, 64, 3, 3), np.float32)
    matrix, _, _ = conv_structured(kernel, None, (64, 512, 512), (1, 1), (1, 1, 1, 1), (1, 1),
                                   1)
    assert matrix.nnz > 9 * 10**9
    with pytest.raises(CompileError, match="above the limit"):
        matrix.to_csr(max_bytes=2**30)


# ----------------------------------------------------------------------------- the algebra
# (ir/weights.py: what the passes ask of a weight, structured or CSR)
from cnn2mlp.ir.structured import materialize_limit  # noqa: E402


def dense(w) -> np.ndarray:
    return weights.as_csr(w).toarray().astype(np.float64)


@given(convolutions(), st.data())
def test_relabelling_rows_places_them_as_a_concat_does(case, data):
    structured, csr, rng = case
    n = structured.shape[0]
    extra = data.draw(st.integers(0, 5))
    new_of_old = rng.permutation(n + extra)[:n]          # every row somewhere, gaps between
    placed = structured.relabel_rows(new_of_old, n + extra)
    expected = np.zeros((n + extra, structured.shape[1]))
    expected[new_of_old] = csr.toarray()
    np.testing.assert_allclose(dense(placed), expected, rtol=1e-6)
    offset_only = structured.relabel_rows(np.arange(n) + extra, n + extra)
    assert all(isinstance(p, ProductGroup) for p in offset_only.parts)


@given(convolutions(), st.data())
def test_selecting_columns_drops_the_others_and_keeps_whole_channels_as_groups(case, data):
    structured, csr, rng = case
    n_in = structured.shape[1]
    offset = data.draw(st.integers(0, 4))
    keep = np.sort(rng.permutation(n_in)[:data.draw(st.integers(1, n_in))])
    got = weights.select_columns(structured, keep, offset, len(keep) + offset + 2)
    expected = np.zeros((structured.shape[0], len(keep) + offset + 2))
    expected[:, offset:offset + len(keep)] = csr.toarray()[:, keep]
    np.testing.assert_allclose(dense(got), expected, rtol=1e-6)
    shifted = weights.shift_columns(structured, offset, n_in + offset)
    np.testing.assert_allclose(dense(shifted)[:, offset:], csr.toarray(), rtol=1e-6)
    assert all(isinstance(p, ProductGroup) for p in shifted.parts)


def test_a_channel_block_of_the_input_keeps_the_groups():
    """A DenseNet conv reads a Concat: its product with one input's placement keeps the
    taps of that input's channels, still one group a border pattern."""
    rng = np.random.default_rng(1)
    conv, _, _ = conv_structured(rng.uniform(-1, 1, (3, 4, 3, 3)), None, (4, 5, 5), (1, 1),
                                 (1, 1, 1, 1), (1, 1), 1, np.float64)
    channels = np.arange(25, 75)                          # channels 1 and 2
    got = weights.select_columns(conv, channels)
    assert len(got.parts) == len(conv.parts)
    assert all(isinstance(p, ProductGroup) for p in got.parts)
    np.testing.assert_allclose(dense(got), dense(conv)[:, channels])


@given(convolutions())
def test_counts_signs_and_row_sums(case):
    structured, csr, _ = case
    full = csr.toarray()
    np.testing.assert_array_equal(weights.row_counts(structured), np.diff(csr.indptr))
    np.testing.assert_array_equal(weights.column_counts(structured),
                                  np.bincount(csr.indices, minlength=csr.shape[1]))
    positive, negative = weights.signed(structured)
    np.testing.assert_allclose(dense(positive), np.maximum(full, 0))
    np.testing.assert_allclose(dense(negative), np.minimum(full, 0))
    np.testing.assert_allclose(weights.abs_row_sums(structured), np.abs(full).sum(axis=1),
                               rtol=1e-6)
    assert not weights.is_light(structured) or max(np.diff(csr.indptr)) <= 1


@given(convolutions(), st.integers(0, 2**16))
def test_sums_stacks_and_light_products_keep_the_structure(case, seed):
    structured, csr, _ = case
    rng = np.random.default_rng(seed)
    n_out, n_in = structured.shape
    other = sp.random_array((n_out, n_in), density=0.2, rng=rng, format="csr")
    np.testing.assert_allclose(dense(weights.add(structured, other)),
                               csr.toarray() + other.toarray(), rtol=1e-6, atol=1e-7)
    stacked = weights.vstack([structured, other, structured], np.float64)
    np.testing.assert_allclose(dense(stacked), np.vstack([csr.toarray(), other.toarray(),
                                                          csr.toarray()]), rtol=1e-6)
    # light factors: a scaled selection on the left (a Sum, a Concat), a placement on the
    # right (a source read from a layer's neurons)
    rows = rng.permutation(n_out)[:max(1, n_out // 2)]
    left = sp.csr_array((rng.uniform(-2, 2, len(rows)), (np.arange(len(rows)), rows)),
                        shape=(len(rows), n_out))
    got = weights.product(left, structured, np.float64)
    assert weights.is_structured(got)
    np.testing.assert_allclose(dense(got), left.toarray() @ csr.toarray(), rtol=1e-6)
    cols = rng.permutation(n_in + 3)[:n_in]
    right = sp.csr_array((rng.uniform(-2, 2, n_in), (np.arange(n_in), cols)),
                         shape=(n_in, n_in + 3))
    got = weights.product(structured, right, np.float64)
    assert weights.is_structured(got)
    np.testing.assert_allclose(dense(got), csr.toarray() @ right.toarray(), rtol=1e-6,
                               atol=1e-12)
    heavy = sp.random_array((n_in, 4), density=0.7, rng=rng, format="csr")
    np.testing.assert_allclose(dense(weights.product(structured, heavy, np.float64)),
                               csr.toarray() @ heavy.toarray(), rtol=1e-6, atol=1e-9)


def test_a_fallback_to_csr_is_refused_above_the_materialize_limit():
    kernel = np.ones((64, 64, 3, 3), np.float32)
    matrix, _, _ = conv_structured(kernel, None, (64, 256, 256), (1, 1), (1, 1, 1, 1), (1, 1),
                                   1)
    scale = np.arange(matrix.shape[0], dtype=np.float64)  # not one scale a kernel
    with materialize_limit(2**28), pytest.raises(CompileError, match="above the limit"):
        matrix.scale_rows(scale)
    with materialize_limit(2**28), pytest.raises(CompileError, match="--max-bytes"):
        weights.as_csr(matrix)


def test_kernels_are_stored_once_whatever_the_borders():
    """Nine border patterns of a padded 3x3 conv share one kernel array: the stored bytes
    are the kernel's plus index arrays, not nine partial copies."""
    kernel = np.random.default_rng(2).uniform(-1, 1, (64, 64, 3, 3)).astype(np.float32)
    matrix, _, _ = conv_structured(kernel, None, (64, 16, 16), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert len(matrix.parts) == 9
    assert len({id(p.kernels) for p in matrix.parts}) == 1
    assert matrix.stored_bytes < 1.5 * kernel.nbytes
    scaled = matrix.scale_rows(np.repeat(np.linspace(0.5, 2, 64), 256))
    assert len({id(p.kernels) for p in scaled.parts}) == 1     # still shared


def test_a_csr_matrix_keeps_its_runs_of_copies_as_copy_runs():
    """Carried values (an identity block) and a shortcut become CopyRuns; the other rows
    stay CSR; the matrix is the same."""
    rng = np.random.default_rng(4)
    dense_part = sp.random_array((5, 40), density=0.3, rng=rng, format="csr")
    eye = sp.identity(20, format="csr") * 0.5
    short = sp.identity(3, format="csr")                  # too short a run: CSR rows
    matrix = sp.csr_array(sp.vstack([dense_part, sp.hstack([sp.csr_array((20, 10)), eye,
                                                            sp.csr_array((20, 10))]),
                                     sp.hstack([short, sp.csr_array((3, 37))])]))
    structured = StructuredMatrix.from_csr(matrix)
    kinds = [type(p) for p in structured.parts]
    assert kinds == [CopyRuns, CsrRows]
    assert structured.parts[0].lengths.tolist() == [20]
    np.testing.assert_array_equal(structured.to_csr().toarray(), matrix.toarray())
    h = rng.uniform(-1, 1, (40, 3))
    np.testing.assert_allclose(structured.apply(h), matrix @ h)


def test_a_channels_last_copy_is_one_strided_run_a_channel():
    """A map of 4 channels at 12 positions stored channels-last, read channels-first (a
    Keras layout change), times a per-channel scale: four runs of step 4, not 48 rows."""
    rng = np.random.default_rng(6)
    n_c, n_p = 4, 12
    cols = (np.arange(n_p)[None, :] * n_c + np.arange(n_c)[:, None]).ravel()
    scale = np.repeat(rng.uniform(0.5, 2, n_c), n_p)
    matrix = sp.csr_array((scale, cols, np.arange(n_c * n_p + 1)), shape=(n_c * n_p, 60))
    structured = StructuredMatrix.from_csr(matrix)
    (runs,) = structured.parts
    assert isinstance(runs, CopyRuns) and runs.steps.tolist() == [n_c] * n_c
    np.testing.assert_array_equal(structured.to_csr().toarray(), matrix.toarray())
    h = rng.uniform(-1, 1, (60, 2))
    np.testing.assert_allclose(structured.apply(h), matrix @ h)
    np.testing.assert_allclose(weights.column_counts(structured),
                               np.bincount(cols, minlength=60))


@given(st.integers(0, 2**16), st.integers(1, 60), st.sampled_from([1, 2, 3, -1, 7]))
def test_any_matrix_of_copies_and_rows_round_trips(seed, n_rows, step):
    """Single entries in runs of random steps and weights, broken at random, mixed with
    denser rows: the parts give the same matrix."""
    rng = np.random.default_rng(seed)
    n_in = 200
    cols = (100 + step * np.arange(n_rows)) % n_in
    cols[rng.random(n_rows) < 0.1] = rng.integers(0, n_in)
    values = np.where(rng.random(n_rows) < 0.1, rng.uniform(-1, 1, n_rows), 0.5)
    matrix = sp.csr_array((values, (np.arange(n_rows), cols)), shape=(n_rows, n_in))
    extra = sp.random_array((n_rows, n_in), density=0.05 * (rng.random() < 0.5), rng=rng,
                            format="csr")
    matrix = sp.csr_array(matrix + extra)
    structured = StructuredMatrix.from_csr(matrix)
    np.testing.assert_allclose(structured.to_csr().toarray(), matrix.toarray())


def test_a_selection_that_is_not_a_grid_is_never_taken_for_a_group():
    """Rows [[0, 1], [2, 3]] relabelled to [[1, -], [2, 0]]: the kept rows factor as
    kernel + position ([0, 1] + [1, -1]) although a pair was dropped; only the grid test
    keeps the dropped pair from writing row -1 (the last row)."""
    kernels = np.array([[1.0, 2.0], [3.0, 4.0]])
    group = ProductGroup(kernels, np.arange(2), np.array([0, 1]), np.array([0, 2]),
                         np.zeros(2, np.int64), np.array([0, 2]), np.array([0, 1]))
    matrix = StructuredMatrix((4, 4), (group,), np.dtype(np.float64))
    new_of_old = np.array([1, -1, 2, 0])
    got = matrix.relabel_rows(new_of_old, 3)
    expected = np.zeros((3, 4))
    full = dense(matrix)
    for old, new in enumerate(new_of_old):
        if new >= 0:
            expected[new] = full[old]
    np.testing.assert_array_equal(dense(got), expected)


def test_a_left_factor_that_reads_a_row_twice_copies_it_twice():
    rng = np.random.default_rng(8)
    conv, _, _ = conv_structured(rng.uniform(-1, 1, (2, 2, 3)), None, (2, 6), (1,), (1, 1),
                                 (1,), 1, np.float64)
    left = sp.csr_array((np.array([1.0, -2.0, 0.5]), (np.arange(3), np.array([4, 4, 7]))),
                        shape=(3, conv.shape[0]))
    got = weights.product(left, conv, np.float64)
    np.testing.assert_allclose(dense(got), left.toarray() @ dense(conv))


def test_copy_runs_moved_whole_stay_runs():
    """A Concat places a carried value's rows further down: its runs move as they are; a
    selection that splits a run makes CSR rows of it."""
    runs = CopyRuns(np.array([0, 10]), np.array([5, 0]), np.array([10, 6]),
                    np.array([1.0, -2.0]), np.array([1, 3]))
    matrix = StructuredMatrix((16, 20), (runs,), np.dtype(np.float64))
    moved = matrix.relabel_rows(np.arange(16) + 4, 24)
    assert [type(p) for p in moved.parts] == [CopyRuns]
    np.testing.assert_array_equal(dense(moved)[4:20], dense(matrix))
    assert not dense(moved)[:4].any() and not dense(moved)[20:].any()
    split = matrix.select_rows(np.arange(0, 16, 2))
    assert [type(p) for p in split.parts] == [CsrRows]
    np.testing.assert_array_equal(dense(split), dense(matrix)[::2])
    flipped = matrix.relabel_rows(np.arange(16)[::-1], 16)   # every row kept, runs reversed
    np.testing.assert_array_equal(dense(flipped), dense(matrix)[::-1])


def test_csr_rows_that_copy_become_runs_before_writing():
    """A stride-2 shortcut left as CSR rows in a structured layer: one strided run."""
    from cnn2mlp.ir.structured_rules import compact_rows

    rng = np.random.default_rng(9)
    conv, _, _ = conv_structured(rng.uniform(-1, 1, (2, 2, 3)), None, (2, 24), (1,), (1, 1),
                                 (1,), 1, np.float64)
    rows = np.arange(10, 22)
    shortcut = sp.csr_array((np.ones(12), 2 * np.arange(12), np.arange(13)), shape=(12, 48))
    whole = StructuredMatrix(conv.shape, conv.parts + (CsrRows(rows, shortcut),), conv.dtype)
    compact = compact_rows(whole)
    runs = [p for p in compact.parts if isinstance(p, CopyRuns)]
    assert len(runs) == 1 and runs[0].steps.tolist() == [2] and runs[0].rows.tolist() == [10]
    np.testing.assert_array_equal(dense(compact), dense(whole))


def test_rows_of_a_repeated_pattern_become_one_kernel_groups_before_writing():
    """A max pool's tournament rows (weights +-1 at a few relative columns) as groups; the
    rows of unequal weights (a convolution's, repeated or not) left as CSR rows for the
    runtime's search; the matrix unchanged."""
    from cnn2mlp.ir.structured_parts import MIN_PATTERN_ROWS
    from cnn2mlp.ir.weights import compact

    rng = np.random.default_rng(4)
    n, width = 4 * MIN_PATTERN_ROWS + 40, 900
    bases = rng.integers(0, 800, n)
    kind = np.arange(n) % 4
    entries = []
    for r in range(n):
        if kind[r] == 0:   # relu(a - b)
            entries += [(r, bases[r], 1.0), (r, bases[r] + 1, -1.0)]
        elif kind[r] == 1:   # a second level: b + relu(a - b) - c
            entries += [(r, bases[r], 1.0), (r, bases[r] + 3, 1.0), (r, bases[r] + 7, -1.0)]
        elif kind[r] == 2 and r % 8 == 2:   # weights of their own: stays CSR
            entries += [(r, bases[r], rng.normal()), (r, bases[r] + 1, rng.normal())]
        elif kind[r] == 3:   # a kernel's weights at every position: left to the runtime
            entries += [(r, bases[r], 0.5), (r, bases[r] + 1, -2.0)]
    rows, cols, vals = (np.array(v) for v in zip(*entries))
    matrix = sp.csr_array((vals, (rows, cols)), shape=(n, width))
    parts = compact(matrix)
    groups = [p for p in parts.parts if isinstance(p, ProductGroup)]
    assert sorted(g.kernels.tolist()[0] for g in groups) == [[1.0, -1.0], [1.0, 1.0, -1.0]]
    left = [p for p in parts.parts if isinstance(p, CsrRows)]
    kept = ((kind == 2) & (np.arange(n) % 8 == 2)) | (kind == 3)
    assert sum(len(p.rows) for p in left) == kept.sum()
    np.testing.assert_array_equal(dense(parts), matrix.toarray())
