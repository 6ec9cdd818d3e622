"""Each accuracy figure of docs/accuracy.md must not get worse (the simulator is seeded, so each
case recomputes the same way); the acceptance targets are checked where the docs claim them."""

from __future__ import annotations

import pytest
from accuracy_cases import figures

# The figures docs/accuracy.md shows (python tests/analyze/accuracy_cases.py): (workload, lock, overcommit).
RECORDED = {
    ("no-ple", "tas", 2): {
        "merged_lhp_precision": 0.9767,
        "merged_lhp_recall": 0.9907,
        "merged_waste_err": -0.0001,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "tas", 3): {
        "merged_lhp_precision": 0.9759,
        "merged_lhp_recall": 0.9712,
        "merged_waste_err": -0.001,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "ticket", 2): {
        "merged_lhp_precision": 0.9474,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0004,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "ticket", 3): {
        "merged_lhp_precision": 0.875,
        "merged_lhp_recall": 0.9091,
        "merged_waste_err": 0.0015,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "pv-ticket", 2): {
        "merged_lhp_precision": 0.9798,
        "merged_lhp_recall": 0.9604,
        "merged_waste_err": -0.0022,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "pv-ticket", 3): {
        "merged_lhp_precision": 0.9646,
        "merged_lhp_recall": 0.9561,
        "merged_waste_err": 0.0009,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "pv-qspinlock", 2): {
        "merged_lhp_precision": 0.981,
        "merged_lhp_recall": 0.9717,
        "merged_waste_err": -0.0022,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("no-ple", "pv-qspinlock", 3): {
        "merged_lhp_precision": 0.9722,
        "merged_lhp_recall": 0.9052,
        "merged_waste_err": -0.035,
        "host_spin_err": None,
        "host_spin_waste_err": None,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "tas", 2): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0,
        "host_spin_err": -0.5603,
        "host_spin_waste_err": 37.5708,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "tas", 3): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0,
        "host_spin_err": -0.5028,
        "host_spin_waste_err": 31.6457,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "ticket", 2): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0227,
        "host_spin_err": -0.1821,
        "host_spin_waste_err": -0.0919,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "ticket", 3): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0066,
        "host_spin_err": -0.1964,
        "host_spin_waste_err": -0.1571,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-ticket", 2): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0357,
        "host_spin_err": -0.1072,
        "host_spin_waste_err": -0.003,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-ticket", 3): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0186,
        "host_spin_err": -0.0828,
        "host_spin_waste_err": -0.0249,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-qspinlock", 2): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0205,
        "host_spin_err": -0.2098,
        "host_spin_waste_err": -0.0263,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
    ("ple", "pv-qspinlock", 3): {
        "merged_lhp_precision": 1.0,
        "merged_lhp_recall": 1.0,
        "merged_waste_err": 0.0266,
        "host_spin_err": -0.1643,
        "host_spin_waste_err": -0.0269,
        "guest_n_contended_err": 0.0,
        "guest_wait_err": 0.0,
    },
}

SCORES = ("merged_lhp_precision", "merged_lhp_recall")  # higher is better
ERRORS = (
    "merged_waste_err",
    "host_spin_err",
    "host_spin_waste_err",
    "guest_n_contended_err",
    "guest_wait_err",
)
SLACK = 0.005  # room for float rounding in the recorded figures


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RECORDED), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}x")
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
@pytest.mark.parametrize("case", sorted(RECORDED), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}x")
def test_merged_view_meets_the_waste_target(case):
    # Spin waste (LHP + LWP) from inferred holders within 5% of truth, every case.
    assert abs(figures(*case)["merged_waste_err"]) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [c for c in sorted(RECORDED) if c[1] in ("tas", "pv-ticket", "pv-qspinlock")],
    ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}x",
)
def test_merged_view_meets_the_lhp_target(case):
    # >= 95% for tas, >= 90% for pv locks (ticket falls short on the no-ple workload: docs/accuracy.md).
    target = 0.95 if case[1] == "tas" else 0.90
    f = figures(*case)
    assert f["merged_lhp_precision"] >= target and f["merged_lhp_recall"] >= target
