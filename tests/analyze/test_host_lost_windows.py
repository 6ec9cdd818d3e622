"""Host-side lost events: a vCPU that may have run unseen on the blinded pCPU is unknown there.

(Issue 17: with host CPU 1's records lost, a vCPU showed preempted through the window while it
ran inside it, and LHP incidents were counted inside the window.)
"""

from __future__ import annotations

import polars as pl
from trace_rows import acquire, contend, preempt, release, run, trace_of

from pvtrace.analyze import analyze


def rows(df: pl.DataFrame, *cols: str) -> list[tuple]:
    return df.select(cols).rows()


def test_a_preempted_vcpu_that_could_run_on_the_blind_pcpu_is_unknown_there():
    # pCPU 1: v1 runs [0,5) holding the lock, is preempted at 5; v2 runs there from 5 (exit at 10).
    # Host events of pCPU 1 are lost between 10 and the marker at 20 (v1 may have run there).
    # v1's next state change is its run at 25: it is unknown [10, 25), not preempted.
    # v0 waits [6, 31) on pCPU 0: [6,10) LHP (holder preempted), [10,25) holder unknown,
    # [25,30) useful, [30,31) useful (next owner is v0).
    rows_ = [
        run(0, 0),
        run(1, 0),
        acquire(1, 1),
        preempt(1, 5, pcpu=1),
        run(2, 5, pcpu=1),
        contend(0, 6),
        (10, "vm_exit", 2, {"pcpu": 1, "reason": "EXTERNAL_INTERRUPT"}),
        (20, "lost_events", None, {"pcpu": 1, "vm": None, "origin": "host", "value": 12}),
        (20, "vm_entry", 2, {"pcpu": 1}),
        preempt(2, 25, pcpu=1),
        run(1, 25, pcpu=1),
        release(1, 30),
        acquire(0, 31),
        release(0, 33),
    ]
    a = analyze(trace_of(rows_, t_end=40, n_vcpus=3))
    v1 = a.table("vcpu_states").filter(pl.col("vcpu") == 1)
    assert rows(v1, "state", "start", "end") == [
        ("running", 0, 5),
        ("preempted", 5, 10),
        ("unknown", 10, 25),
        ("running", 25, 40),
    ]
    lhp = a.table("lhp_incidents")
    assert rows(lhp, "holder", "start", "end", "waste_ns") == [(1, 5, 10, 4)]
    t = a.summary.totals
    assert (t["spin_ns"], t["waste_lhp_ns"], t["spin_unattributed_ns"]) == (25, 4, 15)


def test_a_vcpu_running_elsewhere_stays_known():
    # v0 runs on pCPU 0 through pCPU 1's lost window: its state is never in doubt. v1 (running on
    # pCPU 1 at the window start) is unknown until its next state change (none: the trace end).
    rows_ = [
        run(0, 0),
        run(1, 0),
        (10, "vm_exit", 1, {"pcpu": 1, "reason": "EXTERNAL_INTERRUPT"}),
        (20, "lost_events", None, {"pcpu": 1, "vm": None, "origin": "host", "value": 3}),
        (20, "vm_entry", 1, {"pcpu": 1}),
    ]
    a = analyze(trace_of(rows_, t_end=30, n_vcpus=2))
    assert rows(a.table("vcpu_states").filter(pl.col("vcpu") == 0), "state", "start", "end") == [
        ("running", 0, 30)
    ]
    assert rows(a.table("vcpu_states").filter(pl.col("vcpu") == 1), "state", "start", "end")[1] == (
        "unknown",
        10,
        30,
    )
