"""How the c engine runs a batch of a model whose batched buffers outgrow the caches: in
blocks of sixteen samples (the C code's batched layers, values of sixteen samples side by
side) or one sample at a time (its single-sample layers).

Blocks are the faster on a small image's maps, whose sixteen samples fit in the caches.
On a big image's they may not: ResNet50 and DenseNet121 at 224×224 hold 148 and 172 MB of
batched buffers, and one sample at a time took 108 and 100 ms a sample where a block of
sixteen took 124 and 135 ms a sample; MobileNetV2, whose depthwise convolutions gain the
most from sixteen samples in a vector, took 22 ms one at a time and 14 ms a sample in a
block. So a model above ``MEASURE_ABOVE`` is timed both ways once, when its library is
built, and the choice is kept in the cache beside it. Both ways compute the same function,
each exactly as the MLP computes it (their sums' rounding differs as any two orders do).
"""
from __future__ import annotations

import math
from pathlib import Path
from time import perf_counter as clock

import numpy as np

from .c_build import SAMPLES, CLibrary

#: bytes of batched buffers above which a model is timed both ways (the 32×32 models of
#: ``bench_architectures.py`` take at most 3.5 MiB, the 224×224 ones at least 147 MiB)
MEASURE_ABOVE = 32 * 2**20
#: one sample at a time is taken when it takes at most this part of a block's time (a
#: margin for this machine's noise: the choice is kept)
MARGIN = 0.9
#: samples timed one at a time, after one that warms the code
SINGLES = SAMPLES // 4
BLOCKS, ONE = "blocks", "one"


def choice_path(library: Path) -> Path:
    return library.with_suffix(".batching")


def measured(library: CLibrary, input_shape, output_shape) -> str:
    """``ONE`` if one sample at a time took under ``MARGIN`` of a block's time a sample,
    else ``BLOCKS``; ``BLOCKS`` without timing for a model at or under ``MEASURE_ABOVE``."""
    if library.work_size(SAMPLES) * library.dtype.itemsize <= MEASURE_ABOVE:
        return BLOCKS
    x = np.random.default_rng(0).uniform(-1, 1, (SAMPLES, math.prod(input_shape)))
    x = x.astype(library.dtype)
    out = np.empty((SAMPLES, math.prod(output_shape)), library.dtype)
    work = np.ones(library.work_size(SAMPLES), library.dtype)  # touched: no page faults
    start = clock()
    library.run(x, out, work)
    block = (clock() - start) / SAMPLES
    library.run(x[:1], out[:1], work)
    start = clock()
    for i in range(1, 1 + SINGLES):
        library.run(x[i:i + 1], out[i:i + 1], work)
    one = (clock() - start) / SINGLES
    return ONE if one < MARGIN * block else BLOCKS


def kept_choice(library: Path) -> str:
    """The choice recorded beside a cached library (``BLOCKS`` if none, or unreadable:
    either way computes the same function)."""
    try:
        choice = choice_path(library).read_text().strip()
    except OSError:
        return BLOCKS
    return choice if choice in (BLOCKS, ONE) else BLOCKS
