"""Writing outputs safely: every output of a run is written to a temporary file beside its
destination, and all of them replace their destinations together, only when the whole run
succeeded. A failure, an interrupt or SIGTERM removes the temporary files and leaves every
existing file as it was; only SIGKILL (which no process can catch) leaves a ``.*.stage``
file behind.
"""
from __future__ import annotations

import os
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import CompileError


class Terminated(BaseException):
    """SIGTERM arrived: unwind (removing staged files) and exit."""


_termination = {"requested": False}


def request_termination() -> None:
    """Record SIGTERM. The handler also raises :class:`Terminated`, but an exception raised
    by a signal handler can be swallowed where it lands (inside an import, CPython's
    compile() loses it), so commits check this flag too: nothing is committed after it."""
    _termination["requested"] = True


def termination_requested() -> bool:
    return _termination["requested"]


def raise_if_terminated() -> None:
    if _termination["requested"]:
        raise Terminated()


def check_writable(path: str | Path) -> None:
    """Fail early, before any work, if ``path`` cannot be written as a regular file."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()  # a link is followed deliberately: its target is written
    folder = path.absolute().parent
    if not folder.is_dir():
        raise CompileError(f"{path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CompileError(f"{path}: the folder {folder} is not writable")
    if path.is_dir():
        raise CompileError(f"{path}: is a folder; give a file name")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise CompileError(f"{path}: exists and is not a regular file (a FIFO, a device or a "
                           "socket); give the name of a file to write")


def destination(path: str | Path) -> Path:
    """Where writing ``path`` really goes: the target of a symlink, else the path itself."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path.absolute()


class StagedOutputs:
    """Outputs staged beside their destinations and committed together.

    >>> with StagedOutputs() as outputs:
    ...     write(outputs.stage("model.npz"))
    ...     write(outputs.stage("report.json"))
    ... # both replaced here, or neither
    """

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []
        self.optional: set[Path] = set()  # adopted files a write may not have made

    def stage(self, path: str | Path) -> Path:
        final = destination(path)
        check_writable(final)
        while True:  # the name is recorded before the file exists: an interrupt never leaks it
            tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}.stage"
            self.staged.append((tmp, final))
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                return tmp
            except FileExistsError:
                self.staged.pop()

    def adopt(self, tmp: Path, path: str | Path) -> None:
        """A file written at ``tmp`` (beside a staged output) replaces ``path`` on commit."""
        final = destination(path)
        check_writable(final)
        self.staged.append((Path(tmp), final))
        self.optional.add(Path(tmp))

    def commit(self) -> None:
        raise_if_terminated()
        mode = 0o666 & ~_umask()  # staged files are 0600; give the usual mode
        self.staged = [(tmp, final) for tmp, final in self.staged
                       if tmp not in self.optional or tmp.exists()]
        # every file first goes beside its destination (a companion whose name is a link to
        # another folder or file system was written beside the main output): a copy that
        # fails here has replaced nothing yet
        self.staged = [(self.beside(tmp, final), final) for tmp, final in list(self.staged)]
        for tmp, _ in self.staged:
            os.chmod(tmp, mode)
        for tmp, final in self.staged:
            os.replace(tmp, final)
        self.staged = []

    def beside(self, tmp: Path, final: Path) -> Path:
        """``tmp`` moved into ``final``'s folder (a rename there, a copy across file
        systems), its new name recorded before it exists so that discard removes it."""
        if tmp.parent == final.parent:
            return tmp
        moved = final.parent / f".{final.name}.{secrets.token_hex(4)}.stage"
        self.staged.append((moved, final))  # removed by discard() if anything fails
        check_writable(final)
        try:
            shutil.move(tmp, moved)
        except OSError as exc:
            raise CompileError(f"{final}: cannot write it ({exc.strerror or exc}); nothing "
                               "was replaced") from exc
        return moved

    def discard(self) -> None:
        for tmp, _ in self.staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self.staged = []

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            finally:
                self.discard()
        else:
            self.discard()


@contextmanager
def staged_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh path beside ``path`` to write (and check) the output at; rename it
    over ``path`` only when the block succeeds, delete it otherwise."""
    with StagedOutputs() as outputs:
        yield outputs.stage(path)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Yield a file open at a temporary path beside ``path``; it replaces ``path`` only when
    the block succeeds (flushed to disk)."""
    with staged_path(path) as staged:
        with open(staged, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
