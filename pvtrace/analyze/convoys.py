"""Convoys: runs of consecutive hand-offs on one lock, and the incident that started them.

docs/metrics.md, Incidents / Convoy: a maximal run of consecutive acquisitions
that are all hand-offs, kept at length >= 2; peak waiters counted at its
acquisitions; cause lhp (the hold ending at its first release had an LHP
incident) / lwp (an LWP incident ends at its first hand-off) / none. With inferred
holds on unfair locks, uncontended takes nobody saw end runs too (holders.py, unseen_take).
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import cum_sum_within
from pvtrace.analyze.prepare import Prepared
from pvtrace.schema import CONVOY_SCHEMA

I64 = pl.Int64()


def open_waits_at(acq: pl.DataFrame, waits: pl.DataFrame) -> pl.DataFrame:
    """Per acquisition (start_ord): waits open on its lock just before it, its own included (the
    queued count of the wait it ends, locks.waits)."""
    ends = waits.filter(pl.col("end_ord").is_not_null()).select(
        pl.col("end_ord").alias("start_ord"), pl.col("queued").alias("open_waits")
    )
    return acq.join(ends, on="start_ord", how="left", maintain_order="left")


def convoys(
    acq: pl.DataFrame,
    waits: pl.DataFrame,
    lhp: pl.DataFrame,
    lwp: pl.DataFrame,
    prep: Prepared,
    waited_from_before: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Convoys: lid, start, end, length, peak_waiters, cause, first_ord (internal).

    `waited_from_before` (locks.waited_from_before; only where uncontended takes are not printed):
    per lock, the last acquisition whose wait began before the trace."""
    # Acquisitions in lock order; an inferred unseen holder's acquisition breaks a run too.
    used = ["lid", "start", "start_ord", "inferred", "contended", "handoff", "prev_release_ts", "prev_hid"]
    a = acq.select(*used, *(c for c in ("unseen_take", "held_on") if c in acq.columns))
    a = a.filter(pl.col("start_ord").is_not_null() | pl.col("inferred"))
    if "held_on" in a.columns:
        # Inferred holds on fifo locks: a contention after the previous hold's inferred release
        # that most likely found that hold going on is a hand-off (hold_inference, held_on).
        a = a.with_columns(pl.col("handoff") | pl.col("held_on").fill_null(False)).drop("held_on")
    brk = ~pl.col("handoff")
    if "unseen_take" in a.columns:
        # Inferred holds on unfair locks (docs/metrics.md, Unseen takes): an unseen holder that
        # most likely kept the previous hold going is no acquisition; an unseen uncontended take
        # before a hand-off breaks the run, and the hold that ends at the run's first release is
        # then the taker's, of which nothing is seen.
        took = pl.col("unseen_take")
        a = a.filter(pl.col("start_ord").is_not_null() | took.fill_null(True))
        a = a.with_columns(pl.when(~took.fill_null(False)).then(pl.col("prev_hid")).alias("prev_hid"))
        brk = brk | took.fill_null(False)
    a = open_waits_at(a, waits)
    # A contended acquisition after the previous seen release, with no other waiter queued: the
    # lock was held when it was contended (no queue made it contend, and none let it steal), so
    # someone took it unseen after that release and handed it over. A hand-off that opens a run
    # (the unseen take broke it), from the unseen holder's release, at the acquisition. The
    # lock's first acquisition in the trace is one too (its holder took it before the trace, or
    # unseen), unless an acquisition whose wait began before the trace comes after it: that
    # waiter was queued meanwhile, and the queue may have let it steal. (Where uncontended takes
    # are printed, such waits cannot be told from them: never there.)
    # (rows in lock order: running sums restart at each lock without a window over it)
    a = a.with_columns(pl.col("start_ord").is_not_null().cast(I64).alias("_seen"))
    first = (pl.col("_seen") == 1) & (cum_sum_within("_seen", "lid") == 1)
    if waited_from_before is None:  # uncontended takes printed: the lock's first is never one
        queued_before_trace = pl.lit(True)
    else:
        a = a.join(waited_from_before, on="lid", how="left", maintain_order="left")
        queued_before_trace = (pl.col("last_ord") > pl.col("start_ord")).fill_null(False)
    unseen_before = (
        pl.col("contended")
        & ~pl.col("handoff")
        & ~(first & queued_before_trace)
        & (pl.col("open_waits") == 1).fill_null(False)
    )
    a = a.with_columns(
        unseen_before.alias("_unseen"),
        pl.when(unseen_before).then(pl.col("start")).otherwise(pl.col("prev_release_ts")).alias("_from"),
        pl.when(unseen_before).then(None).otherwise(pl.col("prev_hid")).alias("prev_hid"),
    )
    brk = brk | (pl.col("lid") != pl.col("lid").shift(1)).fill_null(True)
    a = a.with_columns(brk.cum_sum().alias("_run")).filter(pl.col("handoff") | pl.col("_unseen"))
    c = (
        a.group_by("_run", maintain_order=True)
        .agg(
            pl.col("lid").first(),
            pl.col("_from").first().alias("start"),
            pl.col("prev_hid").first(),
            pl.col("start").last().alias("end"),
            pl.len().cast(I64).alias("length"),
            pl.col("open_waits").max().cast(I64).alias("peak_waiters"),
            pl.col("start").first().alias("first_ts"),
        )
        .filter(pl.col("length") >= 2)
        .drop("_run")
        .sort("lid", "start")
    )
    if c.height == 0:
        return c.with_columns(pl.lit(None, pl.String()).alias("cause"))
    # lhp: the hold that ended at the first release had an LHP incident.
    lhp_holds = lhp.select("hid").unique().with_columns(pl.lit(True).alias("_lhp"))
    c = c.join(lhp_holds, left_on="prev_hid", right_on="hid", how="left", maintain_order="left")
    # lwp: an LWP incident ended at the first hand-off (few of the many incidents can: filter first)
    lwp_ends = (
        lwp.filter(pl.col("end").is_in(c["first_ts"].implode()))
        .select("lid", pl.col("end").alias("first_ts"), pl.lit(True).alias("_lwp"))
        .unique()
    )
    c = c.join(lwp_ends, on=["lid", "first_ts"], how="left", maintain_order="left")
    cause = (
        pl.when(pl.col("_lhp").fill_null(False))
        .then(pl.lit("lhp"))
        .when(pl.col("_lwp").fill_null(False))
        .then(pl.lit("lwp"))
        .otherwise(pl.lit("none"))
    )
    return c.with_columns(cause.alias("cause")).select(
        "lid", "start", "end", "length", "peak_waiters", "cause"
    )


def convoys_table(c: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The convoys result table."""
    if c.height == 0:
        return pl.DataFrame(schema=CONVOY_SCHEMA)
    return c.select(
        prep.lock_attr("vm"), prep.lock_attr("lock"), "start", "end", "length", "peak_waiters", "cause"
    ).cast(dict(CONVOY_SCHEMA))
