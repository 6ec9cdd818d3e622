"""Transparent decompression of .gz / .xz / .zst / .bz2 inputs, chosen by magic bytes, not by name.

A truncated or corrupt archive becomes one FormatError line naming the file, at whatever
point of the stream the damage is found.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from pathlib import Path
from typing import BinaryIO

import zstandard

from pvtrace.errors import FormatError

MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)

_DECODE_ERRORS = (EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError, OSError, ValueError)


def compression_of(head: bytes) -> str | None:
    """The compression a file starts with, or None for a plain file."""
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    return None


class _CheckedReader(io.RawIOBase):
    """Wraps a decompressing stream so decoder failures become one-line FormatErrors."""

    def __init__(self, inner: BinaryIO, path: str, kind: str):
        self._inner = inner
        self._path = path
        self._kind = kind

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(b))
        except _DECODE_ERRORS as exc:
            raise FormatError(
                f"{self._kind} archive is truncated or corrupt ({exc.__class__.__name__}: {exc})", self._path
            ) from None
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        self._inner.close()
        super().close()


class _ZstdWholeCheck(io.RawIOBase):
    """zstd stream readers stop silently at a cut frame; this notices the missing frame end."""

    def __init__(self, raw: BinaryIO):
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = None  # decoder of the frame being read; None between frames
        self._raw = raw
        self._buf = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> None:
        while data:
            if self._obj is None:
                self._obj = self._dctx.decompressobj()
            self._buf += self._obj.decompress(data)
            if not self._obj.eof:
                return
            data = self._obj.unused_data  # several frames back to back (zstd -c a b > c)
            self._obj = None

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        while not self._eof and (n < 0 or len(self._buf) < n):
            chunk = self._raw.read(1 << 20)
            if not chunk:
                self._eof = True
                if self._obj is not None:
                    raise EOFError("compressed data ends before the end of the zstd frame")
                break
            self._feed(chunk)
        if n < 0:
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = bytes(self._buf[:n])
            del self._buf[:n]
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_input(path: Path) -> tuple[BinaryIO, str | None, BinaryIO]:
    """Open a file for binary reading, decompressing when its magic says so.

    Returns the stream, the compression name (None for plain files) and the file on
    disk (whose position tells how much of it was consumed, for progress bars).
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise FormatError(f"cannot open: {exc.strerror}", str(path)) from None
    head = raw.read(8)
    raw.seek(0)
    kind = compression_of(head)
    if kind is None:
        return raw, None, raw
    # the decoders are returned open (inside the reader); the caller closes them
    inner: BinaryIO
    if kind == "gzip":
        inner = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
    elif kind == "xz":
        inner = lzma.LZMAFile(raw)  # type: ignore[assignment]  # noqa: SIM115
    elif kind == "bzip2":
        inner = bz2.BZ2File(raw)  # type: ignore[assignment]
    else:
        inner = _ZstdWholeCheck(raw)  # type: ignore[assignment]
    reader = io.BufferedReader(_CheckedReader(inner, str(path), kind), buffer_size=1 << 20)
    return reader, kind, raw  # type: ignore[return-value]
