"""How long a vCPU has run: its running time as a piecewise-linear clock (cumulative running
time per state piece), read at any instant. The inferred holders bound a hold by the time its
holder *ran* (a preempted holder cannot release), not by wall time.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.frames import filled
from pvtrace.analyze.intervals import lookup
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.vcpu_states import VcpuStates

I64 = pl.Int64()


def running_clock(states: VcpuStates) -> pl.DataFrame:
    """Per vid piece: start, end, running, cum (running time of the vid before the piece)."""
    p = states.partition.select(
        pl.col("key").alias("vid"),
        "start",
        "end",
        (pl.col("state") == "running").alias("running"),
    )
    dur = pl.when(pl.col("running")).then(pl.col("end") - pl.col("start")).otherwise(0)
    return p.with_columns((dur.cum_sum().over("vid") - dur).alias("cum"))


def run_bound_end(holds: pl.DataFrame, clock: pl.DataFrame, prep: Prepared) -> pl.Series:
    """When each holder (vid, start, bound) has run `bound` ns since the hold started (null: never in the trace)."""
    w = prep.window
    at = lookup(
        holds.select("vid", "start", "bound"),
        clock.select(pl.col("vid").alias("key"), pl.col("start").alias("p_start"), "running", "cum"),
        by="vid",
        on="start",
        table_on="p_start",
        values=["p_start", "running", "cum"],
    )
    ran = at.select(
        "vid",
        (
            pl.col("cum")
            + pl.when(pl.col("running")).then(pl.col("start") - pl.col("p_start")).otherwise(0)
            + pl.col("bound")
        )
        .clip(None, w.dur + 1)
        .alias("target"),
    )
    run_pieces = clock.filter(pl.col("running")).select(
        pl.col("vid").alias("key"), (pl.col("cum") + pl.col("end") - pl.col("start")).alias("cum_end"), "end"
    )
    found = lookup(
        ran,
        run_pieces,
        by="vid",
        on="target",
        table_on="cum_end",
        values=["cum_end", "end"],
        direction="forward",
    )
    return found.select(pl.col("end") - (pl.col("cum_end") - pl.col("target"))).to_series()


def ran_between(
    rows: pl.DataFrame, clock: pl.DataFrame, prep: Prepared, *, vid: str, t0: str, t1: str
) -> pl.Series:
    """How long vCPU `vid` ran between times t0 and t1 (null where t1 is null)."""
    t_start = prep.window.t_start
    ends = pl.DataFrame([rows[vid], filled(rows[t0], t_start), filled(rows[t1], t_start)])
    running = pl.DataFrame(
        [
            clock["vid"].alias("key"),
            clock["start"].alias("bp"),
            clock["running"].cast(I64).alias("rate"),
            clock["cum"],
        ]
    )
    c0, c1 = clock_at(ends, running, by=vid, times=(t0, t1))
    if rows[t1].null_count() == 0:
        return c1 - c0
    return pl.select(pl.when(rows[t1].is_not_null()).then(c1 - c0)).to_series()


def clock_at(
    points: pl.DataFrame, clock: pl.DataFrame, *, by: str, times: tuple[str, ...]
) -> list[pl.Series]:
    """A piecewise-linear clock read at each point's times (one lookup for all of them): `clock`
    has key, bp, rate, cum (the value at breakpoint bp, rising at `rate` after it), sorted by
    key, bp; a time before a key's first breakpoint reads null."""
    n = points.height
    stacked = pl.concat([pl.DataFrame([points[by].alias("_k"), points[t].alias("_t")]) for t in times])
    found = lookup(stacked, clock, by="_k", on="_t", table_on="bp", values=["bp", "rate", "cum"])
    value = found["cum"] + found["rate"] * (found["_t"] - found["bp"])
    return [value.slice(k * n, n) for k in range(len(times))]
