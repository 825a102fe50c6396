"""A layer's copy runs at one sample, in the C code: ``out[rows + j] (+)= w * h[columns +
j * step]`` (carried values, shortcuts, a BatchNorm of each channel), each run adding to
its rows, or storing ``clamp(w * h + bias)`` where its rows are its own (``c_stores.py``).

A run whose step is not 1 reads a channels-last map channel by channel: DenseNet121's
layers as tf2onnx writes them read each of a block's 32 or 96 channels across the whole
map, a cache line a value, the block read again for every channel. Those runs go through
the map in tiles of positions, every run a tile, so that a tile's lines are read once
(the same sums in the same order: each value is its own)."""
from __future__ import annotations

from typing import Callable

import numpy as np

#: positions a tile of the strided runs reads: 64 positions of 96 channels are 24 KB,
#: within a 32 KB L1 cache
TILE = 64
#: a run's per-run constants where it stores: its bias and clamp
STORED = ("bi", "cl", "cs", "ch")


def copy_lines(real: str, copies: tuple, store: tuple | None, array: Callable,
               weights: Callable, names: tuple[str, ...]) -> list[str]:
    """The loops of ``copies`` (rows, columns, lengths, weights, steps; their arrays'
    ``names``, the steps' None where all are 1), those of step 1 first, then the strided
    ones in tiles (arrays of their own where a layer has both); ``store``: each run's
    (bias, lo, scale, hi) where they store, else None (they add)."""
    runs = [np.asarray(a) for a in copies]
    strided = runs[4] != 1
    subsets = [subset for subset in (~strided, strided) if subset.any()]
    lines = []
    for subset in subsets:
        own = [a[subset] for a in runs]
        lines += subset_lines(real, own, None if store is None else [
            values[subset] for values in store], weights, tiled=subset is strided,
            names=names if len(subsets) == 1 else (
                array("copy_rows", own[0]), array("copy_cols", own[1]),
                array("copy_lengths", own[2]), weights("copy_weights", own[3]),
                array("copy_steps", own[4]) if subset is strided else None))
    return lines


def subset_lines(real: str, runs: list[np.ndarray], store: list | None, weights: Callable,
                 tiled: bool, names: tuple[str, ...]) -> list[str]:
    rows, _, lengths = runs[:3]
    r, c, n_len, w, step = names
    at = f"(long)j * {step}[i]" if tiled else "j"
    stored = [] if store is None else [weights(f"copy_{what}", values) for what, values in
                                       zip(("stored_bias", "lo", "scale", "hi"), store)]
    statement = (f"zo[j] = layer_clamp_value(wi * hi[{at}] + bi, cl, cs, ch);" if store
                 is not None else f"zo[j] += wi * hi[{at}];")
    pad = "    " if tiled else ""
    body = [
        f"    {pad}for (i = 0; i < {len(rows)}; i++) {{",
        f"        {pad}{real} *restrict zo = z + {r}[i];",
        f"        {pad}const {real} *restrict hi = h + {c}[i];",
        f"        {pad}const {real} wi = {w}[i];",
        *([f"        {pad}const {real} " + ", ".join(
            f"{v} = {a}[i]" for v, a in zip(STORED, stored)) + ";"] if stored else [])]
    if not tiled:
        return body + [f"        for (j = 0; j < {n_len}[i]; j++) {statement}", "    }"]
    return [f"    for (t = 0; t < {int(lengths.max())}; t += {TILE}) {{", *body,
            f"            const int end = {n_len}[i] < t + {TILE} ? {n_len}[i] : t + {TILE};",
            f"            for (j = t; j < end; j++) {statement}", "        }", "    }"]
