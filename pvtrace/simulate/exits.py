"""The engine's hypervisor paths: PAUSE exits and the spin scan, yield_to, HLT and halt-polling, kicks.

Each path is what KVM does on that exit, with its costs: a light exit + entry
(`exit_cost_ns`), the kvm_vcpu_on_spin scan (`spin_scan_ns`), a kick's IPI to
the target (`kick_latency_ns`). A directed yield goes through the fair class
(host.py): the target is a buddy picked next only if eligible, the yielder's
deadline is pushed out, nobody is given time; a yield the scheduler does not
honour sends the yielder back into the guest. A woken vCPU waits as the
scheduler decides.
"""

from __future__ import annotations

from pvtrace.simulate.events import EV_POLL_END, EV_SCAN, EV_WAKE, K
from pvtrace.simulate.hypervisor import MAX_YIELD_TRIES, grown_window, next_poll_ns, spin_candidates
from pvtrace.simulate.tasks import DONE, HALTED, PREEMPTED, RUNNING, VCpu


class Exits:
    """Mixin of Engine: hypervisor exits."""

    # -- PAUSE-loop exits and directed yield ----------------------------------------------
    def ple_exit(self, v: VCpu, t: int) -> None:
        """PAUSE-loop exit: grow the window; the spin scan runs after its cost."""
        self.truth.n_pause_exits += 1
        v.token += 1
        self.emit(t, K.EXIT_PAUSE | v.key, v.pcpu)
        v.in_guest = False
        new = grown_window(self.s.hypervisor, v.window)
        if new != v.window:
            v.window = new
            self.emit(t, K.PLE | v.key, new)
        v.spin_loop = True  # kvm_vcpu_set_in_spin_loop(me, true)
        self.push_v(v, t + self.s.hypervisor.spin_scan_ns, EV_SCAN)

    def spin_scan(self, v: VCpu, t: int) -> None:
        """kvm_vcpu_on_spin: try candidates until a yield_to succeeds or three fail.

        (After a yield hypercall: the one yield_to it asked for.)
        """
        target = v.yield_target
        if target is not None:
            v.yield_target = None
            if self.yield_to(v, target, t) <= 0:
                self.back_to_guest(v, t)
            return
        vm = v.vmrec
        tries = MAX_YIELD_TRIES
        for u in spin_candidates(self.s.hypervisor, v, vm.vcpus, vm.last_boosted, self.rng):
            r = self.yield_to(v, u, t)
            if r > 0:
                vm.last_boosted = u.idx
                return
            if r < 0:
                tries -= 1
                if not tries:
                    break
        self.back_to_guest(v, t)

    def back_to_guest(self, v: VCpu, t: int) -> None:
        """Nothing to yield to (or the yield had no effect): re-enter after the exit's cost."""
        v.spin_loop = False
        v.dy_eligible = False
        self.reenter(v, t)

    def hypercall_yield(self, v: VCpu, target: VCpu, t: int) -> None:
        """Yield-to-holder / shared run state: KVM_HC_SCHED_YIELD to a vCPU by hypercall.

        kvm_sched_yield calls yield_to once the exit is handled (after the spin scan's cost).
        """
        v.token += 1
        self.emit(t, K.EXIT_YIELD | v.key, v.pcpu)
        v.in_guest = False
        v.yield_target = target
        self.push_v(v, t + self.s.hypervisor.spin_scan_ns, EV_SCAN)

    def yield_to(self, v: VCpu, target: VCpu, t: int) -> int:
        """kernel/sched/core.c yield_to from v (on its pCPU, in an exit) to target.

        -1: the target is running or not runnable; 1: the fair class took the
        hint (target marked buddy, the yielder's deadline pushed out by a request)
        and v's pCPU was rescheduled, which may give it back to v. With per-cpu
        queues a target queued on another pCPU is that queue's buddy: its pCPU
        is rescheduled (resched_curr) and runs it if the buddy is honoured, and
        v's pCPU picks from its own queue.
        """
        if target.state != PREEMPTED or target.pcpu >= 0:
            return -1
        host = self.host
        self.truth.n_yields += 1
        self.emit(t, K.YIELD_TO | v.key, target.idx)
        p = v.pcpu
        if host.gang:
            if target not in host.gang_queues[target.vm]:
                return 1
            host.remove(target, target.vm)
            nxt = target
        else:
            host.charge(p, t)
            host.yield_task(v)
            q = host.qof(p)
            buddy = target if self.s.host.next_buddy else None
            if host.percpu and target.last_pcpu != p:
                self.resched_for(target.last_pcpu, buddy, t)
                buddy = None
            nxt = host.pick(t, extra=v, buddy=buddy, q=q)
            if nxt is v:
                self.back_to_guest(v, t)  # not honoured: the yielder keeps its pCPU
                return 1
            host.queues[q].remove(nxt)
        self.emit(t, K.PREEMPT_R | v.key, p)
        self.set_state(v, PREEMPTED, t)
        v.extended = False
        v.in_kernel = True
        self.off_pcpu(v, p, t)
        host.enqueue(v, v.vm)
        self.run_on(nxt, p, t)
        self.stopped_running(v, t)
        return 1

    def resched_for(self, q: int, buddy, t: int) -> None:
        """yield_to across queues: pCPU q reschedules; it runs the buddy when eligible (NEXT_BUDDY),
        else EEVDF's pick, which under RUN_TO_PARITY keeps a current task inside its request."""
        host = self.host
        cur = host.cur[q]
        nxt = host.pick(t, extra=cur, buddy=buddy, q=q)
        if nxt is cur or cur is None or cur.polling:
            return  # (an idle or polling pCPU never has a waiting task)
        if nxt is not buddy and self.s.host.run_to_parity and cur.vrt < cur.deadline:
            return
        host.queues[q].remove(nxt)
        self.switch_out(cur, q, t)
        self.run_on(nxt, q, t)
        if cur.is_vcpu:
            self.stopped_running(cur, t)

    def hint_yield(self, v: VCpu, t: int) -> None:
        """Preemption hint: the deferred preemption happens right after the release."""
        p = v.pcpu
        self.switch_out(v, p, t)
        self.vacate(p, t)

    # -- HLT, halt-polling, kicks ---------------------------------------------------------
    def pv_halt(self, v: VCpu, t: int) -> None:
        """A pv waiter gives up spinning and halts until kicked; KVM halt-polls first."""
        if v.ipi_in:  # an interrupt pending at HLT is taken first
            self.handle_ipis(v, t)
        lock = v.wait_lock
        p = v.pcpu
        v.token += 1
        self.emit(t, K.PV_HALT | v.key, lock.index)
        self.emit(t, K.EXIT_HLT | v.key, p)
        v.in_guest = False
        self.emit(t, K.HALT | v.key, p)
        self.set_state(v, HALTED, t)
        v.halted_phase = True
        self.halt_poll_or_block(v, p, t)
        self.early_halt_check(v, lock, t)

    def halt_poll_or_block(self, v: VCpu, p: int, t: int) -> None:
        """After HLT: halt-poll on the pCPU while nothing else is runnable, else sleep."""
        v.halt_t = t
        host = self.host
        if v.poll_ns and not host.gang and not host.has_waiting(p):
            v.polling = True  # single_task_running(): the thread polls on its pCPU
            self.push(t + v.poll_ns, EV_POLL_END, v, v.token)
        else:
            self.block(v, p, t)

    def idle_sleep(self, v: VCpu, t: int) -> None:
        """The guest blocks (I/O, a sleeping lock): its vCPU idles in HLT until a timer wakes it."""
        if v.ipi_in:  # an interrupt pending at HLT is taken first
            self.handle_ipis(v, t)
        p = v.pcpu
        ns, v.sleep_due = v.sleep_due, 0
        v.token += 1
        self.emit(t, K.EXIT_HLT | v.key, p)
        v.in_guest = False
        self.emit(t, K.HALT | v.key, p)
        self.set_state(v, HALTED, t)
        self.push(t + ns, EV_WAKE, v, v.token)
        self.halt_poll_or_block(v, p, t)

    def poll_end(self, v: VCpu, t: int) -> None:
        """The poll caught no wake-up: the thread sleeps (kvm_vcpu_block), its pCPU is free."""
        self.poll_stops(v, v.pcpu, t)

    def poll_stops(self, v: VCpu, p: int, t: int) -> None:
        v.polling = False
        self.block(v, p, t)

    def kick(self, v: VCpu, w: VCpu, t: int) -> None:
        """The unlocker kicks a halted waiter (KVM_HC_KICK_CPU): hypercall exit, IPI, wake-up."""
        self.truth.n_kicks += 1
        self.emit(t, K.EXIT_KICK | v.key, v.pcpu)
        v.in_guest = False
        self.emit(t, K.PV_KICK | v.key, w.idx)
        self.reenter(v, t)
        w.kick_pending = True
        if not w.polling:
            w.token += 1
        self.push(t + self.kick_latency, EV_WAKE, w, w.token)

    def wake_vcpu(self, v: VCpu, t: int) -> None:
        """The kick's IPI arrives: a polling vCPU resumes on its pCPU; a sleeping one is woken."""
        v.kick_pending = False
        hv = self.s.hypervisor
        v.poll_ns = next_poll_ns(hv, v.poll_ns, t - v.halt_t)
        lock = v.wait_lock
        if lock is not None and lock.book.gap is not None and lock.book.gap.cand is v:
            lock.book.cand_wakes(t)
        if v.polling:
            v.polling = False
            p = v.pcpu
            self.emit(t, K.WAKE | v.key, p)
            self.set_state(v, PREEMPTED, t)
            self.emit(t, K.RUN | v.key, p)
            self.set_state(v, RUNNING, t)
            self.enter_guest(v, p, t)
            return

        def on_wake(p: int) -> None:
            self.emit(t, K.WAKE | v.key, p)
            self.set_state(v, PREEMPTED, t)

        self.wake_task(v, t, on_wake)

    def finish(self, v: VCpu, t: int) -> None:
        """All of v's work is done: it halts for good (guest idle; no poll, nothing will wake it)."""
        if v.ipi_in:  # an interrupt pending at HLT is taken first
            self.handle_ipis(v, t)
        p = v.pcpu
        v.phase = DONE
        v.token += 1
        self.emit(t, K.EXIT_HLT | v.key, p)
        v.in_guest = False
        self.emit(t, K.HALT | v.key, p)
        self.set_state(v, HALTED, t)
        vm = v.vmrec
        vm.n_done += 1
        if vm.n_done == len(vm.vcpus):
            vm.done_t = t
        self.n_done += 1
        if self.n_done == len(self.vcpus):
            self.finished = True
            self.t_end = t
            self.off_pcpu(v, p, t)
            return
        self.block(v, p, t)
