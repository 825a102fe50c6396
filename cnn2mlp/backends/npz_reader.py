"""Reading ``.npz`` members defensively: header first, sizes checked, never unpickling.

``np.load`` trusts the file: an ``.npy`` header may claim 10^10 floats (a MemoryError or a
long allocation before anything fails), a truncated member fails with raw numpy errors,
and a compressed member may inflate without bound. :class:`SafeNpz` reads the header of a
member, checks its dtype, its shape and that the member holds exactly the bytes the header
claims, and only then reads the data, into a buffer of exactly that size.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CompileError

INT64_MAX = 2**63 - 1
#: a compressed member may inflate this much (plus a MiB) before it counts as a zip bomb
MAX_INFLATION = 1000


class ArtifactError(CompileError):
    """A compiled file that cnn2mlp cannot load; the message names the member."""


class SafeNpz:
    """The arrays of an ``.npz`` file, read one member at a time with checks."""

    def __init__(self, path: str | Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise ArtifactError(f"{self.path}: not a cnn2mlp .npz file ({exc})") from exc
        self.members = {info.filename: info for info in self.zip.infolist()}

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "SafeNpz":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, key: str) -> bool:
        return f"{key}.npy" in self.members

    def fail(self, key: str, why: str) -> ArtifactError:
        return ArtifactError(f"{self.path}: member {key!r} {why}; recompile the model")

    def header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        """(shape, fortran_order, dtype) of a member, from its header alone."""
        info = self._info(key)
        try:
            with self.zip.open(info) as handle:
                return self._read_header(key, handle)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise self.fail(key, f"cannot be read ({exc})") from exc

    def array(self, key: str, kinds: str, ndim: int | None = None) -> np.ndarray:
        """Read a member whose dtype kind is one of ``kinds`` (``"f"``, ``"i"``, ``"U"``…)."""
        info = self._info(key)
        try:
            with self.zip.open(info) as handle:
                shape, fortran, dtype = self._read_header(key, handle)
                if dtype.kind not in kinds:
                    raise self.fail(key, f"has dtype {dtype}, the format wants kind {kinds!r}")
                if ndim is not None and len(shape) != ndim:
                    raise self.fail(key, f"has shape {shape}, the format wants {ndim} axes")
                nbytes = math.prod(shape) * dtype.itemsize
                if handle.tell() + nbytes != info.file_size:
                    raise self.fail(key, f"claims {nbytes:,} bytes of data but holds "
                                         f"{info.file_size - handle.tell():,} (truncated or "
                                         "damaged)")
                buffer = bytearray(nbytes)
                if handle.readinto(memoryview(buffer)) != nbytes:
                    raise self.fail(key, "is truncated")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:  # CRC errors, short reads
            raise self.fail(key, f"cannot be read ({exc})") from exc
        return np.frombuffer(buffer, dtype).reshape(shape, order="F" if fortran else "C")

    def integers(self, key: str, ndim: int | None = None) -> np.ndarray:
        """An integer member as int64, whatever integer type the file stores: every later
        check (order, range) is made in a signed type, where ``np.diff`` cannot wrap around
        as it does on unsigned arrays (a decreasing uint64 row pointer passed as
        non-decreasing and crashed the kernels)."""
        values = self.array(key, "iu", ndim)
        if values.dtype == np.uint64 and values.size and int(values.max()) > INT64_MAX:
            raise self.fail(key, f"holds {int(values.max()):,}, beyond any index or size")
        return values.astype(np.int64)

    def _info(self, key: str) -> zipfile.ZipInfo:
        info = self.members.get(f"{key}.npy")
        if info is None:
            raise self.fail(key, "is missing")
        if info.file_size > self.max_bytes:
            raise self.fail(key, f"holds {info.file_size:,} bytes, above the limit of "
                                 f"{self.max_bytes:,}")
        if info.compress_type != zipfile.ZIP_STORED and \
                info.file_size > MAX_INFLATION * info.compress_size + 2**20:
            raise self.fail(key, f"inflates {info.compress_size:,} bytes to {info.file_size:,} "
                                 "(a zip bomb?)")
        return info

    def _read_header(self, key: str, handle) -> tuple[tuple[int, ...], bool, np.dtype]:
        fmt = np.lib.format
        try:
            major, _ = fmt.read_magic(handle)
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, fortran, dtype = read(handle, max_header_size=10_000)
        except (ValueError, TypeError, SyntaxError, EOFError) as exc:
            raise self.fail(key, f"has no valid .npy header ({exc})") from exc
        if dtype.hasobject:
            raise self.fail(key, "holds pickled objects, which cnn2mlp never loads")
        if any(d < 0 for d in shape):
            raise self.fail(key, f"has a negative dimension {shape}")
        return tuple(int(d) for d in shape), bool(fortran), dtype
