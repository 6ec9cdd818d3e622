"""The discrete-event engine: state, the event heap and the main loop.

Integer ns, deterministic for a seed. Only host decisions (slice ends, wake-ups,
kicks, polls, noise) and each vCPU's next guest action sit on the event heap.
The behaviour lives in mixins, one per concept: host scheduling
(scheduling.py, deciding by host.py's fair class), hypervisor exits
(exits.py, deciding by hypervisor.py) and the guests' spinlocks
(guest_locks.py, by locks.py's traits). Events are emitted in time order
(seq = emission order) into columnar buffers, and every state change is told
to the ground-truth ledgers at the moment its event is emitted, so ledger and
events agree on the order of same-ns events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import count

import polars as pl

from pvtrace.simulate.events import (
    EV_ATTEMPT,
    EV_BALANCE,
    EV_ENTRY,
    EV_GANG,
    EV_GUEST,
    EV_IPI,
    EV_NOISE_DONE,
    EV_NOISE_WAKE,
    EV_POLL_END,
    EV_RELEASE,
    EV_SCAN,
    EV_SLICE,
    EV_SPIN,
    EV_STOP,
    EV_WAKE,
    K,
)
from pvtrace.simulate.exits import Exits
from pvtrace.simulate.guest_locks import GuestLocks
from pvtrace.simulate.host import HostState
from pvtrace.simulate.hypervisor import window_ns
from pvtrace.simulate.ipis import Ipis
from pvtrace.simulate.locks import PREV_CHECK_LOOPS, SPIN_THRESHOLD_LOOPS, LockState, algorithm_of
from pvtrace.simulate.output import EventBuffer, vcpu_key
from pvtrace.simulate.scenario import Scenario
from pvtrace.simulate.scheduling import Scheduling
from pvtrace.simulate.tasks import PREEMPTED, RUNNING, Noise, VCpu, VmRec
from pvtrace.simulate.truth import GroundTruth, LockBook, Truth
from pvtrace.simulate.workload import OpStream


class Engine(Scheduling, Exits, GuestLocks, Ipis):
    """One simulation run. Build, then `run()` once."""

    def __init__(
        self,
        scenario: Scenario,
        sink: Callable[[pl.DataFrame], None],
        *,
        seed: int | None = None,
        batch_size: int = 1 << 20,
        progress: Callable[[float], None] | None = None,
        audit: Callable[[Engine, int], None] | None = None,
    ):
        s = scenario
        self.audit = audit  # called after every heap event (tests check invariants with it)
        self.s = s
        self.seed = s.run.seed if seed is None else seed
        self.rng = random.Random(self.seed * 1_000_003 + 0x9E3779B1)
        self.algo = algo = algorithm_of(s.lock)
        self.progress = progress
        self.vm_names = [f"vm{i}" for i in range(s.vm.count)]
        self.out = EventBuffer(self.vm_names, sink, batch_size, n_vcpus=s.vm.vcpus)
        # bound once: the buffer's arrays are cleared in place, never replaced
        self._ts_append, self._key_append, self._x_append = (
            self.out.ts.append,
            self.out.key.append,
            self.out.x.append,
        )
        self.truth = Truth(self.vm_names)
        self.heap: list = []
        self.cnt = count()
        n_gangs = s.vm.count + (1 if s.host.noise_tasks else 0)
        self.host = HostState(s.host, self.rng, n_gangs)
        self.noise_gang = s.vm.count
        self.duration = s.run.duration_ns
        self.ple = s.hypervisor.ple
        self.base_window = s.hypervisor.ple_window
        self.exit_cost = s.hypervisor.exit_cost_ns
        self.entry_hw = min(s.hypervisor.entry_ns, self.exit_cost)  # the entry's part of an exit's cost
        self.kick_latency = s.hypervisor.kick_latency_ns
        self.ipi_latency = s.hypervisor.ipi_latency_ns
        self.pv_tlb_flush = s.hypervisor.pv_tlb_flush
        self.threshold = s.lock.spin_threshold_ns
        self.early_halt = algo.pv and algo.early_halt != "never"
        self.early_preempted = self.early_halt and algo.early_halt == "pred-preempted"
        self.kick_at_head = algo.pv and algo.kick == "hash"
        # the spin time of PV_PREV_CHECK_MASK + 1 loops, at the budget's loops per ns
        self.check_ns = max(1, self.threshold * PREV_CHECK_LOOPS // SPIN_THRESHOLD_LOOPS)
        self.kernel_fraction = s.vm.kernel_fraction
        self.yield_holder = s.cures.yield_to_holder
        self.yield_threshold = s.cures.yield_threshold_ns
        self.hint = s.cures.preemption_hint
        self.shared_state = s.cures.shared_run_state
        self._windows: dict[int, int] = {}

        self.vms: list[VmRec] = []
        self.vcpus: list[VCpu] = []
        for i in range(s.vm.count):
            vm = VmRec(i, self.vm_names[i])
            for k in range(s.vm.locks):
                lock = LockState(i, k)
                lock.book = LockBook(lock, self.truth)
                vm.locks.append(lock)
            for j in range(s.vm.vcpus):
                v = VCpu(len(self.vcpus), i, j, vcpu_key(i, j))
                v.vmrec = vm
                v.locks = vm.locks
                v.stream = OpStream(s.vm, self.seed, i, j)
                v.comp, v.lk, v.hold = v.stream.block()
                v.sleeps = v.stream.sleeps()
                v.ipis = v.stream.ipis()
                v.ops_total = s.vm.ops if self.duration == 0 else -1
                v.window = self.base_window
                vm.vcpus.append(v)
                self.vcpus.append(v)
            self.vms.append(vm)
        self.noise = [Noise(n) for n in range(s.host.noise_tasks)]
        self.n_done = 0
        self.total_ops = s.vm.ops * len(self.vcpus)
        self.t_end = 0
        self.finished = False

    # -- small helpers --------------------------------------------------------------------
    def emit(self, t: int, key: int, x: int) -> None:
        self._ts_append(t)
        self._key_append(key)
        self._x_append(x)

    def push(self, t: int, typ: int, obj, tok: int) -> None:
        heappush(self.heap, (t, next(self.cnt), typ, obj, tok))

    def push_v(self, v: VCpu, t: int, typ: int) -> None:
        """Schedule a vCPU's next timer; it replaces any earlier one."""
        v.token += 1
        heappush(self.heap, (t, next(self.cnt), typ, v, v.token))

    def wns(self, cycles: int) -> int:
        w = self._windows.get(cycles)
        if w is None:
            w = self._windows[cycles] = window_ns(cycles, self.s.host.cpu_ghz)
        return w

    def gang_of(self, task) -> int:
        return task.vm if task.is_vcpu else self.noise_gang

    def set_state(self, v: VCpu, new: int, t: int) -> None:
        """Change a vCPU's state, telling the ledgers of the locks it waits for or holds."""
        old = v.state
        if old == new:
            return
        v.state_ns[old] += t - v.state_t
        v.state_t = t
        if v.ipi_in:
            for rec in v.ipi_in:
                rec.target_state(old, new, t)
        lock = v.wait_lock
        if lock is not None:
            b = lock.book
            b.update(t)
            b.waiter_state(old, new)
            if new == RUNNING and b.gap is not None and b.gap.cand is v:
                b.cand_runs(t)
        lock = v.hold_lock
        if lock is not None:
            b = lock.book
            b.update(t)
            if new == RUNNING:
                b.holder_runs(t)
            elif old == RUNNING:
                b.holder_stops(t, v, new)
        v.state = new

    # -- start and main loop --------------------------------------------------------------
    def start(self) -> None:
        host = self.host
        if self.duration:
            self.push(self.duration, EV_STOP, None, 0)
        order = list(self.vcpus)
        self.rng.shuffle(order)
        if host.gang:
            self.start_gang(order)
        else:
            for p, v in enumerate(order[: host.n_pcpus]):
                host.cur[p] = v
                v.pcpu = v.last_pcpu = p
            for k, v in enumerate(order[host.n_pcpus :]):
                if host.percpu:  # the waiting vCPUs spread over the pCPUs' queues
                    v.last_pcpu = k % host.n_pcpus
                host.enqueue(v, v.vm)
            for v in order:  # everyone starts with a request; staggered so they do not expire together
                host.new_request(v)
        for v in self.vcpus:
            if v.pcpu >= 0:
                v.state = RUNNING
                self.emit(0, K.RUN | v.key, v.pcpu)
                self.emit(0, K.ENTRY | v.key, v.pcpu)
                v.in_guest = True
            else:
                v.state = PREEMPTED
                self.emit(0, K.PREEMPT_RP | v.key, -1)
        for v in self.vcpus:
            v.left = v.comp[0]
            if v.pcpu >= 0:
                v.due = v.left
                self.push_v(v, v.due, EV_ATTEMPT)
        if not host.gang:
            for p in range(host.n_pcpus):
                if host.cur[p] is not None:
                    self.arm_slice(p, 0)
        for n in self.noise:
            self.push(self.noise_time(self.s.host.noise_sleep_ns), EV_NOISE_WAKE, n, n.token)
        if host.percpu:
            self.push(self.s.host.balance_interval_ns, EV_BALANCE, None, 0)

    def run(self) -> GroundTruth:
        """Run to the end; returns the ground truth (events went to the sink)."""
        try:
            self.loop()
        except BaseException:
            self.out.abort()
            raise
        self.out.close()
        if self.progress is not None:
            self.progress(1.0)
        extra = {"seed": self.seed, "n_events": self.out.n_events}
        return self.truth.assemble(self.t_end, self.vms, extra)

    def loop(self) -> None:
        """The event loop: pop the earliest event, let its owner act, until the end."""
        self.start()
        heap = self.heap
        out = self.out
        batch = out.batch_size
        tick = 0
        attempt, release = self.attempt, self.release
        slice_tok = self.host.slice_tok
        audit = self.audit
        while heap:
            t, _, typ, obj, tok = heap[0]
            if typ == EV_ATTEMPT and tok == obj.token:
                attempt(obj, t)  # takes its own entry off the heap
            else:
                heappop(heap)
                if typ == EV_RELEASE:
                    if tok == obj.token:
                        release(obj, t)
                elif typ == EV_SPIN:
                    if tok == obj.token:
                        self.spin_timer(obj, t)
                elif typ == EV_SLICE:
                    if tok == slice_tok[obj]:
                        self.slice_end(obj, t)
                elif typ == EV_ENTRY:
                    if tok == obj.token:
                        self.entry(obj, t)
                elif typ == EV_GUEST:
                    if tok == obj.token:
                        self.guest_entered(obj, t)
                elif typ == EV_SCAN:
                    if tok == obj.token:
                        self.spin_scan(obj, t)
                elif typ == EV_WAKE:
                    if tok == obj.token:
                        self.wake_vcpu(obj, t)
                elif typ == EV_POLL_END:
                    if tok == obj.token and obj.polling:
                        self.poll_end(obj, t)
                elif typ == EV_NOISE_WAKE:
                    if tok == obj.token:
                        self.noise_wake(obj, t)
                elif typ == EV_NOISE_DONE:
                    if tok == obj.token:
                        self.noise_done(obj, t)
                elif typ == EV_IPI:
                    if tok == obj.ipi_tok:
                        self.ipi_arrives(obj, t)
                elif typ == EV_BALANCE:
                    self.balance_tick(t)
                elif typ == EV_GANG:
                    if tok == self.host.gang_tok:
                        self.gang_switch(t)
                elif typ == EV_STOP:
                    self.t_end = t
                    break
            if self.finished:
                break
            if audit is not None:
                audit(self, t)
            tick += 1
            if tick & 0xFF == 0:
                if len(out.ts) >= batch:
                    out.flush()
                if self.progress is not None and tick & 0x3FFF == 0:
                    self.progress(self.fraction_done(t))

    def fraction_done(self, t: int) -> float:
        if self.duration:
            return min(1.0, t / self.duration)
        return min(1.0, sum(v.n_done for v in self.vcpus) / max(1, self.total_ops))
