"""Ground truth from the simulator's own bookkeeping, following docs/metrics.md.

Nothing here reads events: the engine tells each lock's ledger (LockBook) when
the lock, its holder, its next owner or one of its waiters changes, and the
ledger integrates spin, waste and incidents as time passes. Spin on a lock at
an instant has one class for every waiter (docs/metrics.md, Spin
classification): the holder's state decides while the lock is held; while it
is free, the state of the next owner fixed at the release. Whether a vCPU
queued at a release really is the next owner is known only at the next
acquisition (a pv-qspinlock slow-path entrant may steal the lock), so a free
stretch's lwp spin is kept aside until then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pvtrace.outputs import atomic_file
from pvtrace.schema import CONVOY_SCHEMA, LHP_INCIDENT_SCHEMA, LWP_INCIDENT_SCHEMA
from pvtrace.simulate.output import lock_address
from pvtrace.simulate.tasks import HALTED, PREEMPTED, RUNNING, STATE_NAMES
from pvtrace.summary import TOTAL_KEYS, Summary


class Gap:
    """A free stretch of a fifo lock after a release that had queued waiters."""

    __slots__ = ("cand", "incident", "lwp_halt", "lwp_pre", "run_t", "start", "state", "waiters", "wake_t")

    def __init__(self, start: int, cand, incident: bool):
        self.start = start
        self.cand = cand
        self.incident = incident  # the next owner was not running at the release
        self.state = cand.state
        self.wake_t: int | None = None
        self.run_t: int | None = None
        self.lwp_pre = 0
        self.lwp_halt = 0
        self.waiters: set[int] = set()


class LhpOpen:
    """An LHP incident in progress."""

    __slots__ = ("holder", "start", "state", "waiters", "waste")

    def __init__(self, start: int, holder: int, state: int):
        self.start = start
        self.holder = holder
        self.state = state
        self.waste = 0
        self.waiters: set[int] = set()


class LockBook:
    """The ledger of one lock: integrals of its waiters' time by class, incidents, convoys."""

    __slots__ = (
        "gap",
        "last_t",
        "lhp",
        "lhp_open",
        "lhp_release",
        "lock",
        "lwp_halt",
        "lwp_pre",
        "n_contended",
        "n_halt",
        "n_pre",
        "n_run",
        "run_cause",
        "run_end",
        "run_len",
        "run_peak",
        "run_start",
        "truth",
        "useful",
        "w_halted",
        "w_preempted",
    )

    def __init__(self, lock, truth: Truth):
        self.lock = lock
        self.truth = truth
        self.last_t = 0
        self.n_run = self.n_halt = self.n_pre = 0
        self.useful = self.lhp = self.lwp_pre = self.lwp_halt = 0
        self.w_halted = self.w_preempted = 0
        self.n_contended = 0
        self.lhp_open: LhpOpen | None = None
        self.gap: Gap | None = None
        self.lhp_release = -1  # number of the release that ends a hold with an LHP incident
        self.run_len = 0
        self.run_start = self.run_end = self.run_peak = 0
        self.run_cause = "none"

    # -- time integration ---------------------------------------------------------------
    def update(self, t: int) -> None:
        """Integrate every waiter's time on this lock up to t, by class."""
        dt = t - self.last_t
        if dt <= 0:
            return
        self.last_t = t
        n = self.n_run
        if n:
            spin = dt * n
            lock = self.lock
            holder = lock.holder
            if holder is not None:
                if holder.state == RUNNING:
                    self.useful += spin
                else:
                    self.lhp += spin
                    inc = self.lhp_open
                    inc.waste += spin
                    inc.waiters.update(w.gid for w in lock.waiters if w.state == RUNNING)
            else:
                g = self.gap
                if g is None or g.cand.state == RUNNING:
                    self.useful += spin
                else:
                    if g.cand.state == PREEMPTED:
                        g.lwp_pre += spin
                    else:
                        g.lwp_halt += spin
                    g.waiters.update(w.gid for w in lock.waiters if w.state == RUNNING)
        if self.n_halt:
            self.w_halted += dt * self.n_halt
        if self.n_pre:
            self.w_preempted += dt * self.n_pre

    def waiter_state(self, old: int, new: int) -> None:
        """A waiter of this lock changed state (call update first)."""
        if old == RUNNING:
            self.n_run -= 1
        elif old == HALTED:
            self.n_halt -= 1
        else:
            self.n_pre -= 1
        if new == RUNNING:
            self.n_run += 1
        elif new == HALTED:
            self.n_halt += 1
        else:
            self.n_pre += 1

    # -- holder ---------------------------------------------------------------------------
    def holder_stops(self, t: int, holder, state: int) -> None:
        """The holder stops running while holding: an LHP stretch opens."""
        if self.lhp_open is None:
            self.lhp_open = LhpOpen(t, holder.idx, state)

    def holder_runs(self, t: int) -> None:
        """The holder runs again: the LHP stretch closes."""
        inc = self.lhp_open
        if inc is None:
            return
        self.lhp_open = None
        if t > inc.start:
            self.lhp_release = self.lock.n_release + 1
            self.truth.add_lhp(self.lock, inc, t, truncated=False)

    # -- acquisitions and releases ---------------------------------------------------------
    def released_to(self, t: int, cand) -> None:
        """A release of a fifo lock with waiters: cand, the first queued, is the next owner-to-be."""
        self.gap = Gap(t, cand, incident=cand.state != RUNNING)

    def cand_wakes(self, t: int) -> None:
        g = self.gap
        if g is not None and g.run_t is None:
            g.wake_t = t

    def cand_runs(self, t: int) -> None:
        g = self.gap
        if g is not None and g.run_t is None:
            g.run_t = t

    def acquired(self, t: int, acquirer, contended: bool, handoff: bool) -> None:
        """An acquisition at t (call update first; the acquirer still counts as a waiter)."""
        lwp_ended = False
        g = self.gap
        if g is not None:
            self.gap = None
            if g.cand is acquirer:
                self.lwp_pre += g.lwp_pre
                self.lwp_halt += g.lwp_halt
                if g.incident:
                    lwp_ended = True
                    self.truth.add_lwp(self.lock, g, t, truncated=False)
            else:
                self.useful += g.lwp_pre + g.lwp_halt
        if contended:
            self.n_contended += 1
        if handoff:
            if self.run_len == 0:
                lock = self.lock
                self.run_start = lock.last_release_t
                self.run_peak = 0
                self.run_cause = (
                    "lhp" if self.lhp_release == lock.n_release else ("lwp" if lwp_ended else "none")
                )
            self.run_len += 1
            self.run_end = t
            n_open = len(self.lock.waiters)
            if n_open > self.run_peak:
                self.run_peak = n_open
        elif self.run_len:
            self.close_run()

    def close_run(self) -> None:
        if self.run_len >= 2:
            self.truth.add_convoy(self.lock, self)
        self.run_len = 0

    def finish(self, t: int) -> int:
        """Close everything at the end of the run; returns how many items were truncated."""
        self.update(t)
        lock = self.lock
        n_trunc = len(lock.waiters) + (1 if lock.holder is not None else 0)
        inc = self.lhp_open
        if inc is not None:
            self.lhp_open = None
            if t > inc.start:
                self.truth.add_lhp(lock, inc, t, truncated=True)
                n_trunc += 1
        g = self.gap
        if g is not None:  # no next acquisition in the run: no next owner (docs/metrics.md)
            self.gap = None
            self.useful += g.lwp_pre + g.lwp_halt
        self.close_run()
        return n_trunc


@dataclass
class GroundTruth:
    """What really happened in a run: the summary plus the tables behind it."""

    summary: Summary
    completion_ns: dict[str, int | None]
    ops_done: dict[str, int]
    vcpus: pl.DataFrame
    locks: pl.DataFrame
    lhp_incidents: pl.DataFrame
    lwp_incidents: pl.DataFrame
    convoys: pl.DataFrame
    t_end: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = self.summary.to_dict()
        out["t_end"] = self.t_end
        out["completion_ns"] = self.completion_ns
        out["ops_done"] = self.ops_done
        for name in ("vcpus", "locks", "lhp_incidents", "lwp_incidents", "convoys"):
            out[name] = getattr(self, name).to_dicts()
        out.update(self.extra)
        return out

    def write_json(self, path: Path | str, force: bool = False) -> None:
        with atomic_file(path, force) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n", encoding="utf-8")


class Truth:
    """Run-wide ground-truth collector: incident rows, counters, and the final assembly."""

    def __init__(self, vm_names: list[str]):
        self.vm_names = vm_names
        self.lhp_rows: list[tuple] = []
        self.lwp_rows: list[tuple] = []
        self.convoy_rows: list[tuple] = []
        self.n_pause_exits = 0
        self.n_kicks = 0
        self.n_yields = 0
        # TLB shootdowns (simulator-only: the analyzer does not compute them)
        self.n_shootdowns = 0
        self.n_ipi_skipped = 0
        self.ipi_wait_ns = 0
        self.ipi_wait_preempted_ns = 0
        self.ipi_wait_max_ns = 0

    def add_shootdown(self, rec, t: int) -> None:
        """A shootdown's sender stops waiting at t: its wait, and the part a preempted target caused."""
        wait = t - rec.t_send
        self.ipi_wait_ns += wait
        self.ipi_wait_preempted_ns += rec.pre_ns
        self.ipi_wait_max_ns = max(self.ipi_wait_max_ns, wait)

    def add_lhp(self, lock, inc: LhpOpen, end: int, truncated: bool) -> None:
        n = len(inc.waiters)
        self.lhp_rows.append(
            (
                self.vm_names[lock.vm],
                lock_address(lock.index),
                inc.holder,
                STATE_NAMES[inc.state],
                inc.start,
                end,
                end - inc.start,
                n,
                inc.waste,
                n > 0,
                truncated,
                False,  # the simulator knows every holder
            )
        )

    def add_lwp(self, lock, g: Gap, end: int, truncated: bool) -> None:
        n = len(g.waiters)
        run_t = g.run_t if g.run_t is not None else end
        woke = g.start if g.wake_t is None or g.wake_t < g.start else g.wake_t
        self.lwp_rows.append(
            (
                self.vm_names[lock.vm],
                lock_address(lock.index),
                g.cand.idx,
                STATE_NAMES[g.state],
                g.start,
                end,
                end - g.start,
                max(0, run_t - woke),
                n,
                g.lwp_pre + g.lwp_halt,
                n > 0,
                truncated,
            )
        )

    def add_convoy(self, lock, book: LockBook) -> None:
        self.convoy_rows.append(
            (
                self.vm_names[lock.vm],
                lock_address(lock.index),
                book.run_start,
                book.run_end,
                book.run_len,
                book.run_peak,
                book.run_cause,
            )
        )

    def assemble(self, t_end: int, vms, extra: dict[str, Any]) -> GroundTruth:
        """Close every ledger at t_end and build the summary and tables."""
        n_trunc = 0
        lock_rows = []
        for vm in vms:
            for lock in vm.locks:
                b = lock.book
                n_trunc += b.finish(t_end)
                lwp = b.lwp_pre + b.lwp_halt
                spin = b.useful + b.lhp + lwp
                lock_rows.append(
                    {
                        "vm": vm.name,
                        "lock": lock_address(lock.index),
                        "n_acquisitions": lock.n_release + (1 if lock.holder is not None else 0),
                        "n_contended": b.n_contended,
                        "wait_ns": spin + b.w_halted + b.w_preempted,
                        "spin_ns": spin,
                        "spin_useful_ns": b.useful,
                        "waste_lhp_ns": b.lhp,
                        "waste_lwp_ns": lwp,
                        "waste_lwp_preempted_ns": b.lwp_pre,
                        "waste_lwp_halted_ns": b.lwp_halt,
                        "spin_unattributed_ns": 0,
                        "wait_halted_ns": b.w_halted,
                        "wait_preempted_ns": b.w_preempted,
                    }
                )
        vcpu_rows = []
        for vm in vms:
            for v in vm.vcpus:
                ns = list(v.state_ns)
                ns[v.state] += t_end - v.state_t
                vcpu_rows.append(
                    {
                        "vm": vm.name,
                        "vcpu": v.idx,
                        "running_ns": ns[RUNNING],
                        "preempted_ns": ns[PREEMPTED],
                        "halted_ns": ns[HALTED],
                        "n_ops": v.n_done,
                    }
                )
        locks = (
            pl.DataFrame(lock_rows, schema_overrides={"lock": pl.UInt64()}) if lock_rows else pl.DataFrame()
        )
        lhp = pl.DataFrame(self.lhp_rows, schema=LHP_INCIDENT_SCHEMA, orient="row").sort(
            "vm", "lock", "start"
        )
        lwp = pl.DataFrame(self.lwp_rows, schema=LWP_INCIDENT_SCHEMA, orient="row").sort(
            "vm", "lock", "start"
        )
        conv = pl.DataFrame(self.convoy_rows, schema=CONVOY_SCHEMA, orient="row").sort("vm", "lock", "start")

        def total(col: str) -> int:
            return int(locks[col].sum()) if locks.height else 0

        totals = {
            "spin_ns": total("spin_ns"),
            "spin_useful_ns": total("spin_useful_ns"),
            "waste_lhp_ns": total("waste_lhp_ns"),
            "waste_lwp_ns": total("waste_lwp_ns"),
            "waste_lwp_preempted_ns": total("waste_lwp_preempted_ns"),
            "waste_lwp_halted_ns": total("waste_lwp_halted_ns"),
            "spin_unattributed_ns": 0,
            "wait_halted_ns": total("wait_halted_ns"),
            "wait_preempted_ns": total("wait_preempted_ns"),
            "n_acquisitions": total("n_acquisitions"),
            "n_contended": total("n_contended"),
            "n_lhp": lhp.height,
            "n_lhp_harmful": int(lhp["harmful"].sum()),
            "n_lwp": lwp.height,
            "n_lwp_preempted": lwp.filter(pl.col("next_owner_state") == "preempted").height,
            "n_lwp_halted": lwp.filter(pl.col("next_owner_state") == "halted").height,
            "n_convoys": conv.height,
            "convoy_len_max": int(conv["length"].max() or 0) if conv.height else 0,
            "n_truncated": n_trunc,
            "n_pause_exits": self.n_pause_exits,
            "n_kicks": self.n_kicks,
        }
        assert set(totals) == set(TOTAL_KEYS)
        summary = Summary(totals=totals, fidelity={k: "exact" for k in TOTAL_KEYS})
        completion = {vm.name: vm.done_t for vm in vms}
        ops_done = {vm.name: sum(v.n_done for v in vm.vcpus) for vm in vms}
        return GroundTruth(
            summary=summary,
            completion_ns=completion,
            ops_done=ops_done,
            vcpus=pl.DataFrame(vcpu_rows),
            locks=locks,
            lhp_incidents=lhp,
            lwp_incidents=lwp,
            convoys=conv,
            t_end=t_end,
            extra={
                **extra,
                "n_yields": self.n_yields,
                "ipi": {
                    "n_shootdowns": self.n_shootdowns,
                    "n_skipped_preempted": self.n_ipi_skipped,
                    "wait_ns": self.ipi_wait_ns,
                    "wait_preempted_ns": self.ipi_wait_preempted_ns,
                    "wait_max_ns": self.ipi_wait_max_ns,
                },
            },
        )
