"""Small runs of the accuracy suite on rendered text (tests/analyze/text_accuracy.py); the full
table is in docs/accuracy.md, "On rendered text"."""

from __future__ import annotations

from functools import cache

import polars as pl
import pytest
from text_accuracy import FORMATS, LHP_KEY, figures, run_case, text_run

from pvtrace.analyze import analyze
from pvtrace.analyze.accuracy import incident_counts, scores_of
from pvtrace.ingest.load import load
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset
from pvtrace.simulate.truth_window import cut_truth


@cache
def _case(algorithm: str) -> dict:
    return {fmt: figures(runs) for fmt, runs in run_case("busy", algorithm, True, (1,), 50_000_000).items()}


@pytest.mark.parametrize("algorithm", ["tas", "ticket", "pv-qspinlock"])
def test_merged_text_with_defaults_against_the_truth_of_its_window(algorithm):
    case = _case(algorithm)
    for fmt in FORMATS:
        f = case[fmt]
        assert f["synchronized"], fmt  # offsets found without options
        assert f["kinds_wrong"] == 0, (fmt, f)  # a decided lock kind is never wrong
        assert f["spin_err"] is not None and abs(f["spin_err"]) <= (0.01 if fmt == "trace-cmd" else 0.05), (
            fmt,
            f,
        )
    ns = case["trace-cmd"]  # nanosecond timestamps
    assert ns["waste_err"] is not None and abs(ns["waste_err"]) <= 0.05, ns


@pytest.mark.parametrize("ple", [False, True])
def test_microsecond_text_orders_what_one_microsecond_holds(ple):
    """busy pv-ticket, ftrace text (microseconds on each clock). A vCPU kicked awake takes the lock
    and kicks the next waiter within one printed microsecond; a waiter's contention and its
    acquisition share one; a next owner resumes and acquires within one. Read in the wrong
    order, each made a sub-microsecond LHP incident (37 found for 18 true), a hold that seemed
    to last until the next owner ran (LWP waste -22 %), or a hand-off missed (convoys -25 %).
    Judged with the lock kind given: in 0.1 s one of vm1's locks sees fewer than 20 hand-offs and
    stays undecided, and spin behind a preempted queue head then reads as LHP (what the lock
    kind's inference is for, measured in docs/accuracy.md, not what this test is about). Three
    runs pooled: the holder inference's own misses (a sibling that resumed just before a
    hand-off taken for the running holder) are a few percent of 25-50 incidents, the ordering
    faults were many times that."""
    f = figures(run_case("busy", "pv-ticket", ple, (1, 2, 3), 100_000_000, formats=("ftrace",))["ftrace"])
    lhp = f["lhp_given"]
    assert lhp["precision"] >= 0.9 and lhp["recall"] >= 0.95, lhp
    assert lhp["n_found"] <= 1.1 * lhp["n_true"], lhp
    assert abs(f["waste_given_err"]) <= 0.05, f
    assert abs(f["convoy_given_err"]) <= 0.05, f


@pytest.mark.parametrize(("preset", "seed"), [("kernel-build", 202), ("tlb-shootdown", 101)])
def test_no_lhp_holder_is_waiting_for_the_lock_it_holds(tmp_path, preset, seed):
    """A vCPU queued for a lock does not hold it. On ftrace text of a pv qspinlock guest a queue
    head preempted inside its wait resumes, takes the lock and kicks the next waiter within one
    printed microsecond, the take printing after the kick (each clock is cut to its own
    microsecond): the kick was read as the release of a hold across the whole free stretch, which
    made the stopped head the holder of an LHP incident (kernel-build seed 202: 121 us of LWP
    counted as LHP waste, +67%)."""
    trace, _ = simulate_trace(load_preset(preset), seed=seed)
    files = [f for f in write_rendered(trace, "ftrace", "merged", tmp_path / "m.txt") if f.suffix == ".txt"]
    a = analyze(load(files))
    lhp = a.table("lhp_incidents").filter(pl.col("harmful"))
    waits = a.table("waits").select(
        "vm", "lock", pl.col("vcpu").alias("holder"), pl.col("start").alias("ws"), "end"
    )
    inside = lhp.join(waits.rename({"end": "we"}), on=["vm", "lock", "holder"]).filter(
        (pl.col("ws") < pl.col("start")) & (pl.col("we") > pl.col("start"))
    )
    assert lhp.height > 0
    assert inside.height == 0, inside


def test_a_sibling_stopped_spinning_is_no_unseen_holder(tmp_path):
    """tlb-shootdown: IPI senders spin in the kernel until their targets flush, and pause-loop
    exiting stops them there (a PAUSE exit, then a yield). Such a sibling, waiting for no traced
    lock, was the likeliest unseen holder of many short spins (guest kernel mode, often the
    waiter's own yield target) and never the holder: 35 harmful LHP incidents found for 14 true
    on test-and-set (seeds 101 and 202), 19 with the rule. (Seed 101 alone: 5 found, all right, since
    the rules of session 17; one of its 5 true incidents, 12 us of spin in a 5 ms stretch, goes to
    the stretch's joint holder.)"""
    trace, _ = simulate_trace(load_preset("tlb-shootdown").replace(lock={"algorithm": "tas"}), seed=101)
    scores = scores_of(text_run(trace, "trace-cmd", tmp_path)["lhp"])
    assert scores["n_true"] >= 5
    assert scores["recall"] >= 0.8 and scores["precision"] >= 0.8, scores


def test_a_sibling_stopped_halted_is_no_unseen_holder(tmp_path):
    """kernel-build: vCPUs idle on I/O (HLT), and a sibling halted before a short spin was taken
    for its unseen holder while the real one, running, was inside a long critical section. The
    kernel never halts holding a spinlock: 10 harmful LHP incidents found for 8 true (7 right)
    on seed 101 before the rule."""
    trace, _ = simulate_trace(load_preset("kernel-build"), seed=101)
    scores = scores_of(text_run(trace, "trace-cmd", tmp_path)["lhp"])
    assert scores["n_true"] >= 5
    assert scores["precision"] == 1.0 and scores["recall"] >= 0.85, scores


def test_no_inferred_hold_lasts_through_its_holders_halt(tmp_path):
    """The kernel never halts holding a spinlock but in a pv wait for another. kernel-build on
    test-and-set, seed 101: a holder preempted in the kernel resumed, released and halted within
    a microsecond, and its hold was taken to last until the waiter (preempted meanwhile) took the
    lock after the halt: a harmful LHP incident of a halted holder (5 found for 4 true)."""
    trace, _ = simulate_trace(load_preset("kernel-build").replace(lock={"algorithm": "tas"}), seed=101)
    files = [
        f for f in write_rendered(trace, "trace-cmd", "merged", tmp_path / "m.txt") if f.suffix == ".txt"
    ]
    a = analyze(load(files))
    holds = a.table("holds").filter(pl.col("inferred")).select("vm", "vcpu", "lock", "start", "end")
    halts = (
        a.table("vcpu_states")
        .filter(pl.col("state") == "halted")
        .select("vm", "vcpu", pl.col("start").alias("h"))
    )
    waits = a.table("waits").select("vm", "vcpu", pl.col("start").alias("ws"), pl.col("end").alias("we"))
    through = holds.join(halts, on=["vm", "vcpu"]).filter(
        pl.col("h").is_between(pl.col("start"), pl.col("end"), "none")
    )
    in_wait = through.join(waits, on=["vm", "vcpu"]).filter(
        pl.col("h").is_between(pl.col("ws"), pl.col("we"))
    )
    assert holds.height > 0 and halts.height > 0
    assert through.join(in_wait, on=through.columns, how="anti").height == 0, through
    scores = scores_of(text_run(trace, "trace-cmd", tmp_path)["lhp"])
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0, scores


def test_an_unfair_locks_episode_can_have_a_holder_of_its_own(tmp_path):
    """On a lock not known to be fifo the unseen holder may change between two episodes of one free
    stretch (freed and retaken uncontended). tlb-shootdown on test-and-set, seed 101: one stretch of
    140 ms held several episodes, and the sibling that explained most of them was made the holder
    of one where another, preempted 264 us before it holding the lock, explained it better by 10
    (log-likelihood), more than the two switches it takes: 7 found for 5 true (6 right)."""
    trace, _ = simulate_trace(load_preset("tlb-shootdown").replace(lock={"algorithm": "tas"}), seed=101)
    scores = scores_of(text_run(trace, "trace-cmd", tmp_path)["lhp"])
    assert scores["n_true"] >= 5
    assert scores["precision"] == 1.0 and scores["recall"] >= 0.8, scores


def test_a_holder_that_released_before_its_preemption_is_not_kept_on_microsecond_text(tmp_path):
    """overcommit-2x with 8 vCPUs per guest, qspinlock, no PLE, seed 909, ftrace text (found by a
    new-user audit): a queue head took the lock, released it 0.8 us later and was preempted 1.6 us
    after that. The median hold, from gaps printed to the microsecond, read 1 us (550 ns on
    nanosecond text), so three of them let the holder keep the lock through its 5 ms stop: a 12 ms
    harmful LHP incident that was LWP. Read as grouped data the median is 601 ns."""
    scenario = load_preset("overcommit-2x").replace(
        lock={"algorithm": "qspinlock"}, vm={"vcpus": 8}, hypervisor={"ple": False}
    )
    trace, _ = simulate_trace(scenario, seed=909)
    scores = scores_of(text_run(trace, "ftrace", tmp_path)["lhp"])
    assert scores["n_true"] >= 5
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0, scores


def test_a_cold_locks_attempt_rate_comes_from_its_own_contentions(tmp_path, monkeypatch):
    """overcommit-2x on test-and-set, seed 303: neither VM sees 20 contentions while a lock is
    surely held, so the attempt rate fell back to one try every 40 us per lock, 5-40x the
    simulator's rates (0.5-4 tries per ms of a vCPU's running); a holder preempted for half a
    millisecond on a cold lock then looked impossible (no try seen in 1.1 ms of its siblings'
    running) and a sibling running inside the spin was taken for the holder: 4 found for 6 true.
    From each lock's own contention count the rates are within 3x of the truth."""
    import pvtrace.analyze.hold_inference as hold_inference

    seen = {}
    measure = hold_inference._attempt_rate

    def spy(*args):
        seen["rate"], seen["locks"] = measure(*args), args[-1].locks
        return seen["rate"]

    monkeypatch.setattr(hold_inference, "_attempt_rate", spy)
    trace, _ = simulate_trace(load_preset("overcommit-2x").replace(lock={"algorithm": "tas"}), seed=303)
    files = [
        f for f in write_rendered(trace, "trace-cmd", "merged", tmp_path / "m.txt") if f.suffix == ".txt"
    ]
    a = analyze(load(files))
    running = (
        a.table("vcpu_states")
        .filter(pl.col("state") == "running")
        .group_by("vm")
        .agg((pl.col("end") - pl.col("start")).sum().alias("run"))
    )
    free = running.join(a.table("waits").group_by("vm").agg(pl.col("spin_ns").sum()), on="vm").select(
        "vm", (pl.col("run") - pl.col("spin_ns")).alias("free")
    )
    tries = (
        trace.events.filter(pl.col("kind") == "lock_acquire")
        .group_by(pl.col("vm").cast(pl.String), "lock")
        .len("n")
    )
    rates = (
        seen["rate"]
        .join(seen["locks"].select("lid", "vm", "lock"), on="lid")
        .join(a.table("waits").select("vm", "lock").unique(), on=["vm", "lock"])  # contended ones
        .join(tries, on=["vm", "lock"])
        .join(free, on="vm")
        .with_columns((pl.col("rate") / (pl.col("n") / pl.col("free"))).alias("ratio"))
    )
    assert rates.height >= 8
    assert rates["ratio"].is_between(1 / 3, 3).all(), rates
    truth = cut_truth(trace, a.summary.extra["t_start"], a.summary.extra["t_end"] + 1)
    scores = scores_of(
        incident_counts(
            a.table("lhp_incidents").filter(pl.col("harmful")),
            truth.lhp_incidents.filter(pl.col("harmful")),
            LHP_KEY,
        )
    )
    assert scores["n_true"] >= 5
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0, scores
