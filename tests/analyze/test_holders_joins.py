"""holders' packed-key join on (ts, pcpu) against polars' join on the two columns."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtrace.analyze.hold_inference import _same_instant_and_pcpu

rows = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 6)), st.one_of(st.none(), st.integers(-2, 5))), max_size=10
)


@settings(max_examples=200, deadline=None)
@given(rows, rows)
def test_same_instant_and_pcpu_is_the_two_column_join(left, right):
    def frame(rs, name):
        return pl.DataFrame(
            [(ts, cpu, i) for i, (ts, cpu) in enumerate(rs)],
            schema={"ts": pl.Int64, "pcpu": pl.Int32, name: pl.Int64},
            orient="row",
        )

    a, b = frame(left, "a"), frame(right, "b")
    got = _same_instant_and_pcpu(a, b).sort("a", "b")
    want = a.join(b, on=["ts", "pcpu"], how="inner").sort("a", "b")
    assert got.select(want.columns).equals(want)
