"""The discrete-event engine: host scheduling, guest spinlocks and hypervisor features.

Integer ns, deterministic for a seed. Only host decisions (slice ends, wake-ups,
kicks, noise) and each vCPU's next guest action sit on the event heap; a vCPU
runs its uncontended compute / acquire / release stretches in a tight loop up to
the next heap event, which is where almost all events of a run come from.
Events are emitted in time order (seq = emission order) into columnar buffers,
and every state change is told to the ground-truth ledgers at the moment its
event is emitted, so ledger and events agree on the order of same-ns events.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from heapq import heappop, heappush, heapreplace
from itertools import count

import polars as pl

from pvtrace.simulate import output as o
from pvtrace.simulate.host import HostState
from pvtrace.simulate.hypervisor import grown_window, window_ns, yield_candidate
from pvtrace.simulate.locks import ALGORITHM_TRAITS, LockState
from pvtrace.simulate.output import EventBuffer, vcpu_key
from pvtrace.simulate.scenario import Scenario
from pvtrace.simulate.tasks import COMPUTE, DONE, HALTED, HOLD, PREEMPTED, RUNNING, WAIT, Noise, VCpu, VmRec
from pvtrace.simulate.truth import GroundTruth, LockBook, Truth
from pvtrace.simulate.workload import BLOCK, OpStream

# Heap event types.
(
    EV_STOP,
    EV_ATTEMPT,
    EV_RELEASE,
    EV_ENTRY,
    EV_SPIN,
    EV_WAKE,
    EV_SLICE,
    EV_NOISE_WAKE,
    EV_NOISE_DONE,
    EV_GANG,
) = range(10)

NEVER = 1 << 62  # a time no run reaches

# Event key parts: kind | reason << REASON_SHIFT (the vm/vcpu part is VCpu.key).
RS = o.REASON_SHIFT
K_RUN = o.RUN
K_ENTRY = o.ENTRY
K_PREEMPT_RP = o.PREEMPT | o.R_RUNNABLE_PLUS << RS
K_PREEMPT_R = o.PREEMPT | o.R_RUNNABLE << RS
K_HALT = o.HALT | o.R_HLT << RS
K_WAKE = o.WAKE
K_EXIT_HLT = o.EXIT | o.R_HLT << RS
K_EXIT_PAUSE = o.EXIT | o.R_PAUSE << RS
K_EXIT_KICK = o.EXIT | o.R_KICK << RS
K_EXIT_YIELD = o.EXIT | o.R_YIELD << RS
K_EXIT_INTR = o.EXIT | o.R_EXTINT << RS
K_CONTEND = o.CONTEND | o.R_SPIN << RS
K_ACQUIRE = o.ACQUIRE
K_RELEASE = o.RELEASE
K_PV_HALT = o.PV_HALT
K_PV_KICK = o.PV_KICK
K_YIELD_TO = o.YIELD_TO
K_PLE = o.PLE_WINDOW


class Engine:
    """One simulation run. Build, then `run()` once."""

    def __init__(
        self,
        scenario: Scenario,
        sink: Callable[[pl.DataFrame], None],
        *,
        seed: int | None = None,
        batch_size: int = 1 << 20,
        progress: Callable[[float], None] | None = None,
    ):
        s = scenario
        self.s = s
        self.seed = s.run.seed if seed is None else seed
        self.rng = random.Random(self.seed * 1_000_003 + 0x9E3779B1)
        self.algo = ALGORITHM_TRAITS[s.lock.algorithm]
        self.progress = progress
        self.vm_names = [f"vm{i}" for i in range(s.vm.count)]
        self.out = EventBuffer(self.vm_names, sink, batch_size)
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
        self.kick_latency = s.hypervisor.kick_latency_ns
        self.threshold = s.lock.spin_threshold_ns
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

    def advance_op(self, v: VCpu) -> None:
        """One operation done: move to the next (refilling the stream's block)."""
        v.n_done += 1
        v.i += 1
        if v.i == BLOCK:
            v.comp, v.lk, v.hold = v.stream.block()
            v.i = 0

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
            for v in order[host.n_pcpus :]:
                host.rq.append(v)
        for v in self.vcpus:
            if v.pcpu >= 0:
                v.state = RUNNING
                self.emit(0, K_RUN | v.key, v.pcpu)
                self.emit(0, K_ENTRY | v.key, v.pcpu)
                v.in_guest = True
            else:
                v.state = PREEMPTED
                self.emit(0, K_PREEMPT_RP | v.key, -1)
        for v in self.vcpus:
            if v.pcpu >= 0:
                v.left = v.comp[0]
                v.due = v.left
                self.push_v(v, v.due, EV_ATTEMPT)
            else:
                v.left = v.comp[0]
        if not host.gang:
            for p in range(host.n_pcpus):
                if host.cur[p] is not None:
                    self.arm_slice(p, 0)
        for n in self.noise:
            self.push(self.noise_time(self.s.host.noise_sleep_ns), EV_NOISE_WAKE, n, n.token)

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
                    if tok == self.host.slice_tok[obj]:
                        self.slice_end(obj, t)
                elif typ == EV_ENTRY:
                    if tok == obj.token:
                        self.entry(obj, t)
                elif typ == EV_WAKE:
                    if tok == obj.token:
                        self.wake_vcpu(obj, t)
                elif typ == EV_NOISE_WAKE:
                    if tok == obj.token:
                        obj.left = self.noise_time(self.s.host.noise_run_ns)
                        self.wake_task(obj, t)
                elif typ == EV_NOISE_DONE:
                    if tok == obj.token:
                        self.noise_done(obj, t)
                elif typ == EV_GANG:
                    if tok == self.host.gang_tok:
                        self.gang_switch(t)
                elif typ == EV_STOP:
                    self.t_end = t
                    break
            if self.finished:
                break
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

    # -- host scheduling ------------------------------------------------------------------
    def arm_slice(self, p: int, t: int) -> None:
        host = self.host
        host.run_start[p] = t
        if host.gang:
            return
        tok = host.slice_tok[p] + 1
        host.slice_tok[p] = tok
        self.push(t + host.slice_length(), EV_SLICE, p, tok)

    def run_on(self, task, p: int, t: int) -> None:
        """Put a runnable task on pCPU p."""
        host = self.host
        host.cur[p] = task
        task.pcpu = p
        task.last_pcpu = p
        self.arm_slice(p, t)
        if not task.is_vcpu:
            task.due = t + task.left
            task.token += 1
            self.push(task.due, EV_NOISE_DONE, task, task.token)
            return
        v = task
        self.emit(t, K_RUN | v.key, p)
        self.set_state(v, RUNNING, t)
        v.spin_loop = False
        if v.window != self.base_window:
            v.dy_eligible = False
            v.window = self.base_window
            self.emit(t, K_PLE | v.key, v.window)
        if v.halted_phase:
            v.halted_phase = False
            v.halt_left = self.threshold
        self.emit(t, K_ENTRY | v.key, p)
        v.in_guest = True
        v.ple_left = self.wns(v.window)
        self.resume(v, t)

    def vacate(self, p: int, t: int) -> None:
        """pCPU p's task left it: run the next waiting task, or idle."""
        host = self.host
        host.cur[p] = None
        nxt = host.pop_next(p)
        if nxt is not None:
            self.run_on(nxt, p, t)
            return
        host.slice_tok[p] += 1
        if host.gang and all(c is None for c in host.cur):
            self.gang_switch(t)

    def slice_end(self, p: int, t: int) -> None:
        host = self.host
        cur = host.cur[p]
        if cur is None:
            return
        if not host.has_waiting(p):
            self.arm_slice(p, t)
            return
        if cur.is_vcpu:
            if self.hint and cur.hold_lock is not None and not cur.extended:
                cur.extended = True  # preemption hint: defer, bounded
                tok = host.slice_tok[p] + 1
                host.slice_tok[p] = tok
                self.push(t + self.s.cures.hint_max_extension_ns, EV_SLICE, p, tok)
                return
            self.preempt(cur, p, t, K_PREEMPT_RP)
        else:
            self.noise_off(cur, t)
        host.cur[p] = None
        host.enqueue(cur, self.gang_of(cur))
        self.run_on(host.pop_next(p), p, t)
        if cur.is_vcpu:
            self.stopped_running(cur, t)

    def preempt(self, v: VCpu, p: int, t: int, key: int) -> None:
        """Take a running vCPU off pCPU p (the caller queues it and fills p)."""
        if v.in_guest:
            self.leave_guest(v, t)
            self.emit(t, K_EXIT_INTR | v.key, p)
        else:
            v.token += 1
        self.emit(t, key | v.key, p)
        self.set_state(v, PREEMPTED, t)
        v.pcpu = -1
        v.extended = False

    def noise_off(self, n: Noise, t: int) -> None:
        n.left = n.due - t
        n.token += 1
        n.pcpu = -1

    def noise_time(self, mean: int) -> int:
        return max(1, int(self.rng.expovariate(1.0 / mean)))

    def noise_done(self, n: Noise, t: int) -> None:
        p = n.pcpu
        n.pcpu = -1
        n.token += 1
        self.push(t + self.noise_time(self.s.host.noise_sleep_ns), EV_NOISE_WAKE, n, n.token)
        self.vacate(p, t)

    def wake_task(self, task, t: int, on_wake: Callable[[int], None] | None = None) -> None:
        """A task becomes runnable: an idle pCPU, a wake-up preemption, or the queue."""
        host = self.host
        gang = self.gang_of(task)
        p = host.idle_pcpu_for(task, gang)
        if p is None:
            p = host.victim_for(t, self.hint)
            if p is not None:
                if on_wake is not None:
                    on_wake(p)
                victim = host.cur[p]
                if victim.is_vcpu:
                    self.preempt(victim, p, t, K_PREEMPT_RP)
                else:
                    self.noise_off(victim, t)
                host.cur[p] = None
                host.enqueue(victim, self.gang_of(victim))
                self.run_on(task, p, t)
                if victim.is_vcpu:
                    self.stopped_running(victim, t)
                return
            if on_wake is not None:
                on_wake(-1)
            host.enqueue_woken(task, gang)
            return
        if on_wake is not None:
            on_wake(p)
        self.run_on(task, p, t)

    def wake_vcpu(self, v: VCpu, t: int) -> None:
        """A kicked vCPU wakes (vcpu_wake), then runs when the host gives it a pCPU."""
        lock = v.wait_lock
        if lock is not None and lock.book.gap is not None and lock.book.gap.cand is v:
            lock.book.cand_wakes(t)

        def on_wake(p: int) -> None:
            self.emit(t, K_WAKE | v.key, p)
            self.set_state(v, PREEMPTED, t)

        self.wake_task(v, t, on_wake)

    # -- gang scheduling ------------------------------------------------------------------
    def start_gang(self, order: list[VCpu]) -> None:
        """Initial placement under gang scheduling: the first vCPU's VM owns the pCPUs."""
        host = self.host
        for v in order:
            host.gang_queues[v.vm].append(v)
        host.cur_gang = order[0].vm
        for p in range(host.n_pcpus):
            nxt = host.pop_next(p)
            if nxt is None:
                break
            host.cur[p] = nxt
            nxt.pcpu = nxt.last_pcpu = p
        self.arm_gang(0)

    def fill_gang(self, t: int) -> None:
        """Run the current gang's waiting tasks on every idle pCPU."""
        host = self.host
        for p in range(host.n_pcpus):
            if host.cur[p] is None:
                nxt = host.pop_next(p)
                if nxt is None:
                    break
                self.run_on(nxt, p, t)

    def arm_gang(self, t: int) -> None:
        host = self.host
        host.gang_tok += 1
        self.push(t + host.slice_length(), EV_GANG, None, host.gang_tok)

    def gang_switch(self, t: int) -> None:
        """The gang slice ends: the next gang with work takes every pCPU (round robin)."""
        host = self.host
        running = {self.gang_of(c) for c in host.cur if c is not None}
        nxt = host.next_gang(running)
        self.arm_gang(t)
        if nxt == host.cur_gang and not host.gang_queues[nxt]:
            return  # the gang keeps the pCPUs; if some of it waits, it rotates like any slice end
        stopped = []
        for p in range(host.n_pcpus):
            cur = host.cur[p]
            if cur is None:
                continue
            if cur.is_vcpu:
                self.preempt(cur, p, t, K_PREEMPT_RP)
                stopped.append(cur)
            else:
                self.noise_off(cur, t)
            host.cur[p] = None
            host.enqueue(cur, self.gang_of(cur))
        host.cur_gang = nxt
        self.fill_gang(t)
        for v in stopped:
            self.stopped_running(v, t)

    # -- guest: compute, locks ------------------------------------------------------------
    def leave_guest(self, v: VCpu, t: int) -> None:
        """v stops executing guest code (exit, preemption, halt): freeze its progress."""
        v.token += 1
        ph = v.phase
        if ph in (COMPUTE, HOLD):
            v.left = v.due - t
        elif ph == WAIT:
            self.end_segment(v, t)
        v.in_guest = False

    def resume(self, v: VCpu, t: int) -> None:
        """v executes guest code again: continue what it was doing."""
        ph = v.phase
        if ph == COMPUTE:
            v.due = t + v.left
            self.push_v(v, v.due, EV_ATTEMPT)
        elif ph == HOLD:
            v.due = t + v.left
            self.push_v(v, v.due, EV_RELEASE)
        elif ph == WAIT:
            self.spin(v, t)
        else:
            self.finish(v, t)

    def entry(self, v: VCpu, t: int) -> None:
        """The exit's cost is paid: back into the guest."""
        self.emit(t, K_ENTRY | v.key, v.pcpu)
        v.in_guest = True
        v.ple_left = self.wns(v.window)
        self.resume(v, t)

    def attempt(self, v: VCpu, t: int) -> None:
        """v's compute is done: take its next lock. Runs uncontended stretches in a loop.

        Called with v's ATTEMPT entry still on top of the heap. Nothing else happens
        before the next heap event (the horizon), so every compute / acquire /
        release of v that ends before it is emitted here at once; v's next entry
        then replaces the old one on top.
        """
        heap = self.heap
        n = len(heap)
        if n > 2:
            horizon = heap[1][0] if heap[1][0] < heap[2][0] else heap[2][0]
        else:
            horizon = heap[1][0] if n == 2 else NEVER
        ts_append, key_append, x_append = self._ts_append, self._key_append, self._x_append
        akey = K_ACQUIRE | v.key
        rkey = K_RELEASE | v.key
        locks = v.locks
        comp, lks, holds = v.comp, v.lk, v.hold
        i = v.i
        while True:
            k = lks[i]
            lock = locks[k]
            if lock.holder is not None or lock.waiters:
                v.i = i
                heappop(heap)
                self.slow_attempt(v, lock, t)
                return
            # Free with nobody queued: the fast path.
            ts_append(t)
            key_append(akey)
            x_append(k)
            if lock.book.run_len:
                lock.book.close_run()
            r = t + holds[i]
            if r >= horizon:
                v.i = i
                lock.holder = v
                v.hold_lock = lock
                v.phase = HOLD
                v.due = r
                v.token += 1
                heapreplace(heap, (r, next(self.cnt), EV_RELEASE, v, v.token))
                return
            ts_append(r)
            key_append(rkey)
            x_append(k)
            lock.n_release += 1
            lock.last_release_t = r
            v.n_done += 1
            if v.n_done == v.ops_total:
                v.i = i
                v.phase = DONE
                heappop(heap)
                self.finish(v, r)
                return
            i += 1
            if i == BLOCK:
                v.comp, v.lk, v.hold = comp, lks, holds = v.stream.block()
                i = 0
            t = r + comp[i]
            if t >= horizon:
                v.i = i
                v.phase = COMPUTE
                v.due = t
                v.token += 1
                heapreplace(heap, (t, next(self.cnt), EV_ATTEMPT, v, v.token))
                return

    def slow_attempt(self, v: VCpu, lock: LockState, t: int) -> None:
        """The lock is held or has a queue."""
        if lock.holder is None and not self.algo.fifo:
            self.acquire(v, lock, t, contended=False)  # unfair: a free lock is anyone's
            return
        self.contend(v, lock, t)

    def contend(self, v: VCpu, lock: LockState, t: int) -> None:
        b = lock.book
        b.update(t)
        self.emit(t, K_CONTEND | v.key, lock.index)
        v.phase = WAIT
        v.wait_lock = lock
        v.contend_rel = lock.n_release
        lock.waiters.append(v)
        b.n_run += 1
        v.halt_left = self.threshold
        v.yield_left = self.yield_threshold
        v.ple_left = self.wns(v.window)
        if (
            lock.holder is None
            and self.algo.steal
            and lock.waiters[0] is not v
            and lock.waiters[0].halted_phase
        ):
            self.acquire(v, lock, t, contended=True)
            return
        self.spin(v, t)

    def blocker(self, lock: LockState, v: VCpu) -> VCpu | None:
        """Whom v waits for: the holder, or (free fifo lock) the next owner when that is not v."""
        if lock.holder is not None:
            return lock.holder
        if self.algo.fifo and lock.waiters and lock.waiters[0] is not v:
            return lock.waiters[0]
        return None

    def spin(self, v: VCpu, t: int) -> None:
        """v (running, in guest, waiting) looks at the lock: take it, halt, yield, or spin on."""
        lock = v.wait_lock
        algo = self.algo
        if lock.holder is None and (not algo.fifo or lock.waiters[0] is v):
            self.acquire(v, lock, t, contended=True)
            return
        if algo.early_halt:
            pos = lock.waiters.index(v)
            if pos > 0 and lock.waiters[pos - 1].halted_phase:
                self.pv_halt(v, t)
                return
        if self.shared_state:
            b = self.blocker(lock, v)
            if b is not None and b.state != RUNNING and self.react(v, b, t):
                return
        v.seg_start = t
        dt = -1
        if self.ple:
            dt = v.ple_left
        if algo.pv and (dt < 0 or v.halt_left < dt):
            dt = v.halt_left
        if self.yield_holder and (dt < 0 or v.yield_left < dt):
            dt = v.yield_left
        if dt >= 0:
            self.push_v(v, t + max(dt, 0), EV_SPIN)
        else:
            v.token += 1

    def end_segment(self, v: VCpu, t: int) -> None:
        el = t - v.seg_start
        v.halt_left -= el
        v.yield_left -= el
        v.ple_left -= el
        v.seg_start = t

    def spin_timer(self, v: VCpu, t: int) -> None:
        """A spin budget ran out: pv halt, PLE exit, or yield to the holder."""
        self.end_segment(v, t)
        if self.algo.pv and v.halt_left <= 0:
            self.pv_halt(v, t)
        elif self.ple and v.ple_left <= 0:
            self.ple_exit(v, t)
        elif self.yield_holder and v.yield_left <= 0:
            v.yield_left = self.yield_threshold
            b = self.blocker(v.wait_lock, v)
            if b is not None and b.state == PREEMPTED:
                self.hypercall_yield(v, b, t)
            else:
                self.spin(v, t)
        else:
            self.spin(v, t)

    def react(self, v: VCpu, b: VCpu, t: int) -> bool:
        """Shared run state: v sees that b is not running and stops spinning, if it can."""
        if self.algo.pv:
            self.pv_halt(v, t)
            return True
        if b.state == PREEMPTED:
            self.hypercall_yield(v, b, t)
            return True
        return False

    def notify(self, lock: LockState, t: int) -> None:
        """Shared run state: the lock's holder or next owner stopped running; its spinners look."""
        for w in list(lock.waiters):
            if w.wait_lock is lock and w.state == RUNNING and w.in_guest:
                b = self.blocker(lock, w)
                if b is not None and b.state != RUNNING:
                    self.end_segment(w, t)
                    self.spin(w, t)

    def stopped_running(self, v: VCpu, t: int) -> None:
        """v left its pCPU: under shared run state, the spinners it blocks react."""
        if not self.shared_state:
            return
        if v.hold_lock is not None:
            self.notify(v.hold_lock, t)
        lock = v.wait_lock
        if lock is not None and lock.holder is None and self.algo.fifo and lock.waiters[0] is v:
            self.notify(lock, t)

    def acquire(self, v: VCpu, lock: LockState, t: int, contended: bool) -> None:
        b = lock.book
        b.update(t)
        handoff = contended and v.contend_rel < lock.n_release
        b.acquired(t, v, contended, handoff)
        if contended:
            lock.waiters.remove(v)
            b.n_run -= 1
            v.wait_lock = None
        self.emit(t, K_ACQUIRE | v.key, lock.index)
        lock.holder = v
        v.hold_lock = lock
        v.phase = HOLD
        v.due = t + v.hold[v.i]
        self.push_v(v, v.due, EV_RELEASE)

    def release(self, v: VCpu, t: int) -> None:
        """v's critical section ends: release, hand over or kick, and go on."""
        lock = v.hold_lock
        algo = self.algo
        b = lock.book
        b.update(t)
        self.emit(t, K_RELEASE | v.key, lock.index)
        lock.n_release += 1
        lock.last_release_t = t
        lock.holder = None
        v.hold_lock = None
        head = lock.waiters[0] if (algo.fifo and lock.waiters) else None
        if head is not None:
            b.released_to(t, head)
        self.advance_op(v)
        v.phase = DONE if v.n_done == v.ops_total else COMPUTE
        v.left = v.comp[v.i]
        kicked = False
        if head is not None:
            if head.state == RUNNING:
                if head.in_guest:
                    self.acquire(head, lock, t, contended=True)
            elif head.state == HALTED and algo.pv:
                self.kick(v, head, t)
                kicked = True
            if head.state != RUNNING and self.shared_state:
                self.notify(lock, t)
        elif lock.waiters:
            spinners = [w for w in lock.waiters if w.state == RUNNING and w.in_guest]
            if spinners:
                self.acquire(spinners[self.rng.randrange(len(spinners))], lock, t, contended=True)
        if v.extended:
            v.extended = False
            if self.host.has_waiting(v.pcpu):
                self.hint_yield(v, t)
                return
            self.arm_slice(v.pcpu, t)
        if not kicked:
            self.resume(v, t)

    def kick(self, v: VCpu, w: VCpu, t: int) -> None:
        """The unlocker kicks the halted next owner (KVM_HC_KICK_CPU)."""
        p = v.pcpu
        self.truth.n_kicks += 1
        self.emit(t, K_EXIT_KICK | v.key, p)
        v.in_guest = False
        self.emit(t, K_PV_KICK | v.key, w.idx)
        self.push_v(v, t + self.exit_cost, EV_ENTRY)
        w.token += 1
        self.push(t + self.kick_latency, EV_WAKE, w, w.token)

    def hint_yield(self, v: VCpu, t: int) -> None:
        """Preemption hint: the deferred preemption happens right after the release."""
        p = v.pcpu
        v.token += 1
        if v.in_guest:
            self.emit(t, K_EXIT_INTR | v.key, p)
            v.in_guest = False
        self.emit(t, K_PREEMPT_RP | v.key, p)
        self.set_state(v, PREEMPTED, t)
        v.pcpu = -1
        self.host.enqueue(v, v.vm)
        self.vacate(p, t)

    def pv_halt(self, v: VCpu, t: int) -> None:
        """A pv waiter gives up spinning and halts until kicked (its segment is closed)."""
        lock = v.wait_lock
        p = v.pcpu
        v.token += 1
        self.emit(t, K_PV_HALT | v.key, lock.index)
        self.emit(t, K_EXIT_HLT | v.key, p)
        v.in_guest = False
        self.emit(t, K_HALT | v.key, p)
        self.set_state(v, HALTED, t)
        v.halted_phase = True
        v.pcpu = -1
        self.vacate(p, t)
        if self.algo.early_halt:
            pos = lock.waiters.index(v)
            if pos + 1 < len(lock.waiters):
                succ = lock.waiters[pos + 1]
                if succ.state == RUNNING and succ.in_guest:
                    self.end_segment(succ, t)
                    self.spin(succ, t)

    def ple_exit(self, v: VCpu, t: int) -> None:
        """PAUSE-loop exit: grow the window, then maybe yield to a sibling."""
        p = v.pcpu
        self.truth.n_pause_exits += 1
        v.token += 1
        self.emit(t, K_EXIT_PAUSE | v.key, p)
        v.in_guest = False
        new = grown_window(self.s.hypervisor, v.window)
        if new != v.window:
            v.window = new
            self.emit(t, K_PLE | v.key, new)
        vm = v.vmrec
        target = yield_candidate(self.s.hypervisor, v, vm.vcpus, vm.last_boosted, self.rng)
        if target is not None:
            v.spin_loop = True
            self.yield_switch(v, target, t)
        else:
            v.dy_eligible = False
            self.push_v(v, t + self.exit_cost, EV_ENTRY)

    def hypercall_yield(self, v: VCpu, target: VCpu, t: int) -> None:
        """Yield-to-holder / shared run state: give the pCPU to a preempted vCPU by hypercall."""
        v.token += 1
        self.emit(t, K_EXIT_YIELD | v.key, v.pcpu)
        v.in_guest = False
        self.yield_switch(v, target, t)

    def yield_switch(self, v: VCpu, target: VCpu, t: int) -> None:
        """Directed yield: v (in an exit) leaves its pCPU to the preempted target."""
        p = v.pcpu
        host = self.host
        self.truth.n_yields += 1
        self.emit(t, K_YIELD_TO | v.key, target.idx)
        host.remove(target, target.vm)
        self.emit(t, K_PREEMPT_R | v.key, p)
        self.set_state(v, PREEMPTED, t)
        v.pcpu = -1
        v.extended = False
        host.cur[p] = None
        host.enqueue(v, v.vm)
        v.vmrec.last_boosted = target.idx
        self.run_on(target, p, t)
        self.stopped_running(v, t)

    def finish(self, v: VCpu, t: int) -> None:
        """All of v's work is done: it halts for good (guest idle)."""
        p = v.pcpu
        v.phase = DONE
        v.token += 1
        self.emit(t, K_EXIT_HLT | v.key, p)
        v.in_guest = False
        self.emit(t, K_HALT | v.key, p)
        self.set_state(v, HALTED, t)
        v.pcpu = -1
        vm = v.vmrec
        vm.n_done += 1
        if vm.n_done == len(vm.vcpus):
            vm.done_t = t
        self.n_done += 1
        if self.n_done == len(self.vcpus):
            self.finished = True
            self.t_end = t
            self.host.cur[p] = None
            return
        self.vacate(p, t)
