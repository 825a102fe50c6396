"""cnn2mlp: compile a trained CNN into an exactly equivalent multilayer perceptron."""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def load(path: str | Path):
    """Load a compiled ``.npz`` artifact; ``.predict(x)`` runs it on ``(B, *input_shape)``."""
    from .backends.csr import load as load_csr

    return load_csr(path)


__all__ = ["load", "__version__"]
