"""Invariants of simulator runs, checked on the emitted events by an independent replay.

Hypothesis draws seeds, lock algorithms, sizes, hypervisor features, cures and
host load. The replay (sim_replay.py) walks the events one by one and checks:
at most one vCPU on a pCPU at a time; at most one holder per lock; guest code
(lock operations, PAUSE exits, pv halts) only on a running vCPU in guest mode,
so a halted or preempted vCPU never spins; fifo locks grant in arrival order;
exits and entries alternate; and it recomputes the totals the slow way, which
must equal the ground truth (pvtrace/simulate/truth.py) to the nanosecond.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_replay import replay

from pvtrace.simulate.locks import ALGORITHM_TRAITS, algorithm_of
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import ALGORITHMS, Scenario

REPLAYED = (
    "spin_ns",
    "spin_useful_ns",
    "waste_lhp_ns",
    "waste_lwp_ns",
    "waste_lwp_preempted_ns",
    "waste_lwp_halted_ns",
    "wait_halted_ns",
    "wait_preempted_ns",
    "n_acquisitions",
    "n_contended",
    "n_lhp",
    "n_lwp",
    "n_convoys",
    "n_pause_exits",
    "n_kicks",
)


@st.composite
def scenarios(draw) -> Scenario:
    duration = draw(st.sampled_from([0, 0, 4_000_000]))
    return Scenario().replace(
        host={
            "pcpus": draw(st.integers(1, 3)),
            "slice_ns": draw(st.sampled_from([50_000, 200_000, 3_000_000])),
            "noise_tasks": draw(st.integers(0, 2)),
            "noise_run_ns": 200_000,
            "noise_sleep_ns": 400_000,
            "gang_scheduling": draw(st.booleans()),
            "wakeup_preemption": draw(st.booleans()),
        },
        vm={
            "count": draw(st.integers(1, 3)),
            "vcpus": draw(st.integers(1, 5)),
            "locks": draw(st.integers(1, 3)),
            "lock_skew": draw(st.sampled_from([0.0, 1.5])),
            "compute_ns": draw(st.sampled_from([2_000, 6_000, 20_000])),
            "compute_dist": draw(st.sampled_from(["exp", "fixed", "uniform"])),
            "hold_ns": draw(st.sampled_from([1_000, 3_000])),
            "hold_dist": draw(st.sampled_from(["exp", "lognormal"])),
            "ops": draw(st.integers(1, 150)),
            "sleep_prob": draw(st.sampled_from([0.0, 0.1])),
            "sleep_ns": 30_000,
        },
        lock={
            "algorithm": draw(st.sampled_from(ALGORITHMS)),
            "spin_threshold_ns": draw(st.sampled_from([1_000, 40_000])),
            "stealing": draw(st.sampled_from(["", "none", "once", "unfair"])),
            "early_halt": draw(st.sampled_from(["", "never", "pred-halted", "pred-preempted"])),
            "kick": draw(st.sampled_from(["", "hash"])),
        },
        hypervisor={
            "ple": draw(st.booleans()),
            "directed_yield": draw(st.sampled_from(["none", "random", "kvm"])),
            "halt_poll_ns": draw(st.sampled_from([0, 200_000])),
        },
        cures={
            "yield_to_holder": draw(st.booleans()),
            "yield_threshold_ns": 3_000,
            "preemption_hint": draw(st.booleans()),
            "shared_run_state": draw(st.booleans()),
        },
        run={"duration_ns": duration},
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_events_obey_the_invariants_and_replay_to_the_ground_truth(scenario: Scenario, seed: int):
    trace, truth = simulate_trace(scenario, seed=seed)
    algo = algorithm_of(scenario.lock)
    t_end = trace.meta.t_end
    assert t_end == truth.t_end
    assert trace.events.height == 0 or trace.events["ts"].max() <= t_end
    rp = replay(trace.events, t_end, algo.fifo, algo.steal)
    assert rp.violations == []

    # Every vCPU's states sum to the run length, and the truth's per-state time is the events'.
    vcpus = {(r["vm"], r["vcpu"]): r for r in truth.vcpus.to_dicts()}
    assert set(vcpus) == set(rp.state_ns)
    for v, ns in rp.state_ns.items():
        assert sum(ns.values()) == t_end
        row = vcpus[v]
        assert (row["running_ns"], row["preempted_ns"], row["halted_ns"]) == (
            ns["running"],
            ns["preempted"],
            ns["halted"],
        )

    totals = truth.summary.totals
    # spin splits exactly, in the totals and lock by lock
    assert totals["spin_ns"] == (
        totals["spin_useful_ns"]
        + totals["waste_lhp_ns"]
        + totals["waste_lwp_ns"]
        + totals["spin_unattributed_ns"]
    )
    assert totals["waste_lwp_ns"] == totals["waste_lwp_preempted_ns"] + totals["waste_lwp_halted_ns"]
    for row in truth.locks.to_dicts():
        assert row["spin_ns"] == row["spin_useful_ns"] + row["waste_lhp_ns"] + row["waste_lwp_ns"]
        assert row["wait_ns"] == row["spin_ns"] + row["wait_halted_ns"] + row["wait_preempted_ns"]
    assert int(truth.lhp_incidents["waste_ns"].sum()) == totals["waste_lhp_ns"]
    if not algo.pv:
        assert totals["wait_halted_ns"] == 0 and totals["n_kicks"] == 0
    if not algo.fifo:
        assert totals["n_lwp"] == 0 and totals["waste_lwp_ns"] == 0

    assert {k: rp.totals.get(k, 0) for k in REPLAYED} == {k: totals[k] for k in REPLAYED}

    # fixed work: every vCPU did all its operations, and each VM has a completion time
    if scenario.run.duration_ns == 0:
        assert all(row["n_ops"] == scenario.vm.ops for row in vcpus.values())
        assert max(truth.completion_ns.values()) == t_end
        assert totals["n_truncated"] == 0


def busy(algorithm: str, **changes: dict) -> Scenario:
    """A short run at 3x overcommit with hot locks and short slices: every kind of trouble happens."""
    base = Scenario().replace(
        host={"pcpus": 2, "slice_ns": 200_000},
        vm={"count": 2, "vcpus": 3, "locks": 2, "compute_ns": 15_000, "hold_ns": 2_000, "ops": 150},
        lock={"algorithm": algorithm, "spin_threshold_ns": 3_000},
        hypervisor={"ple": False},
    )
    return base.replace(**changes) if changes else base


VARIANTS = {
    "plain": {},
    "ple-kvm": {"hypervisor": {"ple": True}},
    "ple-random": {"hypervisor": {"ple": True, "directed_yield": "random"}},
    "yield-to-holder": {"cures": {"yield_to_holder": True, "yield_threshold_ns": 3_000}},
    "hint": {"cures": {"preemption_hint": True}},
    "shared-run-state": {"cures": {"shared_run_state": True}},
    "noise-gang": {"host": {"gang_scheduling": True, "noise_tasks": 1, "noise_run_ns": 100_000}},
    "cut": {"run": {"duration_ns": 2_000_000}},
}


def test_busy_runs_of_every_algorithm_and_feature_replay_exactly():
    seen: dict[str, int] = {}
    for algorithm in ALGORITHMS:
        algo = ALGORITHM_TRAITS[algorithm]
        for name, changes in VARIANTS.items():
            trace, truth = simulate_trace(busy(algorithm, **changes), seed=11)
            rp = replay(trace.events, trace.meta.t_end, algo.fifo, algo.steal)
            assert rp.violations == [], (algorithm, name)
            totals = truth.summary.totals
            assert {k: rp.totals.get(k, 0) for k in REPLAYED} == {k: totals[k] for k in REPLAYED}, (
                algorithm,
                name,
            )
            for k, v in totals.items():
                seen[k] = seen.get(k, 0) + v
            seen["n_yields"] = seen.get("n_yields", 0) + truth.extra["n_yields"]
    # not vacuous: between them the runs hold every kind of event and incident
    for key in (
        "waste_lhp_ns",
        "waste_lwp_preempted_ns",
        "waste_lwp_halted_ns",
        "wait_halted_ns",
        "wait_preempted_ns",
        "n_lhp_harmful",
        "n_lwp_preempted",
        "n_lwp_halted",
        "n_convoys",
        "n_truncated",
        "n_pause_exits",
        "n_kicks",
        "n_yields",
    ):
        assert seen[key] > 0, key
    assert seen["n_lhp"] > seen["n_lhp_harmful"]
