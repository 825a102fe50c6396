"""Writing outputs safely: to a temporary file in the target folder, renamed on success."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import CompileError


def check_writable(path: str | Path) -> None:
    """Fail early, before any work, if ``path`` cannot be written."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise CompileError(f"{path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CompileError(f"{path}: the folder {folder} is not writable")
    if Path(path).is_dir():
        raise CompileError(f"{path}: is a folder; give a file name")


@contextmanager
def staged_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh path beside ``path`` to write (and check) the output at; rename it
    over ``path`` only when the block succeeds, delete it otherwise."""
    path = Path(path)
    check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".stage",
                               dir=path.resolve().parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Yield a file open at a temporary path beside ``path``; it replaces ``path`` only when
    the block succeeds (flushed to disk, with the usual permissions)."""
    with staged_path(path) as staged:
        with open(staged, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staged, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
