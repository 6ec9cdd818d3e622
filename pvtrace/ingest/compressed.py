"""Transparent decompression of .gz / .xz / .zst / .bz2 inputs, chosen by magic bytes, not by name.

A truncated or corrupt archive ends the stream where the damage is found: what came before is
read, and the damage is kept on the reader (`stream_damage`) for the caller to count as a problem
(fatal with --strict) naming the file. stdin (`-`) and FIFOs are streamed, never seeked.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import select
import stat
import sys
import time
import zlib
from collections import deque
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


_DECODERS = {
    "gzip": lambda: zlib.decompressobj(wbits=31),  # checks each member's CRC and size
    "xz": lzma.LZMADecompressor,
    "bzip2": bz2.BZ2Decompressor,
    "zstd": lambda: zstandard.ZstdDecompressor().decompressobj(),
}
_CHUNK = 1 << 15  # compressed bytes fed at a time: what a damaged chunk can lose of the decoded data


class _Decoded(io.RawIOBase):
    """A decompressed stream that reads every whole stream in the file (gzip members, xz streams, zstd
    frames back to back) and stops at the first damage, which it keeps in `damage`.

    The stdlib file readers raise at a cut and drop what their last call had decoded, and zstd's
    stream reader stops silently at a cut frame; here the decoder is fed chunk by chunk, so the data
    before the damage is all read and a cut is never taken for the end.
    """

    def __init__(self, raw: BinaryIO, kind: str):
        self._raw = raw
        self._kind = kind
        self._obj = None  # decoder of the stream being read; None between streams
        self._out: deque[bytes] = deque()  # decoded pieces not yet read
        self._view = memoryview(b"")  # the rest of the piece being read
        self._eof = False
        self.damage: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._view:
            if self._out:
                self._view = memoryview(self._out.popleft())
            elif self._eof:
                return 0
            else:
                self._fill()
        n = min(len(b), len(self._view))
        b[:n] = self._view[:n]
        self._view = self._view[n:]
        return n

    def _fill(self) -> None:
        chunk = self._raw.read(_CHUNK)
        if not chunk:
            self._eof = True
            if self._obj is not None:
                self.damage = f"{self._kind} archive is truncated (the data ends inside a compressed stream)"
            return
        try:
            self._feed(chunk)
        except _DECODE_ERRORS as exc:
            self._eof = True
            self.damage = f"{self._kind} archive is corrupt ({exc.__class__.__name__}: {exc})"

    def _feed(self, data: bytes) -> None:
        while data:
            if self._obj is None:
                data = data.lstrip(b"\0")  # padding between streams (xz stream padding)
                if not data:
                    return
                self._obj = _DECODERS[self._kind]()
            self._out.append(self._obj.decompress(data))
            if not self._obj.eof:
                return
            data = self._obj.unused_data
            self._obj = None

    def close(self) -> None:
        self._raw.close()
        super().close()


def stream_damage(stream: BinaryIO) -> str | None:
    """Why a stream from open_input ended early (a truncated or corrupt archive), or None."""
    return getattr(getattr(stream, "raw", None), "damage", None)


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
    reader = io.BufferedReader(_Decoded(raw, kind), buffer_size=1 << 20)
    return reader, kind, raw  # type: ignore[return-value]
