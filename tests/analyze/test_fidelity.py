"""Fidelity levels on hand-written traces: what each level gives, labels and leaves unavailable."""

from __future__ import annotations

from test_exact import LWP_ROWS
from trace_rows import acquire, contend, halt, preempt, run, trace_of, wake

from pvtrace.analyze import analyze
from pvtrace.trace import Trace

US = 1_000


def view(rows: list[tuple], kinds: set[str], name: str, **kw) -> Trace:
    """A trace of only some kinds of events, as a partial capture would see them."""
    return trace_of([r for r in rows if r[1] in kinds], view=name, **kw)


def unavailable(a) -> dict[str, object]:
    return {u.metric: u for u in a.summary.unavailable}


def test_guest_only_counts_waits_but_invents_no_spin():
    # Guest tracepoints: contention begin/end only (no releases, no uncontended acquisitions).
    guest_rows = [r for r in LWP_ROWS if r[1] == "lock_contend"] + [acquire(1, 21), acquire(2, 26)]
    a = analyze(
        view(sorted(guest_rows, key=lambda r: r[0]), {"lock_contend", "lock_acquire"}, "guest", t_end=40)
    )
    s = a.summary
    assert s.extra["level"] == "guest-only"
    assert s.totals == {"n_contended": 2}
    assert s.extra["wait_ns"] == (21 - 2) + (26 - 4)
    missing = unavailable(a)
    assert "sched:sched_switch" in missing["spin_ns"].missing_events
    assert "sudo pvtrace record --host" in missing["spin_ns"].how_to_capture
    assert "lock:lock_acquire" in missing["n_acquisitions"].missing_events
    assert "CONFIG_LOCKDEP" in missing["n_acquisitions"].how_to_capture
    assert a.table("waits")["dur"].to_list() == [19, 22]


def test_host_only_estimates_spin_from_pause_exits():
    # One PAUSE exit while vCPU 0 is preempted, with an 8192-cycle PLE window in force.
    rows = [
        run(0, 0),
        run(1, 0),
        preempt(0, 5),
        (8, "ple_window", 1, {"value": 8192}),
        (10, "vm_exit", 1, {"pcpu": 1, "reason": "PAUSE"}),
        (11, "vm_entry", 1, {"pcpu": 1}),
    ]
    a = analyze(trace_of(rows, t_end=20, n_vcpus=2, view="host"))
    s = a.summary
    assert s.extra["level"] == "host-only"
    assert s.totals["spin_ns"] == round(8192 / 3.0) and s.fidelity["spin_ns"] == "host-only"
    assert s.extra["spin_waste_ns"] == round(8192 / 3.0)
    # an estimate, which every view says: spin shorter than a window is not seen
    (part,) = s.extra["partial"]["spin_ns"]
    assert part["missing"].startswith("an estimate from PAUSE exits") and "--guest" in part["fix"]
    assert s.totals["n_pause_exits"] == 1 and s.fidelity["n_pause_exits"] == "exact"
    assert "waste_lhp_ns" in unavailable(a) and "n_lhp_harmful" in unavailable(a)
    # without PAUSE exits the host saw no spinning: spin is unavailable, not 0
    quiet = analyze(
        trace_of(
            [run(0, 0), (3, "vm_exit", 0, {"pcpu": 0, "reason": "HLT"})], t_end=9, n_vcpus=1, view="host"
        )
    )
    assert "spin_ns" not in quiet.summary.totals and "spin_ns" in unavailable(quiet)


def test_inferred_holder_keeps_the_lock_through_its_preemption():
    # Merged view, us times: v0 acquires (contended) at 10 and is preempted at 11.5 after running
    # less than 3x the typical hold (no clean hand-off here: the 1 us median fallback), so it
    # still holds the lock when preempted; v1 spins [12, 45). v0 runs at 40 and releases once it
    # has run the mean hold (2 us fallback) in all, but not before it has entered the guest
    # (ENTRY_NS, 1 us after its run): at 41. Spin [12, 40) is LHP; spin in all is
    # v0's 5 us before its acquisition plus v1's 33 us.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        contend(0, 5 * US),
        acquire(0, 10 * US),
        contend(1, 12 * US),
        preempt(0, 11_500),
        run(0, 40 * US),
        acquire(1, 45 * US),
    ]
    rows.sort(key=lambda r: r[0])
    a = analyze(trace_of(rows, t_end=50 * US, view="merged"))
    s = a.summary
    assert s.extra["level"] == "inferred"
    assert s.fidelity["waste_lhp_ns"] == "inferred" and s.fidelity["spin_ns"] == "exact"
    assert "n_lhp" not in s.totals and "n_lhp" in unavailable(a)
    assert (s.totals["waste_lhp_ns"], s.totals["n_lhp_harmful"], s.totals["spin_ns"]) == (28 * US, 1, 38 * US)
    holds = a.table("holds").select("vcpu", "start", "end", "inferred").rows()
    assert next(h for h in holds if h[0] == 0) == (0, 10 * US, 41 * US, True)
    assert a.table("lhp_incidents").select("holder", "start", "end", "harmful").rows() == [
        (0, 11_500, 40 * US, True)
    ]


def test_inferred_hold_ends_at_the_kick():
    # pv lock, us times: v0 holds (contended) from 10, v1 waits halted; v0's hypercall exit at
    # 11 carries the kick of v1: its hold ends there, and v1's wait after it is LWP halted.
    rows = [
        run(0, 0),
        run(1, 0),
        contend(0, 5 * US),
        acquire(0, 10 * US),
        contend(1, 10_200),
        halt(1, 10_400),
        (11 * US, "vm_exit", 0, {"pcpu": 0, "reason": "HYPERCALL"}),
        (11 * US, "pv_kick", 0, {"target": 1, "value": 5}),
        (11_100, "vm_entry", 0, {"pcpu": 0}),
        wake(1, 12 * US),
        run(1, 15 * US),
        acquire(1, 16 * US),
    ]
    a = analyze(trace_of(rows, t_end=30 * US, n_vcpus=2, view="merged"))
    holds = a.table("holds").select("vcpu", "start", "end").rows()
    assert next(h for h in holds if h[0] == 0) == (0, 10 * US, 11 * US)
    assert a.table("lwp_incidents").select(
        "next_owner", "next_owner_state", "start", "end", "pcpu_wait_ns"
    ).rows() == [(1, "halted", 11 * US, 16 * US, 3 * US)]
    assert a.table("kicks").select("vcpu", "target", "latency_ns").rows() == [(0, 1, 4 * US)]


def test_idle_declared_vcpus_get_an_unknown_timeline():
    # vCPU 2 of vm0 is declared in the metadata but never seen: unknown all along, not idle.
    a = analyze(trace_of([run(0, 0), run(1, 0)], t_end=10, n_vcpus=3))
    states = a.table("vcpu_states")
    assert states.filter(states["vcpu"] == 2).select("state", "start", "end").rows() == [("unknown", 0, 10)]
