"""Backends: the lowered MLP into files a runtime loads, one target a module.

Each module here that defines a :class:`~.registry.Target` registers it; the targets are
found by importing every module of this package once, on first use (a new target is a new
module, nothing else changes). ``get_target(name)``, ``target_for(path, name)``.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ..errors import CompileError
from .registry import (DEFAULT_MAX_DENSE_BYTES, TARGETS, Predictor, Target, TargetOptions,
                       register_target)

#: modules that hold no target (helpers the targets use)
HELPERS = {"registry", "npz_reader", "standalone"}
#: the target of a compile that names neither a target nor an output file
DEFAULT_TARGET = "csr"


def targets() -> dict[str, Target]:
    """Every registered target by name (importing the backend modules the first time)."""
    if not targets.found:
        for module in pkgutil.iter_modules(__path__):
            if module.name not in HELPERS and not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")
        targets.found = True
    return TARGETS


targets.found = False


def get_target(name: str) -> Target:
    found = targets()
    if name not in found:
        raise CompileError(f"unknown target {name!r}; targets: {', '.join(found)}")
    return found[name]


def target_for(path: str | Path | None, name: str | None = None) -> Target:
    """The target ``name`` names, or the one whose suffix ``path`` has (neither:
    DEFAULT_TARGET)."""
    if name:
        return get_target(name)
    if path is None:
        return get_target(DEFAULT_TARGET)
    found = targets()
    suffix = Path(path).suffix.lower() if path is not None else ""
    for target in found.values():
        if suffix == target.suffix:
            return target
    raise CompileError(f"{path}: cannot tell the target from the suffix {suffix or '(none)'!r}; "
                       f"use --target ({', '.join(found)}) or a "
                       f"{'/'.join(t.suffix for t in found.values())} output")


__all__ = ["DEFAULT_MAX_DENSE_BYTES", "Predictor", "Target", "TargetOptions", "get_target",
           "register_target", "target_for", "targets"]
