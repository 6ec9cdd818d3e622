"""Each accuracy figure of docs/accuracy.md must not get worse (the simulator is seeded, so each
case recomputes the same way); the acceptance targets are checked where the docs claim them:
spin waste within 5% everywhere, harmful-LHP precision and recall (95% for tas and ticket, 90%
for the pv locks) where a case's sample holds at least TARGET_INCIDENTS true incidents."""

from __future__ import annotations

import pytest
from accuracy_cases import ERROR_KEYS, SAMPLE_KEYS, SCORE_KEYS, TARGET_INCIDENTS, figures, lhp_target

# The figures docs/accuracy.md shows (python tests/analyze/accuracy_cases.py), written by
# `python tests/analyze/accuracy_cases.py --recorded`: (workload, lock, overcommit).
# n_runs and merged_n_lhp_harmful_true pin the sample: how many runs the case pools and the true
# harmful LHP incidents they hold.
RECORDED = {
    ("no-ple", "pv-qspinlock", 2): {
        "n_runs": 1,
        "merged_n_lhp_harmful_true": 143,
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 0.986,
        "merged_n_lhp_harmful_err": -0.014,
        "merged_waste_err": -0.0013,
        "merged_n_convoys_err": 0.0093,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "pv-qspinlock", 3): {
        "n_runs": 1,
        "merged_n_lhp_harmful_true": 141,
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_n_lhp_harmful_err": 0.0,
        "merged_waste_err": 0.0,
        "merged_n_convoys_err": -0.0662,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "pv-ticket", 2): {
        "n_runs": 1,
        "merged_n_lhp_harmful_true": 134,
        "merged_lhp_precision": 0.985,
        "merged_lhp_recall": 0.9776,
        "merged_n_lhp_harmful_err": -0.0075,
        "merged_waste_err": 0.0068,
        "merged_n_convoys_err": 0.0144,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "pv-ticket", 3): {
        "n_runs": 1,
        "merged_n_lhp_harmful_true": 142,
        "merged_lhp_precision": 0.993,
        "merged_lhp_recall": 0.993,
        "merged_n_lhp_harmful_err": 0.0,
        "merged_waste_err": 0.0057,
        "merged_n_convoys_err": 0.0061,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "tas", 2): {
        "n_runs": 1,
        "merged_n_lhp_harmful_true": 139,
        "merged_lhp_precision": 0.9857,
        "merged_lhp_recall": 0.9928,
        "merged_n_lhp_harmful_err": 0.0072,
        "merged_waste_err": 0.0,
        "merged_n_convoys_err": -0.1067,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "tas", 3): {
        "n_runs": 1,
        "merged_n_lhp_harmful_true": 141,
        "merged_lhp_precision": 0.9589,
        "merged_lhp_recall": 0.9929,
        "merged_n_lhp_harmful_err": 0.0355,
        "merged_waste_err": 0.0,
        "merged_n_convoys_err": -0.1461,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "ticket", 2): {
        "n_runs": 2,
        "merged_n_lhp_harmful_true": 145,
        "merged_lhp_precision": 0.965,
        "merged_lhp_recall": 0.9517,
        "merged_n_lhp_harmful_err": -0.0138,
        "merged_waste_err": 0.0026,
        "merged_n_convoys_err": 0.019,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "ticket", 3): {
        "n_runs": 4,
        "merged_n_lhp_harmful_true": 117,
        "merged_lhp_precision": 0.9573,
        "merged_lhp_recall": 0.9573,
        "merged_n_lhp_harmful_err": 0.0,
        "merged_waste_err": 0.0017,
        "merged_n_convoys_err": -0.0233,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-qspinlock", 2): {
        "n_runs": 3,
        "merged_n_lhp_harmful_true": 84,
        "merged_lhp_precision": 0.9398,
        "merged_lhp_recall": 0.9286,
        "merged_n_lhp_harmful_err": -0.0119,
        "merged_waste_err": 0.0018,
        "merged_n_convoys_err": 0.0388,
        "host_spin_err": -0.5569,
        "host_spin_waste_err": -0.1065,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-qspinlock", 3): {
        "n_runs": 3,
        "merged_n_lhp_harmful_true": 75,
        "merged_lhp_precision": 0.9481,
        "merged_lhp_recall": 0.9733,
        "merged_n_lhp_harmful_err": 0.0267,
        "merged_waste_err": 0.0022,
        "merged_n_convoys_err": 0.0207,
        "host_spin_err": -0.4222,
        "host_spin_waste_err": -0.2471,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-ticket", 2): {
        "n_runs": 3,
        "merged_n_lhp_harmful_true": 75,
        "merged_lhp_precision": 0.9737,
        "merged_lhp_recall": 0.9867,
        "merged_n_lhp_harmful_err": 0.0133,
        "merged_waste_err": 0.0052,
        "merged_n_convoys_err": 0.0438,
        "host_spin_err": -0.4908,
        "host_spin_waste_err": -0.2877,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-ticket", 3): {
        "n_runs": 3,
        "merged_n_lhp_harmful_true": 70,
        "merged_lhp_precision": 0.9857,
        "merged_lhp_recall": 0.9857,
        "merged_n_lhp_harmful_err": 0.0,
        "merged_waste_err": 0.0045,
        "merged_n_convoys_err": 0.0428,
        "host_spin_err": -0.4044,
        "host_spin_waste_err": -0.2596,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "tas", 2): {
        "n_runs": 3,
        "merged_n_lhp_harmful_true": 59,
        "merged_lhp_precision": 0.9833,
        "merged_lhp_recall": 1.0,
        "merged_n_lhp_harmful_err": 0.0169,
        "merged_waste_err": -0.0,
        "merged_n_convoys_err": 0.0304,
        "host_spin_err": -0.2764,
        "host_spin_waste_err": -0.0736,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "tas", 3): {
        "n_runs": 3,
        "merged_n_lhp_harmful_true": 60,
        "merged_lhp_precision": 0.9836,
        "merged_lhp_recall": 1.0,
        "merged_n_lhp_harmful_err": 0.0167,
        "merged_waste_err": -0.0001,
        "merged_n_convoys_err": 0.0016,
        "host_spin_err": -0.2465,
        "host_spin_waste_err": -0.1767,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "ticket", 2): {
        "n_runs": 3,
        "merged_n_lhp_harmful_true": 63,
        "merged_lhp_precision": 0.9672,
        "merged_lhp_recall": 0.9365,
        "merged_n_lhp_harmful_err": -0.0317,
        "merged_waste_err": 0.0016,
        "merged_n_convoys_err": 0.0329,
        "host_spin_err": -0.3451,
        "host_spin_waste_err": -0.2605,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "ticket", 3): {
        "n_runs": 2,
        "merged_n_lhp_harmful_true": 34,
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_n_lhp_harmful_err": 0.0,
        "merged_waste_err": 0.0003,
        "merged_n_convoys_err": 0.0544,
        "host_spin_err": -0.3197,
        "host_spin_waste_err": -0.2653,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
}


SAMPLE, SCORES, ERRORS = SAMPLE_KEYS, SCORE_KEYS, ERROR_KEYS
SLACK = 0.005  # room for float rounding in the recorded figures
CASES = sorted(RECORDED)


def case_id(case: tuple[str, str, int]) -> str:
    return f"{case[0]}-{case[1]}-{case[2]}x"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sample_is_the_documented_one(case):
    f = figures(*case)
    assert {k: f[k] for k in SAMPLE} == {k: RECORDED[case][k] for k in SAMPLE}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("figure", SCORES + ERRORS)
def test_figure_does_not_get_worse(case, figure):
    got = figures(*case)[figure]
    recorded = RECORDED[case][figure]
    if recorded is None:  # the level cannot give it: it must stay unavailable, not become a number
        assert got is None
    elif figure in SCORES:
        assert got >= recorded - SLACK, f"{figure} fell from {recorded} to {got}"
    else:
        assert got is not None and abs(got) <= abs(recorded) + SLACK, (
            f"|{figure}| grew from {recorded} to {got}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_merged_view_meets_the_waste_target(case):
    # Spin waste (LHP + LWP) from inferred holders within 5% of truth, every case.
    assert abs(figures(*case)["merged_waste_err"]) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [c for c in CASES if RECORDED[c]["merged_n_lhp_harmful_true"] >= TARGET_INCIDENTS], ids=case_id
)
def test_merged_view_meets_the_lhp_target(case):
    # Where the sample is large enough to tell (docs/accuracy.md): >= 95% for tas and ticket,
    # >= 90% for the pv locks.
    f = figures(*case)
    assert f["merged_n_lhp_harmful_true"] >= TARGET_INCIDENTS
    target = lhp_target(case[1])
    assert f["merged_lhp_precision"] >= target and f["merged_lhp_recall"] >= target


# Cases whose merged-view convoy count misses the 5% target since the simulator's fair scheduler,
# halt-polling and yield_to model (issue 12): 5.9% and 5.3%. An analyzer inference gap for its
# owners; strict, so a fix shows.
CONVOY_MISSES = {("no-ple", "pv-qspinlock", 3), ("ple", "ticket", 3)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason="convoy inference misses 5%"))
        if c in CONVOY_MISSES
        else c
        for c in CASES
        if c[1] != "tas"
    ],
    ids=case_id,
)
def test_merged_view_fifo_convoys_within_5_percent(case):
    # On fifo locks every queue head that spins on a seemingly free lock reveals an unseen holder,
    # so inferred holds give convoy counts close to the truth.
    assert abs(figures(*case)["merged_n_convoys_err"]) <= 0.05
