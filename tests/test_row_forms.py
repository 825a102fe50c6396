"""The row forms real architectures lower to, in the runtime: a convolution plus a shortcut
from another input block (group plus remainder), depthwise and grouped convolutions
(shifted groups, narrower and wider than a block of sixteen kernels), carried values
(copy runs), a convolution plus a projection of a map of another size, a big map. Each is found as
such, and runs exactly (against the float64 MLP) at batch 1, 37 and 64, on 1 and 2
threads, in float32 and float64, in every engine and in the standalone kernel module."""
import numpy as np
import pytest
import scipy.sparse as sp

from cnn2mlp.backends.csr import CsrModel
from cnn2mlp.ir.conv_matrix import conv_matrix
from cnn2mlp.ir.mlp import Mlp, MlpLayer
from cnn2mlp.runtime import runnable_engines
from cnn2mlp.runtime.structure import find_parts
from cnn2mlp.testing import run_kernel_module

ENGINES = runnable_engines()


def conv(rng, c_in, c_out, size, k=3, stride=1, group=1):
    kernel = rng.normal(size=(c_out, c_in // group, k, k)).astype(np.float32)
    w, _, shape = conv_matrix(kernel, None, (c_in, size, size), (stride, stride),
                              (k // 2,) * 4, (1, 1), group)
    return w, shape


def residual(rng):
    """relu(conv(h) + x): every conv row reads one entry of another block."""
    w, _ = conv(rng, 8, 8, 10)
    n = w.shape[1]
    return sp.csr_array(sp.hstack([sp.identity(n, np.float32), w])), (0, n, 2 * n), "relu"


def depthwise(rng):
    w, _ = conv(rng, 16, 16, 12, group=16)
    return w, None, "bounded_relu"


def grouped(rng):
    w, _ = conv(rng, 16, 16, 8, group=4)
    return w, None, "relu"


def wide_groups(rng):
    """Two groups of 24 kernels: a block of sixteen of each group's, run in one loop with
    a shift a block, and eight left over."""
    w, _ = conv(rng, 48, 48, 5, group=2)
    return w, None, "relu"


def carried(rng):
    """relu(conv(h)) beside identity copies of h: a layer with a carried block."""
    w, _ = conv(rng, 6, 8, 9)
    n = w.shape[1]
    return sp.csr_array(sp.vstack([w, sp.identity(n, np.float32)])), None, "mixed"


def projection(rng):
    """relu(conv3x3(h) + proj1x1_stride2(x)), h 8×5×5 and x 4×10×10: two blocks whose
    positions do not line up."""
    main, _ = conv(rng, 8, 8, 5)
    proj, _ = conv(rng, 4, 8, 10, k=1, stride=2)
    return (sp.csr_array(sp.hstack([proj, main])),
            (0, proj.shape[1], proj.shape[1] + main.shape[1]), "relu")


def big_map(rng):
    """A map whose inputs outgrow the cache: its positions run in tiles, each by every
    block of kernels, and its 216 taps in blocks at sixteen samples (c_groups.TILE_BYTES,
    c_packed.TAP_BLOCK_BYTES). More taps than one sample's positions in vectors take, two
    blocks of kernels, fewer than its packed panels need (c_position_vectors.MOST_TAPS,
    c_position_panels.FEWEST_BLOCKS)."""
    w, _ = conv(rng, 24, 32, 40)
    return w, None, "relu"


def wide_map(rng):
    """A map of 15 x 15 interior positions, not tiled: six positions at a time with AVX2
    (c_positions.WIDE_POSITIONS), then the three left one at a time."""
    w, _ = conv(rng, 8, 16, 17)
    return w, None, "relu"


FORMS = {"residual": residual, "depthwise": depthwise, "grouped": grouped,
         "wide_groups": wide_groups, "carried": carried, "projection": projection,
         "big_map": big_map, "wide_map": wide_map}


def layer_of(form, seed=0):
    rng = np.random.default_rng(seed)
    w, blocks, act = FORMS[form](rng)
    w.sort_indices()
    bias = rng.uniform(-1, 1, w.shape[0]).astype(np.float32)
    segments = None
    if act == "mixed":  # the conv's neurons ReLU, the carried ones the identity
        n_conv = w.shape[0] - w.shape[1]
        segments = ((0, n_conv, "relu", 0.0), (n_conv, w.shape[0], "identity", 0.0))
    return MlpLayer(w, bias, act, 6.0 if act == "bounded_relu" else 0.0, segments,
                    input_blocks=blocks)


def parts_of(layer):
    w = layer.weight
    return find_parts(w.data, w.indices.astype(np.int64), w.indptr.astype(np.int64),
                      w.shape[1], None if layer.input_blocks is None
                      else np.asarray(layer.input_blocks))


def test_each_form_is_found_as_such():
    parts, touched = parts_of(layer_of("residual"))
    interior = max((g for p in parts for g in p.groups), key=lambda g: len(g.bases))
    assert len(interior.kernels) == 8 and not interior.shifted  # the conv's kernels, together
    assert sum(len(p.copies[0]) for p in parts) >= 1  # the shortcut, as copies
    assert (touched == 2).all()  # every row: its conv part and its shortcut
    parts, _ = parts_of(layer_of("depthwise"))
    (interior,) = [g for p in parts for g in p.groups if len(g.bases) == 100]
    assert interior.shifted and len(interior.kernels) == 16  # a shift a channel
    parts, _ = parts_of(layer_of("grouped"))
    interior = max((g for p in parts for g in p.groups), key=lambda g: len(g.bases))
    assert interior.shifted and len(np.unique(interior.shifts)) == 4  # a shift a conv group
    parts, touched = parts_of(layer_of("carried"))
    assert sum(int(p.copies[2].sum()) for p in parts) == 6 * 9 * 9  # one run of copies
    assert (touched == 1).all()
    parts, touched = parts_of(layer_of("projection"))
    blocks_grouped = [p for p in parts if p.groups]
    assert len(blocks_grouped) == 2 and (touched == 2).all()  # each block grouped alone


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("threads", [1, 2])
def test_each_form_runs_exactly(engine, form, threads):
    layer = layer_of(form)
    mlp = Mlp([layer], (layer.n_in,), (layer.n_out,))
    model = CsrModel(mlp, threads=threads, engine=engine)
    rng = np.random.default_rng(1)
    for batch, dtype in ((1, np.float32), (37, np.float64), (64, np.float32), (64, np.float64)):
        x = rng.normal(size=(batch, layer.n_in))
        got = model.predict(x.astype(dtype), dtype=dtype)
        tolerance = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, mlp.forward(x), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("form", ["residual", "depthwise", "carried", "projection"])
def test_each_form_in_the_kernel_module(tmp_path, form):
    layer = layer_of(form, seed=2)
    mlp = Mlp([layer], (layer.n_in,), (layer.n_out,))
    x = np.random.default_rng(3).normal(size=(5, layer.n_in))
    np.testing.assert_allclose(run_kernel_module(mlp, x, tmp_path), mlp.forward(x),
                               rtol=1e-10, atol=1e-10)


def test_a_grouped_convolutions_blocks_are_one_loop_in_the_c_code():
    """One function for the blocks of every conv group that read the same positions (a
    shift a block), not one a group: a RegNet's grouped layers had 690 functions."""
    import re

    from cnn2mlp.runtime.c_source import c_source

    layer = layer_of("wide_groups")
    mlp = Mlp([layer], (layer.n_in,), (layer.n_out,))
    source = c_source(mlp, "m", "m.h", "", static_limit=0).source
    parts, _ = parts_of(layer)
    geometries = [g for p in parts for g in p.groups]
    # the interior: a shift a conv group; the borders: a shift a group and a position
    assert len(np.unique(max(geometries, key=lambda g: len(g.bases)).shifts)) == 2
    assert sum(len(np.unique(g.shifts)) for g in geometries) == 18
    helpers = set(re.findall(r"void (layer0_group\d+)\(", source))
    assert 0 < len(helpers) <= len(geometries)
    assert "block_shifts" in source


def test_a_big_maps_positions_run_in_tiles_and_its_taps_in_blocks():
    """The big map's loops are the ones its test above ran exactly: positions in tiles
    for one sample and for sixteen, taps in blocks (inputs copied together) at sixteen,
    the kernels of a block in passes of six, five and five."""
    import re

    from cnn2mlp.runtime.c_source import c_source

    layer = layer_of("big_map")
    mlp = Mlp([layer], (layer.n_in,), (layer.n_out,))
    source = c_source(mlp, "m", "m.h", "", static_limit=0).source
    one = "".join(re.findall(r"void layer0_group\d+\(.*?\n}", source, re.S))
    sixteen = "".join(re.findall(r"void layer0_batch_part\d+\(.*?\n}", source, re.S))
    # the interior: 38 x 38 positions of 216 taps
    assert re.search(r"for \(jt = 0; jt < 1444; jt \+= \d+\)", one)
    assert re.search(r"for \(jt = 0; jt < 1444; jt \+= \d+\)", sixteen)
    assert re.search(r"for \(tb = 0; tb < 216; tb \+= \d+\)", sixteen)
    assert "packed + (t - tb)" in sixteen
    # with AVX2, a pass of six kernels (twelve sums in flight), then two of five
    assert "for (q = 0; q < 6; q += 6)" in sixteen and "for (q = 6; q < 16; q += 5)" in sixteen
    # one sample with AVX2: six positions at a time, then four, then one
    assert re.search(r"for \(; j \+ 6 <= end; j \+= 6\)", one)
    assert re.search(r"for \(; j \+ 4 <= end; j \+= 4\)", one)


def test_a_wide_maps_positions_run_six_at_a_time_then_one():
    import re

    from cnn2mlp.runtime.c_source import c_source

    layer = layer_of("wide_map")
    source = c_source(Mlp([layer], (layer.n_in,), (layer.n_out,)), "m", "m.h", "",
                      static_limit=0).source
    one = "".join(re.findall(r"void layer0_group\d+\(.*?\n}", source, re.S))
    assert "for (; j + 6 <= 225; j += 6)" in one and "for (; j < 225; j++)" in one
    assert "for (; j + 4 <= 225; j += 4)" not in one  # three left: no loop of four


def group_matrix(groups, shape):
    """The matrix the product groups make together (each pair's taps added)."""
    m = np.zeros(shape)
    for g in groups:
        for k in range(len(g.kernels)):
            for b, base in enumerate(g.bases):
                np.add.at(m[g.rows[k, b]], g.shifts[k] + base + np.asarray(g.offsets),
                          g.kernels[k])
    return m


@pytest.mark.parametrize("seed", range(5))
def test_groups_of_the_same_rows_merge_into_one_with_the_same_product(seed):
    """Groups writing the same rows from positions a fixed distance apart (kernels in any
    order) become one group, others stay as they are; the product is unchanged."""
    from cnn2mlp.runtime.c_groups import merge_same_rows
    from cnn2mlp.runtime.structure import ProductGroup

    rng = np.random.default_rng(seed)
    n_k, n_b = 5, 4
    rows = rng.permutation(40)[:n_k * n_b].reshape(n_k, n_b)
    shifts = rng.integers(0, 3, n_k)
    bases = np.sort(rng.choice(8, n_b, replace=False))
    groups = []
    for start in (0, 20, 11):  # the same rows, from three blocks of columns
        order = rng.permutation(n_k)
        taps = int(rng.integers(1, 4))
        groups.append(ProductGroup(rng.normal(size=(n_k, taps))[order],
                                   np.sort(rng.choice(6, taps, replace=False)),
                                   bases + start, rows[order], shifts[order]))
    other_rows = rows + 40  # other rows: not merged
    groups.append(ProductGroup(rng.normal(size=(n_k, 2)), np.array([0, 1]), bases,
                               other_rows, shifts))
    merged = merge_same_rows(groups)
    assert len(merged) == 2
    shape = (80, 40)
    np.testing.assert_allclose(group_matrix(merged, shape), group_matrix(groups, shape),
                               rtol=1e-12, atol=1e-12)


def test_small_maps_run_six_positions_at_a_time_only_where_no_loop_of_four_is_left():
    """A 7x7 map (8 x 6 + 1) runs six at a time, the one left alone; an 8x8 map (10 x 6 +
    4) would need the four-position loop too and keeps it alone; 128 positions and more
    always run six at a time."""
    from cnn2mlp.runtime.c_positions import wide_map

    assert [n for n in range(40, 140) if wide_map(n)] == \
        [n for n in range(48, 128) if n % 6 < 4] + list(range(128, 140))
    assert wide_map(49) and wide_map(54) and not wide_map(64) and not wide_map(47)
