"""The host scheduler's data and decisions: an EEVDF-like fair class over its run queues.

Fair share is accounted, never granted: every ns a task holds a pCPU (guest
code, exits, halt-polling) is charged to its virtual runtime `vrt` by `charge`,
whoever put it there. The scheduler picks, among the eligible tasks (vrt at or
below the average V of all runnable tasks: lag >= 0), the one with the earliest
virtual deadline; a task's request is `slice_ns` (jittered per request, so
pCPUs do not expire in lock step) and a new one starts when it is served.
A sleeping task keeps its lag (clamped) and is placed by it when it wakes
(EEVDF place_entity). A woken task preempts a running one only when the
scheduler would pick it now; with RUN_TO_PARITY the running task keeps its pCPU
while it is eligible and its request is not served. yield_to marks a buddy
(picked next if eligible) and pushes the yielder's deadline out by a request
(yield_task_fair); a running task is looked at again at least once a slice,
so a deadline pushed far out by many yields buys no long run.

All tasks have equal weight. `host.runqueues` chooses the queues: `global`,
one queue for all pCPUs (an ideal load balancer: a declared simplification),
or `per-cpu`, a queue per pCPU as in the kernel (each queue its own average
vruntime; a task that moves keeps its lag; the load balancer is balance.py).
With gang scheduling, one gang (a VM's vCPUs, or the
noise tasks) owns the pCPUs at a time and gangs take turns a slice each,
FIFO within a gang. The engine makes every transition and emits the events;
this class only keeps books and decides.
"""

from __future__ import annotations

import random
from collections import deque

from pvtrace.simulate.scenario import Host


class HostState:
    """pCPUs, the run queue and the choices a fair scheduler makes."""

    def __init__(self, host: Host, rng: random.Random, n_gangs: int):
        self.cfg = host
        self.rng = rng
        self.n_pcpus = host.pcpus
        self.cur: list = [None] * host.pcpus
        self.slice_tok = [0] * host.pcpus
        self.run_start = [0] * host.pcpus  # when cur[p] was last charged
        self.gang = host.gang_scheduling
        self.percpu = host.runqueues == "per-cpu"
        # runnable tasks waiting for a pCPU: one queue, or one per pCPU (rq is the first)
        self.queues: list[list] = [[] for _ in range(host.pcpus if self.percpu else 1)]
        self.rq: list = self.queues[0]
        self.v_floor = [0] * len(self.queues)  # each queue's latest average vruntime
        self.balance_ticks = 0
        # per pCPU: periodic balances in a row that found an imbalance and moved nothing
        self.balance_failed = [0] * host.pcpus
        self.gang_queues: list[deque] = [deque() for _ in range(n_gangs)]
        self.cur_gang = 0
        self.gang_tok = 0

    def slice_length(self) -> int:
        """One request: slice_ns with +-slice_jitter uniform jitter."""
        j = self.cfg.slice_jitter
        return max(1, int(self.cfg.slice_ns * (1.0 + j * (2.0 * self.rng.random() - 1.0))))

    # -- accounting -----------------------------------------------------------------------
    def charge(self, p: int, t: int) -> None:
        """Charge pCPU p's task for its time on the pCPU up to t."""
        task = self.cur[p]
        if task is not None:
            dt = t - self.run_start[p]
            task.vrt += dt
            task.cpu_ns += dt
        self.run_start[p] = t

    def charge_all(self, t: int) -> None:
        for p in range(self.n_pcpus):
            self.charge(p, t)

    def qof(self, p: int) -> int:
        """The run queue of pCPU p (a task's queue is that of its last pCPU, task_cpu())."""
        return p if self.percpu else 0

    def avg_vruntime(self, t: int, without=None, q: int = 0) -> tuple[int, int]:
        """(sum of vrt, count) over queue q's runnable tasks (queued and on its pCPUs), charged to t."""
        if self.percpu:
            self.charge(q, t)
            on = (self.cur[q],)
        else:
            self.charge_all(t)
            on = self.cur
        total, n = 0, 0
        for task in self.queues[q]:
            if task is not without:
                total += task.vrt
                n += 1
        for task in on:
            if task is not None and task is not without:
                total += task.vrt
                n += 1
        if n:
            self.v_floor[q] = total // n
        return total, n

    def new_request(self, task) -> None:
        """The task's request is served: a new one, slice_ns of virtual time from now."""
        task.deadline = task.vrt + self.slice_length()

    def request_left(self, task) -> int:
        """ns of running until the next look at the task: its request served (a new one if it is)
        or one slice, whichever is sooner (a task whose deadline a yield pushed out is re-picked
        after a slice, and keeps the pCPU only if it is still the eligible earliest deadline)."""
        if task.vrt >= task.deadline:
            self.new_request(task)
        return min(task.deadline - task.vrt, self.slice_length())

    def yield_task(self, task) -> None:
        """yield_task_fair: the yielder's deadline moves out by a request (nothing when it is alone)."""
        if self.queues[task.pcpu if self.percpu else 0]:
            task.deadline += self.cfg.slice_ns

    # -- sleeping and waking (lag) -------------------------------------------------------
    def sleep(self, task, t: int) -> None:
        """A task stops being runnable (halts, sleeps): keep its lag, clamped to two requests."""
        self.keep_lag(task, t, self.qof(task.pcpu))

    def keep_lag(self, task, t: int, q: int) -> None:
        """Remember the task's lag against queue q's average (update_entity_lag), clamped to two requests."""
        total, n = self.avg_vruntime(t, q=q)
        limit = 2 * self.cfg.slice_ns
        lag = total // n - task.vrt if n else 0
        task.vlag = max(-limit, min(limit, lag))

    def place(self, task, t: int, q: int = 0) -> None:
        """A task joins queue q (woken, or moved there): vruntime from its kept lag (scaled so adding
        it keeps that lag), new request."""
        total, n = self.avg_vruntime(t, without=task, q=q)
        if n:
            v = total // n
            lag = task.vlag * (n + 1) // n
        else:
            v, lag = self.v_floor[q], task.vlag
        task.vrt = v - lag
        self.new_request(task)

    # -- picking ------------------------------------------------------------------------
    def pick(self, t: int, extra=None, buddy=None, q: int = 0):
        """The task EEVDF runs next among queue q (and `extra`, a task on the pCPU being rescheduled).

        The buddy (a yield_to target) is picked when it is eligible.
        """
        total, n = self.avg_vruntime(t, q=q)
        if extra is not None and extra.pcpu < 0:
            total += extra.vrt
            n += 1
        if buddy is not None and buddy.vrt * n <= total:
            return buddy
        best = None
        rq = self.queues[q]
        cands = rq if extra is None else [*rq, extra]
        for task in cands:
            if task.vrt * n <= total and (best is None or task.deadline < best.deadline):
                best = task
        if best is None:  # rounding: fall back to the least vruntime (always eligible in exact arithmetic)
            best = min(cands, key=lambda x: x.vrt)
        return best

    def wakeup_preempts(self, woken, p: int, t: int, spare) -> bool:
        """Does the woken task preempt pCPU p's task (check_preempt_wakeup_fair)?"""
        cur = self.cur[p]
        if not self.cfg.wakeup_preemption or cur is None or spare(cur):
            return False
        q = self.qof(p)
        total, n = self.avg_vruntime(t, q=q)
        total += woken.vrt
        n += 1
        if woken.vrt * n > total:
            return False  # not eligible
        cur_eligible = cur.vrt * n <= total
        if self.cfg.run_to_parity and cur_eligible and cur.vrt < cur.deadline:
            return False  # the current task runs to parity
        if cur_eligible and cur.deadline <= woken.deadline:
            return False
        # not when the scheduler would pick a waiting task before the woken one
        return not any(task.vrt * n <= total and task.deadline < woken.deadline for task in self.queues[q])

    # -- queues ---------------------------------------------------------------------------
    def has_waiting(self, p: int) -> bool:
        """Is a task waiting for pCPU p (on its queue; in the current gang, under gang scheduling)?"""
        if self.gang:
            return bool(self.gang_queues[self.cur_gang])
        return bool(self.queues[p if self.percpu else 0])

    def pop_next(self, t: int, p: int):
        """The task pCPU p runs next, removed from its queue; None: its queue is empty."""
        if self.gang:
            q = self.gang_queues[self.cur_gang]
            return q.popleft() if q else None
        q = self.qof(p)
        rq = self.queues[q]
        if not rq:
            return None
        task = self.pick(t, q=q)
        rq.remove(task)
        return task

    def enqueue(self, task, gang: int) -> None:
        """A runnable task without a pCPU joins the queue (per-cpu: its last pCPU's)."""
        if self.gang:
            self.gang_queues[gang].append(task)
        else:
            self.queues[task.last_pcpu if self.percpu else 0].append(task)

    def remove(self, task, gang: int) -> None:
        """Take a waiting task out of its queue (it is about to run)."""
        if self.gang:
            self.gang_queues[gang].remove(task)
        else:
            self.queues[task.last_pcpu if self.percpu else 0].remove(task)

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

    def polling_pcpu(self) -> int | None:
        """A pCPU whose vCPU thread halt-polls: it stops polling when another task is runnable."""
        if self.gang:
            return None
        for p in range(self.n_pcpus):
            c = self.cur[p]
            if c is not None and c.polling:
                return p
        return None

    def next_gang(self, running_gangs: set[int]) -> int:
        """The gang after the current one that has a task running or waiting (round robin)."""
        n = len(self.gang_queues)
        for k in range(1, n + 1):
            g = (self.cur_gang + k) % n
            if self.gang_queues[g] or g in running_gangs:
                return g
        return self.cur_gang
