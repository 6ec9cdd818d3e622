"""The ground truth cut to a window (pvtrace/simulate/truth_window.py)."""

from __future__ import annotations

import pytest

from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset
from pvtrace.simulate.truth_window import cut_truth
from pvtrace.simulate.views import select_view

KEYS = (
    "spin_ns",
    "spin_useful_ns",
    "waste_lhp_ns",
    "waste_lwp_ns",
    "waste_lwp_preempted_ns",
    "waste_lwp_halted_ns",
    "wait_halted_ns",
    "wait_preempted_ns",
    "n_contended",
    "n_lhp",
    "n_lhp_harmful",
    "n_lwp",
    "n_lwp_preempted",
    "n_lwp_halted",
    "n_convoys",
    "convoy_len_max",
    "n_acquisitions",
    "n_pause_exits",
    "n_kicks",
)


@pytest.fixture(scope="module")
def run():
    return simulate_trace(load_preset("lhp-demo"), seed=4)


def test_the_whole_run_is_the_simulators_truth(run):
    trace, truth = run
    whole = cut_truth(trace, 0, truth.t_end)
    assert {k: whole.totals[k] for k in KEYS} == {k: truth.summary.totals[k] for k in KEYS}
    assert whole.running_ns == int(truth.vcpus["running_ns"].sum())


def test_time_totals_of_adjacent_windows_add_up(run):
    trace, truth = run
    cut = truth.t_end // 3
    a, b = cut_truth(trace, 0, cut), cut_truth(trace, cut, truth.t_end)
    for key in (
        "spin_ns",
        "waste_lhp_ns",
        "waste_lwp_ns",
        "wait_preempted_ns",
        "n_contended",
        "n_acquisitions",
        "n_pause_exits",
    ):
        assert a.totals[key] + b.totals[key] == truth.summary.totals[key], key
    assert 0 < a.totals["spin_ns"] < truth.summary.totals["spin_ns"]


def test_needs_the_full_view(run):
    trace, _ = run
    with pytest.raises(ValueError, match="full view"):
        cut_truth(select_view(trace, "merged"), 0, 10)
