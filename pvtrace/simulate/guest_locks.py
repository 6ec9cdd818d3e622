"""The engine's guest side: compute, spinlock acquire / spin / release by the lock's traits (locks.py).

A vCPU runs its uncontended compute / acquire / release stretches in a tight
loop up to the next heap event (`attempt`), which is where almost all events of
a run come from; contended acquisitions spin (progressing only while the vCPU
runs in guest mode) until the lock is theirs, a pv spin budget runs out (halt),
the PLE window runs out (PAUSE exit), or a cure reacts.
"""

from __future__ import annotations

from heapq import heappop, heapreplace

from pvtrace.simulate.events import EV_ATTEMPT, EV_GUEST, EV_RELEASE, EV_SPIN, NEVER, K
from pvtrace.simulate.locks import LockState
from pvtrace.simulate.tasks import COMPUTE, DONE, HALTED, HOLD, IPI, PREEMPTED, RUNNING, WAIT, VCpu
from pvtrace.simulate.workload import BLOCK


class GuestLocks:
    """Mixin of Engine: what the guest kernels do."""

    def leave_guest(self, v: VCpu, t: int) -> None:
        """v stops executing guest code (exit, preemption, halt): freeze its progress."""
        v.token += 1
        ph = v.phase
        if ph in (COMPUTE, HOLD):
            v.left = v.due - t
        elif ph in (WAIT, IPI):
            self.end_segment(v, t)
        v.in_guest = False

    def resume(self, v: VCpu, t: int) -> None:
        """v executes guest code again: continue what it was doing."""
        ph = v.phase
        if ph == COMPUTE:
            if v.ipi_due:
                v.ipi_due = False
                self.tlb_shootdown(v, t)
                return
            if v.sleep_due:
                self.idle_sleep(v, t)
                return
            v.due = t + v.left
            self.push_v(v, v.due, EV_ATTEMPT)
        elif ph == HOLD:
            v.due = t + v.left
            self.push_v(v, v.due, EV_RELEASE)
        elif ph == WAIT:
            self.spin(v, t)
        elif ph == IPI:
            self.ipi_spin(v, t)
        else:
            self.finish(v, t)

    def entry(self, v: VCpu, t: int) -> None:
        """kvm_entry: the guest runs again once the VM entry is done."""
        self.emit(t, K.ENTRY | v.key, v.pcpu)
        v.entering = True
        self.push_v(v, t + self.entry_hw, EV_GUEST)

    def guest_entered(self, v: VCpu, t: int) -> None:
        """The exit's (or the sched-in's) cost is paid: guest code runs again."""
        v.entering = False
        if v.halted_phase:  # pv_wait returns: a fresh spin budget
            v.halted_phase = False
            v.halt_left = self.threshold
        v.in_guest = True
        v.ple_left = self.wns(v.window)
        self.resume(v, t)

    def advance_op(self, v: VCpu) -> None:
        """One operation done: move to the next (refilling the stream's block)."""
        v.n_done += 1
        if v.sleeps is not None:
            v.sleep_due = v.sleeps[v.i]
        if v.ipis is not None:
            v.ipi_due = v.ipis[v.i]
        v.i += 1
        if v.i == BLOCK:
            v.comp, v.lk, v.hold = v.stream.block()
            v.sleeps = v.stream.sleeps()
            v.ipis = v.stream.ipis()
            v.i = 0

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
        akey = K.ACQUIRE | v.key
        rkey = K.RELEASE | v.key
        locks = v.locks
        comp, lks, holds = v.comp, v.lk, v.hold
        sleeps, ipis = v.sleeps, v.ipis
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
            sleep = sleeps[i] if sleeps is not None else 0
            shoot = ipis is not None and ipis[i]
            i += 1
            if i == BLOCK:
                v.comp, v.lk, v.hold = comp, lks, holds = v.stream.block()
                v.sleeps = sleeps = v.stream.sleeps()
                v.ipis = ipis = v.stream.ipis()
                i = 0
            if sleep or shoot:
                v.i = i
                v.phase = COMPUTE
                v.left = comp[i]
                v.sleep_due = sleep
                heappop(heap)
                if shoot:
                    self.tlb_shootdown(v, r)
                else:
                    self.idle_sleep(v, r)
                return
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
        self.emit(t, K.CONTEND | v.key, lock.index)
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

    def early_halt_due(self, v: VCpu, lock: LockState) -> int:
        """pv_wait_early: -1 if v's predecessor gives no reason to halt, else ns to v's next check."""
        pos = lock.waiters.index(v)
        if pos == 0:
            return -1
        pred = lock.waiters[pos - 1]
        if not (pred.halted_phase or (self.early_preempted and pred.state == PREEMPTED)):
            return -1
        return -(self.threshold - v.halt_left) % self.check_ns

    def spin(self, v: VCpu, t: int) -> None:
        """v (running, in guest, waiting) looks at the lock: take it, halt, yield, or spin on."""
        lock = v.wait_lock
        algo = self.algo
        if lock.holder is None and (not algo.fifo or lock.waiters[0] is v):
            self.acquire(v, lock, t, contended=True)
            return
        early = -1
        if self.early_halt:
            early = self.early_halt_due(v, lock)
            if early == 0:
                self.pv_halt(v, t)
                return
        if self.shared_state:
            b = self.blocker(lock, v)
            if b is not None and b.state != RUNNING and self.react(v, b, t):
                return
        v.seg_start = t
        dt = early
        if self.ple and (dt < 0 or v.ple_left < dt):
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
        if v.phase == IPI:
            self.ipi_spin_timer(v, t)
            return
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

    def respin(self, w: VCpu, t: int) -> None:
        """A running spinner looks again now (something it watches changed)."""
        if w.state == RUNNING and w.in_guest and w.phase == WAIT:
            self.end_segment(w, t)
            self.spin(w, t)

    def notify(self, lock: LockState, t: int) -> None:
        """Shared run state: the lock's holder or next owner stopped running; its spinners look."""
        for w in list(lock.waiters):
            if w.wait_lock is lock and w.state == RUNNING and w.in_guest:
                b = self.blocker(lock, w)
                if b is not None and b.state != RUNNING:
                    self.respin(w, t)

    def early_halt_check(self, v: VCpu, lock: LockState, t: int) -> None:
        """v halted or was preempted: under early halt, its queue successor re-checks."""
        if not self.early_halt or v.wait_lock is not lock:
            return
        pos = lock.waiters.index(v)
        if pos + 1 < len(lock.waiters):
            self.respin(lock.waiters[pos + 1], t)

    def stopped_running(self, v: VCpu, t: int) -> None:
        """v left its pCPU while runnable: spinners that watch it react."""
        lock = v.wait_lock
        if self.early_preempted and lock is not None:
            self.early_halt_check(v, lock, t)
        if not self.shared_state:
            return
        if v.hold_lock is not None:
            self.notify(v.hold_lock, t)
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
        self.emit(t, K.ACQUIRE | v.key, lock.index)
        lock.holder = v
        v.hold_lock = lock
        v.phase = HOLD
        v.due = t + v.hold[v.i]
        self.push_v(v, v.due, EV_RELEASE)
        if self.kick_at_head and contended and lock.waiters:
            head = lock.waiters[0]
            if head.state == HALTED and not head.kick_pending:
                self.kick(v, head, t)  # pv_kick_node: the new queue head is kicked at once

    def release(self, v: VCpu, t: int) -> None:
        """v's critical section ends: release, hand over or kick, and go on."""
        lock = v.hold_lock
        algo = self.algo
        b = lock.book
        b.update(t)
        self.emit(t, K.RELEASE | v.key, lock.index)
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
            elif head.state == HALTED and algo.pv and not head.kick_pending:
                self.kick(v, head, t)
                kicked = True
            if head.state != RUNNING and self.shared_state:
                self.notify(lock, t)
        elif lock.waiters:
            spinners = [w for w in lock.waiters if w.state == RUNNING and w.in_guest]
            first = lock.waiters[0]
            if spinners:
                if algo.head_first and first in spinners:
                    w = first
                else:
                    w = spinners[self.rng.randrange(len(spinners))]
                self.acquire(w, lock, t, contended=True)
            elif algo.pv and first.state == HALTED and not first.kick_pending:
                self.kick(v, first, t)
                kicked = True
        if v.extended:
            v.extended = False
            if self.host.has_waiting(v.pcpu):
                self.hint_yield(v, t)
                return
            self.arm_slice(v.pcpu, t)
        if not kicked:
            self.resume(v, t)
