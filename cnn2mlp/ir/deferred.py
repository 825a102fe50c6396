"""An MLP known by the file that stores it until something needs its layers.

Kept apart from ``mlp.py`` (which imports scipy) so that a load whose compiled code is
cached imports neither."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .mlp import Mlp


class DeferredMlp:
    """An MLP known, until something needs its layers, by a digest of the file that stores
    it and the facts an engine needs before that (shapes, precision, layer count): a load
    whose compiled code is cached runs without reading the layers at all. ``read`` gives
    the MLP of exactly the bytes the digest was taken of (it raises otherwise)."""

    def __init__(self, digest: str, input_shape, output_shape, dtype, n_layers: int,
                 read: Callable[[], Mlp]) -> None:
        self.digest = digest
        self.input_shape, self.output_shape = tuple(input_shape), tuple(output_shape)
        self.dtype, self.n_layers = np.dtype(dtype), n_layers
        self._read, self._mlp = read, None

    def get(self) -> Mlp:
        """The MLP, read at the first call."""
        if self._mlp is None:
            self._mlp = self._read()
        return self._mlp


def resolve(mlp: Mlp | DeferredMlp) -> Mlp:
    """The MLP itself, read first if it is deferred."""
    return mlp.get() if isinstance(mlp, DeferredMlp) else mlp


def layer_count(mlp: Mlp | DeferredMlp) -> int:
    return mlp.n_layers if isinstance(mlp, DeferredMlp) else len(mlp.layers)
