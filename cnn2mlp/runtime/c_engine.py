"""The C engine: the MLP's C source (``c_source.py``, what the C target writes), built once
with the system C compiler for this machine and called through ctypes.

The library is built with ``-O3 -march=native -ffp-contract=fast`` (multiply-adds fused:
float rounding changes, never more than the sums' own) and kept in a private cache folder
beside numba's (``$XDG_CACHE_HOME/cnn2mlp/c``), under a hash of the artifact's bytes, the
generator, the compiler's version, the flags and the CPU's features: the next load of the
same artifact on the same machine builds nothing and reads no layer. A batch of at least
two blocks of ``SAMPLES`` spreads over ``threads`` threads, a run of whole blocks each
(ctypes lets go of the GIL for the call); smaller batches run on one. A model whose
batched buffers outgrow the caches may run its samples one at a time instead, as timed
once at its build (``c_batching.py``).
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CompileError
from ..ir.deferred import DeferredMlp, layer_count, resolve
from .c_batching import BLOCKS, ONE, choice_path, kept_choice, measured
from .c_build import (SAMPLES, CLibrary, build_library, build_timeout, build_units,
                      find_compiler)
from .engine import Engine, register_engine
from .kernel_cache import untrusted, user_cache_dir

if TYPE_CHECKING:
    from ..ir.mlp import Mlp

#: the flags of the engine's build (the tests build the target's code strictly as well)
#: (the weights file's SHA-256 is checked here, at every load, as the library's is, by
#: hashlib at memory speed: the C code's own portable check, which the macro leaves out,
#: took a fifth of a second on DenseNet121's 30 MB)
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-DCNN2MLP_WEIGHTS_CHECKED"]
PREFIX = "mlp"


def c_cache_dir() -> tuple[Path, bool]:
    """Where built libraries are kept, and whether the folder is a temporary one of this
    process alone: ``$CNN2MLP_C_CACHE`` (refused unless it is the user's own, only the user
    can write it, and so for every folder above it: a library there is code this process
    runs), else ``~/.cache/cnn2mlp/c`` when it is so, else a fresh private temporary folder
    (also when the cache folder cannot be written)."""
    chosen = os.environ.get("CNN2MLP_C_CACHE")
    if chosen:
        folder = Path(chosen).absolute()
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CompileError(f"CNN2MLP_C_CACHE={chosen}: cannot use it as a folder "
                               f"({exc.strerror or exc}); point it at a folder of your own"
                               ) from None
        why = untrusted(folder)
        if why:
            raise CompileError(f"CNN2MLP_C_CACHE={chosen}: {why}, and a library there is code "
                               "every load runs; point it at a folder only you can write")
        return folder, False
    folder = user_cache_dir().parent / "c"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        pass
    if untrusted(folder) is None and os.access(folder, os.W_OK | os.X_OK):
        return folder, False
    return Path(tempfile.mkdtemp(prefix="cnn2mlp-c-")), True


@functools.lru_cache(maxsize=None)
def machine_key(compiler: str) -> str:
    """What a built library depends on besides its source: the compiler's version and the
    CPU's features (``-march=native`` code may not run on another CPU); asked once a
    process."""
    try:
        version = subprocess.run(shlex.split(compiler) + ["--version"], capture_output=True,
                                 text=True, timeout=min(30.0, build_timeout())).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    flags = ""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = platform.processor()
    return "\n".join([compiler, version, platform.machine(), flags, " ".join(FLAGS)])


class BuiltModel:
    """The MLP's C source built in one precision, and loaded. The cache key is made from
    the artifact's bytes (an MLP in memory: its arrays), the generator's own source, the
    compiler, the flags and the CPU, so a load whose library is cached reads no layer of
    the file and generates no C source."""

    #: how many C sources this process generated (the tests count cache hits with it)
    generated = 0
    #: how a batch runs: in blocks of SAMPLES or one sample at a time (``c_batching.py``)
    batching = BLOCKS

    def __init__(self, mlp: Mlp | DeferredMlp, dtype) -> None:
        compiler = find_compiler() or "cc"  # the engine checked there is one
        self.units = build_units(layer_count(mlp))
        digest = hashlib.sha256()
        for part in (content_digest(mlp), generator_digest(), machine_key(compiler),
                     np.dtype(dtype).name, str(self.units)):
            digest.update(hashlib.sha256(part.encode()).digest())
        key = digest.hexdigest()[:32]
        cache, temporary = c_cache_dir()
        try:
            self.library = self.load(mlp, cache, key, dtype)
        except PermissionError:  # a private cache folder that cannot be written
            if temporary:
                raise
            cache, temporary = Path(tempfile.mkdtemp(prefix="cnn2mlp-c-")), True
            self.library = self.load(mlp, cache, key, dtype)
        if temporary:  # loaded, and the weights read: nothing in it is needed any more
            shutil.rmtree(cache, ignore_errors=True)

    def source(self, mlp, dtype):
        """The C source the engine builds: every weight in the weights file, so that the
        source stays small and quick to compile, split into units built in parallel."""
        from .c_source import c_source  # (the generator loads only when a build needs it)

        BuiltModel.generated += 1
        return c_source(mlp, PREFIX, f"{PREFIX}.h", "see cnn2mlp's C target", static_limit=0,
                        dtype=dtype, units=self.units)

    def load(self, mlp, cache: Path, key: str, dtype) -> CLibrary:
        """The cached library, built first if it is missing or is not what was built (its
        weights file's SHA-256 and its are kept beside it: a junk, truncated or replaced
        file is built again), and how it runs a batch: timed with the build, else read."""
        library, weights = cache / f"{key}.so", cache / f"{key}.weights"
        built = not intact(library, weights)
        if built:
            made = self.source(resolve(mlp), dtype)
            self.build(made, cache, library, weights, self.units)
        loaded = CLibrary(library, PREFIX, dtype, weights if weights.stat().st_size else None)
        if built:  # timed once, with the build; kept beside the library
            self.batching = measured(loaded, mlp.input_shape, mlp.output_shape)
            staged = choice_path(library).with_name(f"{key}.batching-{os.getpid()}")
            staged.write_text(self.batching + "\n")
            os.replace(staged, choice_path(library))
        else:
            self.batching = kept_choice(library)
        return loaded

    @staticmethod
    def build(made, cache: Path, library: Path, weights: Path, units: int = 1) -> None:
        """Build in a temporary folder, then rename the files into place (a library is in
        the cache whole or not at all; its weights file and digest are there before it)."""
        if sys.stderr.isatty():
            print("cnn2mlp: building the model's C code (first load only; cached in "
                  f"{cache})", file=sys.stderr, flush=True)
        # staged inside the cache folder: a rename across file systems would fail
        with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as tmp:
            folder = Path(tmp)
            source = folder / "source" / f"{PREFIX}.c"
            source.parent.mkdir()
            source.write_text(made.source)
            source.with_suffix(".h").write_text(made.header)
            built = build_library(source, folder, FLAGS[0], FLAGS[1:], units)
            staged = folder / "weights"
            staged.write_bytes(made.weights or b"")  # empty: the weights are in the code
            os.replace(staged, weights)
            staged = folder / "digest"
            staged.write_text(f"{file_digest(built)}\n{file_digest(weights)}\n")
            os.replace(staged, digest_path(library))
            os.replace(built, library)


def content_digest(mlp: Mlp | DeferredMlp) -> str:
    """What the model computes, as a digest: of the file's bytes for an MLP read from a
    file (nothing else is read to make it), else of its arrays."""
    if isinstance(mlp, DeferredMlp):
        return f"file {mlp.digest}"
    return f"arrays {mlp_digest(mlp)}"


def mlp_digest(mlp) -> str:
    """A SHA-256 of everything the MLP computes with: shapes, every layer's CSR arrays,
    biases and activations (numpy hashes the buffers at memory speed)."""
    from ..ir.weights import weight_arrays

    digest = hashlib.sha256(repr((tuple(mlp.input_shape), tuple(mlp.output_shape))).encode())
    for layer in mlp.layers:
        weight = layer.weight
        digest.update(repr((weight.shape, str(weight.dtype), layer.activation, layer.alpha,
                            layer.segments, layer.carried, layer.input_blocks)).encode())
        for array in (*weight_arrays(weight), layer.bias):
            array = np.ascontiguousarray(array)
            digest.update(str(array.dtype).encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def generator_digest() -> str:
    """A SHA-256 of the code that writes and plans the C source (every module of the
    runtime, and the activation catalogue whose C expressions it uses): a change to any
    of them makes new cache keys, so no library built by older code is loaded."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(here.glob("*.py")) + [here.parent / "ir" / "activations.py"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def digest_path(library: Path) -> Path:
    return library.with_suffix(".sha256")


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def intact(library: Path, weights: Path) -> bool:
    """The cached library and its weights file are regular files of this user's that only
    the user can write, with the digests recorded when they were built."""
    try:
        recorded = digest_path(library).read_text().split()
        owned = all(private_file(path.lstat()) for path in (library, weights))
    except OSError:
        return False
    return owned and recorded == [file_digest(library), file_digest(weights)]


def private_file(info: os.stat_result) -> bool:
    mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return stat.S_ISREG(info.st_mode) and mine and not info.st_mode & 0o022


@register_engine
class CEngine(Engine):
    """Runs the MLP's C code, built for this machine (see the module's docstring)."""

    name = "c"
    defers_reading = True  # a cached library is found by the file's digest

    def __init__(self, mlp, threads: int) -> None:
        if find_compiler() is None:
            raise ValueError("the c engine needs a C compiler (cc, gcc or clang; Debian: apt "
                             "install gcc), or set CC; or use engine='numba'")
        super().__init__(mlp, threads)
        self._built: dict[np.dtype, BuiltModel] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # each thread's work buffer
        self._pool: ThreadPoolExecutor | None = None
        self.built(self.source.dtype)  # at load: a build's failure shows there, not at a predict

    def built(self, dtype) -> BuiltModel:
        key = np.dtype(dtype)
        found = self._built.get(key)  # built already: no lock (a dict's get is atomic)
        if found is not None:
            return found
        with self._lock:
            if key not in self._built:
                self._built[key] = BuiltModel(self.source, key)
            return self._built[key]

    def run(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        built = self.built(dtype)
        library, block = built.library, 1 if built.batching == ONE else SAMPLES
        x = np.ascontiguousarray(x, library.dtype)
        out = np.empty((len(x), math.prod(self.source.output_shape)), library.dtype)
        chunks = self.chunks(len(x), block)
        run = self.run_chunk if block > 1 else self.run_one_at_a_time
        if len(chunks) == 1:
            run(library, x, out)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cnn2mlp-c")
        futures = [self._pool.submit(run, library, x[a:b], out[a:b]) for a, b in chunks]
        for future in futures:
            future.result()
        return out

    def chunks(self, batch: int, block: int = SAMPLES) -> list[tuple[int, int]]:
        """The batch as runs of whole blocks of ``block`` samples, one a thread (the last
        takes the rest): splitting a block would run two padded blocks for one."""
        blocks = batch // block
        parts = max(1, min(self.threads, blocks))
        if parts == 1:
            return [(0, batch)]
        bounds = [block * (blocks * k // parts) for k in range(parts)] + [batch]
        return list(zip(bounds[:-1], bounds[1:]))

    def run_chunk(self, library: CLibrary, x: np.ndarray, out: np.ndarray) -> None:
        work = getattr(self._local, "work", None)
        needed = library.work_size(len(x))  # cached by the library
        if work is None or work.dtype != library.dtype or work.size < needed:
            work = self._local.work = np.empty(needed, library.dtype)
        library.run(x, out, work)

    def run_one_at_a_time(self, library: CLibrary, x: np.ndarray, out: np.ndarray) -> None:
        for i in range(len(x)):
            self.run_chunk(library, x[i:i + 1], out[i:i + 1])
