"""Where numba caches the compiled kernels: a folder of the user's own, never the package.

numba's default keeps its cache in ``__pycache__`` beside the installed package, and loads
it by unpickling an index. In a shared install whose package folder others can write,
that would run their code in every process that loads a model. cnn2mlp therefore points
numba at ``$XDG_CACHE_HOME/cnn2mlp/numba`` (``~/.cache/cnn2mlp/numba``), created private
(mode 0700) and used only when it belongs to the user and nobody else can write it; a
``NUMBA_CACHE_DIR`` the user set is respected as it is. When no such folder can be had,
a fresh private temporary folder serves this process alone (the kernels compile again in
the next one).
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cnn2mlp/numba``, else ``~/.cache/cnn2mlp/numba``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnn2mlp" / "numba"


def private(path: Path) -> bool:
    """The folder exists, is the user's own, only the user can write it, and nobody else
    can replace it through a folder above it (see :func:`untrusted`)."""
    return untrusted(path) is None


def untrusted(folder: Path) -> str | None:
    """Why others could plant or replace a file in ``folder`` (None if they cannot): it, or
    a folder above it, is someone else's (not root's), or others can write it. A folder
    others can write but only owners can rename in (the sticky bit, as /tmp) is fine
    above the cache folder, not as the cache folder itself."""
    me = os.getuid() if hasattr(os, "getuid") else None
    try:
        info = folder.lstat()
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a folder"
    if me is not None and info.st_uid != me:
        return "it belongs to another user"
    if info.st_mode & 0o022:
        return f"others can write it (mode {stat.S_IMODE(info.st_mode):o})"
    for parent in folder.resolve().parents:
        try:
            info = parent.stat()
        except OSError as exc:
            return f"{parent} cannot be read ({exc.strerror})"
        if me is not None and info.st_uid not in (me, 0):
            return f"the folder {parent} above it belongs to another user"
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            return f"others can write the folder {parent} above it"
    return None


def kernel_cache_dir() -> str:
    """The folder for numba's cache: the user's NUMBA_CACHE_DIR, the private user folder,
    or a private temporary folder."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        return chosen
    folder = user_cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        pass
    if private(folder):
        return str(folder)
    return tempfile.mkdtemp(prefix="cnn2mlp-numba-")


def use_kernel_cache() -> None:
    """Point numba's cache at :func:`kernel_cache_dir`. Must run before any ``njit(cache=
    True)`` decorator does: numba picks a function's cache folder when it is decorated."""
    from numba.core import config

    config.CACHE_DIR = kernel_cache_dir()


_announced = False


def kernels_cached(folder: str | Path) -> bool:
    """Whether numba has cached any of the runtime's kernels in ``folder``."""
    return any(Path(folder).glob("runtime_*/*.nbi"))


def announce_first_compile(stream=None) -> None:
    """Once a process, before the first run: if no kernel is cached yet, say on a terminal
    that the pause which follows is numba compiling them (first use only), not a hang."""
    global _announced
    stream = stream or sys.stderr
    if _announced:
        return
    _announced = True
    from numba.core import config

    if stream.isatty() and not kernels_cached(config.CACHE_DIR):
        print(f"cnn2mlp: compiling the runtime's kernels (first use only: 15-40 s; cached in "
              f"{config.CACHE_DIR})", file=stream, flush=True)
