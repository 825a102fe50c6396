"""Building and running the C target's source (for ``--check``, the benchmark and the tests):
the system C compiler makes a shared library in a temporary folder, ctypes calls it."""
from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CompileError
from ..ir.mlp import Mlp
from .registry import Predictor

#: the flags every build uses: the tests hold the generated code to them
STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def find_compiler() -> str | None:
    """``$CC`` if set, else the first of cc, gcc, clang on the PATH."""
    if os.environ.get("CC"):
        return os.environ["CC"]
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def included_header(source: str) -> str:
    """The header the source includes with quotes (the target's own)."""
    found = re.findall(r'#include "([^"]+)"', source)
    if not found:
        raise CompileError("the C source includes no header of its own")
    return found[-1]


def build_library(source_path: Path, folder: Path, optimize: str = "-O2",
                  extra: list[str] | None = None) -> Path:
    """Compile the C source (its header and weights beside it, as the target writes them)
    into a shared library in ``folder``."""
    compiler = find_compiler()
    if compiler is None:
        raise CompileError("building the C target needs a C compiler (cc, gcc or clang; "
                           "Debian: apt install gcc), or set CC")
    source = source_path.read_text()
    header = source_path.with_suffix(".h")
    shutil.copyfile(source_path, folder / "model.c")
    shutil.copyfile(header, folder / included_header(source))
    library = folder / "model.so"
    command = shlex.split(compiler) + STRICT_FLAGS + [optimize, "-fPIC", "-shared",
                                                      *(extra or []), "model.c", "-o",
                                                      library.name, "-lm"]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    except OSError as exc:
        raise CompileError(f"cannot run the C compiler {compiler!r} ({exc.strerror}); "
                           "install gcc or set CC") from exc
    if done.returncode != 0:
        raise CompileError(f"{source_path}: the C compiler failed: "
                           f"{(done.stderr or done.stdout).strip()[:2000]}")
    return library


def prefix_of(source: str) -> str:
    found = re.search(r"^int (\w+)_predict\(", source, re.M)
    if not found:
        raise CompileError("the C source defines no *_predict function")
    return found.group(1)


class CModel(Predictor):
    """A built C target, called through ctypes."""

    def __init__(self, source_path: Path, mlp: Mlp, optimize: str = "-O2",
                 extra: list[str] | None = None) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="cnn2mlp-c-")
        library = build_library(source_path, Path(self.folder.name), optimize, extra)
        self.lib = ctypes.CDLL(str(library))
        source = source_path.read_text()
        prefix = prefix_of(source)
        self.dtype = np.dtype(mlp.dtype)
        real = ctypes.c_double if self.dtype == np.float64 else ctypes.c_float
        # the work buffer held across calls, as a program that predicts often would
        self.run = getattr(self.lib, f"{prefix}_predict_with")
        self.run.argtypes = [ctypes.POINTER(real)] * 2 + [ctypes.c_int, ctypes.POINTER(real)]
        self.run.restype = ctypes.c_int
        self.work_size = getattr(self.lib, f"{prefix}_work_size")
        self.work_size.argtypes = [ctypes.c_int]
        self.work_size.restype = ctypes.c_long
        self.work = np.empty(0, self.dtype)
        init = getattr(self.lib, f"{prefix}_init")
        init.argtypes = [ctypes.c_char_p]
        init.restype = ctypes.c_int
        weights = source_path.with_suffix(".weights")
        code = init(str(weights).encode())
        if code != 0:
            raise CompileError(f"{weights}: {prefix}_init returned {code} (the weights file is "
                               "missing, damaged or another model's)")
        self.n_in = int(np.prod(mlp.input_shape))
        self.output_shape = tuple(mlp.output_shape)
        self.pointer = ctypes.POINTER(real)
        super().__init__(self.predict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, self.dtype).reshape(len(x), self.n_in))
        out = np.empty((len(x),) + self.output_shape, self.dtype)
        needed = self.work_size(len(x))
        if self.work.size < needed:
            self.work = np.empty(needed, self.dtype)
        code = self.run(x.ctypes.data_as(self.pointer), out.ctypes.data_as(self.pointer), len(x),
                        self.work.ctypes.data_as(self.pointer))
        if code != 0:
            raise CompileError(f"the C model's predict returned {code}")
        return out


def build_and_load(path: Path, mlp: Mlp) -> CModel:
    return CModel(path, mlp)
