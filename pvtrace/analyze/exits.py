"""Hypervisor-side measures: exit reasons, pause exits, pv kicks, directed yields.

docs/metrics.md, Exits and pv: time in exit runs from vm_exit to the same
vCPU's next vm_entry; a pause exit counts the other vCPUs of its VM preempted
at it; kick latency runs from the kick to the target's next vcpu_run.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pvtrace.analyze.intervals import count_before, lookup, same_as_next, same_as_previous
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.vcpu_states import VcpuStates

I64, I32, STR, F64, BOOL = pl.Int64(), pl.Int32(), pl.String(), pl.Float64(), pl.Boolean()


def exit_durations(prep: Prepared) -> pl.DataFrame:
    """Every vm_exit in canonical order: vid, ts, ord, reason, dur (to the same vCPU's next
    vm_entry; null if its next event is not one)."""
    order = prep.exits_by_vcpu
    if order is None:
        following = pl.col("kind").shift(-1).over("vid") == "vm_entry"
        dur = pl.when(following).then(pl.col("ts").shift(-1).over("vid") - pl.col("ts"))
    else:  # each vCPU's next event in the vCPU order, then back to canonical order by one gather
        following = same_as_next("vid") & (pl.col("kind").shift(-1) == "vm_entry")
        by_vcpu = prep.exits.select("vid", "kind", "ts")[order]
        after = by_vcpu.select(pl.when(following).then(pl.col("ts").shift(-1) - pl.col("ts"))).to_series()
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        dur = pl.lit(after[back])
    return (
        prep.exits.with_columns(dur.alias("dur"))
        .filter(pl.col("kind") == "vm_exit")
        .select("vid", "ts", "ord", pl.col("reason").fill_null("UNKNOWN"), "dur")
    )


def exit_reasons(exits: pl.DataFrame) -> pl.DataFrame:
    """The exit_reasons result table, like `perf kvm stat report`."""
    return merge_exit_reasons(exit_reason_parts(exits))


def exit_reason_parts(exits: pl.DataFrame) -> pl.DataFrame:
    """Per reason: count, n_timed (exits with a duration), total_ns, min_ns, max_ns."""
    d = pl.col("dur")
    return exits.group_by("reason").agg(
        pl.len().cast(I64).alias("count"),
        d.count().cast(I64).alias("n_timed"),
        d.sum().cast(I64).alias("total_ns"),
        d.min().cast(I64).alias("min_ns"),
        d.max().cast(I64).alias("max_ns"),
    )


def merge_exit_reasons(parts: pl.DataFrame) -> pl.DataFrame:
    """exit_reasons of rows (reason, count, n_timed, total_ns, min_ns, max_ns) that may repeat a
    reason (one row per reason from each VM partition of a trace): the average is total_ns over the
    exits with a duration (n_timed) either way."""
    merged = parts.group_by("reason").agg(
        pl.col("count", "n_timed", "total_ns").sum(), pl.col("min_ns").min(), pl.col("max_ns").max()
    )
    total = max(int(merged["count"].sum() or 0), 1)
    return (
        merged.with_columns(
            (pl.col("count") * 100.0 / total).alias("share_pct"),
            pl.when(pl.col("n_timed") > 0)
            .then((pl.col("total_ns") / pl.col("n_timed")).round(0))
            .cast(I64)
            .alias("avg_ns"),
        )
        .select(pl.col("reason").cast(STR), "count", "share_pct", "total_ns", "min_ns", "avg_ns", "max_ns")
        .sort("count", "reason", descending=[True, False])
    )


# KVM's default VMX PLE window, and the clock assumed to turn PLE cycles into time (traces do
# not carry the CPU frequency).
DEFAULT_PLE_WINDOW = 4096
ASSUMED_CPU_GHZ = 3.0


def pause_exits(exits: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Every PAUSE exit: ts, vid, vm, vcpu, n_siblings_preempted (others of its VM preempted at it)
    and window_ns, the PLE window in force (the spin that the exit ended)."""
    pauses = exits.filter(pl.col("reason") == "PAUSE").with_columns(prep.vcpu_attr("vm_id"))
    if pauses.height == 0:
        return pl.DataFrame(
            schema={
                "ts": I64,
                "vid": I64,
                "vm": STR,
                "vcpu": I32,
                "n_siblings_preempted": I64,
                "window_ns": I64,
            }
        )
    # preempted vCPUs per VM after each state change, in canonical order
    ch = states.changes  # sorted by (vid, ord)
    pre = (pl.col("state") == "preempted").cast(I64)
    prev = pl.when(same_as_previous("vid")).then(pre.shift(1)).otherwise(0)
    deltas = (
        ch.with_columns((pre - prev).alias("d"))
        .filter(pl.col("d") != 0)
        .sort("ord")
        .select(prep.vcpu_attr("vm_id").alias("key"), "ord", "d")
        .select("key", "ord", pl.col("d").cum_sum().over("key").alias("n_preempted"))
    )
    found = lookup(pauses, deltas, by="vm_id", on="ord", values=["n_preempted"], strict=True)
    windows = prep.ple.select(  # in canonical order
        pl.col("vid").alias("key"), pl.col("ord").alias("w_ord"), pl.col("value").alias("window")
    )
    found = lookup(
        found.drop("_row"),
        windows,
        by="vid",
        on="ord",
        table_on="w_ord",
        values=["window"],
        strict=True,
    )
    # The exiting vCPU itself is running (it is on a pCPU), so every preempted vCPU is a sibling.
    return found.select(
        "ts",
        "vid",
        prep.vcpu_attr("vm"),
        prep.vcpu_attr("vcpu").cast(I32),
        pl.col("n_preempted").fill_null(0).alias("n_siblings_preempted"),
        (pl.col("window").fill_null(DEFAULT_PLE_WINDOW) / ASSUMED_CPU_GHZ)
        .round(0)
        .cast(I64)
        .alias("window_ns"),
    )


# What the host-only spin estimate leaves out and adds (the summary lists it as partial).
HOST_SPIN_PART = {
    "missing": "an estimate from PAUSE exits, one PLE window of spin each: spin shorter than a window and "
    "the spin after a wait's last exit are not seen, a PAUSE loop on no lock (an IPI's acknowledgement) is counted",
    "fix": "capture the guest too: in the guest, sudo pvtrace record --guest -o guest.txt",
}


def pause_spin(pauses: pl.DataFrame) -> dict[str, int]:
    """Host-only estimates: spin ended by PAUSE exits (one PLE window each), and the part of it
    spent while a sibling of the same VM was preempted (a preempted holder or next owner: spin
    waste, LHP and LWP together, which the host cannot tell apart)."""
    return {
        "spin_ns": int(pauses["window_ns"].sum() or 0),
        "spin_waste_ns": int(pauses.filter(pl.col("n_siblings_preempted") > 0)["window_ns"].sum() or 0),
    }


def kicks(states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """The kicks result table: ts, vm, vcpu (kicker), target, latency_ns (to the target's next run)."""
    runs = (
        states.changes.lazy()
        .filter(pl.col("kind") == "vcpu_run")
        .select(pl.col("vid").alias("key"), pl.col("ord").alias("run_ord"), pl.col("ts").alias("run_ts"))
        .collect()
    )
    found = lookup(
        prep.kicks,
        runs,
        by="target_vid",
        on="ord",
        table_on="run_ord",
        values=["run_ts"],
        direction="forward",
        strict=True,
    )
    return found.select(
        "ts",
        prep.vcpu_attr("vm"),
        prep.vcpu_attr("vcpu").cast(I32),
        _target_vcpu(prep),
        (pl.col("run_ts") - pl.col("ts")).alias("latency_ns"),
    )


def _target_vcpu(prep: Prepared) -> pl.Expr:
    """The vCPU index of target_vid (null: no or unknown target)."""
    return prep.vcpu_attr("vcpu", vid="target_vid").cast(I32).alias("target")


def _held_at(acq: pl.DataFrame, points: pl.DataFrame) -> pl.Series:
    """Per point (target_vid, o2 = 2 * ord): whether that vCPU held a lock there, as holds that
    began before it less holds that ended before it (sort_key and end_key are 2 * ord; holds of
    no known vCPU, and open ones' ends, are not counted)."""
    began = count_before(acq, points, key="vid", at="sort_key", by="target_vid", on="o2")
    ended = count_before(acq, points, key="vid", at="end_key", by="target_vid", on="o2")
    return ((began - ended).fill_null(0) > 0).alias("target_held_lock")


def yields(acq: pl.DataFrame | None, prep: Prepared) -> pl.DataFrame:
    """The yields result table: ts, vm, vcpu, target, target_held_lock (null when holds are unknown)."""
    y = prep.yields
    if acq is None:
        y = y.with_columns(pl.lit(None, BOOL).alias("target_held_lock"))
    else:
        y = y.with_columns(_held_at(acq, y.select("target_vid", (pl.col("ord") * 2).alias("o2"))))
    return y.select(
        "ts", prep.vcpu_attr("vm"), prep.vcpu_attr("vcpu").cast(I32), _target_vcpu(prep), "target_held_lock"
    )
