"""The graph IR, its op definitions and the reference interpreter.

The interpreter and the ops (which import scipy) load when first named: a cached
``cnn2mlp.load`` reads a file's summary and runs compiled code without them (scipy's
import is a quarter of a second of a start that aims at half a second)."""
from __future__ import annotations

import importlib

from .graph import Graph, GraphMeta, Node, UniformActivation, Value

#: the names this package gives, by the module that defines them
LAZY = {"run": ".interpreter", "OPS": ".ops", "get_op": ".ops"}

__all__ = ["Graph", "GraphMeta", "UniformActivation", "Node", "Value", "run", "OPS", "get_op"]


def __getattr__(name: str):
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
