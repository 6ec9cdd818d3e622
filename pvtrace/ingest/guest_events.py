"""Canonical events of guest rows: lock contention (lock:contention_* or lockdep), scheduler events.

vcpu is the guest CPU, vm the guest's name (ingest.sides.guest_vm_names); the clock shift onto
the host timeline happens after (ingest.clocks).
"""

from __future__ import annotations

import polars as pl

from pvtrace.ingest.aliases import ALIASES
from pvtrace.ingest.families import GROUPS, GUEST_GROUPS, LOST, counted_wakes, emit, lost, other


def guest_events(
    guest: pl.DataFrame, parsed: dict[str, pl.DataFrame], with_wakeup: list[str], with_contention: list[str]
) -> list[pl.DataFrame]:
    """Canonical events of guest rows (guest carries a `vm` column per source)."""
    origin = "guest"
    at = {"vm": pl.col("vm"), "vcpu": pl.col("cpu"), "tid": pl.col("tid"), "origin": origin}
    out: list[pl.DataFrame] = []

    switch = parsed["switch"]
    ok = pl.col("prev_pid").is_not_null() & pl.col("next_pid").is_not_null()
    out.append(
        emit(
            switch.filter(ok),
            kind="task_switch",
            reason=pl.col("prev_state"),
            value=pl.col("next_pid"),
            **{**at, "tid": pl.col("prev_pid")},
        )
    )
    out.append(other(switch.filter(~ok), **at))
    wake = parsed["wake"]
    wk = wake.with_columns(counted_wakes(with_wakeup).alias("counts"))
    out.append(emit(wk.filter(pl.col("counts")), kind="task_wakeup", **{**at, "tid": pl.col("pid")}))
    out.append(other(wk.filter(~pl.col("counts")), **at))

    cont = parsed["contention"]
    begin = pl.col("event") == "contention_begin"
    out.append(
        emit(
            cont.filter(pl.col("lock").is_not_null()),
            kind=pl.when(begin).then(pl.lit("lock_contend")).otherwise(pl.lit("lock_acquire")),
            lock=pl.col("lock"),
            reason=pl.when(begin).then(pl.col("flags")),
            value=pl.when(~begin).then(pl.col("ret")),
            **at,
        )
    )
    out.append(other(cont.filter(pl.col("lock").is_null()), **at))

    # lockdep, for inputs without lock:contention_* events
    attempt = (pl.col("event") == "lock_acquire") & (
        pl.col("event").shift(-1).over("src", "tid", "lock") == "lock_contended"
    )
    ld = (
        parsed["lockdep"]
        .sort("row")
        .with_columns(
            (
                ~pl.col("src").is_in(with_contention)
                & ~attempt.fill_null(False)
                & pl.col("name").is_not_null()
            ).alias("use")
        )
    )
    kinds = {name: ALIASES[name].kind for name in GROUPS["lockdep"]}
    out.append(
        emit(
            ld.filter(pl.col("use")),
            kind=pl.col("event").cast(pl.String).replace_strict(kinds, return_dtype=pl.String),
            lock=pl.col("lock"),
            reason=pl.col("name"),
            value=pl.col("bits"),
            **at,
        )
    )
    out.append(other(ld.filter(~pl.col("use")), **at))
    out.append(lost(guest, origin, vm=pl.col("vm"), vcpu=pl.col("cpu")))
    handled = [e for g in GUEST_GROUPS for e in GROUPS[g]] + list(LOST)
    out.append(other(guest.filter(~pl.col("event").is_in(handled)), **at))
    return out
