"""The per-CPU load balancer's decisions (kernel/sched/fair.c: select_idle_sibling, newidle and periodic balance).

Only with `host.runqueues = "per-cpu"`. A waking task goes to its last pCPU
if idle, else to any idle pCPU, else back to its last pCPU's queue (wake
affine towards the waker is not modelled). A pCPU whose queue runs dry pulls
the oldest cache-cold waiting task of the busiest queue (newidle balance); a
task that ran within MIGRATION_COST_NS is cache-hot and stays. Every
`balance_interval_ns` the periodic balancer pulls work to idle pCPUs, and every
BUSY_FACTOR-th time also between busy ones: a queue with two more tasks than
another gives one; with one more (and above IMBALANCE_PCT), only after a balance
has failed (the moved task's load exceeds half a task's imbalance until
nr_balance_failed halves it). Hot tasks move once more than CACHE_NICE_TRIES
balances in a row failed. Between balances an idle pCPU may wait while hot
tasks queue elsewhere: per-CPU queues are not work-conserving, as in the kernel.
A moved task keeps its lag and gets a new request on its new queue.
"""

from __future__ import annotations

from pvtrace.simulate.host import HostState

MIGRATION_COST_NS = 500_000  # sysctl_sched_migration_cost: task_hot() within 0.5 ms of running
CACHE_NICE_TRIES = 1  # sd->cache_nice_tries of an LLC domain
IMBALANCE_PCT = 117  # sd->imbalance_pct of an LLC (MC) domain
BUSY_FACTOR = 16  # sd->busy_factor: a busy CPU balances 16 times less often than an idle one


def nr_running(host: HostState, q: int) -> int:
    return len(host.queues[q]) + (host.cur[q] is not None)


def pullable(host: HostState, q: int, t: int, allow_hot: bool):
    """Queue q's oldest waiting task that may move (detach_tasks walks cfs_tasks from the tail)."""
    for task in host.queues[q]:
        if allow_hot or t - task.off_t >= MIGRATION_COST_NS:
            return task
    return None


def wake_cpu(host: HostState, task) -> int:
    """select_idle_sibling: the task's last pCPU if idle, else an idle pCPU, else its last pCPU."""
    prev = task.last_pcpu if task.last_pcpu >= 0 else task.idx % host.n_pcpus
    cur = host.cur
    if cur[prev] is None:
        return prev
    for p in range(host.n_pcpus):
        if cur[p] is None:
            return p
    return prev


def busiest(host: HostState, but: int = -1) -> int:
    """The queue with the most runnable tasks among those with a waiting task (-1: none)."""
    best, best_nr = -1, 0
    for q in range(host.n_pcpus):
        if q != but and host.queues[q]:
            nr = nr_running(host, q)
            if nr > best_nr:
                best, best_nr = q, nr
    return best


def newidle_pull(host: HostState, p: int, t: int):
    """newidle_balance for pCPU p, whose queue is empty: a cache-cold task to pull, or None."""
    src = busiest(host, but=p)
    return None if src < 0 else pullable(host, src, t, allow_hot=False)


def balance_pull(host: HostState, dst: int, t: int, busy: bool):
    """load_balance run by pCPU dst (idle: every interval; busy: every BUSY_FACTOR-th): the task it
    pulls from the busiest queue, or None when balanced or when it fails (counted per pCPU, as each
    CPU's sched domain counts nr_balance_failed)."""
    failed = host.balance_failed
    nl = nr_running(host, dst)
    if nl and not busy:
        return None
    src = busiest(host, but=dst)
    if src < 0:
        failed[dst] = 0
        return None
    nb = nr_running(host, src)
    if nl and (nb <= nl or 100 * nb <= IMBALANCE_PCT * nl):
        failed[dst] = 0  # out_balanced
        return None
    if nl and nb - nl == 1 and failed[dst] == 0:
        failed[dst] += 1  # half a task's imbalance: the task's load is too big this time
        return None
    task = pullable(host, src, t, allow_hot=failed[dst] > CACHE_NICE_TRIES)
    if task is None:
        failed[dst] += 1
        return None
    failed[dst] = 0
    return task


def migrate(host: HostState, task, dst: int, t: int) -> None:
    """Move a waiting task to pCPU dst's queue keeping its lag; the caller runs or queues it there."""
    src = task.last_pcpu
    host.keep_lag(task, t, src)
    host.queues[src].remove(task)
    host.place(task, t, dst)
    task.last_pcpu = dst
