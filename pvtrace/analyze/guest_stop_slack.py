"""How far guest-inferred LHP waste can be off because a waiter's own stop is placed only to a tick.

A waiter that stops inside an LHP incident (preempted while it spins on the stopped holder's
lock) spun from its wait's start, or the incident's, to its own stop; the level places that stop
at the middle of [its last event, its first missed tick] (guest_preemption.py), so the spin
counted as LHP waste is known only to that window. With PLE the host stops a spinning waiter a
few microseconds into its spin (a pause-loop exit and a directed yield), not at a uniform
instant, so the middle overstates the waste (simulated lhp-demo with PLE on: +50% on VMs whose
incidents were each right to the holder). The slack of every such stop, summed over the
incidents, widens LHP waste into a range (analyze/guest_lwp.py gives it) when it is material.
"""

from __future__ import annotations

import polars as pl

MATERIAL_SHARE = 0.15  # slack above this share of the LHP waste makes it a range (the 15% target)


def waiter_stop_slack(tables: dict[str, pl.DataFrame], stops: pl.DataFrame) -> dict[str, int]:
    """n (waiter stops inside harmful LHP incidents), minus and plus: how much less or more LHP
    waste there is if each such stop began at the start or the end of its window. `stops`: vm,
    vcpu, start (the estimate), start_lo, start_hi of every not-running interval."""
    lhp = tables["lhp_incidents"].filter(pl.col("harmful")).select("vm", "lock", "holder", "start", "end")
    waits = tables["waits"].select(
        "vm", "lock", pl.col("vcpu").alias("w"), pl.col("start").alias("ws"), pl.col("end").alias("we")
    )
    gaps = stops.select("vm", pl.col("vcpu").alias("w"), pl.col("start").alias("ds"), "start_lo", "start_hi")
    a = pl.max_horizontal("start", "ws")  # the waiter spins on the stopped holder from here ...
    b = pl.min_horizontal("end", pl.col("we").fill_null(pl.col("end")))  # ... to here at the latest
    pairs = (
        lhp.join(waits, on=["vm", "lock"])
        .filter((pl.col("w") != pl.col("holder")) & (a < b))
        .with_columns(a.alias("a"), b.alias("b"))
        .join(gaps, on=["vm", "w"])
        .filter((pl.col("start_lo") >= pl.col("ws")) & (pl.col("start_lo") < pl.col("b")))
        .filter(pl.col("start_hi") > pl.col("a"))
    )
    minus = (pl.min_horizontal("ds", "b") - pl.max_horizontal("start_lo", "a")).clip(lower_bound=0)
    plus = (pl.min_horizontal("start_hi", "b") - pl.max_horizontal("ds", "a")).clip(lower_bound=0)
    out = pairs.select(pl.len().alias("n"), minus.sum().alias("minus"), plus.sum().alias("plus")).row(0)
    return {"n": int(out[0]), "minus": int(out[1] or 0), "plus": int(out[2] or 0)}
