"""Hand-written traces with known answers, at the exact level (docs/metrics.md).

Times are small integers; each expected number is worked out in the comments.
"""

from __future__ import annotations

import polars as pl
from trace_rows import acquire, contend, halt, preempt, release, run, trace_of, wake

from pvtrace.analyze import analyze


def totals(a) -> dict[str, int]:
    return a.summary.totals


def rows(df: pl.DataFrame, *cols: str) -> list[tuple]:
    return df.select(cols).rows()


def test_lhp_harmful_incident_and_spin_split():
    # v0 holds [0, 35) and is preempted [10, 30); v1 waits [12, 36) running all along.
    # v1's spin: [12,30) holder preempted -> lhp 18; [30,35) holder runs -> useful 5;
    # [35,36) free, next owner is v1 itself -> useful 1.
    t = trace_of(
        [
            run(0, 0),
            run(1, 0),
            acquire(0, 0),
            preempt(0, 10),
            contend(1, 12),
            run(0, 30),
            release(0, 35),
            acquire(1, 36),
            release(1, 40),
        ],
        t_end=50,
        n_vcpus=2,
    )
    a = analyze(t)
    tot = totals(a)
    assert (tot["spin_ns"], tot["spin_useful_ns"], tot["waste_lhp_ns"], tot["waste_lwp_ns"]) == (24, 6, 18, 0)
    assert (tot["n_acquisitions"], tot["n_contended"], tot["n_lhp"], tot["n_lhp_harmful"]) == (2, 1, 1, 1)
    assert (tot["n_lwp"], tot["n_convoys"], tot["convoy_len_max"], tot["n_truncated"]) == (0, 0, 0, 0)
    lhp = a.table("lhp_incidents")
    assert rows(lhp, "holder", "holder_state", "start", "end", "dur", "n_waiters", "waste_ns", "harmful") == [
        (0, "preempted", 10, 30, 20, 1, 18, True)
    ]
    assert a.summary.fidelity["waste_lhp_ns"] == "exact"
    by_vcpu = a.table("waste_by_vcpu")
    assert rows(by_vcpu, "vcpu", "waste_lhp_ns", "running_ns") == [(0, 0, 30), (1, 18, 50)]
    assert rows(a.table("waste_by_vm"), "vm", "waste_lhp_ns", "running_ns") == [("vm0", 18, 80)]
    assert rows(a.table("waste_by_lock"), "n_acquisitions", "n_contended", "waste_lhp_ns", "wait_max_ns") == [
        (2, 1, 18, 24)
    ]
    assert a.summary.extra["spin_waste_pct_of_running"] == 22.5


def test_benign_lhp_holder_preempted_without_waiters():
    # v0 holds [0, 20), preempted [5, 15): one LHP incident, nobody spins.
    t = trace_of([run(0, 0), acquire(0, 0), preempt(0, 5), run(0, 15), release(0, 20)], t_end=30, n_vcpus=1)
    a = analyze(t)
    assert (totals(a)["n_lhp"], totals(a)["n_lhp_harmful"], totals(a)["spin_ns"]) == (1, 0, 0)
    assert rows(a.table("lhp_incidents"), "start", "end", "n_waiters", "waste_ns", "harmful") == [
        (5, 15, 0, 0, False)
    ]


def test_waiter_preempted_while_spinning():
    # v1 waits [5, 32): running [5,10) and [20,32), preempted [10,20).
    # Holder v0 runs all along: spin 17 all useful; wait_preempted 10; no LWP (v1 runs at the release).
    t = trace_of(
        [
            run(0, 0),
            run(1, 0),
            acquire(0, 0),
            contend(1, 5),
            preempt(1, 10),
            run(1, 20),
            release(0, 30),
            acquire(1, 32),
        ],
        t_end=40,
        n_vcpus=2,
    )
    tot = totals(analyze(t))
    assert (tot["spin_ns"], tot["spin_useful_ns"], tot["wait_preempted_ns"], tot["wait_halted_ns"]) == (
        17,
        17,
        10,
        0,
    )
    assert (tot["n_lwp"], tot["n_lhp"]) == (0, 0)


LWP_ROWS = [
    run(0, 0),
    run(1, 0),
    run(2, 0),
    acquire(0, 0),
    contend(1, 2),
    contend(2, 4),
    preempt(1, 6),
    release(0, 10),
    run(1, 20),
    acquire(1, 21),
    release(1, 25),
    acquire(2, 26),
    release(2, 30),
]


def test_next_in_line_waiter_preempted_lwp_and_convoy():
    # v1 (first in line) is preempted [6, 20) across v0's release at 10: LWP preempted [10, 21).
    # v2 spins [4, 26): [4,10) useful 6, [10,20) next owner v1 preempted -> lwp 10,
    # [20,21) v1 runs -> useful 1, [21,25) holder v1 runs -> useful 4, [25,26) itself next -> useful 1.
    # v1 spins [2,6) useful 4 and [20,21) useful 1. Acquisitions at 21 and 26 are hand-offs: a convoy
    # of 2 from the release at 10, started by the LWP incident.
    a = analyze(trace_of(LWP_ROWS, t_end=40))
    tot = totals(a)
    assert (tot["spin_ns"], tot["spin_useful_ns"], tot["waste_lwp_ns"], tot["waste_lwp_preempted_ns"]) == (
        27,
        17,
        10,
        10,
    )
    assert (tot["waste_lwp_halted_ns"], tot["waste_lhp_ns"], tot["wait_preempted_ns"]) == (0, 0, 14)
    assert (tot["n_lwp"], tot["n_lwp_preempted"], tot["n_lwp_halted"]) == (1, 1, 0)
    assert (tot["n_convoys"], tot["convoy_len_max"], tot["n_acquisitions"], tot["n_contended"]) == (
        1,
        2,
        3,
        2,
    )
    lwp = a.table("lwp_incidents")
    assert rows(
        lwp,
        "next_owner",
        "next_owner_state",
        "start",
        "end",
        "dur",
        "pcpu_wait_ns",
        "n_waiters",
        "waste_ns",
        "harmful",
    ) == [(1, "preempted", 10, 21, 11, 10, 1, 10, True)]
    assert rows(a.table("convoys"), "start", "end", "length", "peak_waiters", "cause") == [
        (10, 26, 2, 2, "lwp")
    ]
    assert rows(a.table("waits"), "vcpu", "handoff") == [(1, True), (2, True)]


def test_unfair_lock_has_no_lwp():
    # Same run on a test-and-set lock: the free-lock spin is useful, LWP totals are 0 and available.
    tot = totals(analyze(trace_of(LWP_ROWS, t_end=40, lock_kind="unfair")))
    assert (tot["waste_lwp_ns"], tot["n_lwp"], tot["spin_useful_ns"]) == (0, 0, 27)


def test_unknown_lock_kind_makes_lwp_unavailable():
    a = analyze(trace_of(LWP_ROWS, t_end=40, lock_kind="unknown"))
    missing = {u.metric for u in a.summary.unavailable}
    assert {"waste_lwp_ns", "n_lwp", "n_lwp_preempted", "n_lwp_halted"} <= missing
    assert "waste_lwp_ns" not in a.summary.totals and "n_lwp" not in a.summary.totals
    assert a.summary.totals["spin_ns"] == 27
    # the option overrides the metadata
    assert (
        analyze(trace_of(LWP_ROWS, t_end=40, lock_kind="unknown"), lock_kind="fifo").summary.totals["n_lwp"]
        == 1
    )


def test_halted_next_owner_pv_kick():
    # pv slow path: v1 halts [5, 11) waiting, v0 releases at 10 and kicks v1; v1 is woken at 11,
    # runs at 14 and acquires at 15. LWP halted [10, 15), pcpu wait 14 - 11 = 3, kick latency 4.
    # v2 spins [6, 19): useful 4, lwp halted [10,11) 1, lwp preempted [11,14) 3, then useful 1+3+1.
    rows_ = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        acquire(0, 0),
        contend(1, 2),
        (5, "pv_halt", 1, {"lock": 1}),
        halt(1, 5),
        contend(2, 6),
        release(0, 10),
        (10, "pv_kick", 0, {"target": 1, "value": 5}),
        wake(1, 11),
        run(1, 14),
        acquire(1, 15),
        release(1, 18),
        acquire(2, 19),
        release(2, 22),
    ]
    a = analyze(trace_of(rows_, t_end=30))
    tot = totals(a)
    assert (tot["spin_ns"], tot["spin_useful_ns"], tot["waste_lwp_ns"]) == (17, 13, 4)
    assert (tot["waste_lwp_preempted_ns"], tot["waste_lwp_halted_ns"]) == (3, 1)
    assert (tot["wait_halted_ns"], tot["wait_preempted_ns"]) == (6, 3)
    assert (tot["n_lwp"], tot["n_lwp_halted"], tot["n_lwp_preempted"], tot["n_kicks"]) == (1, 1, 0, 1)
    assert rows(a.table("lwp_incidents"), "next_owner_state", "start", "end", "pcpu_wait_ns", "waste_ns") == [
        ("halted", 10, 15, 3, 4)
    ]
    assert rows(a.table("kicks"), "ts", "vcpu", "target", "latency_ns") == [(10, 0, 1, 4)]
    assert rows(a.table("convoys"), "start", "end", "length", "peak_waiters", "cause") == [
        (10, 19, 2, 2, "lwp")
    ]


def test_convoy_caused_by_lhp():
    # The holder v0 is preempted [5, 20) and runs again at 20 where it releases at once: the LHP
    # incident [5, 20) covers the instant before the release, so the convoy it starts is "lhp".
    rows_ = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        acquire(0, 0),
        contend(1, 2),
        contend(2, 3),
        preempt(0, 5),
        run(0, 20),
        release(0, 20),
        acquire(1, 21),
        release(1, 23),
        acquire(2, 24),
        release(2, 26),
    ]
    a = analyze(trace_of(rows_, t_end=30))
    assert rows(a.table("convoys"), "start", "end", "length", "peak_waiters", "cause") == [
        (20, 24, 2, 2, "lhp")
    ]
    # v1 spins [2,5) useful 3, [5,20) lhp 15, [20,21) useful 1; v2 [3,5) 2, [5,20) 15, [20,24) useful 4.
    tot = totals(a)
    assert (tot["waste_lhp_ns"], tot["spin_useful_ns"], tot["n_lhp_harmful"]) == (30, 10, 1)
    assert rows(a.table("lhp_incidents"), "n_waiters", "waste_ns") == [(2, 30)]


def test_lost_events_window_makes_state_unknown():
    # Host events on pCPU 0 were lost between 10 (last event seen there) and the marker at 20.
    # v0 ran on pCPU 0, so it is unknown from 10 until its next state change (preempt at 30).
    # v1 spins [5, 46): [5,10) useful 5, [10,30) holder state unknown -> unattributed 20,
    # [30,40) lhp 10, [40,45) useful 5, [45,46) useful 1.
    rows_ = [
        run(0, 0),
        run(1, 0),
        acquire(0, 0),
        contend(1, 5),
        (10, "vm_exit", 0, {"pcpu": 0, "reason": "EXTERNAL_INTERRUPT"}),
        (20, "lost_events", None, {"pcpu": 0, "vm": None, "origin": "host", "value": 7}),
        (20, "vm_entry", 0, {"pcpu": 0}),
        preempt(0, 30),
        run(0, 40),
        release(0, 45),
        acquire(1, 46),
    ]
    a = analyze(trace_of(rows_, t_end=50, n_vcpus=2))
    tot = totals(a)
    assert (tot["spin_ns"], tot["spin_useful_ns"], tot["spin_unattributed_ns"], tot["waste_lhp_ns"]) == (
        41,
        11,
        20,
        10,
    )
    assert rows(a.table("lost_windows"), "origin", "cpu", "start", "end", "n_lost") == [
        ("host", 0, 10, 20, 7)
    ]
    states = a.table("vcpu_states").filter(pl.col("vcpu") == 0)
    assert rows(states, "state", "start", "end") == [
        ("running", 0, 10),
        ("unknown", 10, 30),
        ("preempted", 30, 40),
        ("running", 40, 50),
    ]
    assert rows(a.table("lhp_incidents"), "start", "end", "waste_ns") == [(30, 40, 10)]
    assert a.summary.extra["excluded_ns"] == 20 and a.summary.extra["excluded_pct"] == 20.0
    assert rows(a.table("exit_reasons"), "reason", "count", "total_ns") == [("EXTERNAL_INTERRUPT", 1, 10)]


def test_guest_lost_window_excludes_waits():
    # Guest CPU 1 lost events between its contend at 5 and the marker at 8: its wait is excluded.
    rows_ = [
        run(0, 0),
        run(1, 0),
        acquire(0, 0),
        contend(1, 5),
        (8, "lost_events", None, {"vm": "vm0", "vcpu": 1, "origin": "guest"}),
        release(0, 10),
        acquire(1, 12),
        release(1, 14),
    ]
    a = analyze(trace_of(rows_, t_end=20, n_vcpus=2))
    assert a.table("waits").height == 0
    assert a.summary.extra["n_waits_excluded"] == 1
    assert totals(a)["spin_ns"] == 0


def test_trace_starting_in_the_middle_of_a_hold():
    # The lock was held before the trace: its release at 5 has no acquire. v1's spin [2,5) is
    # unattributed; [5,6) it is itself the next owner -> useful. Its acquisition is the lock's
    # first in the trace, so it is not a hand-off.
    rows_ = [run(0, 0), run(1, 0), contend(1, 2), release(0, 5), acquire(1, 6), release(1, 8)]
    a = analyze(trace_of(rows_, t_end=10, n_vcpus=2))
    tot = totals(a)
    assert (tot["spin_ns"], tot["spin_unattributed_ns"], tot["spin_useful_ns"]) == (4, 3, 1)
    assert (tot["n_acquisitions"], tot["n_contended"], tot["n_lhp"]) == (1, 1, 0)
    assert rows(a.table("holds"), "vcpu", "start", "end") == [(None, 0, 5), (1, 6, 8)]
    assert rows(a.table("waits"), "handoff") == [(False,)]


def test_truncation_at_trace_end():
    # At t_end = 20 the wait of v1, the hold of v0 and v0's LHP incident are still open.
    rows_ = [run(0, 0), run(1, 0), acquire(0, 0), contend(1, 5), preempt(0, 10)]
    a = analyze(trace_of(rows_, t_end=20, n_vcpus=2))
    tot = totals(a)
    assert (tot["spin_ns"], tot["spin_useful_ns"], tot["waste_lhp_ns"], tot["n_truncated"]) == (15, 5, 10, 3)
    assert rows(a.table("lhp_incidents"), "start", "end", "truncated", "harmful") == [(10, 20, True, True)]
    assert rows(a.table("waits"), "end", "truncated") == [(20, True)]
    assert rows(a.table("holds"), "end", "truncated") == [(20, True)]
    # truncated waits have no place in the percentiles
    assert a.table("waste_by_lock")["wait_max_ns"].to_list() == [None]


def test_next_owner_state_is_taken_before_the_release_in_canonical_order():
    # v1 runs again at the very nanosecond of the release, but after it: at the release it was
    # preempted, so there is an LWP incident with zero pCPU wait and no waste.
    rows_ = [
        run(0, 0),
        run(1, 0),
        acquire(0, 0),
        contend(1, 2),
        preempt(1, 4),
        release(0, 10),
        run(1, 10),
        acquire(1, 12),
    ]
    a = analyze(trace_of(rows_, t_end=20, n_vcpus=2))
    assert rows(a.table("lwp_incidents"), "start", "end", "pcpu_wait_ns", "waste_ns", "harmful") == [
        (10, 12, 0, 0, False)
    ]


def test_vcpu_state_rules():
    # unknown before the first event; wake of a halted vCPU -> preempted; wake while running: no change.
    rows_ = [run(0, 5), wake(0, 6), halt(0, 8), wake(0, 10), run(0, 12)]
    a = analyze(trace_of(rows_, t_end=20, n_vcpus=1))
    assert rows(a.table("vcpu_states"), "state", "start", "end") == [
        ("unknown", 0, 5),
        ("running", 5, 8),
        ("halted", 8, 10),
        ("preempted", 10, 12),
        ("running", 12, 20),
    ]


def test_unsorted_events_are_put_in_canonical_order():
    t = trace_of(LWP_ROWS, t_end=40)
    shuffled = t.events.sample(fraction=1.0, shuffle=True, seed=3)
    t2 = type(t)(events=shuffled, meta=t.meta)
    assert totals(analyze(t2)) == totals(analyze(t))


def test_exits_pause_siblings_and_yields():
    # v1 takes a PAUSE exit at 12 while v0 (the holder) is preempted; then yields to v0 (holding).
    rows_ = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        acquire(0, 0),
        preempt(0, 10),
        contend(1, 11),
        (12, "vm_exit", 1, {"pcpu": 1, "reason": "PAUSE"}),
        (13, "yield_to", 1, {"target": 0}),
        (15, "vm_entry", 1, {"pcpu": 1}),
        (16, "vm_exit", 2, {"pcpu": 2, "reason": "PAUSE"}),
        (17, "vm_entry", 2, {"pcpu": 2}),
        (18, "vm_exit", 2, {"pcpu": 2, "reason": "HLT"}),
        (22, "vm_entry", 2, {"pcpu": 2}),
        (23, "yield_to", 2, {"target": 1}),
        run(0, 25),
        release(0, 26),
        acquire(1, 27),
    ]
    a = analyze(trace_of(rows_, t_end=30))
    assert totals(a)["n_pause_exits"] == 2
    assert rows(a.table("pause_exits"), "ts", "vcpu", "n_siblings_preempted") == [(12, 1, 1), (16, 2, 1)]
    assert rows(a.table("exit_reasons"), "reason", "count", "total_ns", "min_ns", "avg_ns", "max_ns") == [
        ("PAUSE", 2, 4, 1, 2, 3),
        ("HLT", 1, 4, 4, 4, 4),
    ]
    assert rows(a.table("yields"), "vcpu", "target", "target_held_lock") == [(1, 0, True), (2, 1, False)]
    assert a.summary.extra["n_pause_exits_sibling_preempted"] == 2
