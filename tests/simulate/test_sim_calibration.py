"""The calibration targets of science.md, each on a run configured as its statement describes.

Waits and holds are measured from the emitted events; incidents and totals
come from the ground truth.
"""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.simulate.experiment import run_experiment
from pvtrace.simulate.run import discard, simulate, simulate_trace
from pvtrace.simulate.scenario import Scenario, load_preset

CYCLES_2_12_NS = 4096 / 3.0  # 2^12 cycles at the default 3 GHz
SPIN_2_16_NS = 2 * 40_000  # 2^16 iterations: twice SPIN_THRESHOLD (2^15 iterations = spin_threshold_ns)


def wait_durations(events: pl.DataFrame) -> pl.Series:
    """Each contended acquisition's wait (contend -> acquire of the same vCPU), ns."""
    e = events.filter(pl.col("kind").is_in(["lock_contend", "lock_acquire"])).sort("vm", "vcpu", "seq")
    e = e.with_columns(
        pl.col("kind").shift(-1).over("vm", "vcpu").alias("next_kind"),
        pl.col("ts").shift(-1).over("vm", "vcpu").alias("next_ts"),
    )
    return e.filter((pl.col("kind") == "lock_contend") & (pl.col("next_kind") == "lock_acquire")).select(
        (pl.col("next_ts") - pl.col("ts")).alias("wait")
    )["wait"]


def hold_durations(events: pl.DataFrame) -> pl.Series:
    """Each critical section (acquire -> release of the same vCPU), ns."""
    e = events.filter(pl.col("kind").is_in(["lock_acquire", "lock_release"])).sort("vm", "vcpu", "seq")
    e = e.with_columns(pl.col("ts").shift(-1).over("vm", "vcpu").alias("next_ts"))
    return (
        e.filter(pl.col("kind") == "lock_acquire")
        .select((pl.col("next_ts") - pl.col("ts")).alias("hold"))["hold"]
        .drop_nulls()
    )


@pytest.mark.slow
def test_pv_ticket_gains_are_real_but_modest():
    # "+5% to +17% at 2x-4x overcommit, no loss (+-1%) at 1x": the prototype's host (4 pCPUs,
    # 4-vCPU guests, 3 ms +-25% slices, no background load, no PLE), a moderately hot workload.
    s = load_preset("seed-table").replace(
        host={"noise_tasks": 0},
        vm={"compute_ns": 350_000, "hold_ns": 2_500, "hold_dist": "lognormal", "ops": 4_000},
    )
    gains = run_experiment(s, repeats=8).table["gain_pct"].to_list()
    assert -1.0 <= gains[0] <= 1.0, gains
    assert all(5.0 <= g <= 17.0 for g in gains[1:]), gains
    assert gains[1] < gains[2] < gains[3]


def test_spin_durations_have_a_short_body_and_a_heavy_tail():
    # No preemption (4 vCPUs on 4 pCPUs, nothing else): ~98% of contended acquisitions
    # within 2^16 spin iterations, most holds under 2^12 cycles.
    s = Scenario().replace(
        vm={
            "vcpus": 4,
            "locks": 1,
            "compute_ns": 20_000,
            "hold_ns": 1_000,
            "hold_dist": "lognormal",
            "hold_sigma": 2.0,
            "ops": 10_000,
        },
        hypervisor={"ple": False},
    )
    trace, truth = simulate_trace(s)
    assert truth.summary.totals["wait_preempted_ns"] == 0  # nothing was ever preempted
    waits = wait_durations(trace.events)
    within = float((waits <= SPIN_2_16_NS).mean())
    assert 0.96 <= within <= 0.995, within
    median = float(waits.median())
    assert median < 10_000  # the body is short (a few holds)...
    assert int(waits.max()) > 50 * median  # ...the tail long
    assert float((hold_durations(trace.events) < CYCLES_2_12_NS).mean()) > 0.5
    # so a pv lock with that budget takes its slow path on ~2% of contended acquisitions
    pv = s.replace(lock={"algorithm": "pv-ticket", "spin_threshold_ns": SPIN_2_16_NS})
    pv_trace, pv_truth = simulate_trace(pv)
    n_halts = pv_trace.events.filter(pl.col("kind") == "pv_halt").height
    share = n_halts / pv_truth.summary.totals["n_contended"]
    assert 0.005 <= share <= 0.04, share


def test_lhp_incidents_last_a_host_slice_not_a_critical_section():
    # 3-4 orders of magnitude: incidents on the order of the 3 ms slice, holds of microseconds.
    # Two guests at 2x overcommit, no PLE (directed yield would cut incidents short).
    s = load_preset("seed-table").replace(host={"noise_tasks": 0}, vm={"count": 2, "ops": 3_000})
    trace, truth = simulate_trace(s)
    lhp = truth.lhp_incidents
    assert lhp.height >= 5
    median_lhp = float(lhp["dur"].median())
    assert 0.2 * s.host.slice_ns <= median_lhp <= 2 * s.host.slice_ns, median_lhp
    median_hold = float(hold_durations(trace.events).median())
    assert median_hold < 3_000
    assert median_lhp / median_hold >= 1_000


def test_ple_alone_is_a_small_win_for_a_kernel_build_like_workload():
    # PLE with a 4096-cycle window at 2x overcommit: a few percent (+2% reported).
    s = load_preset("seed-table").replace(
        host={"noise_tasks": 0}, vm={"count": 2, "compute_ns": 400_000, "hold_ns": 1_000, "ops": 2_000}
    )

    def mean_completion(scenario: Scenario) -> float:
        done = []
        for seed in range(1, 6):
            done += list(simulate(scenario, discard, seed=seed).truth.completion_ns.values())
        return sum(done) / len(done)

    without = mean_completion(s.replace(hypervisor={"ple": False}))
    with_ple = mean_completion(s.replace(hypervisor={"ple": True, "ple_window": 4096}))
    gain = (without - with_ple) / without * 100
    assert 0.3 <= gain <= 5.0, gain
