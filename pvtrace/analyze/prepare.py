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
    ple: pl.DataFrame  # vid, ts, ord, value (new PLE window, cycles)
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
    if events.height < 2 or (events["ts"].is_sorted() and events["seq"].is_sorted()):
        return events
    ordered = events.select(
        ((pl.col("ts").diff() > 0) | ((pl.col("ts").diff() == 0) & (pl.col("seq").diff() > 0))).all()
    ).item()
    return events if ordered else events.sort("ts", "seq")


def prepare(trace: Trace, *, lock_kind: str | None = None) -> Prepared:
    """Split a trace's events into the per-concept tables the analyses use."""
    if lock_kind is not None and lock_kind not in LOCK_KINDS:
        raise UsageError(f"unknown lock kind {lock_kind!r}; expected one of {', '.join(LOCK_KINDS)}")
    ev = canonical_order(trace.events.select(USED_COLUMNS))
    t_start = trace.t_start if trace.t_start is not None else 0
    t_end = trace.t_end if trace.t_end is not None else t_start
    t_end = max(t_end, t_start)
    window = Window(int(t_start), int(t_end))
    ev = ev.with_columns(pl.int_range(pl.len(), dtype=I64).alias("ord"))
    n_events = ev.height
    kinds = {str(k): int(n) for k, n in ev["kind"].value_counts().iter_rows()}
    inside = ev
    if n_events and (ev["ts"][0] < window.t_start or ev["ts"][-1] > window.t_end):
        inside = ev.filter(pl.col("ts").is_between(window.t_start, window.t_end))
    about_vcpu = pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null()

    def take(names: tuple[str, ...], *cols: str, cond: pl.Expr = about_vcpu) -> pl.LazyFrame:
        present = [k for k in names if kinds.get(k)]
        sub = inside.lazy().filter(pl.col("kind").is_in(present) & cond) if present else inside.clear().lazy()
        return sub.select(*cols)

    # One filter per concept, run in parallel.
    states, lock_ev, exits, kicks, yields, pv_halts, ple, lost = pl.collect_all(
        [
            take(STATE_KINDS, "vm", "vcpu", "ts", "ord", "kind", "pcpu", "reason"),
            take(
                LOCK_EVENT_KINDS, "vm", "vcpu", "lock", "ts", "ord", "kind", "reason", "origin",
                cond=about_vcpu & pl.col("lock").is_not_null(),
            ),
            take(EXIT_KINDS, "vm", "vcpu", "ts", "ord", "kind", "reason"),
            take(("pv_kick",), "vm", "vcpu", "target", "ts", "ord"),
            take(("yield_to",), "vm", "vcpu", "target", "ts", "ord"),
            take(("pv_halt",), "vm", "vcpu", "ts", "ord"),
            take(("ple_window",), "vm", "vcpu", "ts", "ord", "value"),
            take(("lost_events",), "origin", "pcpu", "vm", "vcpu", "ts", "ord", "value", cond=pl.lit(True)),
        ]
    )

    lock_ev, notes = _spin_locks_only(lock_ev)
    lock_origins = frozenset(o for o in lock_ev["origin"].unique().cast(STR).to_list() if o is not None)

    # Dense vCPU ids over every (vm, vcpu) any analysis can meet, targets included; the join key
    # stays Categorical (cheap on big tables), names are decoded on the small unique table only.
    pairs = pl.concat(
        [df.select("vm", "vcpu").unique() for df in (states, lock_ev, exits, kicks, yields, pv_halts)]
        + [
            df.filter(pl.col("target").is_not_null()).select("vm", pl.col("target").alias("vcpu")).unique()
            for df in (kicks, yields)
        ]
        + [_declared_vcpus(trace)]
    ).unique()
    vcpus = (
        pairs.with_columns(pl.col("vm").cast(STR).alias("name"))
        .sort("name", "vcpu")
        .with_row_index("vid")
        .select(pl.col("vid").cast(I64), pl.col("name").alias("vm"), "vcpu", pl.col("vm").alias("vm_cat"))
    )

    def with_vid(df: pl.DataFrame | pl.LazyFrame, col: str = "vcpu", name: str = "vid") -> pl.LazyFrame:
        return df.lazy().join(
            vcpus.lazy().select(pl.col("vm_cat").alias("vm"), pl.col("vcpu").alias(col), pl.col("vid").alias(name)),
            on=["vm", col],
            how="left",
            maintain_order="left",
        )

    kinds_by_vm = {name: info.lock_kind for name, info in trace.meta.vms.items()}
    locks = (
        lock_ev.select("vm", "lock")
        .unique()
        .with_columns(pl.col("vm").cast(STR).alias("name"))
        .sort("name", "lock")
        .with_row_index("lid")
        .select(
            pl.col("lid").cast(I64),
            pl.col("name").alias("vm"),
            "lock",
            pl.col("vm").alias("vm_cat"),
            (
                pl.col("name").replace_strict(kinds_by_vm, default="unknown", return_dtype=STR)
                if lock_kind is None
                else pl.lit(lock_kind, STR)
            ).alias("lock_kind"),
        )
    )
    lock_ev = with_vid(lock_ev).join(
        locks.lazy().select(pl.col("vm_cat").alias("vm"), "lock", "lid"),
        on=["vm", "lock"],
        how="left",
        maintain_order="left",
    )
    window.check_keys(max(vcpus.height, locks.height, 1))
    states, lock_ev, exits, kicks, yields, pv_halts, ple = pl.collect_all(
        [
            with_vid(states).select("vid", "ts", "ord", "kind", "pcpu", pl.col("reason").cast(STR)),
            lock_ev.select("lid", "vid", "ts", "ord", "kind"),
            with_vid(exits).select("vid", "ts", "ord", "kind", pl.col("reason").cast(STR)),
            with_vid(with_vid(kicks), "target", "target_vid").select("vid", "target_vid", "ts", "ord"),
            with_vid(with_vid(yields), "target", "target_vid").select("vid", "target_vid", "ts", "ord"),
            with_vid(pv_halts).select("vid", "ts", "ord"),
            with_vid(ple).select("vid", "ts", "ord", "value"),
        ]
    )
    return Prepared(
        window=window,
        n_events=n_events,
        kinds=kinds,
        vcpus=vcpus.drop("vm_cat"),
        locks=locks.drop("vm_cat"),
        states=states,
        lock_events=lock_ev,
        exits=exits,
        kicks=kicks,
        yields=yields,
        pv_halts=pv_halts,
        ple=ple,
        lost=lost.select(pl.col("origin").cast(STR), "pcpu", pl.col("vm").cast(STR), "vcpu", "ts", "ord", "value"),
        cpu_events=ev.lazy().select("ts", "ord", pl.col("origin").cast(STR), "pcpu", pl.col("vm").cast(STR), "vcpu", "kind"),
        event_ts=ev["ts"],
        view=trace.meta.view,
        lock_origins=lock_origins,
        notes=notes,
    )


def _declared_vcpus(trace: Trace) -> pl.DataFrame:
    """(vm, vcpu) pairs the metadata declares, so idle vCPUs still get a timeline."""
    rows = [(name, i) for name, info in trace.meta.vms.items() if info.n_vcpus for i in range(info.n_vcpus)]
    return pl.DataFrame(rows, schema={"vm": STR, "vcpu": I32}, orient="row").with_columns(
        pl.col("vm").cast(pl.Categorical())
    )


def _spin_locks_only(lock_ev: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Drop the events of sleeping locks (contention flags without SPIN, or with MUTEX).

    Spin waste concerns spinning waiters only; a lock address that ever shows a
    sleeping contention (rwsem READ/WRITE, MUTEX) is left out whole.
    """
    contends = lock_ev.filter(pl.col("kind") == "lock_contend")
    flags = contends.select(pl.col("reason").unique().drop_nulls()).to_series()
    text = flags.cast(STR)
    bad = flags.filter(~text.str.contains("SPIN") | text.str.contains("MUTEX"))
    if bad.len() == 0:
        return lock_ev, {}
    sleeping = contends.filter(pl.col("reason").is_in(bad.implode())).select("vm", "lock").unique()
    if sleeping.height == 0:
        return lock_ev, {}
    kept = lock_ev.join(sleeping, on=["vm", "lock"], how="anti", maintain_order="left")
    return kept, {"n_sleeping_lock_events_ignored": lock_ev.height - kept.height}
