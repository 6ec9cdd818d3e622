"""The fair class's decisions on hand-set vruntimes and deadlines (host.py)."""

from __future__ import annotations

import random

from pvtrace.simulate.host import HostState
from pvtrace.simulate.scenario import Host
from pvtrace.simulate.tasks import Noise


def host_with(
    running: list[tuple[int, int]], waiting: list[tuple[int, int]], **cfg
) -> tuple[HostState, list]:
    """pCPUs running tasks of (vrt, deadline), and waiting tasks; charged at t = 0."""
    h = HostState(Host(pcpus=len(running), slice_jitter=0.0, **cfg), random.Random(0), 1)
    tasks = []
    for p, (vrt, dl) in enumerate(running):
        n = Noise(p)
        n.vrt, n.deadline, n.pcpu = vrt, dl, p
        h.cur[p] = n
        tasks.append(n)
    for k, (vrt, dl) in enumerate(waiting):
        n = Noise(100 + k)
        n.vrt, n.deadline = vrt, dl
        h.rq.append(n)
        tasks.append(n)
    return h, tasks


def test_pick_is_the_eligible_task_with_the_earliest_deadline():
    # V = (10 + 0 + 20) / 3 = 10: the task at 20 is not eligible although its deadline is earliest
    h, (_, a, _b) = host_with([(10, 50)], [(0, 40), (20, 30)])
    assert h.pick(0) is a


def test_a_yield_buddy_is_picked_only_when_eligible():
    h, (_, a, b) = host_with([(10, 50)], [(0, 40), (20, 30)])
    assert h.pick(0, buddy=b) is a  # ineligible buddy: the scheduler's own pick
    h, (_, a, b) = host_with([(10, 50)], [(0, 40), (5, 90)])
    assert h.pick(0, buddy=b) is b


def test_wakeup_preemption_follows_the_scheduler_rule():
    h, (cur,) = host_with([(0, 3_000_000)], [])
    woken = Noise(9)
    woken.vrt, woken.deadline = 0, 1_000_000
    assert not h.wakeup_preempts(woken, 0, 0, lambda task: False)  # run to parity: cur is eligible
    cur.vrt = 2_000_000  # cur ran ahead: no longer eligible
    assert h.wakeup_preempts(woken, 0, 0, lambda task: False)
    h2, (_cur2,) = host_with([(0, 3_000_000)], [], run_to_parity=False)
    assert h2.wakeup_preempts(woken, 0, 0, lambda task: False)  # earlier deadline, no parity


def test_a_sleeper_keeps_its_lag():
    h, (a, b, _c) = host_with([(0, 10), (30, 40)], [(60, 70)])
    h.sleep(b, 0)  # V = (0 + 30 + 60) / 3 = 30: lag 0
    h.cur[1] = None
    assert b.vlag == 0
    h.sleep(a, 0)  # b gone, V = (0 + 60) / 2 = 30: lag +30
    assert a.vlag == 30
    h.cur[0] = None
    h.place(a, 0)  # with c alone at 60: placed 2 x 30 below it, so that V = 30 again and a's lag is 30
    assert a.vrt == 0 and a.deadline == 3_000_000
