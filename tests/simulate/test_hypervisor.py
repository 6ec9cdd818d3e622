"""KVM's decisions in isolation: halt_poll_ns grow/shrink and kvm_vcpu_on_spin's candidate order."""

from __future__ import annotations

import random

from pvtrace.simulate.hypervisor import next_poll_ns, spin_candidates
from pvtrace.simulate.scenario import Hypervisor
from pvtrace.simulate.tasks import HALTED, PREEMPTED, RUNNING, VCpu

HV = Hypervisor()  # halt_poll_ns 200 us, grow x2 from 10 us, shrink /2


def test_halt_poll_grows_from_the_start_value_and_caps():
    assert next_poll_ns(HV, 0, 50_000) == 10_000  # a short halt: grow from 0 to grow_start
    assert next_poll_ns(HV, 10_000, 50_000) == 20_000
    assert next_poll_ns(HV, 160_000, 190_000) == 200_000  # capped at halt_poll_ns


def test_halt_poll_keeps_a_poll_that_caught_the_wakeup_and_shrinks_after_long_halts():
    assert next_poll_ns(HV, 40_000, 30_000) == 40_000
    assert next_poll_ns(HV, 40_000, 5_000_000) == 20_000
    assert next_poll_ns(HV, 15_000, 5_000_000) == 0  # below grow_start: off
    assert next_poll_ns(Hypervisor(halt_poll_ns=0), 40_000, 30_000) == 0


def vcpus(states: list[int], in_kernel: list[bool]) -> list[VCpu]:
    out = []
    for i, (state, kernel) in enumerate(zip(states, in_kernel, strict=True)):
        v = VCpu(i, 0, i, 0)
        v.state, v.in_kernel = state, kernel
        out.append(v)
    return out


def test_scan_starts_after_the_last_boosted_and_skips_the_ineligible():
    vs = vcpus([RUNNING, PREEMPTED, PREEMPTED, HALTED, PREEMPTED], [True, True, False, True, True])
    me = vs[0]
    # from after vCPU 1: 2 is in user mode, 3 is not ready (halted), 4 is a candidate, then 1
    got = [u.idx for u in spin_candidates(HV, me, vs, 1, random.Random(0))]
    assert got == [4, 1]


def test_dy_eligible_skips_a_spinning_candidate_every_other_time():
    vs = vcpus([RUNNING, PREEMPTED], [True, True])
    vs[1].spin_loop = True
    picks = [[u.idx for u in spin_candidates(HV, vs[0], vs, -1, random.Random(0))] for _ in range(4)]
    assert picks == [[], [1], [], [1]]
