"""Backends: the lowered MLP into files a runtime loads. Targets by name and by suffix."""
from __future__ import annotations

from pathlib import Path

from ..errors import CompileError

TARGETS = {"csr": ".npz", "opencv": ".xml"}
#: fusion policy each target needs: OpenCV has no room for a linear layer
FUSION = {"csr": "cost", "opencv": "always"}


def target_for(path: str | Path, target: str | None) -> str:
    if target:
        if target not in TARGETS:
            raise CompileError(f"unknown target {target!r}; targets: {', '.join(TARGETS)}")
        return target
    suffix = Path(path).suffix.lower()
    for name, ext in TARGETS.items():
        if suffix == ext:
            return name
    raise CompileError(f"{path}: cannot tell the target from the suffix {suffix or '(none)'!r}; "
                       f"use --target ({', '.join(TARGETS)}) or a {'/'.join(TARGETS.values())} "
                       "output")
