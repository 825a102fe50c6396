"""Reading ``.npz`` members defensively: header first, sizes checked, never unpickling.

``np.load`` trusts the file: an ``.npy`` header may claim 10^10 floats (a MemoryError or a
long allocation before anything fails), a truncated member fails with raw numpy errors,
and a compressed member may inflate without bound. :class:`SafeNpz` reads the header of a
member, checks its dtype, its shape and that the member holds exactly the bytes the header
claims, and only then reads the data, into a buffer of exactly that size.
"""
from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import CompileError
from ..ir.index_runs import expand

#: the suffix of an integer member stored as arithmetic runs
RUNS = ".runs"

INT64_MAX = 2**63 - 1
#: a compressed member may inflate this much (plus a MiB) before it counts as a zip bomb
MAX_INFLATION = 1000


class ArtifactError(CompileError):
    """A compiled file that cnn2mlp cannot load; the message names the member."""


class SafeNpz:
    """The arrays of an ``.npz`` file, read one member at a time with checks."""

    def __init__(self, path: str | Path, max_bytes: int, handle: BinaryIO | None = None) -> None:
        """``handle``: the file, already open (its owner closes it), else ``path`` is opened."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            self.zip = zipfile.ZipFile(self.path if handle is None else handle)
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
        """Whether the file holds ``key``, as an array or (an integer array) as runs."""
        return f"{key}.npy" in self.members or f"{key}{RUNS}.npy" in self.members

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
        if f"{key}.npy" not in self.members and f"{key}{RUNS}.npy" in self.members and \
                ndim in (None, 1):
            return self.runs(key)
        values = self.array(key, "iu", ndim)
        if values.dtype == np.uint64 and values.size and int(values.max()) > INT64_MAX:
            raise self.fail(key, f"holds {int(values.max()):,}, beyond any index or size")
        return values.astype(np.int64)

    def runs(self, key: str) -> np.ndarray:
        """An integer array stored as arithmetic runs (``key.runs``: rows of start, step,
        length; ``cnn2mlp.ir.index_runs``), expanded once its size and values are known
        to be in range."""
        name = f"{key}{RUNS}"
        runs = self.integers(name, ndim=2)
        if runs.shape[1:] != (3,):
            raise self.fail(name, f"has shape {runs.shape}, the format wants (runs, 3)")
        starts, steps, lengths = runs[:, 0], runs[:, 1], runs[:, 2]
        if len(runs) and lengths.min() < 1:
            raise self.fail(name, "holds a run shorter than one")
        total = float(lengths.astype(np.float64).sum())
        if total * 8 > self.max_bytes:
            raise self.fail(name, f"expands to {total:,.0f} integers, above the limit of "
                                  f"{self.max_bytes:,} bytes")
        reach = np.abs(starts.astype(np.float64)) + np.abs(steps.astype(np.float64)) * (
            lengths - 1)
        if len(runs) and reach.max() >= 2.0**62:
            raise self.fail(name, "reaches values beyond any index or size")
        return expand(runs)

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
        start = handle.read(10)
        length = int.from_bytes(start[8:10], "little")
        plain = None
        if start[:8] == PLAIN_MAGIC and length <= MAX_HEADER:
            start += handle.read(length)
            plain = plain_header(start[10:], length)
        if plain is not None:
            shape, fortran, dtype = plain
        else:
            shape, fortran, dtype = self._numpy_header(key, start, handle)
        if dtype.hasobject:
            raise self.fail(key, "holds pickled objects, which cnn2mlp never loads")
        if any(d < 0 for d in shape):
            raise self.fail(key, f"has a negative dimension {shape}")
        return tuple(int(d) for d in shape), bool(fortran), dtype

    def _numpy_header(self, key: str, start: bytes, handle):
        """Any header numpy's own reader takes (the bytes read so far put back first)."""
        fmt = np.lib.format
        handle = Prefixed(start, handle)
        try:
            major, _ = fmt.read_magic(handle)
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            return read(handle, max_header_size=MAX_HEADER)
        except (ValueError, TypeError, SyntaxError, EOFError) as exc:
            raise self.fail(key, f"has no valid .npy header ({exc})") from exc


#: version 1.0 of the .npy format, as ``np.save`` writes it
PLAIN_MAGIC = b"\x93NUMPY\x01\x00"
#: the longest header read (numpy's limit for files it did not write itself)
MAX_HEADER = 10_000
#: the header ``np.save`` writes for a plain array: a little-endian or byte type, C order
#: or Fortran, a shape of whole numbers (anything else goes to numpy's reader)
PLAIN_HEADER = re.compile(
    rb"\{'descr': '([<|][fiub][1248])', 'fortran_order': (True|False), "
    rb"'shape': \(((?:\d+, )*\d+,?|)\), \} *\n")


def plain_header(header: bytes, length: int):
    """(shape, fortran, dtype) of a header ``np.save`` wrote, read by a regular expression
    (numpy's reader evaluates it as a Python literal: half of DenseNet121's cached load at
    32x32 went to its 8,567 headers); None for any other, which numpy's reader reads."""
    found = PLAIN_HEADER.fullmatch(header) if len(header) == length else None
    if found is None:
        return None
    shape = tuple(int(d) for d in found.group(3).split(b",") if d.strip())
    return shape, found.group(2) == b"True", np.dtype(found.group(1).decode())


class Prefixed:
    """A file whose first bytes were read already: they are read again first."""

    def __init__(self, start: bytes, handle) -> None:
        self.pending, self.handle = start, handle

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            data, self.pending = self.pending + self.handle.read(), b""
            return data
        head, self.pending = self.pending[:size], self.pending[size:]
        return head + (self.handle.read(size - len(head)) if len(head) < size else b"")
