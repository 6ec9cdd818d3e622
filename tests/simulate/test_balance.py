"""Per-cpu run queues (host.runqueues = "per-cpu"): the load balancer's decisions on hand-set queues
(balance.py), and yield_to across queues in a run."""

from __future__ import annotations

import random

import polars as pl
import pytest

from pvtrace.errors import ScenarioError
from pvtrace.simulate import balance
from pvtrace.simulate.host import HostState
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Host, Scenario, load_preset
from pvtrace.simulate.tasks import Noise

HOT = balance.MIGRATION_COST_NS


def percpu_host(running: list[bool], queued: list[list[int]]) -> tuple[HostState, list[list[Noise]]]:
    """pCPU p runs a task when running[p]; queued[p] lists when each task waiting there last ran."""
    h = HostState(Host(pcpus=len(running), runqueues="per-cpu", slice_jitter=0.0), random.Random(0), 1)
    for p, busy in enumerate(running):
        if busy:
            n = Noise(p)
            n.pcpu = n.last_pcpu = p
            h.cur[p] = n
    tasks = []
    for p, offs in enumerate(queued):
        mine = []
        for k, off_t in enumerate(offs):
            n = Noise(10 * (p + 1) + k)
            n.last_pcpu, n.off_t = p, off_t
            h.queues[p].append(n)
            mine.append(n)
        tasks.append(mine)
    return h, tasks


def test_a_waking_task_prefers_its_idle_last_pcpu_then_any_idle_one_then_its_last():
    h, _ = percpu_host([True, False, False], [[], [], []])
    task = Noise(7)
    task.last_pcpu = 2
    assert balance.wake_cpu(h, task) == 2
    task.last_pcpu = 0
    assert balance.wake_cpu(h, task) == 1  # select_idle_sibling: an idle pCPU
    h.cur[1] = h.cur[2] = h.cur[0]
    assert balance.wake_cpu(h, task) == 0  # nothing idle: back to its last pCPU's queue


def test_newidle_pulls_the_busiest_queues_oldest_cold_task_never_a_hot_one():
    t = 10 * HOT
    h, (_, _, q2) = percpu_host([False, True, True], [[], [t - 1], [0, t - 1, 1]])
    assert balance.newidle_pull(h, 0, t) is q2[0]  # pCPU 2's queue is the busiest; its oldest is cold
    h, _ = percpu_host([False, True], [[], [t - 1]])
    assert balance.newidle_pull(h, 0, t) is None  # ran 1 ns ago: cache-hot, stays


def test_periodic_balance_moves_hot_tasks_only_after_failing_cache_nice_tries_times():
    t = 10 * HOT
    h, (_, q1) = percpu_host([False, True], [[], [t - 1]])
    for _ in range(balance.CACHE_NICE_TRIES + 1):
        assert balance.balance_pull(h, 0, t, busy=False) is None
    assert balance.balance_pull(h, 0, t, busy=False) is q1[0]


def test_a_one_task_imbalance_moves_at_the_second_busy_balance_and_only_when_busy():
    h, (_, q1) = percpu_host([True, True], [[0], [0, 0]])  # 2 vs 3 runnable
    assert balance.balance_pull(h, 0, 10 * HOT, busy=False) is None  # busy pCPUs wait for busy_factor
    assert balance.balance_pull(h, 0, 10 * HOT, busy=True) is None  # first try: half a task is too little
    assert balance.balance_pull(h, 0, 10 * HOT, busy=True) is q1[0]
    h, _ = percpu_host([True, True], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])  # 6 vs 7: under 117%
    assert balance.balance_pull(h, 0, 10 * HOT, busy=True) is None
    assert balance.balance_pull(h, 0, 10 * HOT, busy=True) is None


def test_a_moved_task_keeps_its_lag_on_its_new_queue():
    h, (_, q1) = percpu_host([True, True], [[], [0]])
    h.cur[0].vrt, h.cur[1].vrt = 1_000_000, 5_000_000
    moved = q1[0]
    moved.vrt = 4_000_000  # V of pCPU 1's queue = 4.5 ms: lag +0.5 ms
    balance.migrate(h, moved, 0, 0)
    assert moved.last_pcpu == 0 and moved not in h.queues[1]
    assert moved.vrt == 1_000_000 - 500_000 * 2  # V of pCPU 0 = 1 ms, the lag scaled as place_entity does


def honoured_yields(runqueues: str) -> pl.DataFrame:
    """Yields whose target ran at that ns, with the yielder's and the target's pCPU."""
    s = load_preset("overcommit-2x").replace(host={"runqueues": runqueues}, run={"duration_ns": 60_000_000})
    trace, _ = simulate_trace(s, seed=3)
    ev = trace.events.sort("ts", "seq")
    runs = ev.filter(pl.col("kind") == "vcpu_run").select("ts", "vm", "vcpu", "pcpu")
    ys = ev.filter(pl.col("kind") == "yield_to").select("ts", "vm", "vcpu", "target", "seq")
    ys = ys.join_asof(
        runs.rename({"pcpu": "yielder_pcpu", "ts": "run_ts"}),
        left_on="ts",
        right_on="run_ts",
        by=["vm", "vcpu"],
    )
    return ys.join(
        runs.rename({"vcpu": "target", "pcpu": "target_pcpu"}), on=["ts", "vm", "target"], how="inner"
    )


def test_a_yield_to_a_target_on_another_queue_runs_it_on_its_own_pcpu():
    # yield_to marks the buddy on the target's run queue and reschedules that CPU (resched_curr);
    # with one global queue the target always takes the yielder's pCPU.
    per_cpu = honoured_yields("per-cpu")
    assert (per_cpu["target_pcpu"] != per_cpu["yielder_pcpu"]).sum() > 0
    glob = honoured_yields("global")
    assert glob.height > 0 and (glob["target_pcpu"] == glob["yielder_pcpu"]).all()


def test_per_cpu_queues_and_gang_scheduling_do_not_combine():
    with pytest.raises(ScenarioError, match=r"host\.runqueues must be \"global\" under"):
        Scenario().replace(host={"runqueues": "per-cpu", "gang_scheduling": True})
