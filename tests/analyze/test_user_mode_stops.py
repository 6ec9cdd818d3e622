"""A vCPU whose stop began in guest user mode holds no spinlock through it: kvm_exit prints the
guest rip, and guest spinlocks are held in the kernel with preemption off (docs/metrics.md,
Inferred holders). Hand-written merged-view traces, each against its twin without that exit."""

from __future__ import annotations

import pytest
from trace_rows import acquire, analyze_merged, contend, preempt, run, user_exit

US = 1_000


def lhp(a) -> list[tuple]:
    return a.table("lhp_incidents").select("holder", "start", "end", "harmful").rows()


@pytest.mark.parametrize("lock_kind", ["fifo", "unfair"])
def test_a_contended_acquirer_stopped_in_user_mode_released_before_its_stop(lock_kind):
    # v0 takes the lock at 10 us after waiting and is preempted at 12, having run 2 us (under 3x
    # the median hold: kept through the stop, the twin's reading). v1 spins from 20 until it
    # takes the lock at 41, right after v0 is back at 40. With the exit at 12 in user mode, v0
    # had released before it: someone else held the lock while v1 spun, and v0 is no LHP holder.
    def rows(user: bool) -> list[tuple]:
        return [
            run(0, 0),
            run(1, 0),
            run(2, 0),
            run(3, 0),
            contend(0, 2 * US),
            acquire(0, 10 * US),
            *([user_exit(0, 12 * US)] if user else []),
            preempt(0, 12 * US),
            contend(1, 20 * US),
            run(0, 40 * US),
            acquire(1, 41 * US),
        ]

    twin = analyze_merged(rows(False), t_end=60 * US, lock_kind=lock_kind)
    assert lhp(twin) == [(0, 12 * US, 40 * US, True)]
    a = analyze_merged(rows(True), t_end=60 * US, lock_kind=lock_kind)
    holds = a.table("holds").select("vcpu", "start", "end").rows()
    assert (0, 10 * US, 12 * US) in holds
    assert all(h[0] != 0 for h in lhp(a))
    assert a.summary.totals["waste_lhp_ns"] == 0


def test_a_sibling_stopped_in_user_mode_is_no_unseen_holder():
    # v0 spins from 100 us until it takes the lock at 200. v1 stopped at 95 and came back at 198:
    # the likeliest unseen holder (the twin's reading). With its exit at 95 in user mode it held
    # nothing, and the holder is another sibling.
    def rows(user: bool) -> list[tuple]:
        return [
            run(0, 0),
            run(1, 0),
            run(2, 0),
            run(3, 0),
            preempt(3, 10 * US),
            *([user_exit(1, 95 * US)] if user else []),
            preempt(1, 95 * US),
            contend(0, 100 * US),
            run(3, 150 * US),
            run(1, 198 * US),
            acquire(0, 200 * US),
        ]

    assert lhp(analyze_merged(rows(False), t_end=300 * US)) == [(1, 100 * US, 198 * US, True)]
    found = lhp(analyze_merged(rows(True), t_end=300 * US))
    assert found and all(h[0] != 1 for h in found)


def test_a_kernel_mode_exit_changes_nothing():
    # The same exit with no user-mode mark (value null: kernel rip, or nothing printed).
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        contend(0, 2 * US),
        acquire(0, 10 * US),
        (12 * US, "vm_exit", 0, {"pcpu": 0, "reason": "EXTERNAL_INTERRUPT"}),
        preempt(0, 12 * US),
        contend(1, 20 * US),
        run(0, 40 * US),
        acquire(1, 41 * US),
    ]
    assert lhp(analyze_merged(rows, t_end=60 * US)) == [(0, 12 * US, 40 * US, True)]


def test_a_sibling_stopped_in_the_kernel_where_most_stops_find_user_mode_is_the_likelier_holder():
    # v0 spins 0.5 us from 100 us and is preempted, and takes the lock as it runs again at 160
    # (within the entry slack: no second spin); v1 was preempted at 80 and is back at 150; v2 and
    # v3 run. Without modes printed the running siblings explain the short spin best (no
    # LHP). Where kvm_exit prints the mode, three of the VM's four interrupt stops of vCPUs waiting
    # for no lock found user mode: a stop in the kernel, as v1's, is 4 times likelier to be a
    # holder's than a running sibling is to hold this lock (docs/metrics.md, Unseen holder).
    def kernel_exit(vcpu: int, ts: int) -> tuple:
        return (ts, "vm_exit", vcpu, {"pcpu": vcpu, "reason": "EXTERNAL_INTERRUPT"})

    def rows(printed: bool) -> list[tuple]:
        r = [run(0, 0), run(1, 0), run(2, 0), run(3, 0)]
        for t in (10 * US, 30 * US, 50 * US):
            r += [user_exit(3, t) if printed else kernel_exit(3, t), preempt(3, t), run(3, t + 5 * US)]
        return [
            *r,
            kernel_exit(1, 80 * US),
            preempt(1, 80 * US),
            contend(0, 100 * US),
            kernel_exit(0, 100 * US + 500),
            preempt(0, 100 * US + 500),
            run(1, 150 * US),
            run(0, 160 * US),
            acquire(0, 160 * US + 500),
        ]

    assert lhp(analyze_merged(rows(False), t_end=300 * US)) == []
    assert [h[0] for h in lhp(analyze_merged(rows(True), t_end=300 * US))] == [1]
