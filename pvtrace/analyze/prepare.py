"""Canonical events narrowed to what the analyses read, with dense integer ids.

Every analysis works on small per-concept tables (vCPU state changes, lock
events, exits, kicks, ...) keyed by dense ids: `vid` for a vCPU (vm, vcpu) and
`lid` for a lock (vm, lock). `ord` is an event's position in canonical
(ts, seq) order, so "the state at event E" is a lookup strictly before E's ord.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pvtrace.analyze.intervals import Window
from pvtrace.errors import UsageError
from pvtrace.schema import LOCK_KINDS
from pvtrace.trace import Trace

I64, I32, STR = pl.Int64(), pl.Int32(), pl.String()

STATE_KINDS = ("vcpu_run", "vcpu_preempt", "vcpu_halt", "vcpu_wake")
LOCK_EVENT_KINDS = ("lock_contend", "lock_acquire", "lock_release")
EXIT_KINDS = ("vm_exit", "vm_entry")
USED_COLUMNS = ("ts", "seq", "vm", "vcpu", "pcpu", "kind", "lock", "reason", "target", "value", "origin")


@dataclass
class Prepared:
    """The events of one trace, split by concept and keyed by dense ids."""

    window: Window
    n_events: int
    kinds: dict[str, int]  # events per kind present
    vcpus: pl.DataFrame  # vid, vm (String), vcpu
    locks: pl.DataFrame  # lid, vm (String), lock, lock_kind
    states: pl.DataFrame  # vid, ts, ord, kind, pcpu, reason
    lock_events: pl.DataFrame  # lid, vid, ts, ord, kind
    exits: pl.DataFrame  # vid, ts, ord, kind, reason
    kicks: pl.DataFrame  # vid, target_vid, ts, ord
    yields: pl.DataFrame  # vid, target_vid, ts, ord
    pv_halts: pl.DataFrame  # vid, ts, ord
    lost: pl.DataFrame  # origin, pcpu, vm, vcpu, ts, ord, value
    cpu_events: pl.LazyFrame  # ts, ord, origin, pcpu, vm, vcpu of every event (for lost windows)
    event_ts: pl.Series  # ts of every event in canonical order (sorted)
    view: str  # what the producer could see (TraceMeta.view)
    lock_origins: frozenset[str]  # origins of the lock events (sim, host, guest)
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def n_vcpus(self) -> int:
        return self.vcpus.height

    @property
    def n_locks(self) -> int:
        return self.locks.height

    @property
    def ord_size(self) -> int:
        return self.n_events + 1


def canonical_order(events: pl.DataFrame) -> pl.DataFrame:
    """Events sorted by (ts, seq), sorting only when they are not already."""
    if events.height < 2:
        return events
    ordered = events.select(
        ((pl.col("ts").diff() > 0) | ((pl.col("ts").diff() == 0) & (pl.col("seq").diff() > 0))).all()
    ).item()
    return events if ordered else events.sort("ts", "seq")


def _vm_names(vm: pl.Expr) -> pl.Expr:
    return vm.cast(STR)


def prepare(trace: Trace, *, lock_kind: str | None = None) -> Prepared:
    """Split a trace's events into the per-concept tables the analyses use."""
    if lock_kind is not None and lock_kind not in LOCK_KINDS:
        raise UsageError(f"unknown lock kind {lock_kind!r}; expected one of {', '.join(LOCK_KINDS)}")
    ev = canonical_order(trace.events.select(USED_COLUMNS))
    t_start = trace.t_start if trace.t_start is not None else 0
    t_end = trace.t_end if trace.t_end is not None else t_start
    t_end = max(t_end, t_start)
    window = Window(int(t_start), int(t_end))
    ev = ev.with_row_index("ord").with_columns(pl.col("ord").cast(I64))
    n_events = ev.height
    kinds = dict(ev.group_by("kind").len().select(pl.col("kind").cast(STR), "len").iter_rows())
    inside = ev.filter(pl.col("ts").is_between(window.t_start, window.t_end))
    by_kind = {k[0]: df for k, df in inside.partition_by("kind", as_dict=True).items()}

    def take(names: tuple[str, ...]) -> pl.DataFrame:
        parts = [by_kind[k] for k in names if k in by_kind]
        if not parts:
            return inside.clear()
        return pl.concat(parts).sort("ord") if len(parts) > 1 else parts[0]

    states = take(STATE_KINDS).filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
    lock_ev = take(LOCK_EVENT_KINDS).filter(
        pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null() & pl.col("lock").is_not_null()
    )
    exits = take(EXIT_KINDS).filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
    kicks = take(("pv_kick",)).filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
    yields = take(("yield_to",)).filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
    pv_halts = take(("pv_halt",)).filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
    lost = take(("lost_events",))

    lock_ev, notes = _spin_locks_only(lock_ev)
    lock_origins = frozenset(o for o in lock_ev["origin"].cast(STR).unique().to_list() if o is not None)

    # Dense vCPU ids over every (vm, vcpu) any analysis can meet, targets included.
    pairs = pl.concat(
        [
            df.select(_vm_names(pl.col("vm")).alias("vm"), pl.col("vcpu"))
            for df in (states, lock_ev, exits, kicks, yields, pv_halts)
        ]
        + [
            df.filter(pl.col("target").is_not_null()).select(
                _vm_names(pl.col("vm")).alias("vm"), pl.col("target").alias("vcpu")
            )
            for df in (kicks, yields)
        ]
        + [_declared_vcpus(trace)]
    )
    vcpus = pairs.unique().sort("vm", "vcpu").with_row_index("vid").with_columns(pl.col("vid").cast(I64))

    def with_vid(df: pl.DataFrame, col: str = "vcpu", name: str = "vid") -> pl.DataFrame:
        keyed = df.with_columns(_vm_names(pl.col("vm")).alias("_vm"))
        return keyed.join(
            vcpus.select(pl.col("vm").alias("_vm"), pl.col("vcpu").alias(col), pl.col("vid").alias(name)),
            on=["_vm", col],
            how="left",
            maintain_order="left",
        ).drop("_vm")

    kinds_by_vm = {name: info.lock_kind for name, info in trace.meta.vms.items()}
    locks = (
        lock_ev.select(_vm_names(pl.col("vm")).alias("vm"), pl.col("lock"))
        .unique()
        .sort("vm", "lock")
        .with_row_index("lid")
        .with_columns(
            pl.col("lid").cast(I64),
            pl.col("vm")
            .replace_strict(kinds_by_vm, default="unknown", return_dtype=STR)
            .alias("lock_kind")
            if lock_kind is None
            else pl.lit(lock_kind, STR).alias("lock_kind"),
        )
    )
    lock_ev = (
        with_vid(lock_ev)
        .with_columns(_vm_names(pl.col("vm")).alias("_vm"))
        .join(
            locks.select(pl.col("vm").alias("_vm"), "lock", "lid"),
            on=["_vm", "lock"],
            how="left",
            maintain_order="left",
        )
        .select("lid", "vid", "ts", "ord", "kind")
    )
    window.check_keys(max(vcpus.height, locks.height, 1))
    cpu_events = ev.lazy().select("ts", "ord", "origin", "pcpu", "vm", "vcpu")
    return Prepared(
        window=window,
        n_events=n_events,
        kinds=kinds,
        vcpus=vcpus,
        locks=locks,
        states=with_vid(states).select("vid", "ts", "ord", "kind", "pcpu", pl.col("reason").cast(STR)),
        lock_events=lock_ev,
        exits=with_vid(exits).select("vid", "ts", "ord", "kind", pl.col("reason").cast(STR)),
        kicks=with_vid(with_vid(kicks), "target", "target_vid").select("vid", "target_vid", "ts", "ord"),
        yields=with_vid(with_vid(yields), "target", "target_vid").select("vid", "target_vid", "ts", "ord"),
        pv_halts=with_vid(pv_halts).select("vid", "ts", "ord"),
        lost=lost.select(
            pl.col("origin").cast(STR), "pcpu", _vm_names(pl.col("vm")).alias("vm"), "vcpu", "ts", "ord", "value"
        ),
        cpu_events=cpu_events,
        event_ts=ev["ts"],
        view=trace.meta.view,
        lock_origins=lock_origins,
        notes=notes,
    )


def _declared_vcpus(trace: Trace) -> pl.DataFrame:
    """(vm, vcpu) pairs the metadata declares, so idle vCPUs still get a timeline."""
    rows = [(name, i) for name, info in trace.meta.vms.items() if info.n_vcpus for i in range(info.n_vcpus)]
    return pl.DataFrame(rows, schema={"vm": STR, "vcpu": I32}, orient="row")


def _spin_locks_only(lock_ev: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Drop the events of sleeping locks (contention flags without SPIN, or with MUTEX).

    Spin waste concerns spinning waiters only; a lock address that ever shows a
    sleeping contention (rwsem READ/WRITE, MUTEX) is left out whole.
    """
    flags = pl.col("reason").cast(STR)
    sleeping = lock_ev.filter(
        (pl.col("kind") == "lock_contend")
        & flags.is_not_null()
        & (~flags.str.contains("SPIN") | flags.str.contains("MUTEX"))
    ).select("vm", "lock").unique()
    if sleeping.height == 0:
        return lock_ev, {}
    kept = lock_ev.join(sleeping, on=["vm", "lock"], how="anti", maintain_order="left")
    return kept, {"n_sleeping_lock_events_ignored": lock_ev.height - kept.height}
