"""Counting what a written trace holds, and what analyses that can feed."""

from __future__ import annotations

from pathlib import Path

from fake_kernel import HOST_EVENTS, HOST_LINES, ftrace_text

from pvtrace.record.inventory import coverage, inventory

GUEST_LINES = [
    "         contend-9850    [000] ...1.   491.351748: contention_begin: 00000000257c4328 (flags=SPIN)",
    "         contend-9850    [000] ...1.   491.351751: <stack trace>",
    " => trace_event_raw_event_contention_begin",
    " => __pv_queued_spin_lock_slowpath",
    "         contend-9849    [001] ...1.   491.351760: contention_begin: 00000000257c4328 (flags=SPIN)",
    "         contend-9849    [001] ...1.   491.351767: <stack trace>",
    " => trace_event_raw_event_contention_begin",
    "         contend-9850    [000] ...1.   491.351770: contention_end: 00000000257c4328 (ret=0)",
    "CPU:1 [LOST 40 EVENTS]",
    "         contend-9849    [001] ...1.   491.351800: contention_end: 00000000257c4328 (ret=0)",
    "CPU:0 [LOST EVENTS]",
    "##### CPU 1 buffer started ####",
    "          <idle>-0       [001] d..2.   491.351900: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=contend next_pid=9849 next_prio=120",
]


def test_guest_counts_losses_and_stack_cost(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text(ftrace_text(GUEST_LINES))
    inv = inventory(path)
    assert inv.counts == {"<stack trace>": 2, "contention_begin": 2, "contention_end": 2, "sched_switch": 1}
    assert inv.n_events == 5
    assert (inv.n_lost_lines, inv.n_lost_reported) == (2, 40)
    assert inv.n_stacks == 2
    assert inv.stack_cost_median_ns == 5_000  # median of 3 us and 7 us
    assert (inv.t_first_ns, inv.t_last_ns) == (491_351_748_000, 491_351_900_000)


def test_host_counts_with_spaces_in_comm(tmp_path: Path) -> None:
    path = tmp_path / "h.txt"
    path.write_text(ftrace_text(HOST_LINES))
    inv = inventory(path)
    assert inv.counts == {
        "kvm_entry": 2,
        "kvm_exit": 2,
        "kvm_hypercall": 1,
        "kvm_ple_window_update": 1,
        "sched_switch": 2,
    }
    assert inv.stack_cost_median_ns is None


def test_empty_trace(tmp_path: Path) -> None:
    path = tmp_path / "e.txt"
    path.write_text(ftrace_text([]))
    inv = inventory(path)
    assert inv.counts == {} and inv.n_events == 0 and inv.t_first_ns is None


def test_coverage_statuses() -> None:
    counts = {"kvm_exit": 5, "kvm_entry": 5, "sched_switch": 3, "kvm_hypercall": 0}
    enabled = [e for e in HOST_EVENTS if "ple" not in e]
    by_name = {c.analysis: c for c in coverage("host", counts, enabled, n_vcpu_threads=2)}
    assert by_name["exit reasons and time in exits"].status == "yes"
    assert by_name["pv kicks and kick latency"].status == "none seen"
    assert by_name["PLE window changes"].status == "missing"
    assert by_name["lock waits, LHP/LWP incidents, spin waste"].status == "needs other side"
    unmapped = {c.analysis: c for c in coverage("host", counts, enabled, n_vcpu_threads=0)}
    assert unmapped["vCPU states (running, preempted, halted)"].status == "unmapped"
    assert "no vCPU thread was found in /proc" in unmapped["vCPU states (running, preempted, halted)"].detail
    assert unmapped["pv kicks and kick latency"].status == "none seen"


def test_coverage_accepts_the_ple_fallback_name() -> None:
    cov = coverage("host", {"kvm_ple_window": 4}, ["kvm:kvm_ple_window"], n_vcpu_threads=1)
    assert next(c for c in cov if c.analysis == "PLE window changes").status == "yes"


def test_guest_coverage() -> None:
    counts = {"contention_begin": 10, "contention_end": 10}
    cov = {
        c.analysis: c.status
        for c in coverage("guest", counts, ["lock:contention_begin", "lock:contention_end"], 0)
    }
    assert cov["lock waits per lock and per CPU (guest-only level)"] == "yes"
    assert cov["guest task on each CPU during waits"] == "missing"
    assert cov["vCPU states, LHP/LWP incidents, spin waste"] == "needs other side"
    # a guest with paravirt spinlocks: the guest-inferred level gives the preemption, not the spin
    # (record said "yes" and analyze then "not measured"; new-user audit)
    ticks = {**counts, "local_timer_entry": 40}
    enabled = ["lock:contention_begin", "lock:contention_end", "irq_vectors:local_timer_entry"]
    level = "vCPU preemption, LHP incidents, spin waste from inside the guest (guest-inferred level)"
    assert {c.analysis: c.status for c in coverage("guest", ticks, enabled, 0)}[level] == "yes"
    pv = {c.analysis: c for c in coverage("guest", ticks, enabled, 0, pv_spinlocks=True)}[level]
    assert pv.status == "part" and "paravirt spinlocks" in pv.detail and "record --host" in pv.detail


def test_text_that_is_not_utf8_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "odd.txt"
    odd = GUEST_LINES[0].replace("contend-9850", "cont\xffnd-9850").encode("latin-1")
    path.write_bytes(ftrace_text([]).encode() + odd + b"\n" + GUEST_LINES[7].encode() + b"\n")
    assert inventory(path).counts == {"contention_begin": 1, "contention_end": 1}


def test_the_steal_samples_kept_in_the_trace_are_counted(tmp_path: Path) -> None:
    """record said 'steal samples written into the trace: 31' where the overwritten buffer kept 16;
    the inventory counts the markers the saved text holds (new-user audit)."""
    mark = "            sh-1       [000] ...1.   491.352000: tracing_mark_write: pvtrace-steal user_hz=100 cpu0=3"
    path = tmp_path / "g.txt"
    path.write_text(ftrace_text([*GUEST_LINES, mark, mark.replace("491.352000", "491.362000")]))
    assert inventory(path).n_steal_samples == 2
