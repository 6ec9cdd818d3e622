"""Reading text inputs as blocks of whole lines, so any size parses in bounded memory.

A block is decoded into a polars frame (line number, text) in one call; the parsers
then work on whole columns. Blocks always end at a newline (the last one may lack it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import polars as pl

BLOCK_BYTES = 64 << 20


@dataclass
class LineBlock:
    """Whole lines of an input: `lines` has columns line (1-based Int64) and text (String)."""

    lines: pl.DataFrame
    n_bytes: int
    n_invalid_utf8: int


def _decode(data: bytes) -> tuple[pl.Series, int]:
    """Split bytes into lines (\\n or \\r\\n); undecodable bytes become U+FFFD and are counted."""
    try:
        return pl.read_lines(data, name="text").to_series(), 0
    except pl.exceptions.ComputeError:
        text = data.decode("utf-8", errors="replace")
        s = pl.read_lines(text.encode("utf-8"), name="text").to_series()
        return s, int(s.str.contains("\ufffd", literal=True).sum())


def iter_line_blocks(
    stream: BinaryIO, head: bytes = b"", block_bytes: int = BLOCK_BYTES, first_line: int = 1
) -> Iterator[LineBlock]:
    """Yield LineBlocks of about block_bytes each; `head` is data already read from the stream."""
    carry = head
    line_no = first_line
    eof = False
    while not eof:
        want = max(block_bytes - len(carry), 1 << 16)
        chunk = stream.read(want)
        eof = not chunk
        data = carry + chunk if chunk else carry
        if not eof:
            cut = data.rfind(b"\n")
            if cut < 0:  # a single line longer than the block: keep reading
                carry = data
                continue
            carry = data[cut + 1 :]
            data = data[: cut + 1]
        else:
            carry = b""
        if not data:
            break
        texts, n_bad = _decode(data)
        lines = pl.DataFrame(
            {"line": pl.int_range(line_no, line_no + texts.len(), dtype=pl.Int64, eager=True), "text": texts}
        )
        line_no += texts.len()
        yield LineBlock(lines=lines, n_bytes=len(data), n_invalid_utf8=n_bad)
