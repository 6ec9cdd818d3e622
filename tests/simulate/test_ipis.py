"""TLB-shootdown IPIs (ipis.py) and the tlb-shootdown preset: the truth's IPI waits replayed from
the kernel tracepoints the run emits, and pv TLB flush's effect."""

from __future__ import annotations

import polars as pl

from pvtrace.simulate.output import CSD_SIZE, PERCPU_BASE, PERCPU_STRIDE
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset


def run(pv_tlb_flush: bool, runqueues: str = "global"):
    s = load_preset("tlb-shootdown").replace(
        host={"runqueues": runqueues}, vm={"ops": 300}, hypervisor={"pv_tlb_flush": pv_tlb_flush}
    )
    return simulate_trace(s, seed=5)


def replayed_waits(events: pl.DataFrame) -> pl.DataFrame:
    """Each IPI send with its wait: until the last of its targets ran csd_function_exit (the sender
    waits for one shootdown at a time, so a handling belongs to its sender's latest send)."""
    other = events.filter(pl.col("kind") == "other").with_columns(pl.col("event").cast(pl.String))
    sends = other.filter(pl.col("event") == "ipi_send_cpumask").select(
        "vm", pl.col("vcpu").alias("sender"), pl.col("ts").alias("sent")
    )
    address = pl.col("args").str.extract(r"csd=0x([0-9a-f]+)").str.to_integer(base=16, dtype=pl.UInt64)
    done = other.filter(pl.col("event") == "csd_function_exit").select(
        "vm",
        ((address - PERCPU_BASE) % PERCPU_STRIDE // CSD_SIZE).cast(pl.Int32).alias("sender"),
        pl.col("ts").alias("handled"),
    )
    done = done.sort("handled").join_asof(
        sends.sort("sent"),
        left_on="handled",
        right_on="sent",
        by=["vm", "sender"],
        strategy="backward",
        check_sortedness=False,
    )
    last = done.group_by("vm", "sender", "sent").agg(pl.col("handled").max())
    return last.with_columns((pl.col("handled") - pl.col("sent")).alias("wait"))


def test_the_truths_ipi_waits_are_what_the_tracepoints_show():
    for pv in (True, False):
        trace, truth = run(pv)
        ipi = truth.extra["ipi"]
        waits = replayed_waits(trace.events)
        assert ipi["n_shootdowns"] > 0 and waits.height > 0
        assert int(waits["wait"].sum()) == ipi["wait_ns"]
        assert int(waits["wait"].max()) == ipi["wait_max_ns"]
        assert 0 <= ipi["wait_preempted_ns"] <= ipi["wait_ns"]
        kinds = trace.events.filter(pl.col("kind") == "other")["event"].cast(pl.String).value_counts()
        n = dict(zip(kinds["event"], kinds["count"], strict=True))
        assert n["csd_queue_cpu"] == n["csd_function_entry"] == n["csd_function_exit"]  # all handled


def test_pv_tlb_flush_spares_the_sender_the_wait_for_preempted_targets():
    # Without pv TLB flush a preempted target stalls its sender until it runs again (the LHP
    # disease); with it, targets not running at the send are skipped and flushed at their entry.
    for runqueues in ("global", "per-cpu"):
        _, off = run(False, runqueues)
        _, on = run(True, runqueues)
        off, on = off.extra["ipi"], on.extra["ipi"]
        assert off["n_skipped_preempted"] == 0 < on["n_skipped_preempted"]
        assert off["wait_preempted_ns"] > 0.9 * off["wait_ns"]  # the stall is nearly all of the wait
        assert on["wait_ns"] < off["wait_ns"] / 3
