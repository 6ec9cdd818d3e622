"""The guest's mode at each vCPU stop, from kvm_exit's guest rip (vm_exit value 1: user mode).

Guest spinlocks are held in the kernel with preemption off, so a vCPU stopped in user mode holds
none through its stop (docs/metrics.md, Inferred holders: Guest mode at a stop).
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import lookup, sort_by_key
from pvtrace.analyze.prepare import Prepared


def stopped_in_user_mode(changes: pl.DataFrame, prep: Prepared) -> pl.Series:
    """Per state change (sorted by vid, ord): a stop whose vCPU's last exit found the guest in user
    mode. False where nothing says so (a kernel rip, no rip printed, no exit before it)."""
    stopped = changes["state"] != "running"
    exits = prep.exits
    if exits.height == 0:
        return (stopped & False).alias("user")
    user_exit = (pl.col("kind") == "vm_exit") & (pl.col("value") == 1) & (pl.col("reason") != "HYPERCALL")
    exits = exits.select(pl.col("vid").alias("key"), "ord", user_exit.fill_null(False).alias("_u"))
    order = prep.exits_by_vcpu  # (taken once, for the exit durations too)
    exits = exits[order] if order is not None else sort_by_key(exits, "key")
    last = lookup(changes.select("vid", "ord"), exits, by="vid", on="ord", values=["_u"], strict=True)["_u"]
    return (stopped & last.fill_null(False)).alias("user")
