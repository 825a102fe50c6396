"""What a layer's C code is written with: the constant arrays it names (``Arrays``; the
C source decides whether they go into the source or into a weights file), their C types,
and the work space one sample's code may use (``Scratch``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Scratch:
    """Work space a layer's one-sample code may use: ``floats`` values at ``at`` (a C
    expression, from the layer's output ``z``); a one-sample work holds what the layers
    take (``plane_floats``), ``width`` values (the widest layer's) for packed inputs."""

    at: str
    floats: int
    width: int


@dataclass
class Arrays:
    """The constant arrays a source needs, by name, in the order they were added."""

    real: str
    items: list[tuple[str, np.ndarray]] = field(default_factory=list)
    named: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, values: np.ndarray) -> str:
        self.items.append((name, np.ascontiguousarray(values)))
        self.named[name] = self.items[-1][1]
        return name

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for _, a in self.items)


def c_type(array: np.ndarray, real: str) -> str:
    if array.dtype.kind == "f":
        return real
    return "int8_t" if array.dtype == np.int8 else "int32_t"
