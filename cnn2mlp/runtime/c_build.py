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
import time
from pathlib import Path

import numpy as np

from ..errors import CompileError, first_line_of

#: samples the C code computes together (``c_batched.py``), and a batch's unit of work
#: between threads (``c_engine.py``)
SAMPLES = 16

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


#: seconds a build may take before it is stopped (``$CNN2MLP_C_BUILD_TIMEOUT``): a hanging
#: compiler must not hang a load
BUILD_TIMEOUT = 900.0


def build_timeout() -> float:
    try:
        return float(os.environ.get("CNN2MLP_C_BUILD_TIMEOUT", BUILD_TIMEOUT))
    except ValueError:
        raise CompileError("CNN2MLP_C_BUILD_TIMEOUT: give a number of seconds") from None


#: the most units a build is split into (one a core, at most this many)
MAX_UNITS = 8


def build_units(layers: int) -> int:
    """How many units the C code of a model of ``layers`` layers is compiled in at once:
    one a core, and one for a model of one or two layers (a unit of its own would not pay
    for the link)."""
    if layers <= 2:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_UNITS, layers))


def source_units(source: str) -> int:
    """How many units a C source is written in (``c_source(units=...)``): 1 if none."""
    marks = re.findall(r"^#if UNIT_IS\((\d+)\)", source, flags=re.MULTILINE)
    return max((int(j) for j in marks), default=0) + 1


def build_library(source_path: Path, folder: Path, optimize: str = "-O2",
                  extra: list[str] | None = None, units: int = 1) -> Path:
    """Compile the C source (its header and weights beside it, as the target writes them)
    into a shared library in ``folder``, and check in a separate process that it loads (a
    library that would kill this process on load, such as one built with
    ``-fsanitize=address`` through ``CC``, is refused here). A source split into ``units``
    (``c_source(units=...)``) compiles them in parallel, then links them."""
    compiler = find_compiler()
    if compiler is None:
        raise CompileError("building the C target needs a C compiler (cc, gcc or clang; "
                           "Debian: apt install gcc), or set CC")
    source = source_path.read_text()
    header = source_path.with_suffix(".h")
    shutil.copyfile(source_path, folder / "model.c")
    shutil.copyfile(header, folder / included_header(source))
    library = folder / "model.so"
    cc = shlex.split(compiler)
    flags = STRICT_FLAGS + [optimize, "-fPIC", *(extra or [])]
    if units <= 1:
        run_compilers([cc + flags + ["-shared", "model.c", "-o", library.name, "-lm"]],
                      folder, compiler, source_path)
    else:
        objects = [f"unit{j}.o" for j in range(units)]
        run_compilers([cc + flags + [f"-DCNN2MLP_UNIT={j}", "-c", "model.c", "-o", objects[j]]
                       for j in range(units)], folder, compiler, source_path)
        run_compilers([cc + [*flags[len(STRICT_FLAGS):], "-shared", *objects, "-o",
                             library.name, "-lm"]], folder, compiler, source_path)
    if not library.is_file() or library.stat().st_size == 0:
        raise CompileError(f"the C compiler {compiler!r} exited 0 but wrote no library "
                           f"({library.name}); set CC to a working C compiler")
    check_loads(library, compiler)
    return library


def run_compilers(commands: list[list[str]], folder: Path, compiler: str,
                  source_path: Path) -> None:
    """Run the compiler commands at once (one a unit), each within the build timeout; the
    first failure is reported with the compiler's exit status and last lines."""
    timeout = build_timeout()
    try:
        running = [subprocess.Popen(c, cwd=folder, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for c in commands]
    except OSError as exc:
        raise CompileError(f"cannot run the C compiler {compiler!r} ({exc.strerror}); "
                           "install gcc or set CC") from exc
    deadline = time.monotonic() + timeout
    try:
        results = [p.communicate(timeout=max(0.0, deadline - time.monotonic()))
                   for p in running]
    except subprocess.TimeoutExpired:
        raise CompileError(f"the C compiler {compiler!r} did not finish in {timeout:g} s and "
                           "was stopped (CNN2MLP_C_BUILD_TIMEOUT sets the limit)") from None
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(running, results):
        if p.returncode != 0:
            raise CompileError(f"{source_path}: the C compiler {compiler!r} failed (exit "
                               f"status {p.returncode}): {last_lines(err or out)}")


def last_lines(text: str, lines: int = 5) -> str:
    """The end of a compiler's output, where its error is, on one line."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-1500:] if kept else "it printed nothing"


#: loads a library in a fresh interpreter: the check that it does not kill its loader
LOAD_CHECK = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"


def check_loads(library: Path, compiler: str) -> None:
    import sys

    try:
        done = subprocess.run([sys.executable, "-I", "-c", LOAD_CHECK, str(library)],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        why = "it hung" if done is None else (
            f"exit status {done.returncode}: {last_lines(done.stderr or done.stdout, 2)}")
        raise CompileError(f"the library the C compiler {compiler!r} built does not load in a "
                           f"Python process ({why}); set CC to a plain C compiler (no "
                           "sanitizers)")


def prefix_of(source: str) -> str:
    found = re.search(r"^int (\w+)_predict\(", source, re.M)
    if not found:
        raise CompileError("the C source defines no *_predict function")
    return found.group(1)


#: the largest batch one call takes (the C functions take an int)
MAX_BATCH = 2**31 - 1


class CLibrary:
    """A built C source, called through ctypes: ``run(x, out, work)`` on a (B, n_in)
    C-contiguous batch. ctypes lets go of the GIL during the call, so threads of the
    caller's can run parts of a batch at once (each with a work buffer of its own)."""

    def __init__(self, library: Path, prefix: str, dtype, weights: Path | None) -> None:
        try:
            self.lib = ctypes.CDLL(str(library))
        except OSError as exc:
            raise CompileError(f"{library}: the built C library does not load "
                               f"({first_line_of(exc)}); delete it to build it again") from None
        self.dtype = np.dtype(dtype)
        self._run = getattr(self.lib, f"{prefix}_predict_with")
        # the arrays' addresses as integers: ctypes' pointer casts took a tenth of a
        # small model's predict
        self._run.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int, ctypes.c_void_p]
        self._run.restype = ctypes.c_int
        self._work_size = getattr(self.lib, f"{prefix}_work_size")
        self._work_size.argtypes = [ctypes.c_int]
        self._work_size.restype = ctypes.c_size_t
        self._work_sizes: dict[int, int] = {}
        init = getattr(self.lib, f"{prefix}_init")
        init.argtypes = [ctypes.c_char_p]
        init.restype = ctypes.c_int
        code = init(str(weights or "").encode())
        if code != 0:
            raise CompileError(f"{weights}: {prefix}_init returned {code} (the weights file is "
                               "missing, damaged, changed or another model's)")

    def work_size(self, batch: int) -> int:
        batch = min(batch, MAX_BATCH)
        size = self._work_sizes.get(batch)
        if size is None:  # a call into the library: a dict's lookup is the cheaper
            size = self._work_sizes[batch] = int(self._work_size(batch))
        return size

    def run(self, x: np.ndarray, out: np.ndarray, work: np.ndarray) -> None:
        """``out[:] = MLP(x)``; ``work`` holds at least ``work_size(len(x))`` values."""
        assert x.flags.c_contiguous and out.flags.c_contiguous and x.dtype == self.dtype
        assert out.dtype == self.dtype and work.dtype == self.dtype
        assert work.size >= self.work_size(len(x)) and out.shape[0] == len(x)
        x_at, out_at, work_at = address(x), address(out), address(work)
        # the C batch is an int: a larger batch goes in parts (ctypes would wrap it)
        for start in range(0, len(x), MAX_BATCH):
            n = min(MAX_BATCH, len(x) - start)
            code = self._run(x_at + start * x.strides[0], out_at + start * out.strides[0], n,
                             work_at)
            if code != 0:
                raise CompileError(f"the C model's predict returned {code}")


def address(array: np.ndarray) -> int:
    """Where a C-contiguous array's values start: read through the buffer protocol (0.5
    us), or, for a read-only array, from numpy's ctypes view (2 us: three of those were a
    tenth of SqueezeNet's predict at batch 1)."""
    try:
        return ctypes.addressof(ctypes.c_byte.from_buffer(array))
    except (TypeError, ValueError):  # read-only, or empty
        return array.ctypes.data


def load_source(source_path: Path, dtype, folder: Path, optimize: str = "-O2",
                extra: list[str] | None = None, units: int = 1) -> CLibrary:
    """Build the C source at ``source_path`` (header and weights beside it) in ``folder``,
    ``units`` compiled in parallel when it is written in units, and load it."""
    library = build_library(source_path, folder, optimize, extra, units)
    weights = source_path.with_suffix(".weights")
    return CLibrary(library, prefix_of(source_path.read_text()), dtype,
                    weights if weights.exists() else None)
