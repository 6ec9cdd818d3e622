"""Guest-inferred LHP with a second waiter stopped inside its wait: LHP or lock-waiter preemption.

From inside the guest a lock's release is not seen. When a fifo (ticket, queued) lock has a
waiter that stopped inside its wait, a release hands the lock to that waiter while it is not
running (LWP, docs/metrics.md): the other waiters spin behind a stopped *next owner*. The
guest's events cannot tell that from a stopped *holder*: the holder guess (the lock's last
contended acquirer) picks a vCPU that stopped while holding other locks, and the waiters' spin
becomes LHP waste with a wrong holder (simulated overcommit-2x without PLE: 2 to 4 such
incidents per true one in a hand-off chain). Where the stopped waiter queued behind a spinning
one, the lock did not go to it, but its stop began somewhere in the tick before its missed
tick, so how much of the incident it spun is known only to a tick (one such incident came out
+32%). With two vCPUs neither happens (the only waiter is the one spinning): it needs a second
waiter of the lock.

Such an incident is *ambiguous*. The level keeps it (a stopped holder fits the trace as well)
and gives LHP waste as a range, from without the ambiguous incidents to with them, marked
partial with the reason.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.guest_late_release import late_releases
from pvtrace.analyze.guest_steal import GuestPreemption
from pvtrace.analyze.guest_stop_slack import MATERIAL_SHARE, waiter_stop_slack

STOPPED = ("preempted", "halted")


def ambiguous_lhp(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Harmful LHP incidents (vm, lock, start, waste_ns) on locks not known unfair during which a
    waiter of the lock other than the holder was stopped inside its wait, while another waiter
    (or it, before) spun: a release may have handed the lock to the stopped waiter."""
    lhp = tables["lhp_incidents"].filter(pl.col("harmful")).with_row_index("iid")
    unfair = tables["lock_kinds"].filter(pl.col("kind") == "unfair").select("vm", "lock")
    lhp = lhp.join(unfair, on=["vm", "lock"], how="anti")
    waits = tables["waits"].select(
        "vm",
        "lock",
        pl.col("vcpu").alias("w"),
        pl.col("start").alias("ws"),
        pl.col("end").alias("we"),
        # a stop inside a wait: only waits with halted or preempted time can hold one
        ((pl.col("halted_ns") + pl.col("preempted_ns")) > 0).alias("stopped"),
    )
    stopped_waits = waits.filter("stopped").drop("stopped")
    waits = waits.drop("stopped")
    down = tables["vcpu_states"].filter(pl.col("state").is_in(STOPPED))
    down = down.select(
        "vm", pl.col("vcpu").alias("w"), pl.col("start").alias("ds"), pl.col("end").alias("de")
    )
    overlap = (pl.col("ws") < pl.col("end")) & (pl.col("we").is_null() | (pl.col("we") > pl.col("start")))
    cand = (
        lhp.select("iid", "vm", "lock", "holder", "start", "end")
        .join(stopped_waits, on=["vm", "lock"])
        .filter((pl.col("w") != pl.col("holder")) & overlap)
        .join(down, on=["vm", "w"])
        .filter(
            (pl.col("ds") >= pl.col("ws"))
            & (pl.col("we").is_null() | (pl.col("ds") < pl.col("we")))
            & (pl.col("ds") < pl.col("end"))
            & (pl.col("de") > pl.col("start"))
        )
        .select("iid")
        .unique()
    )
    if cand.is_empty():
        return lhp.head(0).select("vm", "lock", "start", "waste_ns")
    # a second waiter of the lock during the incident (with two vCPUs the stopped one is the spinner)
    many = (
        lhp.join(cand, on="iid")
        .select("iid", "vm", "lock", "holder", "start", "end")
        .join(waits, on=["vm", "lock"])
        .filter((pl.col("w") != pl.col("holder")) & overlap)
        .group_by("iid")
        .agg(pl.col("w").n_unique().alias("n"))
        .filter(pl.col("n") >= 2)
    )
    return lhp.join(many.select("iid"), on="iid").select("vm", "lock", "start", "waste_ns")


def mark_ambiguous_lhp(tables: dict[str, pl.DataFrame], info: GuestPreemption) -> None:
    """Give LHP waste as a range and mark it (and the harmful count) partial when some incidents may
    be a fifo hand-off to a stopped waiter (ambiguous_lhp), when the waiters' own stops inside
    the incidents, placed only to a tick (guest_stop_slack), or a holder guess that ran again well
    before the lock was taken (guest_late_release) leave it uncertain by more than MATERIAL_SHARE."""
    lhp = tables["lhp_incidents"].filter(pl.col("harmful"))
    total = int(lhp["waste_ns"].sum() or 0)
    found = ambiguous_lhp(tables)
    doubt = int(found["waste_ns"].sum() or 0)
    none = {"n": 0, "minus": 0, "plus": 0}
    slack = waiter_stop_slack(tables, info.stops) if info.stops is not None else none
    if slack["minus"] + slack["plus"] <= MATERIAL_SHARE * total:
        slack = none
    late = late_releases(tables, info.stops) if info.stops is not None else none
    if late["plus"] <= MATERIAL_SHARE * total:
        late = none
    if found.is_empty() and not slack["n"] and not late["n"]:
        return
    low, high = max(total - doubt - slack["minus"], 0), total + slack["plus"] + late["plus"]
    info.lhp_waste_range_ns = [low, high]
    span = f"LHP waste {low / 1e6:.1f}-{high / 1e6:.1f} ms"
    host_fix = "a host trace (pvtrace record --host) shows who held the lock"
    parts = []

    def uncertain(missing: str, fix: str = host_fix) -> None:
        parts.append({"missing": missing, "lhp_waste_range_ns": [low, high], "fix": fix})

    if not found.is_empty():
        info.lhp_maybe_lwp = {"n": found.height, "of": lhp.height, "waste_ns": doubt}
        uncertain(
            f"{found.height} of {lhp.height} LHP incidents ({doubt / 1e6:.1f} ms of waste) came while "
            "another waiter of the fifo lock was stopped inside its wait: the lock may have been handed "
            f"to it (LWP, not LHP), or its stop is placed only to a tick; {span}"
        )
    if slack["n"]:
        info.lhp_waiter_stops = slack
        uncertain(
            f"{slack['n']} waiter stops inside LHP incidents are placed only to a tick, and the spin "
            f"before each with them (-{slack['minus'] / 1e6:.1f}/+{slack['plus'] / 1e6:.1f} ms; with "
            f"PLE the host stops a spinning waiter within microseconds): {span}",
            "a guest kernel with a higher CONFIG_HZ, or a host trace (pvtrace record --host)",
        )
    if late["n"]:
        info.lhp_late_releases = late
        uncertain(
            f"{late['n']} LHP incidents ended (their holder guess ran again) well before a waiter took "
            "the lock, which came as another stopped vCPU resumed: that vCPU may have held it, taken "
            f"without contention, which the trace does not show (+{late['plus'] / 1e6:.1f} ms): {span}"
        )
    for metric in ("waste_lhp_ns", "n_lhp_harmful"):
        info.partial[metric] = [*info.partial.get(metric, []), *parts]
