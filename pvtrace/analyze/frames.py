"""Frame operations through Series, for the many small frames of a small trace.

A DataFrame method runs a query (planning, the thread pool: about 0.1 ms however small the
frame), while most Series methods call their kernel directly. The analysis of a guest sample
of a thousand events was some 1,700 such queries on frames of a few hundred rows; the helpers
here give the same frames without one. Big frames keep the DataFrame method, which works on
their columns in parallel.
"""

from __future__ import annotations

import polars as pl

# Rows up to which column-by-column Series work beats one parallel query.
SMALL = 100_000


def filtered(df: pl.DataFrame, mask: pl.Series) -> pl.DataFrame:
    """`df.filter(mask)`: rows where `mask` is true (null: dropped)."""
    if df.height > SMALL:
        return df.filter(mask)
    if mask.null_count() == 0 and mask.all():
        return df
    return pl.DataFrame([c.filter(mask) for c in df.get_columns()])


def with_series(df: pl.DataFrame, columns: list[pl.Series]) -> pl.DataFrame:
    """`df.with_columns(*columns)` for Series of its height: a column of the same name is
    replaced in place, the others appended."""
    names = [c.name for c in columns]
    if len(set(names)) < len(names):
        return df.with_columns(*columns)
    if set(df.columns).isdisjoint(names):
        return df.hstack(columns)
    new = dict(zip(names, columns, strict=True))
    kept = [new.pop(c.name, c) for c in df.get_columns()]
    return pl.DataFrame([*kept, *new.values()])


def sorted_flag(df: pl.DataFrame, column: str) -> pl.DataFrame:
    """`df.set_sorted(column)`."""
    return pl.DataFrame([c.set_sorted() if c.name == column else c for c in df.get_columns()])


def larger(a: pl.Series, b: pl.Series) -> pl.Series:
    """Element-wise max of two Series without nulls (`pl.max_horizontal`)."""
    return a.zip_with(a >= b, b)


def smaller(a: pl.Series, b: pl.Series) -> pl.Series:
    """Element-wise min of two Series without nulls (`pl.min_horizontal`)."""
    return a.zip_with(a <= b, b)


def full(n: int, value: object, dtype: pl.DataType) -> pl.Series:
    """`value` repeated n times (`pl.repeat`), null for None."""
    return pl.Series([value], dtype=dtype).new_from_index(0, n)


def next_value(s: pl.Series) -> pl.Series:
    """`s.shift(-1)`: each row's next value, null on the last row."""
    return s.slice(1).append(full(min(1, s.len()), None, s.dtype))


def same_next(s: pl.Series) -> pl.Series:
    """True where the next row holds the same value (False on the last row and for nulls)."""
    if s.len() == 0:
        return pl.Series(s.name, [], dtype=pl.Boolean)
    if s.null_count():
        return (s == s.shift(-1)).fill_null(False)
    return (s.slice(0, s.len() - 1) == s.slice(1)).append(pl.Series([False]))


def same_prev(s: pl.Series) -> pl.Series:
    """True where the previous row holds the same value (False on the first row and for nulls)."""
    if s.len() == 0:
        return pl.Series(s.name, [], dtype=pl.Boolean)
    if s.null_count():
        return (s == s.shift(1)).fill_null(False)
    return pl.Series([False]).append(s.slice(1) == s.slice(0, s.len() - 1))


def same_prev_or_null(s: pl.Series) -> pl.Series:
    """`s.eq_missing(s.shift(1))`: the previous row's value is the same (nulls equal each other;
    False on the first row)."""
    if s.len() == 0 or s.null_count():
        return s.eq_missing(s.shift(1)).fill_null(False)
    return same_prev(s)


def clipped(s: pl.Series, lo: int, hi: int) -> pl.Series:
    """`s.clip(lo, hi)` of an integer Series."""
    if s.null_count() or s.len() > SMALL:
        return s.clip(lo, hi)
    return smaller(larger(s, full(s.len(), lo, s.dtype)), full(s.len(), hi, s.dtype))


def filled(s: pl.Series, value: object) -> pl.Series:
    """`s.fill_null(value)`."""
    return s.fill_null(value) if s.null_count() else s
