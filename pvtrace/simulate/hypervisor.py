"""KVM's decisions: the PLE window, the kvm_vcpu_on_spin candidate scan, halt_poll_ns grow/shrink.

PLE (pause-loop exiting): a vCPU that spins in a PAUSE loop for longer than its
window exits; each PAUSE exit doubles the window (ple_window_grow, capped at
ple_window_max) and the window returns to its base when the vCPU is scheduled
in again (KVM's grow/shrink with ple_window_shrink = 0). After the exit KVM
scans the VM for a vCPU to yield to (kvm_vcpu_on_spin, virt/kvm/kvm_main.c).
Halt-polling (kvm_vcpu_halt): a halting vCPU's thread polls for up to its own
halt_poll_ns before sleeping; the value grows when a wake-up came soon enough
to have been caught, shrinks when the halt was long.
"""

from __future__ import annotations

import random

from pvtrace.simulate.scenario import Hypervisor
from pvtrace.simulate.tasks import PREEMPTED, VCpu

MAX_YIELD_TRIES = 3  # kvm_vcpu_on_spin gives up after three failed yield_to


def window_ns(cycles: int, cpu_ghz: float) -> int:
    """A PLE window in cycles as ns of spinning on this host."""
    return max(1, int(cycles / cpu_ghz))


def grown_window(hv: Hypervisor, window: int) -> int:
    """The window after one more PAUSE exit."""
    return min(window * hv.ple_window_grow, hv.ple_window_max)


def ready(u: VCpu) -> bool:
    """KVM's vcpu->ready: scheduled out while runnable, or woken and not yet running."""
    return u.state == PREEMPTED


def spin_candidates(hv: Hypervisor, me: VCpu, siblings: list[VCpu], last_boosted: int, rng: random.Random):
    """The vCPUs a PAUSE-exiting vCPU tries to yield to, in order (the caller stops at a success).

    random: one preempted sibling. kvm: as kvm_vcpu_on_spin, two passes round
    robin from after the last boosted vCPU; skips itself, vCPUs not ready,
    vCPUs preempted in user mode (a vCPU preempted holding or waiting for a
    spinlock is in kernel mode; one preempted computing is with probability
    vm.kernel_fraction), and, every other time, a vCPU that is itself inside the spin
    handler (the dy_eligible toggle). A generator: candidates are judged as
    the scan reaches them.
    """
    policy = hv.directed_yield
    if policy == "none":
        return
    if policy == "random":
        pool = [u for u in siblings if u is not me and ready(u)]
        if pool:
            yield pool[rng.randrange(len(pool))]
        return
    n = len(siblings)
    start = last_boosted + 1
    for k in range(n):
        u = siblings[(start + k) % n]
        if u is me or not ready(u):
            continue
        if not u.in_kernel and not u.ipi_in:
            continue  # preempted in user mode with no interrupt pending (kvm_arch_dy_has_pending_interrupt)
        if u.spin_loop:
            eligible = u.dy_eligible
            u.dy_eligible = not u.dy_eligible
            if not eligible:
                continue
        yield u


def next_poll_ns(hv: Hypervisor, poll: int, halt_ns: int) -> int:
    """halt_poll_ns after a halt of halt_ns that ended with a wake-up (kvm_vcpu_halt)."""
    top = hv.halt_poll_ns
    if top == 0:
        return 0
    if halt_ns <= poll:
        return poll  # the poll caught it
    if poll and halt_ns > top:
        new = poll // hv.halt_poll_shrink if hv.halt_poll_shrink else 0
        return 0 if new < hv.halt_poll_grow_start else new
    if poll < top and halt_ns < top:
        return min(max(poll * hv.halt_poll_grow, hv.halt_poll_grow_start), top)
    return poll
