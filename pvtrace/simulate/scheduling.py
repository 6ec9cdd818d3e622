"""The engine's host-scheduler transitions: put tasks on pCPUs, take them off, slices, wake-ups, gangs.

Every path that moves a task on or off a pCPU goes through `run_on` and
`off_pcpu`, which charge the fair class (host.py): no hypervisor path hands out
CPU time. A task runs until its request is served (its slice timer), it
blocks, or a woken task preempts it by the scheduler's rule.
"""

from __future__ import annotations

from collections.abc import Callable

from pvtrace.simulate import balance
from pvtrace.simulate.events import EV_BALANCE, EV_ENTRY, EV_GANG, EV_NOISE_DONE, EV_NOISE_WAKE, EV_SLICE, K
from pvtrace.simulate.tasks import COMPUTE, HOLD, IPI, PREEMPTED, RUNNING, WAIT, Noise, VCpu


class Scheduling:
    """Mixin of Engine: host scheduling."""

    def arm_slice(self, p: int, t: int) -> None:
        """(Re)start pCPU p's slice timer: it fires when the current task's request is served."""
        host = self.host
        host.charge(p, t)
        if host.gang:
            return
        tok = host.slice_tok[p] + 1
        host.slice_tok[p] = tok
        self.push(t + host.request_left(host.cur[p]), EV_SLICE, p, tok)

    def run_on(self, task, p: int, t: int) -> None:
        """Put a runnable task on pCPU p (sched-in)."""
        host = self.host
        host.cur[p] = task
        task.pcpu = p
        task.last_pcpu = p
        host.run_start[p] = t
        self.arm_slice(p, t)
        if not task.is_vcpu:
            task.due = t + task.left
            task.token += 1
            self.push(task.due, EV_NOISE_DONE, task, task.token)
            return
        v = task
        self.emit(t, K.RUN | v.key, p)
        self.set_state(v, RUNNING, t)
        if v.ipi_in:  # IPIs sent while it was preempted are delivered now
            self.arm_ipi(v, t)
        if v.spin_loop:  # back from a yield inside kvm_vcpu_on_spin
            v.spin_loop = False
            v.dy_eligible = False
        v.yield_target = None
        if v.window != self.base_window:  # shrink_ple_window at sched-in (ple_window_shrink = 0)
            v.dy_eligible = False
            v.window = self.base_window
            self.emit(t, K.PLE | v.key, v.window)
        self.enter_guest(v, p, t)

    def enter_guest(self, v: VCpu, p: int, t: int) -> None:
        """Scheduled in (or woken on its pCPU from a halt-poll): back into the guest after an exit's cost.

        The exit that took it off was free, so its cost is paid here: the vCPU thread returns
        into KVM's run loop, traces kvm_entry and enters; guest code never runs at the instant
        of a host context switch.
        """
        self.reenter(v, t)

    def reenter(self, v: VCpu, t: int) -> None:
        """An exit's cost from t: kvm_entry is traced `entry_hw` before the guest runs again (the
        hardware VM entry), so no guest event shares an instant with a host one."""
        self.push_v(v, t + self.exit_cost - self.entry_hw, EV_ENTRY)

    def off_pcpu(self, task, p: int, t: int) -> None:
        """Task leaves pCPU p: charge it; the caller queues it or lets it sleep."""
        host = self.host
        host.charge(p, t)
        host.cur[p] = None
        task.pcpu = -1
        task.off_t = t

    def vacate(self, p: int, t: int) -> None:
        """pCPU p is free: run the next waiting task (per-cpu: pulling one if its queue is empty), or idle."""
        host = self.host
        nxt = host.pop_next(t, p)
        if nxt is None and host.percpu:
            nxt = balance.newidle_pull(host, p, t)
            if nxt is not None:
                balance.migrate(host, nxt, p, t)
        if nxt is not None:
            self.run_on(nxt, p, t)
            return
        host.slice_tok[p] += 1
        if host.gang and all(c is None for c in host.cur):
            self.gang_switch(t)

    def block(self, task, p: int, t: int) -> None:
        """Task stops being runnable on pCPU p (halt, sleep, end of work): keep its lag, free p."""
        if not self.host.gang:
            self.host.sleep(task, t)
        self.off_pcpu(task, p, t)
        self.vacate(p, t)

    def slice_end(self, p: int, t: int) -> None:
        """The current task's request is served: EEVDF picks again among it and the waiting tasks."""
        host = self.host
        cur = host.cur[p]
        if cur is None:
            return
        host.charge(p, t)
        if not host.has_waiting(p):
            self.arm_slice(p, t)
            return
        if cur.is_vcpu and self.hint and cur.hold_lock is not None and not cur.extended:
            cur.extended = True  # preemption hint: defer, bounded (the time is charged all the same)
            tok = host.slice_tok[p] + 1
            host.slice_tok[p] = tok
            self.push(t + self.s.cures.hint_max_extension_ns, EV_SLICE, p, tok)
            return
        if host.gang:
            nxt = host.pop_next(t, p)
        else:
            if cur.vrt >= cur.deadline:
                host.new_request(cur)  # its request is served: a new one
            q = p if host.percpu else 0
            nxt = host.pick(t, extra=cur, q=q)
            if nxt is cur:
                self.arm_slice(p, t)
                return
            host.queues[q].remove(nxt)
        self.switch_out(cur, p, t)
        self.run_on(nxt, p, t)
        if cur.is_vcpu:
            self.stopped_running(cur, t)

    def switch_out(self, cur, p: int, t: int, key: int = K.PREEMPT_RP) -> None:
        """Take the runnable task off pCPU p and queue it (the caller fills p)."""
        if cur.is_vcpu:
            self.preempt(cur, p, t, key)
        else:
            self.noise_off(cur, t)
        self.off_pcpu(cur, p, t)
        self.host.enqueue(cur, self.gang_of(cur))

    def preempt(self, v: VCpu, p: int, t: int, key: int) -> None:
        """A running vCPU is scheduled out while runnable (its events and state). The exit says
        whether the interrupt found the guest in user mode (kvm_exit's guest rip)."""
        v.in_kernel = v.phase in (HOLD, WAIT, IPI) or (
            v.phase == COMPUTE and self.rng.random() < self.kernel_fraction
        )
        exit_key = K.EXIT_INTR if v.in_kernel else K.EXIT_INTR_USER
        if v.in_guest:
            self.leave_guest(v, t)
            self.emit(t, exit_key | v.key, p)
        else:
            v.token += 1
            if v.entering:  # the interrupt arrives during the VM entry: it exits at once
                v.entering = False
                self.emit(t, exit_key | v.key, p)
        self.emit(t, key | v.key, p)
        self.set_state(v, PREEMPTED, t)
        v.extended = False

    def noise_off(self, n: Noise, t: int) -> None:
        n.left = n.due - t
        n.token += 1

    def noise_time(self, mean: int) -> int:
        return max(1, int(self.rng.expovariate(1.0 / mean)))

    def noise_done(self, n: Noise, t: int) -> None:
        p = n.pcpu
        n.token += 1
        self.push(t + self.noise_time(self.s.host.noise_sleep_ns), EV_NOISE_WAKE, n, n.token)
        self.block(n, p, t)

    def noise_wake(self, n: Noise, t: int) -> None:
        n.left = self.noise_time(self.s.host.noise_run_ns)
        self.wake_task(n, t)

    def wake_task(self, task, t: int, on_wake: Callable[[int], None] | None = None) -> None:
        """A task becomes runnable: an idle pCPU, a polling one, a wake-up preemption, or the queue."""
        host = self.host
        if host.percpu:
            self.wake_percpu(task, t, on_wake)
            return
        gang = self.gang_of(task)
        if not host.gang:
            host.place(task, t)
        p = host.idle_pcpu_for(task, gang)
        if p is None:
            p = host.polling_pcpu()
            if p is not None:
                self.poll_stops(host.cur[p], p, t)  # not single_task_running() any more: it blocks
                p = host.idle_pcpu_for(task, gang)
        if p is None and not host.gang:
            q = task.last_pcpu if task.last_pcpu >= 0 else 0
            if host.wakeup_preempts(task, q, t, self.spared):
                if on_wake is not None:
                    on_wake(q)
                victim = host.cur[q]
                self.switch_out(victim, q, t)
                self.run_on(task, q, t)
                if victim.is_vcpu:
                    self.stopped_running(victim, t)
                return
        if p is None:
            if on_wake is not None:
                on_wake(-1)
            host.enqueue(task, gang)
            return
        if on_wake is not None:
            on_wake(p)
        self.run_on(task, p, t)

    def wake_percpu(self, task, t: int, on_wake: Callable[[int], None] | None) -> None:
        """Per-cpu queues: the pCPU select_idle_sibling chooses; there an idle pCPU runs the task, a
        halt-polling vCPU stops polling for it, or it preempts by the scheduler's rule or queues."""
        host = self.host
        p = balance.wake_cpu(host, task)
        host.place(task, t, p)
        task.last_pcpu = p
        cur = host.cur[p]
        preempts = cur is not None and not cur.polling and host.wakeup_preempts(task, p, t, self.spared)
        if on_wake is not None:
            on_wake(p if cur is None or cur.polling or preempts else -1)
        if cur is None:
            self.run_on(task, p, t)
        elif cur.polling:
            host.queues[p].append(task)
            self.poll_stops(cur, p, t)  # not single_task_running() any more: it blocks, task runs
        elif preempts:
            self.switch_out(cur, p, t)
            self.run_on(task, p, t)
            if cur.is_vcpu:
                self.stopped_running(cur, t)
        else:
            host.queues[p].append(task)

    def balance_tick(self, t: int) -> None:
        """Per-cpu queues: every pCPU runs the periodic load balancer (balance.py) for itself."""
        host = self.host
        host.balance_ticks += 1
        busy = host.balance_ticks % balance.BUSY_FACTOR == 0
        self.push(t + self.s.host.balance_interval_ns, EV_BALANCE, None, 0)
        for dst in range(host.n_pcpus):
            task = balance.balance_pull(host, dst, t, busy)
            if task is None:
                continue
            balance.migrate(host, task, dst, t)
            cur = host.cur[dst]
            if cur is None:
                self.run_on(task, dst, t)
                continue
            host.queues[dst].append(task)
            if cur.polling:
                self.poll_stops(cur, dst, t)  # its queue is not empty any more: it blocks, task runs

    def spared(self, task) -> bool:
        """Preemption hint: wake-up preemption spares a vCPU holding a spinlock."""
        return self.hint and task.is_vcpu and task.hold_lock is not None

    # -- gang scheduling ------------------------------------------------------------------
    def start_gang(self, order: list[VCpu]) -> None:
        """Initial placement under gang scheduling: the first vCPU's VM owns the pCPUs."""
        host = self.host
        for v in order:
            host.gang_queues[v.vm].append(v)
        host.cur_gang = order[0].vm
        for p in range(host.n_pcpus):
            nxt = host.pop_next(0, p)
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
                nxt = host.pop_next(t, p)
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
            self.switch_out(cur, p, t)
            if cur.is_vcpu:
                stopped.append(cur)
        host.cur_gang = nxt
        self.fill_gang(t)
        for v in stopped:
            self.stopped_running(v, t)
