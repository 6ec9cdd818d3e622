"""Wait-time distributions per lock, on a log scale."""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.result import Analysis
from pvtrace.fmt import fmt_wait, plural
from pvtrace.report.aggregate import log_histogram
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.histogram import chart_log_histogram
from pvtrace.report.labels import unavailable_reason, with_lock_label

TOP_LOCKS = 8


def waits_by_lock(waits: pl.DataFrame, top_n: int = TOP_LOCKS, by: tuple[str, ...] = ()) -> pl.DataFrame:
    """Waits (by..., lock_label, dur) with locks outside the top n by total wait time labelled 'other locks'."""
    keys = [*by, "vm", "lock"]
    ranking = (
        waits.group_by(keys)
        .agg(pl.col("dur").sum().alias("_total"))
        .with_columns(
            pl.col("_total").rank("ordinal", descending=True).over(list(by) or pl.lit(1)).alias("_rank")
        )
        .filter(pl.col("_rank") <= top_n)
    )
    labelled = with_lock_label(ranking.select(*keys, "_rank"))
    return (
        waits.select(*keys, "dur")
        .join(labelled, on=keys, how="left")
        .with_columns(pl.col("lock_label").fill_null("other locks"), pl.col("_rank").fill_null(top_n + 1))
    )


def chart_wait_times(analysis: Analysis, top_n: int = TOP_LOCKS) -> Figure:
    """How long lock waits last, per lock (the top locks by total wait time), log-binned."""
    name, title = "wait-times", "Lock wait times"
    waits = analysis.table("waits")
    if waits.height == 0:
        reason = unavailable_reason(analysis.summary, ["n_contended", "spin_ns"]) or "no contended lock waits"
        return no_data(name, title, reason)
    labelled = waits_by_lock(waits, top_n)
    hist, left_out = log_histogram(labelled, "dur", by=("lock_label",))
    q = waits.select(pl.col("dur").quantile(p).alias(f"p{int(p * 100)}") for p in (0.5, 0.9, 0.99)).row(0)
    tick = analysis.clock_tick()  # a median below the clock's microsecond is `< 1 µs`, not `0 ns`
    caption = (
        f"{plural(waits.height, 'wait')}; per lock, how many of its waits fall in each log-spaced duration bin "
        f"(the {min(top_n, waits.select('vm', 'lock').n_unique())} locks with the most wait time): a lock "
        "weighs by its number of waits, so the hot lock stands out and a lock with one wait stays small. "
        f"All waits: median {fmt_wait(q[0], tick)}, p90 {fmt_wait(q[1], tick)}, p99 {fmt_wait(q[2], tick)}, "
        f"max {fmt_wait(waits['dur'].max(), tick)}."
    )
    note = ""
    if left_out:
        note = f"{plural(left_out, 'zero-length wait')} (below the trace's clock resolution) "
        note += ("is" if left_out == 1 else "are") + " not on the log axis."
    chart = chart_log_histogram(
        hist, "wait time (µs, log scale)", series="lock_label", series_title="lock", y="count"
    )
    return Figure(name, title, chart, caption, note)
