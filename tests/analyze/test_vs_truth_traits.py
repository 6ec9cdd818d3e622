"""The analyzer equals the simulator's ground truth exactly for every lock-trait combination
and the hypervisor's halt-polling, kick and yield variants (extends test_vs_truth.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_vs_truth import assert_matches_truth, small

from pvtrace.simulate.locks import EARLY_HALT, KICKS, ORDERS, STEALING
from pvtrace.simulate.scenario import RUNQUEUES


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.sampled_from(ORDERS),
    pv=st.sampled_from(["on", "off"]),
    stealing=st.sampled_from(STEALING),
    early_halt=st.sampled_from(EARLY_HALT),
    kick=st.sampled_from(KICKS),
    halt_poll_ns=st.sampled_from([0, 200_000]),
    next_buddy=st.booleans(),
    ple=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_trait_combination_equals_ground_truth(
    order, pv, stealing, early_halt, kick, halt_poll_ns, next_buddy, ple, seed
):
    scenario = small("ticket", vms=2, pcpus=3, ple=ple, cures=False).replace(
        host={"next_buddy": next_buddy},
        lock={"order": order, "pv": pv, "stealing": stealing, "early_halt": early_halt, "kick": kick},
        hypervisor={"halt_poll_ns": halt_poll_ns},
    )
    assert_matches_truth(scenario, seed)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    algorithm=st.sampled_from(["ticket", "pv-ticket", "pv-qspinlock", "tas"]),
    runqueues=st.sampled_from(RUNQUEUES),
    ipi_prob=st.sampled_from([0.0, 0.05, 0.4]),
    pv_tlb_flush=st.booleans(),
    ple=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_run_queues_and_tlb_shootdowns_keep_the_ground_truth(
    algorithm, runqueues, ipi_prob, pv_tlb_flush, ple, seed
):
    # per-cpu queues move vCPUs between pCPUs; shootdown senders spin (PAUSE exits, yields) outside
    # any lock and their IPI events are `other` rows: the lock metrics must not move off the truth
    scenario = small(algorithm, vms=2, pcpus=3, ple=ple, cures=False).replace(
        host={"runqueues": runqueues, "balance_interval_ns": 400_000},
        vm={"ipi_prob": ipi_prob},
        hypervisor={"pv_tlb_flush": pv_tlb_flush},
    )
    assert_matches_truth(scenario, seed)
