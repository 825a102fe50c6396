"""Frontends: model files into the IR. The file decides which frontend reads it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import CompileError
from ..ir import Graph


def load_model(path: str | Path, input_shape: Sequence[int] | None = None,
               allow_non_finite: bool = False) -> Graph:
    """Read a model file into the IR, choosing the frontend from the file."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from .onnx import load_onnx

        return load_onnx(path, input_shape, allow_non_finite)
    if not path.exists():
        raise CompileError(f"{path}: no such file")
    raise CompileError(f"{path}: unknown model format {path.suffix or '(no suffix)'!r}; "
                       "cnn2mlp reads .onnx files")
