"""Reading text inputs as blocks of whole lines, so any size parses in bounded memory.

A block is a run of bytes that ends at a newline (the last one may lack it). Each block
is scanned into a (line, text) frame by polars in one call; the parsers then work on
whole columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import polars as pl

BLOCK_BYTES = 32 << 20


def iter_byte_blocks(stream: BinaryIO, head: bytes = b"", block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Blocks of about block_bytes of whole lines; `head` is data already read from the stream."""
    carry = head
    while True:
        chunk = stream.read(max(block_bytes - len(carry), 1 << 16))
        if not chunk:
            if carry:
                yield carry
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:  # no line end yet: keep reading
            carry += chunk
            continue
        block = carry + chunk[: cut + 1] if carry else chunk[: cut + 1]
        carry = chunk[cut + 1 :]
        yield block


def scan_block(data: bytes | Path, first_line: int) -> pl.LazyFrame:
    """A block (or a whole plain file) as a lazy (line Int64, text) frame; lines end at \\n or \\r\\n."""
    return (
        pl.scan_lines(data, name="text", glob=False)
        .with_row_index("line", offset=first_line)
        .with_columns(pl.col("line").cast(pl.Int64))
    )


def replace_invalid_utf8(data: bytes) -> bytes:
    """The block with undecodable bytes replaced by U+FFFD."""
    return data.decode("utf-8", errors="replace").encode("utf-8")
