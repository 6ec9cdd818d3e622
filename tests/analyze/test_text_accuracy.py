"""Small runs of the accuracy suite on rendered text (tests/analyze/text_accuracy.py); the full
table is in docs/accuracy.md, "On rendered text"."""

from __future__ import annotations

from functools import cache

import pytest
from text_accuracy import FORMATS, figures, run_case


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
