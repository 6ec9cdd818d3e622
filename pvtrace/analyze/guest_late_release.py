"""Guest-inferred LHP whose holder guess ran again while the lock stayed taken.

The holder guess is the lock's last contended acquirer; a vCPU that took the lock uncontended
leaves no event. When two vCPUs are stopped at once, the guess can name the wrong one (simulated
overcommit-2x without PLE: the named vCPU resumed, the waiters spun on for 0.7 ms, and the lock
went round only after the other stopped vCPU resumed). Evidence against the guess: the lock's
first waiter (the queue's head on a fifo lock, any spinner on an unfair one), running at the
incident's end (the named holder's resume) and for RELEASE_NS after it, did not get the lock
then, and another vCPU, not waiting for the lock, was stopped through that end. The waiters'
wait from the end to that vCPU's resume may then be LHP waste too: the high end of the LHP
waste range grows by it (analyze/guest_lwp.py gives the range and the reason).
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.guest_preemption import RELEASE_NS


def late_releases(tables: dict[str, pl.DataFrame], stops: pl.DataFrame) -> dict[str, int]:
    """n (harmful LHP incidents with that evidence against their holder guess) and plus (the
    waiters' wait from each incident's end to the other vCPU's resume). `stops`: vm, vcpu,
    start, end of every not-running interval."""
    lhp = (
        tables["lhp_incidents"]
        .filter(pl.col("harmful"))
        .select("vm", "lock", "holder", "start", "end")
        .with_row_index("iid")
    )
    waits = tables["waits"].select(
        "vm", "lock", pl.col("vcpu").alias("w"), pl.col("start").alias("ws"), pl.col("end").alias("we")
    )
    down = stops.select(
        "vm", pl.col("vcpu").alias("w"), pl.col("start").alias("ds"), pl.col("end").alias("de")
    )
    after = pl.col("end") + RELEASE_NS
    open_at_end = (
        lhp.join(waits, on=["vm", "lock"])
        .filter((pl.col("w") != pl.col("holder")) & (pl.col("ws") < pl.col("end")))
        .filter(pl.col("we").is_null() | (pl.col("we") > pl.col("end")))
    )
    head = open_at_end.sort("ws").unique("iid", keep="first")
    head = head.filter(pl.col("we").is_null() | (pl.col("we") > after))
    stopped = head.join(down, on=["vm", "w"]).filter((pl.col("ds") < after) & (pl.col("de") > pl.col("end")))
    head = head.join(stopped.select("iid"), on="iid", how="anti")  # running, and not taking the lock
    other = (
        head.select("iid", "vm", "lock", "holder", "start", "end")
        .join(down.rename({"w": "v"}), on="vm")
        .filter(
            (pl.col("v") != pl.col("holder"))
            & (pl.col("ds") < pl.col("end"))
            & (pl.col("de") > pl.col("end"))
        )
        .join(open_at_end.select("iid", pl.col("w").alias("v")), on=["iid", "v"], how="anti")
        .sort("de")
        .unique("iid", keep="first")
        .select("iid", "vm", "lock", "end", pl.col("de").alias("resume"))
    )
    if other.is_empty():
        return {"n": 0, "plus": 0}
    until = pl.min_horizontal("resume", pl.col("we").fill_null(pl.col("resume")))
    spun = (until - pl.max_horizontal("end", "ws")).clip(lower_bound=0)
    plus = other.join(waits, on=["vm", "lock"]).select(spun.sum()).item()
    return {"n": other.height, "plus": int(plus or 0)}
