"""KVM-like hypervisor decisions: the PLE window and the directed-yield candidate.

PLE (pause-loop exiting): a vCPU that spins in a PAUSE loop for longer than its
window exits; each PAUSE exit doubles the window (ple_window_grow, capped at
ple_window_max) and the window returns to its base when the vCPU is scheduled
in again (KVM's grow/shrink with ple_window_shrink = 0). After the exit KVM
looks for a sibling vCPU to yield to (kvm_vcpu_on_spin).
"""

from __future__ import annotations

import random

from pvtrace.simulate.scenario import Hypervisor
from pvtrace.simulate.tasks import PREEMPTED, VCpu


def window_ns(cycles: int, cpu_ghz: float) -> int:
    """A PLE window in cycles as ns of spinning on this host."""
    return max(1, int(cycles / cpu_ghz))


def grown_window(hv: Hypervisor, window: int) -> int:
    """The window after one more PAUSE exit."""
    return min(window * hv.ple_window_grow, hv.ple_window_max)


def yield_candidate(hv: Hypervisor, me: VCpu, siblings: list[VCpu], last_boosted: int, rng: random.Random):
    """The vCPU a PAUSE-exiting vCPU yields to, or None.

    random: any preempted sibling. kvm: like kvm_vcpu_on_spin, round robin
    starting after the last boosted vCPU, only preempted siblings that were in
    kernel mode (here: holding or waiting for a spinlock), skipping every other
    time a sibling that is itself inside a spin loop (the dy_eligible toggle).
    """
    policy = hv.directed_yield
    if policy == "none":
        return None
    if policy == "random":
        ready = [u for u in siblings if u is not me and u.state == PREEMPTED]
        return ready[rng.randrange(len(ready))] if ready else None
    n = len(siblings)
    for k in range(1, n + 1):
        u = siblings[(last_boosted + k) % n]
        if u is me or u.state != PREEMPTED:
            continue
        if u.hold_lock is None and u.wait_lock is None:
            continue  # preempted in user mode
        if u.spin_loop:
            eligible = u.dy_eligible
            u.dy_eligible = not u.dy_eligible
            if not eligible:
                continue
        return u
    return None
