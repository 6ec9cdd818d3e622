"""Holder inference on hand-written merged-view traces: the fifo-queue and most-likely-holder rules
of docs/metrics.md, Inferred holders (pvtrace/analyze/holders.py)."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from trace_rows import acquire, analyze_merged, contend, halt, preempt, run, wake

from pvtrace.cli.summary_view import render_summary
from pvtrace.fmt import LIKELY_HOLDER_NOTE

US = 1_000


def lhp(a) -> list[tuple]:
    return a.table("lhp_incidents").select("holder", "start", "end", "harmful").rows()


def test_a_queued_successor_that_keeps_running_keeps_the_holder_holding():
    # v1 queues (3 us) behind v0, which acquires at 10 and is preempted at 15 after running 5 us,
    # past 3x the (fallback) 1 us median hold. v1 runs throughout without taking the lock: a fifo
    # head takes a free lock at once, so v0 still holds it until v1's acquisition at 41, right
    # after v0 runs again at 40. LHP: v0 preempted [15, 40) while v1 spins.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        contend(0, 2 * US),
        contend(1, 3 * US),
        acquire(0, 10 * US),
        preempt(0, 15 * US),
        run(0, 40 * US),
        acquire(1, 41 * US),
    ]
    a = analyze_merged(rows, t_end=60 * US)
    holds = a.table("holds").select("vcpu", "start", "end").rows()
    assert next(h for h in holds if h[0] == 0) == (0, 10 * US, 41 * US)
    assert lhp(a) == [(0, 15 * US, 40 * US, True)]
    assert a.summary.totals["waste_lhp_ns"] == 25 * US
    # v0's take is in the trace (its contended acquisition): the holder is seen, not guessed
    assert a.table("lhp_incidents")["holder_guessed"].to_list() == [False]
    assert a.summary.extra["n_lhp_harmful_guessed"] == 0


def test_a_waiter_behind_a_preempted_head_sees_lwp_not_an_absent_holder():
    # v3 is away from the start. v1 queues at 1000 us with the lock held (someone took it
    # uncontended), spins 0.2 us and is preempted; v2 queues behind it at 1010 and spins until
    # v1 runs again at 3500 and takes the lock. v3 comes back at 3490, just before the lock
    # changes hands, but it had been away while v0, v1 and v2 ran freely for 1 ms without
    # finding the lock held: the holder was v0, which kept running and released it. v2's spin
    # waits for a preempted next owner (LWP), not for a preempted holder.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        preempt(3, 0),
        contend(1, 1000 * US),
        preempt(1, 1000 * US + 200),
        contend(2, 1010 * US),
        run(3, 3490 * US),
        run(1, 3500 * US),
        acquire(1, 3500 * US),
    ]
    a = analyze_merged(rows, t_end=3600 * US)
    assert lhp(a) == []
    t = a.summary.totals
    assert t["waste_lhp_ns"] == 0
    assert t["waste_lwp_preempted_ns"] == (3500 - 1010) * US
    assert a.table("lwp_incidents").select("next_owner", "next_owner_state", "end").rows() == [
        (1, "preempted", 3500 * US)
    ]


def test_the_unseen_holder_is_the_sibling_that_best_explains_the_spin():
    # v0 queues at 100 us and spins until it takes the lock at 200. Candidates: v2 ran all the
    # while (a 100 us hold, 50x the mean); v3 was away from 10 us while the others ran freely and
    # came back at 150 (it would then have run 50 us holding it); v1 stopped at 95, just before
    # the spin began, came back at 198 and the lock changed hands 2 us later: v1 held it.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        preempt(3, 10 * US),
        preempt(1, 95 * US),
        contend(0, 100 * US),
        run(3, 150 * US),
        run(1, 198 * US),
        acquire(0, 200 * US),
    ]
    a = analyze_merged(rows, t_end=300 * US)
    holds = a.table("holds").select("vcpu", "start", "end").rows()
    assert (1, 100 * US, 200 * US) in holds
    assert lhp(a) == [(1, 100 * US, 198 * US, True)]
    assert a.summary.totals["waste_lhp_ns"] == 98 * US
    # no take by v1 is in the trace: the incident says its holder is the likeliest, not seen
    assert a.table("lhp_incidents")["holder_guessed"].to_list() == [True]
    assert a.table("incidents").filter(pl.col("kind") == "LHP")["guessed"].to_list() == [True]
    assert a.summary.extra["n_lhp_harmful_guessed"] == 1
    con = Console(record=True, width=200)
    render_summary(con, a, ["run.txt"])
    text = con.export_text()
    assert "1 (likely holder)" in text and LIKELY_HOLDER_NOTE in text
    assert "1 (1 with a likely holder)" in text  # the headline's harmful LHP count


def test_a_holder_back_at_the_instant_of_the_hand_over_is_the_holder():
    # v1 stops at 95 us; v0 queues at 100 and spins until it takes the lock at 200, the instant
    # v1 runs again (at the timestamps' resolution: ticks in a guest, microseconds in text).
    # v2 ran all the while (a 100 us hold, 50x the mean). v1 held it: running at the hand-over
    # includes resuming then.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        preempt(1, 95 * US),
        contend(0, 100 * US),
        run(1, 200 * US),
        acquire(0, 200 * US),
    ]
    a = analyze_merged(rows, t_end=300 * US, n_vcpus=3)
    assert lhp(a) == [(1, 100 * US, 200 * US, True)]
    assert a.summary.totals["waste_lhp_ns"] == 100 * US


def test_a_holder_that_queues_again_after_its_release_is_still_the_holder():
    # v1 stops at 95 us holding the lock; v0 queues at 100 and spins. v1 runs again at 200,
    # releases (unseen) and queues for the lock again at 205, behind v0. v0 seems to spin on
    # until it is preempted at 210 (states known to a tick, as in a guest's own trace, place
    # the preemption late), comes back at 300 and takes the lock, v1 at 310. v1 waits for the
    # lock inside v0's spin, after its release: it was the holder all the same.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        preempt(1, 95 * US),
        contend(0, 100 * US),
        run(1, 200 * US),
        contend(1, 205 * US),
        preempt(0, 210 * US),
        run(0, 300 * US),
        acquire(0, 300 * US),
        acquire(1, 310 * US),
    ]
    a = analyze_merged(rows, t_end=400 * US, n_vcpus=3)
    assert lhp(a) == [(1, 100 * US, 200 * US, True)]
    assert a.summary.totals["waste_lhp_ns"] == 100 * US


def _yield(vcpu: int, target: int, ts: int, pcpu: int) -> list[tuple]:
    """A directed yield as the host shows it: the spinner preempted ("R") and the target run at
    once on the spinner's pCPU."""
    return [
        (ts, "vcpu_preempt", vcpu, {"pcpu": pcpu, "reason": "R"}),
        (ts, "vcpu_run", target, {"pcpu": pcpu}),
    ]


def test_one_holder_explains_every_episode_of_a_gap():
    # v1 stops at 50 us holding the lock, v2 at 90 while computing. v0 queues at 100, spins,
    # and PLE yields it to v2 at 110 (KVM boosts any preempted sibling in kernel mode); v2 is
    # preempted again at 120 and v0 spins on until v1 comes back at 200 and the lock is handed
    # over. Alone, the first stretch of spin would go to v2 (boosted, away for less time). On
    # a fifo lock the holder cannot change while v0 stays queued, and only v1 explains the
    # second stretch: v1 held it throughout, one incident.
    rows = [
        run(0, 0, 0),
        run(1, 0, 1),
        run(2, 0, 2),
        preempt(1, 50 * US, 1),
        preempt(2, 90 * US, 2),
        contend(0, 100 * US),
        *_yield(0, 2, 110 * US, 0),
        preempt(2, 120 * US, 0),
        run(0, 120 * US, 0),
        run(1, 200 * US, 1),
        acquire(0, 200 * US),
    ]
    a = analyze_merged(rows, t_end=300 * US, n_vcpus=3)
    assert lhp(a) == [(1, 100 * US, 200 * US, True)]
    assert a.summary.totals["waste_lhp_ns"] == 90 * US


def test_a_holder_is_not_kept_through_a_stop_followed_by_silence():
    # v0 takes the lock contended at 12 us and is preempted at 13, having run 1 us: less than
    # the (fallback) mean hold, so it would keep the lock through the stop. But v1, v2 and
    # v3 then run freely for almost 1 ms without anyone contending for the lock, about 70 tries
    # at the (fallback) attempt rate: a held lock's tries are seen, so v0 had released. v1
    # queues at 1000 us and spins until it takes the lock at 1501; v3, preempted at 995 and back
    # at 1499, is the holder that explains the spin (v0 returns at 1500 too late to explain the
    # 1 ms of silence).
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        contend(0, 10 * US),
        acquire(0, 12 * US),
        preempt(0, 13 * US),
        preempt(3, 995 * US),
        contend(1, 1000 * US),
        run(3, 1499 * US),
        run(0, 1500 * US),
        acquire(1, 1501 * US),
    ]
    a = analyze_merged(rows, t_end=1600 * US)
    assert next(h for h in a.table("holds").select("vcpu", "end").rows() if h[0] == 0) == (0, 13 * US)
    assert [(h, harmful) for h, _, _, harmful in lhp(a)] == [(3, True)]


def test_a_waiters_own_kick_after_taking_the_lock_does_not_make_it_the_holder_before():
    # v2 holds the lock unseen and is preempted at 5 us. v1 queues at 10 (head) and is preempted
    # at 12; v3 queues at 15 and halts (pv). v2 is back at 100; v1 at 101 takes the lock at 102
    # and, in the same printed microsecond, releases it and kicks v3 (the pv unlock path), then
    # takes it again at 105 (contended and acquired at once). The hold at 102 prints no length,
    # and the free stretches on either side (both before an acquisition of v1's) read as one.
    # v1's kick belongs to its own hold after 102, not to the stretch before: the holder there
    # is v2, and v1 was its waiter.
    def kick(v: int, ts: int, target: int) -> list[tuple]:
        return [
            (ts, "vm_exit", v, {"pcpu": v, "reason": "HYPERCALL", "value": 5}),
            (ts, "pv_kick", v, {"target": target}),
        ]

    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        preempt(2, 5 * US),
        contend(1, 10 * US),
        preempt(1, 12 * US),
        contend(3, 15 * US),
        halt(3, 20 * US),
        run(2, 100 * US),
        run(1, 101 * US),
        acquire(1, 102 * US),
        *kick(1, 102 * US, 3),
        wake(3, 103 * US),
        contend(1, 105 * US),
        acquire(1, 105 * US),
        run(3, 107 * US),
        acquire(3, 108 * US),
    ]
    a = analyze_merged(rows, t_end=200 * US)
    assert [h[0] for h in lhp(a)] == [2]
    assert all(h[0] != 1 or h[1] >= 102 * US for h in a.table("holds").select("vcpu", "start").rows())


def test_a_steal_on_another_lock_leaves_its_taker_free_running():
    # v1 stops at 20 us; v0 queues at 100 and takes the lock at 102, the instant after v1 runs
    # again at 101. v2 and v3 ran throughout (a 2 us hold each would fit). But v0, v2 and v3 ran
    # freely for 80 us while v1 was away, and nobody tried the lock: v1 is the unlikely holder.
    # At 21 us each of them contended for another lock and took it in the same instant (a
    # steal): a wait that ends where it begins keeps nobody from trying this lock, so the verdict
    # is the one without the steals (it once left all three "waiting" until their next wait).
    steals = [e for v in (0, 2, 3) for e in (contend(v, 21 * US, lock=2), acquire(v, 21 * US, lock=2))]
    plain = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        preempt(1, 20 * US),
        contend(0, 100 * US),
        run(1, 101 * US),
        acquire(0, 102 * US),
    ]
    for rows in (plain, plain + steals):
        a = analyze_merged(rows, t_end=300 * US)
        assert lhp(a) == []
        assert a.summary.totals["waste_lhp_ns"] == 0


def test_a_holder_is_judged_once_over_all_the_spins_of_one_gap():
    # v1 stops at 20 us. v0 queues at 100 and spins in four bursts (preempted between them) until
    # it takes the lock at 202, just after v1 runs again at 200. v2 ran throughout. One holder
    # explains the whole gap: v2 would have run 102 us (50 mean holds) without releasing, between
    # the bursts too (a release then hands the lock to v0 at its next burst); v1 was away while
    # nobody tried the lock for 160 us of free-running time (v0 and v2 for 80 us), which counts
    # once, not once per burst (summed per burst, v2 looked likelier). v1 held it: LHP while v0
    # spins.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        preempt(1, 20 * US),
        contend(0, 100 * US),
        preempt(0, 102 * US),
        run(0, 110 * US),
        preempt(0, 112 * US),
        run(0, 120 * US),
        preempt(0, 122 * US),
        run(0, 199 * US),
        run(1, 200 * US),
        acquire(0, 202 * US),
    ]
    a = analyze_merged(rows, t_end=300 * US, n_vcpus=3)
    assert lhp(a) == [(1, 100 * US, 200 * US, True)]
    assert a.summary.totals["waste_lhp_ns"] == 7 * US
