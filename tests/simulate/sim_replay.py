"""A naive, independent replay of simulator events: invariants and reference totals.

It walks the events one by one in canonical order (Python loops: small runs
only), checks what must always hold, and recomputes the main totals of
docs/metrics.md the slow, obvious way (every open wait classified piece by
piece), so tests can hold the simulator's ground truth against its own events
without the analyzer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import polars as pl

GUEST_EXITS = {"PAUSE", "HYPERCALL", "HLT"}


@dataclass
class Replay:
    """What the replay found."""

    violations: list[str] = field(default_factory=list)
    state_ns: dict[tuple, dict[str, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    contended_waits: list[int] = field(default_factory=list)  # each contended acquisition's wait, ns

    def bad(self, msg: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(msg)


def _next_owners(rows: list[tuple]) -> dict[int, tuple]:
    """For each release (by row index): the next acquirer of that lock if it queued before the release."""
    contend_at: dict[tuple, int] = {}
    acquires: dict[tuple, list[tuple[int, tuple, int | None]]] = defaultdict(list)
    releases: dict[tuple, list[int]] = defaultdict(list)
    for i, (_ts, vm, vcpu, _pcpu, kind, lock, *_rest) in enumerate(rows):
        if kind == "lock_contend":
            contend_at[(vm, vcpu, lock)] = i
        elif kind == "lock_acquire":
            acquires[(vm, lock)].append((i, (vm, vcpu), contend_at.pop((vm, vcpu, lock), None)))
        elif kind == "lock_release":
            releases[(vm, lock)].append(i)
    out: dict[int, tuple] = {}
    for key, rel in releases.items():
        acq = acquires[key]
        j = 0
        for r in rel:
            while j < len(acq) and acq[j][0] < r:
                j += 1
            if j < len(acq) and acq[j][2] is not None and acq[j][2] < r:
                out[r] = acq[j][1]
    return out


def replay(events: pl.DataFrame, t_end: int, fifo: bool, steal: bool) -> Replay:
    """Replay a full-view simulator trace; see Replay."""
    ev = events.sort("ts", "seq")
    rows = list(
        ev.select(
            "ts",
            pl.col("vm").cast(pl.String),
            "vcpu",
            "pcpu",
            pl.col("kind").cast(pl.String),
            "lock",
            pl.col("reason").cast(pl.String),
            "target",
            "seq",
        ).iter_rows()
    )
    rp = Replay()
    seqs = ev["seq"].to_list()
    if seqs != list(range(len(seqs))):
        rp.bad("seq is not 0..n-1 in (ts, seq) order: events were not emitted in time order")
    next_owner = _next_owners(rows)

    state: dict[tuple, str] = {}
    since: dict[tuple, int] = {}
    in_guest: dict[tuple, bool] = defaultdict(bool)
    on_pcpu: dict[int, tuple] = {}
    holder: dict[tuple, tuple | None] = {}
    queue: dict[tuple, list[tuple]] = defaultdict(list)  # open waits in contend order
    wait_start: dict[tuple, int] = {}
    free_next: dict[tuple, tuple | None] = {}
    hold_down: dict[tuple, int] = {}  # lock -> ts its holder stopped running (open LHP stretch)
    n_release: dict[tuple, int] = defaultdict(int)
    contend_rel: dict[tuple, int] = {}
    run_len: dict[tuple, int] = defaultdict(int)
    tot = defaultdict(int)
    sn: dict[tuple, dict[str, int]] = defaultdict(lambda: {"running": 0, "preempted": 0, "halted": 0})
    last_ts = 0

    def set_state(v: tuple, s: str, ts: int) -> None:
        old = state.get(v)
        if old is not None:
            sn[v][old] += ts - since[v]
        state[v] = s
        since[v] = ts
        for lk, h in holder.items():
            if h == v:
                if s != "running" and lk not in hold_down:
                    hold_down[lk] = ts
                elif s == "running" and lk in hold_down:
                    start = hold_down.pop(lk)
                    if ts > start:
                        tot["n_lhp"] += 1

    def integrate(t0: int, t1: int) -> None:
        dt = t1 - t0
        if dt <= 0:
            return
        for lk, waiting in queue.items():
            for w in waiting:
                s = state[w]
                if s == "halted":
                    tot["wait_halted_ns"] += dt
                    continue
                if s == "preempted":
                    tot["wait_preempted_ns"] += dt
                    continue
                tot["spin_ns"] += dt
                h = holder.get(lk)
                if h is not None:
                    tot["waste_lhp_ns" if state[h] != "running" else "spin_useful_ns"] += dt
                    continue
                nxt = free_next.get(lk)
                if fifo and nxt is not None and nxt != w and state[nxt] != "running":
                    tot["waste_lwp_ns"] += dt
                    tot["waste_lwp_" + state[nxt] + "_ns"] += dt
                else:
                    tot["spin_useful_ns"] += dt

    for i, (ts, vm, vcpu, pcpu, kind, lock, reason, _target, _seq) in enumerate(rows):
        if ts < last_ts:
            rp.bad(f"row {i}: time goes back")
        integrate(last_ts, ts)
        last_ts = ts
        v = (vm, vcpu)
        lk = (vm, lock)
        if kind == "vcpu_run":
            if on_pcpu.get(pcpu) is not None:
                rp.bad(f"row {i}: {v} runs on pCPU {pcpu} while {on_pcpu[pcpu]} is on it")
            on_pcpu[pcpu] = v
            set_state(v, "running", ts)
        elif kind in ("vcpu_preempt", "vcpu_halt"):
            if in_guest[v]:
                rp.bad(f"row {i}: {v} leaves its pCPU without a vm_exit")
            if pcpu is not None:
                if on_pcpu.get(pcpu) != v:
                    rp.bad(f"row {i}: {v} leaves pCPU {pcpu} it was not on")
                on_pcpu[pcpu] = None
            set_state(v, "preempted" if kind == "vcpu_preempt" else "halted", ts)
        elif kind == "vcpu_wake":
            if state.get(v) != "halted":
                rp.bad(f"row {i}: {v} woken while {state.get(v)}")
            set_state(v, "preempted", ts)
        elif kind == "vm_entry":
            if state.get(v) != "running" or in_guest[v]:
                rp.bad(f"row {i}: vm_entry of {v} while {state.get(v)}, in guest {in_guest[v]}")
            in_guest[v] = True
        elif kind == "vm_exit":
            if not in_guest[v] or state.get(v) != "running":
                rp.bad(f"row {i}: vm_exit of {v} not in guest")
            in_guest[v] = False
            if reason == "PAUSE":
                tot["n_pause_exits"] += 1
        elif kind in ("lock_contend", "lock_acquire", "lock_release", "pv_halt"):
            if state.get(v) != "running" or not in_guest[v]:
                rp.bad(
                    f"row {i}: {kind} by {v} while {state.get(v)} (in guest {in_guest[v]}): guest code off-CPU"
                )
            if kind == "lock_contend":
                if v in wait_start:
                    rp.bad(f"row {i}: {v} contends while already waiting")
                wait_start[v] = ts
                contend_rel[v] = n_release[lk]
                queue[lk].append(v)
            elif kind == "lock_acquire":
                tot["n_acquisitions"] += 1
                if holder.get(lk) is not None:
                    rp.bad(f"row {i}: {v} acquires {lock:#x} held by {holder[lk]}")
                q = queue[lk]
                handoff = False
                if v in wait_start:
                    tot["n_contended"] += 1
                    rp.contended_waits.append(ts - wait_start.pop(v))
                    handoff = contend_rel.pop(v) < n_release[lk]
                    if fifo and q[0] != v:
                        stolen = (
                            steal
                            and rows[i - 1][4] == "lock_contend"
                            and (rows[i - 1][1], rows[i - 1][2]) == v
                        )
                        if not stolen:
                            rp.bad(f"row {i}: fifo lock granted to {v} ahead of {q[0]}")
                    q.remove(v)
                elif fifo and q and not steal:
                    rp.bad(f"row {i}: {v} took fifo lock {lock:#x} uncontended past {len(q)} waiters")
                if handoff:
                    run_len[lk] += 1
                else:
                    if run_len[lk] >= 2:
                        tot["n_convoys"] += 1
                    run_len[lk] = 0
                holder[lk] = v
                free_next[lk] = None
            elif kind == "lock_release":
                if holder.get(lk) != v:
                    rp.bad(f"row {i}: {v} releases {lock:#x} held by {holder.get(lk)}")
                holder[lk] = None
                n_release[lk] += 1
                nxt = next_owner.get(i)
                free_next[lk] = nxt
                if fifo and nxt is not None and state[nxt] != "running":
                    tot["n_lwp"] += 1
        elif kind == "pv_kick":
            tot["n_kicks"] += 1
            if state.get(v) != "running":
                rp.bad(f"row {i}: kick from {v} while {state.get(v)}")
    integrate(last_ts, t_end)
    for v in state:
        sn[v][state[v]] += t_end - since[v]
    for lk, start in hold_down.items():
        if t_end > start and holder.get(lk) is not None:
            tot["n_lhp"] += 1
    for n in run_len.values():
        if n >= 2:
            tot["n_convoys"] += 1
    rp.state_ns = dict(sn)
    rp.totals = dict(tot)
    return rp
