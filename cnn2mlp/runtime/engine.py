"""Engines run a planned MLP on batches; this module is their registry and common base.

An engine is a class with a ``name`` that runs the plan (``plan.py``) of each layer; engine
modules register theirs with :func:`register_engine` when imported: ``numba_engine`` (the
compiled kernels, the ``fast`` extra), ``scipy_engine`` (always there) and ``c_engine``
(the model's C code built for this machine; needs a C compiler). A load without an
engine runs ``CNN2MLP_ENGINE`` if set, else the C code where a C compiler is found (built
once and cached; a build that fails says why in one line and falls back), else numba, else
scipy. All give the same results up to float rounding, for any thread count.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

import numpy as np

from ..errors import first_line_of, install_hint
from ..ir.deferred import DeferredMlp, resolve

if TYPE_CHECKING:
    from ..ir.mlp import Mlp
    from .plan import LayerPlan

#: engine name → class, filled by the engine modules as they are imported
ENGINES: dict[str, type["Engine"]] = {}
#: the engine modules
ENGINE_MODULES = {"numba": ".numba_engine", "scipy": ".scipy_engine", "c": ".c_engine"}
#: the Python engines a load without ``engine`` falls back to, in this order (before them:
#: "c", where a C compiler is found)
DEFAULT_ORDER = ("numba", "scipy")
#: the environment variable that chooses the engine of a load without ``engine``
ENGINE_VARIABLE = "CNN2MLP_ENGINE"


def register_engine(cls: type["Engine"]) -> type["Engine"]:
    ENGINES[cls.name] = cls
    return cls


class Engine:
    """Runs an MLP on batches: ``run(x)`` with x (B, n_in) → (B, n_out)."""

    name = ""
    #: whether the engine can run without the layers (its compiled code cached): the
    #: others read a deferred MLP at once, so that a damaged file fails the load
    defers_reading = False

    def __init__(self, mlp: Mlp | DeferredMlp, threads: int) -> None:
        self.source = mlp if self.defers_reading else resolve(mlp)
        self.threads = threads
        self._plans: dict[np.dtype, list] = {}

    @property
    def mlp(self) -> Mlp:
        """The MLP's layers (a deferred one is read at the first use)."""
        return resolve(self.source)

    def plans(self, dtype) -> list:
        """Every layer's plan in this precision, with what this engine prepares from it
        (made once, at the first run in that precision)."""
        from .plan import iter_plans  # (imports scipy: not needed by a cached c engine)

        key = np.dtype(dtype)
        if key not in self._plans:
            self._plans[key] = [self.prepare(plan) for plan in
                                iter_plans(self.mlp.layers, key)]
        return self._plans[key]

    def prepare(self, plan: LayerPlan):
        """What the engine runs a layer from (default: the plan itself)."""
        return plan

    def run(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        raise NotImplementedError


def load_engine(name: str) -> type[Engine]:
    """The engine class ``name``, its module imported (ImportError without its package)."""
    importlib.import_module(ENGINE_MODULES[name], __package__)
    return ENGINES[name]


def available_engines() -> list[str]:
    """The default engines whose packages are installed, in DEFAULT_ORDER."""
    names = []
    for name in DEFAULT_ORDER:
        try:
            load_engine(name)
        except ImportError:
            continue
        names.append(name)
    return names


def runnable_engines() -> list[str]:
    """Every engine this machine can run: the available defaults, and "c" when a C
    compiler is found."""
    from .c_build import find_compiler

    return available_engines() + (["c"] if find_compiler() is not None else [])


def default_threads() -> int:
    """``CNN2MLP_THREADS`` when set (a whole number >= 1), else all cores."""
    value = os.environ.get("CNN2MLP_THREADS")
    if value is None or not value.strip():
        return os.cpu_count() or 1
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"CNN2MLP_THREADS={value!r}: give a whole number of threads, 1 or "
                         "more (or unset it to use every core)")
    return threads


def checked_threads(threads: int | None) -> int:
    """The thread count to run with: ``threads`` if given (a whole number >= 1), else
    :func:`default_threads`. Checked at load, not at the first predict."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads={threads!r}: give a whole number of threads, 1 or more")
    return int(threads)


def make_engine(mlp: Mlp | DeferredMlp, engine: str | None = None,
                threads: int | None = None) -> Engine:
    """``engine`` ("c", "numba" or "scipy"), else ``$CNN2MLP_ENGINE``, else the default:
    the C engine where a C compiler is found, falling back (with one line on stderr saying
    why) to the first of DEFAULT_ORDER installed if its build fails."""
    chosen = engine if engine is not None else (os.environ.get(ENGINE_VARIABLE) or None)
    if chosen is not None and chosen not in ENGINE_MODULES:
        where = "engine=" if engine is not None else f"{ENGINE_VARIABLE}="
        raise ValueError(f"unknown engine {where}{chosen!r}: {', '.join(ENGINE_MODULES)}")
    threads = checked_threads(threads)
    if chosen is not None:
        try:
            return load_engine(chosen)(mlp, threads)
        except ImportError:
            raise ValueError(f"the numba engine needs numba: {install_hint('fast')}") \
                from None
    from .c_build import find_compiler

    if find_compiler() is not None:  # numba is not even imported then (a quarter second)
        try:
            return load_engine("c")(mlp, threads)
        except Exception as exc:  # noqa: BLE001 — a default load never fails on the build
            resolve(mlp)  # a file that cannot be read fails as itself, not as a build
            say_fallback(exc, available_engines()[0])
    return load_engine(available_engines()[0])(mlp, threads)


def say_fallback(exc: BaseException, fallback: str) -> None:
    print(f"cnn2mlp: the c engine could not build this model ({first_line_of(exc)}); "
          f"running it on "
          f"{fallback} (engine='{fallback}' or {ENGINE_VARIABLE}={fallback} skips the try)",
          file=sys.stderr, flush=True)


def features_by_batch(x: np.ndarray) -> np.ndarray:
    """``x.T`` made contiguous. When a row of ``x`` spans a multiple of 2 KiB, the rows a
    transpose reads together fall into one cache set and evict each other (a 64 × 3072
    float32 transpose took 0.56 ms); copying them first into rows padded by one cache line
    spreads them over the sets (0.085 ms)."""
    if x.ndim != 2 or x.shape[0] < 8 or (x.shape[1] * x.itemsize) % 2048:
        return np.ascontiguousarray(x.T)
    pad = 64 // x.itemsize
    padded = np.empty((x.shape[0], x.shape[1] + pad), x.dtype)
    padded[:, :x.shape[1]] = x
    out = np.empty((x.shape[1], x.shape[0]), x.dtype)
    np.copyto(out, padded[:, :x.shape[1]].T)
    return out
