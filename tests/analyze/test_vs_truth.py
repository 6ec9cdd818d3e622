"""The analyzer on the simulator's full view equals the simulator's ground truth exactly.

Ground truth comes from the simulator's own bookkeeping (pvtrace/simulate/truth.py),
never from events; both follow docs/metrics.md. Hypothesis draws seeds, lock
algorithms, presets and a few scenario knobs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvtrace.analyze import analyze
from pvtrace.simulate.locks import ALGORITHM_TRAITS
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario, load_preset, preset_names

TABLE_KEYS = {
    "lhp_incidents": ["vm", "lock", "start"],
    "lwp_incidents": ["vm", "lock", "start"],
    "convoys": ["vm", "lock", "start"],
}


def assert_matches_truth(scenario: Scenario, seed: int) -> None:
    trace, truth = simulate_trace(scenario, seed=seed)
    a = analyze(trace)
    assert a.summary.extra["level"] == "exact"
    assert a.summary.totals == truth.summary.totals
    for name, key in TABLE_KEYS.items():
        mine = a.table(name).sort(key)
        theirs = getattr(truth, name).select(mine.columns).cast(dict(mine.schema)).sort(key)
        assert mine.equals(theirs), f"{name} differs:\n{mine}\n{theirs}"


def small(
    algorithm: str, *, vms: int, pcpus: int, ple: bool, cures: bool, spin_threshold_ns: int = 3_000
) -> Scenario:
    """A short busy run: short host slices and a low pv spin budget so that a few ms hold
    LHP, LWP (preempted and halted next owners), kicks and convoys."""
    return Scenario().replace(
        host={"pcpus": pcpus, "slice_ns": 200_000},
        vm={"count": vms, "vcpus": 3, "locks": 2, "compute_ns": 15_000, "hold_ns": 2_000, "ops": 200},
        lock={"algorithm": algorithm, "spin_threshold_ns": spin_threshold_ns},
        hypervisor={"ple": ple},
        cures={"yield_to_holder": cures, "preemption_hint": cures},
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    algorithm=st.sampled_from(sorted(ALGORITHM_TRAITS)),
    seed=st.integers(0, 2**31 - 1),
    vms=st.integers(1, 3),
    pcpus=st.integers(2, 4),
    ple=st.booleans(),
    cures=st.booleans(),
    spin_threshold_ns=st.sampled_from([2_000, 5_000, 40_000]),
)
def test_full_view_totals_equal_ground_truth(algorithm, seed, vms, pcpus, ple, cures, spin_threshold_ns):
    scenario = small(
        algorithm, vms=vms, pcpus=pcpus, ple=ple, cures=cures, spin_threshold_ns=spin_threshold_ns
    )
    assert_matches_truth(scenario, seed)


@settings(max_examples=6, deadline=None)
@given(
    preset=st.sampled_from(preset_names()),
    algorithm=st.sampled_from(sorted(ALGORITHM_TRAITS)),
    seed=st.integers(0, 1000),
)
def test_presets_equal_ground_truth(preset, algorithm, seed):
    scenario = load_preset(preset).replace(lock={"algorithm": algorithm}, run={"duration_ns": 40_000_000})
    assert_matches_truth(scenario, seed)


def test_every_kind_of_incident_is_exercised():
    # Fixed runs that between them hold every incident kind, so the equality above is not vacuous.
    seen: dict[str, int] = {}
    for algorithm, ple in (("tas", True), ("ticket", True), ("pv-ticket", False), ("pv-qspinlock", True)):
        scenario = small(algorithm, vms=3, pcpus=2, ple=ple, cures=False)
        trace, truth = simulate_trace(scenario, seed=5)
        assert analyze(trace).summary.totals == truth.summary.totals
        for k, v in truth.summary.totals.items():
            seen[k] = seen.get(k, 0) + v
    for key in (
        "n_lhp_harmful",
        "n_lwp_preempted",
        "n_lwp_halted",
        "n_convoys",
        "n_kicks",
        "n_pause_exits",
        "waste_lhp_ns",
        "waste_lwp_halted_ns",
        "wait_halted_ns",
        "wait_preempted_ns",
    ):
        assert seen[key] > 0, key
    assert seen["n_lhp"] > seen["n_lhp_harmful"]  # benign incidents too


def test_cut_run_truncates_like_truth():
    # A fixed-duration run ends in the middle of things: truncated waits, holds and incidents.
    scenario = small("pv-ticket", vms=3, pcpus=2, ple=True, cures=False).replace(
        vm={"ops": 100_000}, run={"duration_ns": 3_000_000}
    )
    trace, truth = simulate_trace(scenario, seed=7)
    assert truth.summary.totals["n_truncated"] > 0
    assert analyze(trace).summary.totals == truth.summary.totals
