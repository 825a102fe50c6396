"""The Keras frontend's leaf: the converter registries and the layer and tensor types that
every family module and the importer share. It imports neither."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from .importer import KerasImporter

LayerConverter = Callable[["KerasImporter", "Layer", "Tensor"], "Tensor"]
CONVERTERS: dict[str, LayerConverter] = {}
#: layers that read several tensors (joins of a Functional graph)
MERGE_CONVERTERS: dict[str, Callable[["KerasImporter", "Layer", list["Tensor"]], "Tensor"]] = {}


def merge_layer(*names: str):
    def register(fn):
        for name in names:
            MERGE_CONVERTERS[name] = fn
        return fn
    return register


def layer(*names: str):
    def register(fn: LayerConverter) -> LayerConverter:
        for name in names:
            CONVERTERS[name] = fn
        return fn
    return register


@dataclass
class Tensor:
    """An IR value and whether it is laid out as Keras has it (channels last) or as the
    IR's convolutions want it (channels first)."""

    value: str
    channels_first: bool


@dataclass
class Layer:
    name: str
    class_name: str
    config: dict[str, Any]
    weights: list[np.ndarray]
    inbound: list[str]
