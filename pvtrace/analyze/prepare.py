"""Canonical events narrowed to what the analyses read, with dense integer ids.

Every analysis works on small per-concept tables (vCPU state changes, lock
events, exits, kicks, ...) keyed by dense ids: `vid` for a vCPU (vm, vcpu) and
`lid` for a lock (vm, lock). `ord` is an event's position in canonical
(ts, seq) order, so "the state at event E" is a lookup strictly before E's ord.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from pvtrace.analyze.clock_join import unjoined_vms, untraced_vms
from pvtrace.analyze.guest_preemption import GuestPreemption
from pvtrace.analyze.host_window import host_window
from pvtrace.analyze.intervals import Window, key_order
from pvtrace.errors import FormatError, UsageError
from pvtrace.schema import EVENT_SCHEMA, EXIT_KINDS, KIND, LOCK_EVENT_KINDS, LOCK_KINDS, STATE_KINDS
from pvtrace.trace import Trace, TraceMeta, declared_vcpus, read_events

I64, I32, STR = pl.Int64(), pl.Int32(), pl.String()
LOCK_KIND = pl.Enum(LOCK_KINDS)

COARSE_TICK_NS = 1_000  # ftrace's and perf's default timestamps: microseconds
# From a vCPU thread's sched_switch in to its first guest instruction (vcpu_load, kvm_entry,
# VMRESUME): 0.5-1 us on current hardware, so nothing the guest does is earlier.
ENTRY_NS = 1_000
USED_COLUMNS = ("ts", "seq", "vm", "vcpu", "pcpu", "kind", "lock", "reason", "target", "value", "origin")


@dataclass
class Prepared:
    """The events of one trace, split by concept and keyed by dense ids."""

    window: Window
    n_events: int
    kinds: dict[str, int]  # events per kind present
    vcpus: pl.DataFrame  # vid, vm (String), vcpu, vm_id (dense VM number, in VM name order)
    locks: pl.DataFrame  # lid, vm (String), lock, lock_kind (Enum of LOCK_KINDS), vm_id
    states: pl.DataFrame  # vid, ts, ord, kind, pcpu, reason (Categorical)
    lock_events: pl.DataFrame  # lid, vid, ts, ord, kind
    exits: (
        pl.DataFrame
    )  # vid, ts, ord, kind, reason (Categorical), value (vm_exit: 1 = guest in user mode), pcpu
    kicks: pl.DataFrame  # vid, target_vid, ts, ord
    yields: pl.DataFrame  # vid, target_vid, ts, ord
    pv_halts: pl.DataFrame  # vid, ts, ord
    ple: pl.DataFrame  # vid, ts, ord, value (new PLE window, cycles)
    lost: pl.DataFrame  # origin, pcpu, vm, vcpu, ts, ord, value
    cpu_events: pl.LazyFrame  # ts, ord, origin, pcpu, vm, vcpu of every event (for lost windows)
    source: EventSource  # where the events came from (event_ts reads it again when needed)
    view: str  # what the producer could see (TraceMeta.view)
    lock_origins: frozenset[str]  # origins of the lock events (sim, host, guest)
    notes: dict[str, int] = field(default_factory=dict)
    guest_preemption: GuestPreemption | None = None  # states inferred from guest ticks (guest_preemption.py)
    all_ts: Callable[[], pl.Series] | None = None  # event_ts of the whole trace, for one VM partition of it
    unjoined: dict[str, str] = field(
        default_factory=dict
    )  # guest VMs left out of the join: the fix (clock_join)
    untraced: dict[str, str] = field(default_factory=dict)  # host VMs no guest input covers: the fix
    host_cut: str | None = None  # the window cut to a host trace that covers less than its guests'

    @property
    def n_vcpus(self) -> int:
        return self.vcpus.height

    @property
    def stops_to_a_tick(self) -> bool:
        """vCPU stops are placed from guest ticks: known to a tick (milliseconds), not to a hold
        (microseconds), too coarse for the rules that time a stop against lock events."""
        return self.guest_preemption is not None

    @cached_property
    def coarse_lock_clock(self) -> pl.Series:
        """Per vm_id: whether its lock events are printed to the microsecond (nearly every
        timestamp whole microseconds plus the guest's one clock offset, as ftrace and perf print
        them; the few moved into their vCPU's runs by ingest differ), so that events less than a
        microsecond apart are not in time order."""
        n_vms = int(self.vcpus["vm_id"].max()) + 1 if self.vcpus.height else 0
        # per VM, the count of each sub-microsecond part: one bincount (a grouped value_counts of
        # every lock event cost 0.15 s at 10M events)
        ev = self.lock_events.select(self.lock_attr("vm_id"), (pl.col("ts") % COARSE_TICK_NS).alias("_sub"))
        at = ev["vm_id"].to_numpy() * COARSE_TICK_NS + ev["_sub"].to_numpy()
        counts = np.bincount(at, minlength=n_vms * COARSE_TICK_NS).reshape(n_vms, COARSE_TICK_NS)
        n = counts.sum(axis=1)
        flags = (counts.max(axis=1, initial=0) >= 0.9 * n) & (n >= 3)
        return pl.Series("coarse", flags, dtype=pl.Boolean())

    def coarse_lock(self, lid: str = "lid") -> pl.Expr:
        """Whether each row's lock (`lid`) is printed to the microsecond (its VM's coarse_lock_clock)."""
        return pl.lit(self.coarse_lock_clock).gather(self.lock_attr("vm_id", lid))

    def entry_slack(self, lid: str = "lid") -> pl.Expr:
        """How long after a vCPU's resume, as printed, its guest may still be entering: ENTRY_NS,
        plus a microsecond where the lock's clock is printed to the microsecond (the resume and
        the guest's event are each cut to their own clock's microsecond)."""
        return pl.lit(ENTRY_NS) + self.coarse_lock(lid).cast(pl.Int64()) * COARSE_TICK_NS

    @cached_property
    def exits_by_vcpu(self) -> np.ndarray | None:
        """The row order of `exits` by vid, canonical within each (intervals.key_order), taken once
        for the guest mode at stops and the exit durations."""
        return key_order(self.exits["vid"]) if self.exits.height > 1 else None

    @property
    def n_locks(self) -> int:
        return self.locks.height

    @property
    def ord_size(self) -> int:
        return self.n_events + 1

    def vcpu_attr(self, column: str, vid: str = "vid") -> pl.Expr:
        """Column `column` of the vCPU table for each row's `vid` (null for null): vids are the
        table's row numbers, so this is a gather, much cheaper than a join."""
        return pl.lit(self.vcpus[column]).gather(pl.col(vid))

    def lock_attr(self, column: str, lid: str = "lid") -> pl.Expr:
        """Column `column` of the lock table for each row's `lid` (a gather, like vcpu_attr)."""
        return pl.lit(self.locks[column]).gather(pl.col(lid))

    def lock_vcpu_key(self, vid: str = "vid", lid: str = "lid") -> pl.Expr:
        """One Int64 per (lock, vCPU) pair, ordered by lock then vCPU: sorts and lookups by the pair
        on one column instead of two."""
        return pl.col(lid) * (self.n_vcpus + 1) + pl.col(vid)

    @cached_property
    def event_ts(self) -> pl.Series:
        """ts of every event in canonical order (sorted); read when first needed."""
        if self.all_ts is not None:
            return self.all_ts()
        return self.source.frame.select("ts").collect().to_series()


def canonical_order(events: pl.DataFrame) -> pl.DataFrame:
    """Events sorted by (ts, seq), sorting only when they are not already."""
    if events.height < 2 or (events["ts"].is_sorted() and events["seq"].is_sorted()):
        return events
    ordered = events.select(
        ((pl.col("ts").diff() > 0) | ((pl.col("ts").diff() == 0) & (pl.col("seq").diff() > 0))).all()
    ).item()
    return events if ordered else events.sort("ts", "seq")


@dataclass
class EventSource:
    """The canonical events an analysis reads: USED_COLUMNS plus `ord`, in canonical order.

    `frame` is lazy so that a Parquet file is read concept by concept (only the rows and
    columns each needs) instead of whole: the memory of a big trace stays bounded.
    """

    frame: pl.LazyFrame
    n_events: int
    kinds: dict[str, int]
    first_ts: int | None
    last_ts: int | None
    eager: bool  # frame is an in-memory table (concepts may be filtered in parallel)
    scan: pl.LazyFrame | None = None  # a file's rows without `ord` (slices read only their rows)
    path: Path | None = None  # the file, if the events come from one

    def rows(self, offset: int, length: int) -> pl.DataFrame:
        """Rows [offset, offset + length) in canonical order, with `ord`."""
        if self.scan is None:
            return self.frame.slice(offset, length).collect()
        return (
            self.scan.slice(offset, length)
            .with_row_index("ord", offset=offset)
            .with_columns(pl.col("ord").cast(I64))
            .collect()
        )


def source_of_events(events: pl.DataFrame) -> EventSource:
    """An in-memory events table as a source."""
    ev = canonical_order(events.select(USED_COLUMNS)).with_columns(
        pl.int_range(pl.len(), dtype=I64).alias("ord")
    )
    n = ev.height
    return EventSource(
        frame=ev.lazy(),
        n_events=n,
        kinds={str(k): int(c) for k, c in ev["kind"].value_counts().iter_rows()},
        first_ts=int(ev["ts"][0]) if n else None,
        last_ts=int(ev["ts"][-1]) if n else None,
        eager=True,
    )


def source_of_parquet(path: Path | str) -> EventSource:
    """A pvtrace Parquet file as a lazy source. Nothing is read here: the row count and the first
    and last ts come from the footer; the order is checked, and kinds counted, while the file
    is split into concepts (prepare_source reads it whole instead if it is out of order). A file
    whose event columns have other types (not written by pvtrace) is read whole and cast here."""
    if not _canonical_types(path):
        return source_of_events(read_events(path, list(USED_COLUMNS)))
    lf = pl.scan_parquet(path, glob=False).select(USED_COLUMNS)
    n, first, last = _footer_extent(path)
    if n and (first is None or last is None):  # no statistics: read the ends
        first = int(lf.select("ts").head(1).collect().item())
        last = int(lf.select("ts").tail(1).collect().item())
    frame = lf.with_row_index("ord").with_columns(pl.col("ord").cast(I64))
    return EventSource(
        frame=frame,
        n_events=n,
        kinds={},
        first_ts=first,
        last_ts=last,
        eager=False,
        scan=lf,
        path=Path(path),
    )


def _canonical_types(path: Path | str) -> bool:
    """Whether the file's event columns have the canonical types (every file pvtrace writes); a
    file that lacks one of those columns is a FormatError."""
    schema = pl.read_parquet_schema(path)
    missing = [c for c in USED_COLUMNS if c not in schema]
    if missing:
        raise FormatError(f"Parquet file is not pvtrace events: no column {', '.join(missing)}", str(path))
    return all(schema[c] == EVENT_SCHEMA[c] for c in USED_COLUMNS)


def _footer_extent(path: Path | str) -> tuple[int, int | None, int | None]:
    """(rows, ts of the first row group's min, ts of the last row group's max) from the footer;
    these are the first and last ts when the file is in canonical order."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    groups = [g for g in groups if g.num_rows]
    if not groups:
        return meta.num_rows, None, None
    col = meta.schema.names.index("ts")
    ends = [g.column(col).statistics for g in (groups[0], groups[-1])]
    if not all(st is not None and st.has_min_max for st in ends):
        return meta.num_rows, None, None
    return meta.num_rows, int(ends[0].min), int(ends[1].max)


def prepare(trace: Trace, *, lock_kind: str | None = None) -> Prepared:
    """Split a trace's events into the per-concept tables the analyses use."""
    return prepare_source(source_of_events(trace.events), trace.meta, lock_kind=lock_kind)


def prepare_source(src: EventSource, meta: TraceMeta, *, lock_kind: str | None = None) -> Prepared:
    """Split a source's events into the per-concept tables the analyses use."""
    if lock_kind is not None and lock_kind not in LOCK_KINDS:
        raise UsageError(f"unknown lock kind {lock_kind!r}; expected one of {', '.join(LOCK_KINDS)}")
    t_start = meta.t_start if meta.t_start is not None else (src.first_ts or 0)
    t_end = meta.t_end if meta.t_end is not None else (src.last_ts if src.last_ts is not None else t_start)
    t_end = max(t_end, t_start)
    t_start, t_end, host_cut = host_window(meta, int(t_start), int(t_end))
    window = Window(int(t_start), int(t_end))
    n_events = src.n_events
    in_window = pl.lit(True)
    if n_events and (src.first_ts < window.t_start or src.last_ts > window.t_end):
        in_window = pl.col("ts").is_between(window.t_start, window.t_end)
    about_vcpu = pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null()

    def take(names: tuple[str, ...], *cols: str, cond: pl.Expr = about_vcpu):
        keep = pl.col("kind").is_in(names) & cond & in_window
        return lambda frame: frame.filter(keep).select(*cols)

    concepts = [
        take(STATE_KINDS, "vm", "vcpu", "ts", "ord", "kind", "pcpu", "reason"),
        take(
            LOCK_EVENT_KINDS,
            "vm",
            "vcpu",
            "lock",
            "ts",
            "ord",
            "kind",
            "reason",
            "origin",
            cond=about_vcpu & pl.col("lock").is_not_null(),
        ),
        take(EXIT_KINDS, "vm", "vcpu", "ts", "ord", "kind", "reason", "value", "pcpu"),
        take(("pv_kick",), "vm", "vcpu", "target", "ts", "ord"),
        take(("yield_to",), "vm", "vcpu", "target", "ts", "ord"),
        take(("pv_halt",), "vm", "vcpu", "ts", "ord"),
        take(("ple_window",), "vm", "vcpu", "ts", "ord", "value"),
        take(("lost_events",), "origin", "pcpu", "vm", "vcpu", "ts", "ord", "value", cond=pl.lit(True)),
        # hypercalls of threads the ingester could not tie to a vCPU: reported, not silently dropped
        take(("pv_kick", "yield_to"), "kind", cond=~about_vcpu),
    ]
    split = _split_concepts(src, concepts)
    if split is None:  # a file out of canonical order: read it whole and sort it
        events = read_events(src.path, list(USED_COLUMNS))
        return prepare_source(source_of_events(events), meta, lock_kind=lock_kind)
    (states, lock_ev, exits, kicks, yields, pv_halts, ple, lost, unmapped), kinds = split
    lock_ev, notes = _spin_locks_only(lock_ev)
    for kind, name in (("pv_kick", "n_kicks_unmapped"), ("yield_to", "n_yields_unmapped")):
        if n := int((unmapped["kind"] == kind).sum()):
            notes[name] = n
    lock_origins = frozenset(o for o in lock_ev["origin"].unique().cast(STR).to_list() if o is not None)

    # Dense vCPU ids over every (vm, vcpu) any analysis can meet, targets included; the join key
    # stays Categorical (cheap on big tables), names are decoded on the small unique table only.
    seen = pl.concat(
        [
            df.filter(_vcpu_key(pl.col("vm"), pl.col("vcpu")).is_first_distinct()).select("vm", "vcpu")
            for df in (states, lock_ev, exits, kicks, yields, pv_halts)
            if df.height or df is states  # (an empty table adds no pair: no query for it)
        ]
        + [
            df.filter(pl.col("target").is_not_null())
            .filter(_vcpu_key(pl.col("vm"), pl.col("target")).is_first_distinct())
            .select("vm", pl.col("target").alias("vcpu"))
            for df in (kicks, yields)
            if df.height
        ]
    ).unique()
    pairs = pl.concat([seen, _declared_vcpus(meta, seen)]).unique()
    vcpus = (
        pairs.with_columns(pl.col("vm").cast(STR).alias("name"))
        .sort("name", "vcpu")
        .with_row_index("vid")
        .select(pl.col("vid").cast(I64), pl.col("name").alias("vm"), "vcpu", pl.col("vm").alias("vm_cat"))
        .with_columns(
            (pl.col("vm") != pl.col("vm").shift(1)).fill_null(True).cum_sum().cast(I64).sub(1).alias("vm_id")
        )
    )

    vid_of = _vid_lookup(vcpus)

    def with_vid(df: pl.DataFrame, col: str = "vcpu", name: str = "vid") -> pl.DataFrame:
        # every (vm, col) pair of these tables is in `vcpus` (collected from them above)
        known = (df[col].min() or 0) >= 0
        return df.with_columns(vid_of(pl.col("vm"), pl.col(col), known=known).alias(name))

    kinds_by_vm = {name: info.lock_kind for name, info in meta.vms.items()}
    lock_ev = lock_ev.with_columns(_lock_keys(lock_ev))
    locks = (
        lock_ev.filter(pl.col("_lk").is_first_distinct())
        .select("vm", "lock", "_lk")
        .with_columns(pl.col("vm").cast(STR).alias("name"))
        .sort("name", "lock")
        .with_row_index("lid")
        .select(
            pl.col("lid").cast(I64),
            pl.col("name").alias("vm"),
            "lock",
            "_lk",
            (
                pl.col("name").replace_strict(kinds_by_vm, default="unknown", return_dtype=LOCK_KIND)
                if lock_kind is None
                else pl.lit(lock_kind, LOCK_KIND)
            ).alias("lock_kind"),
        )
    )
    lid_of = _id_lookup(locks["_lk"], locks["lid"])
    lock_ev = with_vid(lock_ev).with_columns(lid_of(pl.col("_lk"), known=True).alias("lid"))
    vm_ids = vcpus.select("vm", "vm_id").unique()
    locks = locks.drop("_lk").join(vm_ids, on="vm", how="left", maintain_order="left")
    window.check_keys(max(vcpus.height, locks.height, 1))
    states = with_vid(states).select("vid", "ts", "ord", "kind", "pcpu", "reason")
    lock_ev = lock_ev.select("lid", "vid", "ts", "ord", "kind")
    exits = with_vid(exits).select("vid", "ts", "ord", "kind", "reason", "value", "pcpu")
    kicks = with_vid(with_vid(kicks), "target", "target_vid").select("vid", "target_vid", "ts", "ord")
    yields = with_vid(with_vid(yields), "target", "target_vid").select("vid", "target_vid", "ts", "ord")
    pv_halts = with_vid(pv_halts).select("vid", "ts", "ord")
    ple = with_vid(ple).select("vid", "ts", "ord", "value")
    return Prepared(
        window=window,
        n_events=n_events,
        kinds=kinds,
        vcpus=vcpus.drop("vm_cat"),
        locks=locks,
        states=states,
        lock_events=lock_ev,
        exits=exits,
        kicks=kicks,
        yields=yields,
        pv_halts=pv_halts,
        ple=ple,
        lost=lost.select(
            pl.col("origin").cast(STR), "pcpu", pl.col("vm").cast(STR), "vcpu", "ts", "ord", "value"
        ),
        cpu_events=(src.frame if lost.height else src.frame.clear()).select(
            "ts", "ord", pl.col("origin").cast(STR), "pcpu", pl.col("vm").cast(STR), "vcpu", "kind"
        ),
        source=src,
        view=meta.view,
        lock_origins=lock_origins,
        notes=notes,
        unjoined=unjoined_vms(meta),
        untraced=untraced_vms(meta),
        host_cut=host_cut,
    )


# Rows of a file read at once when splitting it into concepts: the file is decoded once,
# and memory holds one slice of all columns plus the concept tables (which hold fewer).
SLICE_ROWS = 2_000_000


def ordered_after(chunk: pl.DataFrame, last: tuple | None) -> tuple | None:
    """The (ts, seq) of a slice's last row when its rows are in canonical order and come after
    `last` (the previous slice's); None when they do not. A file is checked slice by slice."""
    edge = chunk.select(pl.col("ts", "seq").first()).row(0)
    ordered = chunk["ts"].is_sorted() and chunk["seq"].is_sorted()
    if not ordered or (last and (edge[0] < last[0] or edge[1] < last[1])):
        return None
    return chunk.select(pl.col("ts", "seq").last()).row(0)


def _split_concepts(src: EventSource, concepts: list) -> tuple[list[pl.DataFrame], dict[str, int]] | None:
    """Each concept's rows of the source, and the events per kind: one filter per concept, run in
    parallel on a table in memory; a file is read slice by slice (each slice split, the pieces
    concatenated), checking its canonical order as it goes (None: it is out of order)."""
    if src.eager:
        return pl.collect_all([concept(src.frame) for concept in concepts]), src.kinds
    parts, kinds, last = [], Counter(), None
    for offset in range(0, max(src.n_events, 1), SLICE_ROWS):
        chunk = src.rows(offset, SLICE_ROWS)
        if chunk.height:
            last = ordered_after(chunk, last)
            if last is None:
                return None
        kinds.update(_kind_counts(chunk["kind"]))
        lazy = chunk.lazy()
        parts.append(pl.collect_all([concept(lazy) for concept in concepts]))
    return (
        [pl.concat(frames, rechunk=True) for frames in zip(*parts, strict=True)],
        {k: c for k, c in kinds.items() if c},
    )


def _kind_counts(kind: pl.Series) -> dict[str, int]:
    """Events per kind: a bincount of the Enum codes (a file pvtrace wrote), else value_counts."""
    if kind.dtype == KIND:
        counts = np.bincount(kind.to_physical().to_numpy(), minlength=len(KIND.categories))
        return dict(zip(KIND.categories, counts.tolist(), strict=True))
    return {str(k): int(c) for k, c in kind.value_counts().iter_rows()}


def _vcpu_key(vm: pl.Expr, vcpu: pl.Expr) -> pl.Expr:
    """(vm, vcpu) packed in one Int64: the categorical code of the VM, then the vCPU index."""
    return vm.to_physical().cast(I64) * (1 << 32) + vcpu.cast(I64)


def _id_lookup(keys: pl.Series, ids: pl.Series):
    """A function key expression -> id expression, for distinct non-negative Int64 keys (null:
    not a known key). Keys packed from small codes are dense enough for one gather from a
    table indexed by key (much faster than a join on every event table); sparse ones take a
    hash replace. `known=True` vouches that every non-null key is one of `keys` (no range check:
    a third of the cost on the event tables)."""
    size = int(keys.max() or 0) + 1
    if size > max(1 << 22, 4 * keys.len()):
        return lambda key, known=False: key.replace_strict(keys, ids, default=None, return_dtype=I64)
    dense = pl.repeat(None, size, dtype=I64, eager=True).scatter(keys, ids)

    def find(key: pl.Expr, known: bool = False) -> pl.Expr:
        return pl.lit(dense).gather(key if known else pl.when((key >= 0) & (key < size)).then(key))

    return find


def _vid_lookup(vcpus: pl.DataFrame):
    """A function (vm, vcpu) expressions -> the dense vCPU id expression (null: not a known vCPU),
    keyed by VM category code * (max vcpu + 1) + vcpu."""
    n_cpu = int(vcpus["vcpu"].max() or 0) + 1
    at = vcpus.select(pl.col("vm_cat").to_physical().cast(I64) * n_cpu + pl.col("vcpu").cast(I64))
    vid_of = _id_lookup(at.to_series(), vcpus["vid"])

    def lookup(vm: pl.Expr, vcpu: pl.Expr, known: bool = False) -> pl.Expr:
        cpu = vcpu.cast(I64)
        if known:  # every non-null (vm, vcpu) is in `vcpus`
            return vid_of(vm.to_physical().cast(I64) * n_cpu + cpu, known=True)
        return vid_of(pl.when((cpu >= 0) & (cpu < n_cpu)).then(vm.to_physical().cast(I64) * n_cpu + cpu))

    return lookup


def _lock_keys(lock_ev: pl.DataFrame) -> pl.Series:
    """(vm, lock address) of each lock event packed in one Int64: the VM category code, then the
    address's rank among the trace's lock addresses (a join on the pair would be much slower)."""
    addrs = lock_ev["lock"].unique().sort()
    rank = addrs.search_sorted(lock_ev["lock"]).cast(I64)
    return (lock_ev["vm"].to_physical().cast(I64) * max(addrs.len(), 1) + rank).alias("_lk")


def _declared_vcpus(meta: TraceMeta, seen: pl.DataFrame) -> pl.DataFrame:
    """(vm, vcpu) pairs the metadata declares (trace.declared_vcpus), so idle vCPUs still get a
    timeline."""
    declared = declared_vcpus(meta, set(seen["vm"].cast(STR).drop_nulls().unique().to_list()))
    rows = [(name, i) for name, n in declared.items() for i in range(n)]
    return pl.DataFrame(rows, schema={"vm": STR, "vcpu": I32}, orient="row").with_columns(
        pl.col("vm").cast(pl.Categorical())
    )


def _spin_locks_only(lock_ev: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Drop the events of sleeping locks (contention flags without SPIN, or with MUTEX).

    Spin waste concerns spinning waiters only; a lock address that ever shows a
    sleeping contention (rwsem READ/WRITE, MUTEX) is left out whole.
    """
    contends = lock_ev.lazy().filter(pl.col("kind") == "lock_contend")
    flags = contends.select(pl.col("reason").unique().drop_nulls()).collect().to_series()
    text = flags.cast(STR)
    bad = flags.filter(~text.str.contains("SPIN") | text.str.contains("MUTEX"))
    if bad.len() == 0:
        return lock_ev, {}
    sleeping = contends.filter(pl.col("reason").is_in(bad.implode())).select("vm", "lock").unique().collect()
    if sleeping.height == 0:
        return lock_ev, {}
    kept = lock_ev.join(sleeping, on=["vm", "lock"], how="anti", maintain_order="left")
    return kept, {"n_sleeping_lock_events_ignored": lock_ev.height - kept.height}
