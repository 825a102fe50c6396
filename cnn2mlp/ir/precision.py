"""The working precision of a compile: float32, or float64 for a model whose input and
weights are double.

Weights are rounded once, to this dtype, wherever a pass or frontend stores them. The
compile driver and the pipeline set it from ``Graph.dtype`` for their duration (a context
variable, so nested or concurrent compiles do not see each other's), and helpers that build
matrices read it with :func:`real` instead of hard-coding float32.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import numpy as np

_WORKING = contextvars.ContextVar("cnn2mlp_working_precision", default=np.dtype(np.float32))

#: the precisions a model can be compiled in
PRECISIONS = (np.dtype(np.float32), np.dtype(np.float64))


def real() -> np.dtype:
    """The dtype weights are stored in for the compile that is running."""
    return _WORKING.get()


@contextlib.contextmanager
def working_precision(dtype) -> Iterator[np.dtype]:
    dtype = np.dtype(dtype)
    if dtype not in PRECISIONS:
        raise ValueError(f"precision {dtype} is not float32 or float64")
    token = _WORKING.set(dtype)
    try:
        yield dtype
    finally:
        _WORKING.reset(token)
