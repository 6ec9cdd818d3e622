"""The polars aggregations that keep pages small: histograms, clipping, coarsening."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtrace.report.aggregate import bin_overlaps, clip_intervals, coarsen_intervals, log_histogram


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=0, max_size=200))
def test_log_histogram_counts_every_positive_value_in_its_bin(values):
    df = pl.DataFrame({"v": values}, schema={"v": pl.Int64})
    hist, left_out = log_histogram(df, "v")
    positives = [v for v in values if v > 0]
    assert left_out == len(values) - len(positives)
    assert hist["count"].sum() == len(positives)
    for v in positives:
        inside = hist.filter((pl.col("lo_ns") <= v * (1 + 1e-9)) & (pl.col("hi_ns") > v * (1 - 1e-9)))
        assert inside["count"].sum() >= 1
    if positives:
        assert abs(hist["share_pct"].sum() - 100.0) < 1e-6


def test_log_histogram_fills_gaps_and_pads_each_group():
    df = pl.DataFrame({"g": ["a", "a", "b"], "v": [10, 10_000, 50]})
    hist, _ = log_histogram(df, "v", by=("g",), per_decade=1)
    a = hist.filter(pl.col("g") == "a")
    # 1..10 (pad), 10..100, 100..1e3 and 1e3..1e4 (empty), 1e4..1e5, 1e5..1e6 (pad)
    assert a["count"].to_list() == [0, 1, 0, 0, 1, 0]
    assert a["lo_ns"].to_list() == [1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]
    assert hist.filter(pl.col("g") == "b")["count"].to_list() == [0, 1, 0]


def test_clip_intervals_cuts_to_window_and_recomputes_dur():
    df = pl.DataFrame({"start": [0, 50, 200], "end": [100, 150, 300], "dur": [100, 100, 100]})
    out = clip_intervals(df, 80, 160)
    assert out["start"].to_list() == [80, 80]
    assert out["end"].to_list() == [100, 150]
    assert out["dur"].to_list() == [20, 70]


def test_bin_overlaps_sum_to_interval_lengths():
    df = pl.DataFrame({"start": [5, 20, 95], "end": [17, 61, 130]})
    per = bin_overlaps(df, 0, 100, 10).collect()
    got = per.group_by("start").agg(pl.col("overlap_ns").sum()).sort("start")["overlap_ns"].to_list()
    assert got == [12, 41, 5]  # the last one is clipped at the window end (100)


def _partition(n_lanes: int, n: int, span: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for lane in range(n_lanes):
        cuts = np.unique(np.concatenate([[0, span], rng.integers(1, span, size=n)]))
        parts.append(
            pl.DataFrame(
                {
                    "lane": f"l{lane}",
                    "state": rng.choice(["running", "preempted", "halted"], size=len(cuts) - 1),
                    "start": cuts[:-1],
                    "end": cuts[1:],
                }
            )
        )
    return pl.concat(parts)


def test_coarsen_keeps_small_inputs_as_they_are():
    df = _partition(2, 10, 1000, 1)
    out, width = coarsen_intervals(df, "lane", "state", 0, 1000, max_rows=100)
    assert width is None
    assert out.sort("lane", "start").rows() == df.sort("lane", "start").rows()


def test_coarsen_bounds_rows_and_still_covers_the_window():
    df = _partition(4, 20_000, 10_000_000, 2)
    out, width = coarsen_intervals(df, "lane", "state", 1_000_000, 9_000_000, max_rows=1000)
    assert width is not None and width > 0
    assert out.height <= 1000
    assert out["start"].min() >= 1_000_000 and out["end"].max() <= 9_000_000
    # Dominant mode over a partition: each lane still covers the whole window, with no overlap.
    for lane in out.partition_by("lane"):
        lane = lane.sort("start")
        assert lane["start"][0] == 1_000_000 and lane["end"][-1] == 9_000_000
        assert (lane["start"][1:] == lane["end"][:-1]).all()


def test_coarsen_dominant_picks_the_state_that_filled_most_of_a_bin():
    # One lane, window 0..100 in 2 bins of 50 (max_rows forces binning): bin 0 mostly running, bin 1 mostly halted.
    df = pl.DataFrame(
        {
            "lane": ["x"] * 5,
            "state": ["running", "preempted", "running", "halted", "preempted"],
            "start": [0, 30, 40, 50, 95],
            "end": [30, 40, 50, 95, 100],
        }
    )
    out, width = coarsen_intervals(df, "lane", "state", 0, 100, max_rows=2)
    assert width == 50
    assert out.select("state", "start", "end").rows() == [("running", 0, 50), ("halted", 50, 100)]


def test_coarsen_any_keeps_every_category_present():
    df = pl.DataFrame(
        {
            "lane": ["x"] * 6,
            "what": ["hold"] * 6,
            "start": [1, 5, 12, 60, 66, 70],
            "end": [2, 6, 13, 61, 67, 71],
        }
    )
    out, width = coarsen_intervals(df, "lane", "what", 0, 100, max_rows=4, mode="any")
    assert width == 25
    # Bins 0 and 2 (three holds each) are marked; the empty bins 1 and 3 are not.
    assert out.select("start", "end").rows() == [(0, 25), (50, 75)]
