"""What the guest was doing at each vCPU stop, from the vCPU's last exit before it: in user mode
(kvm_exit's guest rip, vm_exit value 1) or spinning (a PAUSE exit: pause-loop exiting caught a
PAUSE loop).

Guest spinlocks are held in the kernel with preemption off, so a vCPU stopped in user mode holds
none through its stop; nor, like a lock waiter, does one stopped spinning on something its
trace does not show as a lock wait (an IPI's acknowledgement, a lock of an untraced kind)
(docs/metrics.md, Inferred holders: Guest mode at a stop).
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import lookup, sort_by_key
from pvtrace.analyze.prepare import Prepared


def guest_at_stops(changes: pl.DataFrame, prep: Prepared) -> tuple[pl.Series, pl.Series]:
    """Per state change (sorted by vid, ord), from the vCPU's last exit before it (one lookup for
    both): `user`, a stop whose exit found the guest in user mode, and `spinning`, a stop whose
    exit was a PAUSE exit (a pause-loop exit that yielded, or was preempted, before the guest ran
    again). False where nothing says so (a kernel rip, no rip printed, no exit before it)."""
    stopped = changes["state"] != "running"
    if prep.exits.height == 0:
        return (stopped & False).alias("user"), (stopped & False).alias("spinning")
    exit_ = pl.col("kind") == "vm_exit"
    user_exit = exit_ & (pl.col("value") == 1) & (pl.col("reason") != "HYPERCALL")
    pause = exit_ & (pl.col("reason") == "PAUSE")
    exits = _by_vcpu(prep).select(
        "key", "ord", user_exit.fill_null(False).alias("_u"), pause.fill_null(False).alias("_p")
    )
    last = lookup(changes.select("vid", "ord"), exits, by="vid", on="ord", values=["_u", "_p"], strict=True)
    return (
        (stopped & last["_u"].fill_null(False)).alias("user"),
        (stopped & last["_p"].fill_null(False)).alias("spinning"),
    )


def _by_vcpu(prep: Prepared) -> pl.DataFrame:
    """prep.exits sorted by vCPU (key = vid), canonical within each, in the order taken once for
    the exit durations too."""
    exits = prep.exits.with_columns(pl.col("vid").alias("key"))
    order = prep.exits_by_vcpu
    return exits[order] if order is not None else sort_by_key(exits, "key")


def kernel_share(changes: pl.DataFrame, waits: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """Per VM whose exits print the guest's mode: how often a host preemption finds one of its
    vCPUs in the kernel while it waits for no lock (vm_id, kernel_share).

    Such a stop is where an unseen holder's would be; the share is the base rate of a kernel-mode
    stop, so a sibling stopped in the kernel is 1 / share times likelier to hold a given lock
    than one seen running (whose mode nobody printed). Only interrupt exits count: a PAUSE exit
    is a spinning waiter's, always in the kernel.
    """
    exits = prep.exits
    empty = pl.DataFrame(schema={"vm_id": pl.Int64(), "kernel_share": pl.Float64()})
    if exits.height == 0 or waits.height == 0:
        return empty
    last = _by_vcpu(prep).filter(pl.col("kind") == "vm_exit").select("key", "ord", "reason", "value")
    stops = changes.filter(pl.col("state") == "preempted").select("vid", "ts", "ord", "user")
    stops = lookup(stops, last, by="vid", on="ord", values=["reason", "value"], strict=True)
    stops = stops.filter(pl.col("reason") == "EXTERNAL_INTERRUPT")
    w = sort_by_key(
        waits.select(pl.col("vid").alias("key"), pl.col("start").alias("w0"), "end"), "key", then="w0"
    )
    stops = lookup(stops, w, by="vid", on="ts", table_on="w0", values=["end"])
    idle = stops.filter(pl.col("end").is_null() | (pl.col("end") <= pl.col("ts")))
    per_vm = (
        idle.with_columns(prep.vcpu_attr("vm_id"))
        .group_by("vm_id")
        .agg(pl.col("user").any().alias("_printed"), (~pl.col("user")).mean().alias("kernel_share"))
    )
    return per_vm.filter("_printed").select("vm_id", "kernel_share")
