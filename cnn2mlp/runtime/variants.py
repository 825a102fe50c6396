"""Two compilations of one kernel: threaded (``parallel=True``) and serial.

numba's on-disk cache names a function's entries after its qualified name and line, not
its options: ``njit(parallel=True, cache=True)(f)`` and ``njit(cache=True)(f)`` share
them, and whichever compiles first is what the other loads from then on. A serial
kernel loaded as the "parallel" one ran on one thread at any thread count (measured:
2 threads, no speed-up). Each variant gets a copy of the function under a name of its
own, so each has its own cache entries.
"""
from __future__ import annotations

import types
from typing import Callable

from numba import njit

from .kernel_cache import use_kernel_cache

# Every kernel module imports this one before it decorates a kernel: numba's cache must
# point at the user's own folder first (kernel_cache.py says why).
use_kernel_cache()


def renamed(func: Callable, suffix: str) -> Callable:
    """A copy of ``func`` (same code, globals and defaults) named ``name + suffix``."""
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__doc__, copy.__module__ = func.__doc__, func.__module__
    return copy


def threaded_and_serial(func: Callable, **options) -> tuple[Callable, Callable]:
    """(threaded, serial) numba compilations of ``func`` with separate cache entries."""
    return (njit(parallel=True, **options)(renamed(func, "_threaded")),
            njit(**options)(renamed(func, "_serial")))


#: this process was forked from one where OpenMP was made numba's first choice: the
#: threaded kernels must not run here (GNU OpenMP aborts a parallel region in a child
#: forked after its threads started); the serial ones are safe
forked_after_threads = False


def _after_fork_in_child() -> None:
    global forked_after_threads
    forked_after_threads = True


def prefer_openmp() -> None:
    """Make OpenMP numba's first choice of threading layer, unless the user chose one
    (NUMBA_THREADING_LAYER, NUMBA_THREADING_LAYER_PRIORITY) or numba already started its
    threads. Measured here with 2 threads: a parallel region costs 12 µs to start with
    TBB, 2 µs with OpenMP, and the runtime at batch 64 was 1.85x onnxruntime with TBB
    (slower than one thread) against 1.25x with OpenMP. A process forked after that runs
    the serial kernels (see ``forked_after_threads``)."""
    import os

    import numba

    if os.environ.get("NUMBA_THREADING_LAYER") or \
            os.environ.get("NUMBA_THREADING_LAYER_PRIORITY"):
        return
    if numba.config.THREADING_LAYER != "default":
        return
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
