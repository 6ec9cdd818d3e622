"""The Series forms of frame operations (analyze/frames.py) give exactly the frames of the
DataFrame methods and expressions they stand for, nulls and empty inputs included."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtrace.analyze import frames

values = st.lists(st.one_of(st.none(), st.integers(-3, 3)), max_size=12)


def _frame(xs: list[int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"k": xs, "v": [None if x is None else x * 10 for x in xs]}, schema={"k": pl.Int64, "v": pl.Int64}
    )


@settings(max_examples=80, deadline=None)
@given(xs=values, mask=st.lists(st.one_of(st.none(), st.booleans()), max_size=12))
def test_filtered_is_filter(xs, mask):
    df = _frame(xs)
    m = pl.Series((mask + [True] * len(xs))[: len(xs)], dtype=pl.Boolean)
    assert frames.filtered(df, m).equals(df.filter(m))


@settings(max_examples=80, deadline=None)
@given(xs=values)
def test_shifts_and_comparisons_are_the_expressions(xs):
    df = _frame(xs)
    k = df["k"]
    want = df.select(
        pl.col("k").shift(-1).alias("next"),
        (pl.col("k") == pl.col("k").shift(-1)).fill_null(False).alias("same_next"),
        (pl.col("k") == pl.col("k").shift(1)).fill_null(False).alias("same_prev"),
        pl.col("k").eq_missing(pl.col("k").shift(1)).fill_null(False).alias("same_prev_or_null"),
        pl.col("k").clip(-1, 2).alias("clipped"),
    )
    got = pl.DataFrame(
        [
            frames.next_value(k).alias("next"),
            frames.same_next(k).alias("same_next"),
            frames.same_prev(k).alias("same_prev"),
            frames.same_prev_or_null(k).alias("same_prev_or_null"),
            frames.clipped(k, -1, 2).alias("clipped"),
        ]
    )
    assert got.equals(want)


def test_with_series_replaces_in_place_and_appends():
    df = _frame([1, None, 3])
    cols = [pl.Series("v", [7, 8, 9]), pl.Series("w", [1, 2, 3])]
    assert frames.with_series(df, cols).equals(df.with_columns(*cols))
    assert frames.with_series(df, cols[1:]).equals(df.with_columns(cols[1]))
    assert frames.full(2, None, pl.Int64).equals(pl.Series([None, None], dtype=pl.Int64))
