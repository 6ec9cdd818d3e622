"""The silence after a holder's stop: a contended acquirer kept holding through its stop (holders.py,
step 1) had released before it when the siblings then ran freely for long with nobody trying the
lock, because a try of a held lock is seen (docs/metrics.md, Contended acquirer).
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pvtrace.analyze.holders import _ended, _hold_rows
from pvtrace.analyze.intervals import lookup, sort_by_key
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.vcpu_states import VcpuStates

# Expected tries of a lock, by siblings running freely after its holder stopped, beyond which
# nobody trying it says the holder had released before the stop.
SILENT_STOP = 3.0


def until_stop(visible: pl.DataFrame, kept: pl.DataFrame) -> pl.DataFrame:
    """The visible holds with those kept through a stop cut at the stop: the part known to be held
    (what the attempt rate is measured on; the rest is what the rate then judges)."""
    cut = kept.select(pl.col("ord").alias("start_ord"), pl.col("stop_ts").alias("_stop"))
    return (
        visible.join(cut, on="start_ord", how="left", maintain_order="left")
        .with_columns(pl.min_horizontal("end", "_stop").alias("end"))
        .drop("_stop")
    )


def release_silent_stops(
    visible: pl.DataFrame,
    kept: pl.DataFrame,
    prep: Prepared,
    waits: pl.DataFrame,
    states: VcpuStates,
    clock: pl.DataFrame,
    silence: Callable[[pl.DataFrame], pl.Series],
) -> pl.DataFrame:
    """The visible holds, where a hold kept through its holder's stop ends by the stop when the
    silence after the stop says the holder had released before it.

    `silence(rows)` (lid, vm_id, t0, t1) says how many tries of the lock the siblings running
    freely between t0 and t1 would have made. A try of a held lock is seen, so a stop followed
    by more than SILENT_STOP tries' worth of silence (before the lock's next contention, the
    holder's return or the next acquisition) was not held through: the holder had released
    before it stopped. (A directed yield to a vCPU preempted in the kernel says little: it draws
    yields whether it holds this lock or not.)
    """
    if kept.height == 0:
        return visible
    runs = states.changes.filter(pl.col("state") == "running").select(
        pl.col("vid").alias("key"), pl.col("ts").alias("t")
    )
    silent = kept.filter(_silent_after_stop(kept, waits, runs, prep, silence))
    if silent.height == 0:
        return visible
    # It released before the stop: after the mean hold, or at the stop if that came first.
    released = pl.min_horizontal("hold", "ran_to_stop").alias("_run_for")
    redone = _hold_rows(_ended(silent.with_columns(released), waits, clock, prep))
    return (
        visible.join(
            redone.select("start_ord", pl.col("end").alias("_e"), pl.col("truncated").alias("_t")),
            on="start_ord",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            pl.col("_e").fill_null(pl.col("end")).alias("end"),
            pl.col("_t").fill_null(pl.col("truncated")).alias("truncated"),
        )
        .drop("_e", "_t")
    )


def _silent_after_stop(
    acq: pl.DataFrame,
    waits: pl.DataFrame,
    runs: pl.DataFrame,
    prep: Prepared,
    silence: Callable[[pl.DataFrame], pl.Series],
) -> pl.Series:
    """Per acquisition: whether the siblings ran freely for more than SILENT_STOP tries of the lock
    between the holder's first stop and the first of the lock's next contention, the holder's
    return and the next acquisition, without anyone trying it (null stop: False)."""

    def first_from_stop(by: str, table: pl.DataFrame) -> pl.Series:
        """The first time `t` of `table` (key, t; sorted) at or after each stop, per `by`."""
        found = lookup(
            acq.select(by, "stop_ts"),
            table,
            by=by,
            on="stop_ts",
            table_on="t",
            values=["t"],
            direction="forward",
        )
        return found["t"]

    w_ts = waits.select(pl.col("lid").alias("key"), pl.col("start").alias("t"))
    nxt = first_from_stop("lid", sort_by_key(w_ts, "key", then="t"))
    back = first_from_stop("vid", runs)
    rows = acq.select(
        "lid",
        pl.col("stop_ts").alias("t0"),
        pl.min_horizontal(pl.lit(nxt), pl.lit(back), "next_ts", pl.lit(prep.window.t_end)).alias("t1"),
    ).with_columns(prep.lock_attr("vm_id"))
    tries = silence(rows.with_columns(pl.col("t0").fill_null(pl.col("t1"))))
    return (pl.select(tries > SILENT_STOP).to_series() & acq["stop_ts"].is_not_null()).fill_null(False)
