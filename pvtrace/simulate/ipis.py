"""The engine's guest IPIs: TLB shootdowns whose sender waits for every target (csd_lock_wait).

A vCPU that unmaps memory of a multi-threaded process (munmap, mprotect,
page migration: flush_tlb_mm_range -> flush_tlb_multi) must flush the TLBs of
the other CPUs that run the mm: it queues a call-function request on each
target (csd_queue_cpu), sends the IPI (ipi_send_cpumask) and spins in guest
mode until every target has run flush_tlb_func (csd_function_entry/exit).
The targets are the VM's other vCPUs that are not halted (a halted vCPU is
idle in lazy-TLB mode and skipped, as the kernel skips lazy CPUs). A running
target handles the IPI `ipi_latency_ns` after it is sent (posted-interrupt
delivery plus the flush); a preempted one only once it runs again, so a
preempted target stalls the sender: the same disease as LHP. A vCPU about to
halt takes a pending interrupt first. With pv TLB flush
(KVM_FEATURE_PV_TLB_FLUSH, kvm_flush_tlb_multi) a target whose steal-time
`preempted` flag is set is not sent the IPI: KVM flushes its TLB at its next
entry, and the sender does not wait for it. The sender's spin is a PAUSE loop,
so PLE exits and kvm_vcpu_on_spin's scan (which also considers a vCPU preempted
in user mode when it has an interrupt pending) apply to it.
"""

from __future__ import annotations

from pvtrace.simulate.events import EV_IPI, EV_SPIN, K
from pvtrace.simulate.tasks import COMPUTE, HALTED, IPI, PREEMPTED, RUNNING, VCpu


class Shootdown:
    """One TLB shootdown: its sender, the targets still to handle it, and the ground truth of its wait."""

    __slots__ = ("n_left", "n_preempted", "pre_ns", "pre_since", "sender", "t_send")

    def __init__(self, sender: VCpu, t: int):
        self.sender = sender
        self.t_send = t
        self.n_left = 0
        self.n_preempted = 0  # targets still to handle it that are preempted now
        self.pre_since = 0
        self.pre_ns = 0  # time of the wait during which some unhandled target was preempted

    def target_state(self, old: int, new: int, t: int) -> None:
        """An unhandled target changes state: track the stretches when one is preempted."""
        if new == PREEMPTED:
            if not self.n_preempted:
                self.pre_since = t
            self.n_preempted += 1
        elif old == PREEMPTED:
            self.n_preempted -= 1
            if not self.n_preempted:
                self.pre_ns += t - self.pre_since


class Ipis:
    """Mixin of Engine: TLB-shootdown IPIs."""

    def tlb_shootdown(self, v: VCpu, t: int) -> None:
        """v flushes the other CPUs of its mm: queue, send, then spin until all have handled it."""
        v.phase = IPI
        rec = Shootdown(v, t)
        mask = 0
        for u in v.vmrec.vcpus:
            if u is v or u.state == HALTED:
                continue
            if u.state == PREEMPTED and self.pv_tlb_flush:
                self.truth.n_ipi_skipped += 1  # the preempted flag: flushed at its next entry
                continue
            self.emit(t, K.CSD_QUEUE | v.key, u.idx)
            mask |= 1 << u.idx
            rec.n_left += 1
            u.ipi_in.append(rec)
            if u.state == PREEMPTED:
                rec.target_state(RUNNING, PREEMPTED, t)
            elif len(u.ipi_in) == 1:
                self.arm_ipi(u, t)
        self.truth.n_shootdowns += 1
        if not rec.n_left:
            self.truth.add_shootdown(rec, t)  # every other vCPU idle or (pv) preempted: no wait
            v.phase = COMPUTE
            self.resume(v, t)
            return
        self.emit(t, K.IPI_SEND | v.key, mask)
        v.ipi_wait = rec
        self.ipi_spin(v, t)

    def arm_ipi(self, u: VCpu, t: int) -> None:
        """u runs with IPIs pending: it handles them after the delivery latency (if still running)."""
        u.ipi_tok += 1
        self.push(t + self.ipi_latency, EV_IPI, u, u.ipi_tok)

    def ipi_arrives(self, u: VCpu, t: int) -> None:
        if u.state == RUNNING and u.ipi_in:
            self.handle_ipis(u, t)

    def handle_ipis(self, u: VCpu, t: int) -> None:
        """u runs flush_tlb_func for every pending shootdown; a sender whose last target this was goes on."""
        pending, u.ipi_in = u.ipi_in, []
        for rec in pending:
            self.emit(t, K.CSD_ENTRY | u.key, rec.sender.idx)
            self.emit(t, K.CSD_EXIT | u.key, rec.sender.idx)
            rec.n_left -= 1
            if not rec.n_left:
                self.shootdown_done(rec, t)

    def shootdown_done(self, rec: Shootdown, t: int) -> None:
        s = rec.sender
        s.ipi_wait = None
        self.truth.add_shootdown(rec, t)
        if s.state == RUNNING and s.in_guest:
            self.push_v(s, t, EV_SPIN)  # its spin loop sees it (in the event loop, at t)

    def ipi_spin(self, v: VCpu, t: int) -> None:
        """v (running, in guest) spins in csd_lock_wait: done, or spin on until the PLE window runs out."""
        if v.ipi_wait is None:
            v.phase = COMPUTE
            self.resume(v, t)
            return
        v.seg_start = t
        if self.ple:
            self.push_v(v, t + max(v.ple_left, 0), EV_SPIN)
        else:
            v.token += 1

    def ipi_spin_timer(self, v: VCpu, t: int) -> None:
        self.end_segment(v, t)
        if v.ipi_wait is not None and self.ple and v.ple_left <= 0:
            self.ple_exit(v, t)
        else:
            self.ipi_spin(v, t)
