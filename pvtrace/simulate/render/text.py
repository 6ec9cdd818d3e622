"""printf-style formatting as polars expressions, and batched line writing.

Renderers build every output line with these vectorized expressions (no Python
loop per event), then write the lines a batch at a time so the text of a long
run is never held in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

import polars as pl

BATCH_LINES = 200_000


def _hex_series(values: pl.Series, width: int) -> pl.Series:
    """Format each distinct value once in Python, then map: traces repeat few distinct numbers
    (rips, APIC ids, lock addresses), so this costs one dictionary lookup per row."""
    distinct = values.drop_nulls().unique().to_list()
    texts = [format(v, f"0{width}x") for v in distinct]
    return values.replace_strict(distinct, texts, default=None, return_dtype=pl.String)


def hex_digits(value: pl.Expr, width: int = 16) -> pl.Expr:
    """`%0<width>x`: lower-case hex, zero padded to at least `width` digits."""
    return value.cast(pl.UInt64).map_batches(lambda s: _hex_series(s, width), return_dtype=pl.String)


def hex_lx(value: pl.Expr) -> pl.Expr:
    """`%lx`: lower-case hex without padding (0 prints as 0)."""
    return hex_digits(value, 0)


def rjust(value: pl.Expr, width: int) -> pl.Expr:
    """`%<width>s` / `%<width>d`: right-aligned, never truncated."""
    return value.cast(pl.String).str.pad_start(width)


def ljust(value: pl.Expr, width: int) -> pl.Expr:
    """`%-<width>s` / `%-<width>d`: left-aligned, never truncated."""
    return value.cast(pl.String).str.pad_end(width)


def zpad(value: pl.Expr, width: int) -> pl.Expr:
    """`%0<width>d` for non-negative integers."""
    return value.cast(pl.String).str.zfill(width)


def timestamp(ts_ns: pl.Expr, decimals: int) -> pl.Expr:
    """`%5lu.%06lu` (decimals=6, truncating like the kernel) or `%5lu.%09lu` (decimals=9)."""
    secs = ts_ns // 1_000_000_000
    frac = (ts_ns % 1_000_000_000) // (10 ** (9 - decimals))
    return pl.concat_str([rjust(secs, 5), pl.lit("."), zpad(frac, decimals)])


def write_lines(batches: Iterator[pl.Series], out: TextIO) -> int:
    """Write each batch of lines (a String Series) followed by newlines; return the line count."""
    n = 0
    for lines in batches:
        if lines.len() == 0:
            continue
        out.write(lines.str.join("\n").item())
        out.write("\n")
        n += lines.len()
    return n


def batched(frame: pl.DataFrame, size: int | None = None) -> Iterator[pl.DataFrame]:
    """Consecutive row slices of at most `size` (default BATCH_LINES) rows."""
    size = size or BATCH_LINES
    for start in range(0, frame.height, size):
        yield frame.slice(start, size)
