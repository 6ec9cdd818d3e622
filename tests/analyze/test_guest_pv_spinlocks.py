"""Whether a guest-only trace's spinlocks are paravirt: declared (`--pv-spinlocks`), from the steal
samples, or from the waits' stack traces (analyze/guest_steal.pv_spinlocks_evidence)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pvtrace.analyze import analyze
from pvtrace.cli.app import app
from tests.analyze.test_guest_preemption import MS, _lock, _steal, _ticks, _trace

SAMPLE = Path(__file__).resolve().parents[2] / "sample-traces" / "guest-ticks.txt.xz"


def _case(stack: str | None = None):
    """lhp_case of test_guest_preemption (vCPU 0 stopped holding A while vCPU 1 spins on it), with
    a stack trace taken at vCPU 1's contention_begin when `stack` is given."""
    rows = _ticks(0, [1, 2, 3, 6.5, 7, 8, 9]) + _ticks(1, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    rows += [_lock(0, "lock_contend", 2.95), _lock(0, "lock_acquire", 3.0)]
    rows += [_lock(1, "lock_contend", 3.2), _lock(1, "lock_acquire", 6.51)]
    rows += [_steal(0.5, {0: 0, 1: 0}), _steal(9.5, {0: 3, 1: 0})]
    if stack is not None:
        rows.append(
            {"ts": int(3.201 * MS), "vcpu": 1, "kind": "other", "event": "kernel_stack", "args": stack}
        )
    rows = [{**r, "seq": i} for i, r in enumerate(sorted(rows, key=lambda r: r["ts"]))]
    return _trace(rows)


def _stack(slowpath: str) -> str:
    return "\n".join(["trace_event_raw_event_contention_begin", slowpath, "_raw_spin_lock", "__schedule"])


def test_declared_pv_spinlocks_decline_spin_and_declared_native_lifts_the_caveat():
    undeclared = analyze(_case()).summary
    assert "paravirt" in undeclared.extra["partial"]["spin_ns"][0]["missing"]
    pv = analyze(_case(), pv_spinlocks=True).summary
    assert "spin_ns" not in pv.totals and "waste_lhp_ns" not in pv.totals
    why = {u.metric: u.how_to_capture for u in pv.unavailable}["spin_ns"]
    assert "paravirt spinlocks (declared with --pv-spinlocks)" in why
    # what is missing is a host trace's vCPU states, not the guest's ticks, which it has (new-user
    # audit: "the trace lacks irq_vectors:local_timer_entry" beside 404 of them)
    events = {u.metric: u.missing_events for u in pv.unavailable}["spin_ns"]
    assert "sched:sched_switch" in events and "irq_vectors:local_timer_entry" not in events
    # what is unavailable is not also partial, and its share of running time is unknown, not 0
    # (new-user audit: spin_waste_pct_of_running 0.0 in the JSON and the fleet table)
    assert not set(pv.extra["partial"]) & {u.metric for u in pv.unavailable}
    assert "spin_waste" not in pv.extra["partial"] and pv.extra["spin_waste_pct_of_running"] is None
    native = analyze(_case(), pv_spinlocks=False).summary
    assert "spin_ns" not in (native.extra.get("partial") or {})
    assert native.totals["waste_lhp_ns"] == undeclared.totals["waste_lhp_ns"] == int(3.3 * MS)


def test_the_slow_path_in_the_waits_stacks_says_which_spinlocks():
    pv = analyze(_case(_stack("__pv_queued_spin_lock_slowpath"))).summary
    assert pv.extra["guest_preemption"]["pv_spinlocks"] is True and "spin_ns" not in pv.totals
    assert "stack traces" in pv.extra["guest_preemption"]["pv_spinlocks_from"]
    native = analyze(_case(_stack("native_queued_spin_lock_slowpath"))).summary
    assert native.extra["guest_preemption"]["pv_spinlocks"] is False
    assert native.totals["waste_lhp_ns"] == int(3.3 * MS)
    # (its only part is the stacks' capture time in every wait: no question of pv-ness is left open)
    parts = native.extra.get("partial", {}).get("spin_ns", [])
    assert [q for q in parts if "stack capture" not in q["missing"]] == []
    # a declaration outranks the stacks
    declared = analyze(_case(_stack("__pv_queued_spin_lock_slowpath")), pv_spinlocks=False).summary
    assert declared.extra["guest_preemption"]["pv_spinlocks_from"] == "declared with --pv-spinlocks"


def test_pv_spinlocks_option_takes_yes_or_no():
    res = CliRunner().invoke(app, ["analyze", str(SAMPLE), "--pv-spinlocks", "maybe"])
    assert res.exit_code == 2 and "--pv-spinlocks must be yes or no" in res.output
    res = CliRunner().invoke(app, ["analyze", str(SAMPLE), "--pv-spinlocks", "yes", "--width", "400"])
    assert res.exit_code == 0 and "paravirt spinlocks (declared with --pv-spinlocks)" in res.output
