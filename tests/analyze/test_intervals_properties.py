"""The interval primitives against plain-Python definitions, on random small tables.

lookup(), union(), sort_by_key(), dense_sums(), coverage_integral(), count_before() and
split(any_order=True) take fast paths (as-of joins on composite positions, radix sorts, running
maxima, binary searches) that depend on how their inputs
happen to be ordered; each property draws inputs in and out of those orders.
"""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtrace.analyze.intervals import (
    Window,
    changes_to_partition,
    count_before,
    coverage_integral,
    dense_sums,
    lookup,
    sort_by_key,
    split,
    union,
)

I64 = pl.Int64()
keys = st.integers(0, 3)
times = st.integers(-5, 40)


@settings(max_examples=300, deadline=None)
@given(
    table=st.lists(st.tuples(keys, times), max_size=15, unique=True),
    points=st.one_of(  # with and without null keys and times (a different path each)
        st.lists(st.tuples(keys, times), max_size=15),
        st.lists(st.tuples(st.one_of(st.none(), keys), st.one_of(st.none(), times)), max_size=15),
    ),
    direction=st.sampled_from(["backward", "forward"]),
    strict=st.booleans(),
    canonical=st.booleans(),
)
def test_lookup_finds_the_nearest_row_of_the_same_key(table, points, direction, strict, canonical):
    # a table sorted by (key, on), or by on alone (as tables in canonical order are)
    rows = sorted(table, key=(lambda r: (r[1], r[0])) if canonical else None)
    tab = pl.DataFrame(rows, schema={"key": I64, "on": I64}, orient="row").with_columns(
        (pl.col("on") * 10).alias("value")
    )
    pts = pl.DataFrame(points, schema={"k": I64, "t": I64}, orient="row")
    got = lookup(
        pts, tab, by="k", on="t", table_on="on", values=["value"], direction=direction, strict=strict
    )

    def expected(k, t):
        if k is None or t is None:
            return None
        if direction == "backward":
            hits = [i for i, (kk, on) in enumerate(rows) if kk == k and (on < t if strict else on <= t)]
            return max(hits, key=lambda i: rows[i][1], default=None)
        hits = [i for i, (kk, on) in enumerate(rows) if kk == k and (on > t if strict else on >= t)]
        return min(hits, key=lambda i: rows[i][1], default=None)

    want = [expected(k, t) for k, t in points]
    assert got["_row"].to_list() == want
    assert got["value"].to_list() == [None if i is None else rows[i][1] * 10 for i in want]
    assert got.select("k", "t").rows() == points


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, times, st.integers(-3, 12)), max_size=20))
def test_union_merges_overlapping_and_touching_intervals(rows):
    rows = [(k, s, s + d) for k, s, d in rows]
    got = union(pl.DataFrame(rows, schema={"key": I64, "start": I64, "end": I64}, orient="row"), key="key")
    want = []
    for k in sorted({k for k, s, e in rows if e > s}):
        merged: list[list[int]] = []
        for s, e in sorted((s, e) for kk, s, e in rows if kk == k and e > s):
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        want += [(k, s, e) for s, e in merged]
    assert got.rows() == want


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(-70_000, 70_000)), max_size=30), st.sampled_from([16, 32, 64])
)
def test_sort_by_key_is_a_stable_sort(values, bits):
    if bits == 16:  # the radix path: keys spanning fewer than 2**16 values
        values = [None if v is None else v % 300 for v in values]
    if bits == 64:  # polars' sort: keys spanning 2**32 values or more
        values = [None if v is None else v * 2**17 for v in values]
    df = pl.DataFrame({"k": values, "i": list(range(len(values)))}, schema={"k": I64, "i": I64})
    got = sort_by_key(df, "k")
    want = sorted(zip(values, range(len(values)), strict=True), key=lambda r: (r[0] is not None, r[0] or 0))
    assert got.rows() == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(-(2**40), 2**40)), max_size=16), st.booleans())
def test_dense_sums_are_exact_per_key(rows, huge):
    # huge values (up to 2**58, 16 of them stay inside Int64) leave float64's exact range: the
    # sums must still be exact (another path)
    rows = [(k, v * 2**18 if huge else v) for k, v in rows]
    df = pl.DataFrame(rows, schema={"k": I64, "v": I64}, orient="row")
    got = dense_sums(df, "k", 7)
    assert got.rows() == [(k, sum(v for kk, v in rows if kk == k)) for k in range(7)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(keys, times, st.integers(0, 12)), max_size=20),
    st.lists(st.tuples(keys, times, times), max_size=12),
)
def test_coverage_integral_counts_open_intervals_over_time(rows, points):
    iv = pl.DataFrame(
        [(k, s, s + d) for k, s, d in rows], schema={"k": I64, "start": I64, "end": I64}, orient="row"
    )
    pts = pl.DataFrame(points, schema={"k": I64, "a": I64, "b": I64}, orient="row")
    got = coverage_integral(iv, pts, key="k", at=("a", "b"))

    def expected(k, t):  # each interval adds its length up to t
        return sum(max(0, min(t, s + d) - s) for kk, s, d in rows if kk == k)

    assert [s.to_list() for s in got] == [
        [expected(k, a) for k, a, _ in points],
        [expected(k, b) for k, _, b in points],
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(st.none(), keys), st.one_of(st.none(), times)), max_size=20),
    st.lists(st.tuples(st.one_of(st.none(), keys), st.one_of(st.none(), times)), max_size=12),
)
def test_count_before_counts_rows_of_the_key_strictly_earlier(rows, points):
    tab = pl.DataFrame(rows, schema={"k": I64, "t": I64}, orient="row")
    pts = pl.DataFrame(points, schema={"pk": I64, "pt": I64}, orient="row")
    got = count_before(tab, pts, key="k", at="t", by="pk", on="pt")

    def expected(k, t):
        if k is None or t is None:
            return None
        return sum(1 for kk, tt in rows if kk == k and tt is not None and tt < t)

    assert got.to_list() == [expected(k, t) for k, t in points]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(keys, times, st.integers(0, 30)), max_size=20),
    st.lists(st.tuples(keys, times), max_size=10),
)
def test_split_in_any_order_gives_the_same_rows(rows, changes):
    window = Window(0, 40)
    iv = pl.DataFrame(
        [(i, k, s, s + d) for i, (k, s, d) in enumerate(rows)],
        schema={"id": I64, "k": I64, "start": I64, "end": I64},
        orient="row",
    ).with_columns(pl.col("start", "end").clip(0, 40))
    ch = pl.DataFrame(sorted(changes), schema={"key": I64, "ts": I64}, orient="row").with_columns(
        pl.col("ts").clip(0, 40), (pl.col("ts") % 3).alias("v")
    )
    part = changes_to_partition(ch, key="key", values=["v"], n_keys=4, window=window, initial={"v": -1})
    ordered = split(iv, part, by="k", window=window, values=["v"])
    anyhow = split(iv, part, by="k", window=window, values=["v"], any_order=True)
    assert sorted(anyhow.rows()) == sorted(ordered.rows())
