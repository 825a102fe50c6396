"""Building and calling the MLP's C source (``c_source.py``): the system C compiler makes a
shared library, ctypes calls it (the C target's ``--check``, the C engine, the benchmark
and the tests)."""
from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import CompileError

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


class CLibrary:
    """A built C source, called through ctypes: ``run(x, out, work)`` on a (B, n_in)
    C-contiguous batch. ctypes lets go of the GIL during the call, so threads of the
    caller's can run parts of a batch at once (each with a work buffer of its own)."""

    def __init__(self, library: Path, prefix: str, dtype, weights: Path | None) -> None:
        self.lib = ctypes.CDLL(str(library))
        self.dtype = np.dtype(dtype)
        real = ctypes.c_double if self.dtype == np.float64 else ctypes.c_float
        self.pointer = ctypes.POINTER(real)
        self._run = getattr(self.lib, f"{prefix}_predict_with")
        self._run.argtypes = [self.pointer] * 2 + [ctypes.c_int, self.pointer]
        self._run.restype = ctypes.c_int
        self._work_size = getattr(self.lib, f"{prefix}_work_size")
        self._work_size.argtypes = [ctypes.c_int]
        self._work_size.restype = ctypes.c_long
        init = getattr(self.lib, f"{prefix}_init")
        init.argtypes = [ctypes.c_char_p]
        init.restype = ctypes.c_int
        code = init(str(weights or "").encode())
        if code != 0:
            raise CompileError(f"{weights}: {prefix}_init returned {code} (the weights file is "
                               "missing, damaged or another model's)")

    def work_size(self, batch: int) -> int:
        return int(self._work_size(batch))

    def run(self, x: np.ndarray, out: np.ndarray, work: np.ndarray) -> None:
        """``out[:] = MLP(x)``; ``work`` holds at least ``work_size(len(x))`` values."""
        assert x.flags.c_contiguous and out.flags.c_contiguous and x.dtype == self.dtype
        code = self._run(x.ctypes.data_as(self.pointer), out.ctypes.data_as(self.pointer),
                         len(x), work.ctypes.data_as(self.pointer))
        if code != 0:
            raise CompileError(f"the C model's predict returned {code}")


def load_source(source_path: Path, dtype, folder: Path, optimize: str = "-O2",
                extra: list[str] | None = None) -> CLibrary:
    """Build the C source at ``source_path`` (header and weights beside it) in ``folder``
    and load it."""
    library = build_library(source_path, folder, optimize, extra)
    weights = source_path.with_suffix(".weights")
    return CLibrary(library, prefix_of(source_path.read_text()), dtype,
                    weights if weights.exists() else None)
