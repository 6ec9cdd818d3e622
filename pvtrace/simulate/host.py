"""The host scheduler's data: which task runs on which pCPU, and who waits for one.

A fair scheduler with one global run queue (an ideal load balancer): a slice
that ends with tasks waiting sends the running task to the back; a woken task
(a kicked vCPU, a noise task) goes ahead of the preempted ones, as CFS's
sleeper credit places it, and may preempt a task that has run at least the
wake-up granularity. Slices are jittered per pCPU so pCPUs do not expire in
lock step (lock-step expiry would gang-schedule the VMs by accident and hide
LHP). With gang scheduling, one gang (a VM's vCPUs, or the noise tasks) owns
the pCPUs at a time and gangs take turns a slice each. The engine makes every
transition and emits the events; this class only decides.
"""

from __future__ import annotations

import random
from collections import deque

from pvtrace.simulate.scenario import Host


class HostState:
    """pCPUs, run queues and the choices a scheduler makes."""

    def __init__(self, host: Host, rng: random.Random, n_gangs: int):
        self.cfg = host
        self.rng = rng
        self.n_pcpus = host.pcpus
        self.cur: list = [None] * host.pcpus
        self.slice_tok = [0] * host.pcpus
        self.run_start = [0] * host.pcpus
        self.gang = host.gang_scheduling
        self.rq: deque = deque()
        self.woken: deque = deque()
        self.gang_queues: list[deque] = [deque() for _ in range(n_gangs)]
        self.cur_gang = 0
        self.gang_tok = 0

    def slice_length(self) -> int:
        """One slice: slice_ns with +-slice_jitter uniform jitter."""
        j = self.cfg.slice_jitter
        return max(1, int(self.cfg.slice_ns * (1.0 + j * (2.0 * self.rng.random() - 1.0))))

    # -- queues ---------------------------------------------------------------------------
    def has_waiting(self, p: int) -> bool:
        """Is a task waiting that pCPU p would run next?"""
        if self.gang:
            return bool(self.gang_queues[self.cur_gang])
        return bool(self.woken) or bool(self.rq)

    def pop_next(self, p: int):
        """The task pCPU p runs next, removed from its queue; None: stay idle."""
        if self.gang:
            q = self.gang_queues[self.cur_gang]
            return q.popleft() if q else None
        if self.woken:
            return self.woken.popleft()
        if self.rq:
            return self.rq.popleft()
        return None

    def enqueue(self, task, gang: int) -> None:
        """A task left its pCPU while runnable: back of the queue."""
        if self.gang:
            self.gang_queues[gang].append(task)
        else:
            self.rq.append(task)

    def enqueue_woken(self, task, gang: int) -> None:
        """A woken task that found no pCPU: ahead of preempted tasks."""
        if self.gang:
            self.gang_queues[gang].append(task)
        else:
            self.woken.append(task)

    def remove(self, task, gang: int) -> None:
        """Take a waiting task out of its queue (it is about to run by directed yield)."""
        if self.gang:
            self.gang_queues[gang].remove(task)
        elif task in self.woken:
            self.woken.remove(task)
        else:
            self.rq.remove(task)

    # -- placement ------------------------------------------------------------------------
    def idle_pcpu_for(self, task, gang: int) -> int | None:
        """An idle pCPU a woken task may run on now (its last pCPU preferred)."""
        if self.gang and gang != self.cur_gang:
            return None
        cur = self.cur
        last = task.last_pcpu
        if last >= 0 and cur[last] is None:
            return last
        for p in range(self.n_pcpus):
            if cur[p] is None:
                return p
        return None

    def victim_for(self, t: int, protect_holders: bool) -> int | None:
        """The pCPU whose task a woken task preempts: the longest-running one past the granularity."""
        if self.gang or not self.cfg.wakeup_preemption:
            return None
        gran = self.cfg.wakeup_granularity_ns
        best = None
        best_start = t - gran + 1
        for p in range(self.n_pcpus):
            task = self.cur[p]
            if task is None or self.run_start[p] >= best_start:
                continue
            if protect_holders and task.is_vcpu and task.hold_lock is not None:
                continue
            best, best_start = p, self.run_start[p]
        return best

    def next_gang(self, running_gangs: set[int]) -> int:
        """The gang after the current one that has a task running or waiting (round robin)."""
        n = len(self.gang_queues)
        for k in range(1, n + 1):
            g = (self.cur_gang + k) % n
            if self.gang_queues[g] or g in running_gangs:
                return g
        return self.cur_gang
