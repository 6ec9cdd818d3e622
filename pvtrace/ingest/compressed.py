"""Transparent decompression of .gz / .xz / .zst / .bz2 inputs, chosen by magic bytes, not by name.

A truncated or corrupt archive becomes one FormatError line naming the file, at whatever
point of the stream the damage is found. stdin (`-`) and FIFOs are streamed, never seeked.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import select
import stat
import sys
import time
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


FIFO_WAIT_S = float(os.environ.get("PVTRACE_FIFO_WAIT", "30"))


def is_stream(path: Path) -> bool:
    """Whether an input is read once, front to back: `-` (stdin), a FIFO, `<(...)`, a character device."""
    if str(path) == "-":
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _open_fifo(path: Path) -> BinaryIO:
    """Open a FIFO without blocking forever: wait (FIFO_WAIT_S) for a writer, then read it blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    deadline = time.monotonic() + FIFO_WAIT_S
    while not poller.poll(100):  # data, or a writer that came and went
        if time.monotonic() > deadline:
            os.close(fd)
            raise FormatError(
                f"no program wrote to this FIFO within {FIFO_WAIT_S:g} s (start the writer first, or pipe "
                "into `pvtrace ... -`; PVTRACE_FIFO_WAIT sets the wait)",
                str(path),
            )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=1 << 20)


class _Prefixed(io.RawIOBase):
    """A stream that first returns bytes already read, then the rest of the original stream (no seek)."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


def open_input(path: Path) -> tuple[BinaryIO, str | None, BinaryIO]:
    """Open a file for binary reading, decompressing when its magic says so.

    Returns the stream, the compression name (None for plain files) and the file on
    disk (whose position tells how much of it was consumed, for progress bars).
    `-` is stdin; stdin, FIFOs and other streams are never seeked (the magic is read
    once and handed back in front of the rest).
    """
    try:
        if str(path) == "-":
            raw = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=1 << 20)
        elif is_stream(path) and stat.S_ISFIFO(os.stat(path).st_mode):
            raw = _open_fifo(path)
        else:
            raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise FormatError(f"cannot open: {exc.strerror}", str(path)) from None
    head = raw.read(8)
    if raw.seekable():
        raw.seek(0)
    else:
        raw = io.BufferedReader(_Prefixed(head, raw), buffer_size=1 << 20)  # type: ignore[assignment]
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
