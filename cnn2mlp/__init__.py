"""cnn2mlp: compile a trained CNN into an exactly equivalent multilayer perceptron."""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def load(path: str | Path, threads: int | None = None, engine: str | None = None):
    """Load a compiled ``.npz`` artifact; ``.predict(x)`` runs it on ``(B, *input_shape)``.

    ``threads``: default ``CNN2MLP_THREADS`` or all cores. ``engine``: "c", "numba" or
    "scipy"; default ``CNN2MLP_ENGINE``, else "c" where a C compiler is found (the model's
    C code, built once for this machine and cached), else numba, else scipy;
    ``model.engine`` tells which runs."""
    from .backends.csr import load as load_csr

    return load_csr(path, threads, engine)


__all__ = ["load", "__version__"]
