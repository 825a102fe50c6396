"""Running a compiled MLP fast: engines that apply ``h = f(W h + b)`` layer by layer.

When a model loads, ``plan.py`` plans each layer once (``structure.py`` finds the row groups
and copies in the plain CSR file; ``columns.py`` the equal columns worth merging); the
engines run the plan: ``numba`` (compiled, multi-threaded kernels; ``pip install
'cnn2mlp[fast]'``), ``scipy`` (always there) and ``c`` (the model's C code, ``c_source.py``,
built for this machine by ``c_engine.py``; the C target writes the same code). All give
the same results up to float rounding, for any thread count.
"""
from .engine import Engine, available_engines, make_engine, runnable_engines

__all__ = ["Engine", "make_engine", "available_engines", "runnable_engines", "DENSE_THRESHOLD"]


def __getattr__(name: str):
    if name == "DENSE_THRESHOLD":  # plan.py imports scipy: loaded when first asked for
        from .plan import DENSE_THRESHOLD

        return DENSE_THRESHOLD
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
