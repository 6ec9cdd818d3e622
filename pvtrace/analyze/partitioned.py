"""Analysis of a Parquet trace bigger than memory, a group of VMs at a time.

The vCPUs and locks of one VM never meet another VM's, so every per-VM table of an analysis is
the union of the tables of groups of VMs analyzed on their own. A trace whose analysis would not
fit the memory budget is split, in one pass over the file, into temporary Parquet parts, one set
per group of VMs. Every event keeps `ord`, its position in the whole trace, and each group is
told the whole trace's event count, window, kinds and lock origins. Ties and "just before event
N" positions then compare exactly as in the whole. Groups run two at a time (polars releases the
GIL); their tables and counts are merged, and one summary is built from the merge.

The big tables stay in Parquet files until read (SpilledTables): those the summary does not
read, and waits and pause_exits, whose share of the summary is a few sums that each group adds
(summary.table_sums). What a partitioned analysis holds grows far slower than the trace
(benchmarks/README.md).

Host-wide results are computed once for the whole trace:
- exit_reasons, from each group's per-reason sums;
- the pCPU timeline and what ran in a preempted vCPU's place (context.py), from the placement
  events only (a few percent of the trace).

A trace is left whole, and analyze_parquet() reads it the usual way, when:
- it has host lost-event markers: a host window blinds every vCPU of any VM that could run on the
  pCPU;
- it is out of canonical order;
- its columns are not in the canonical types;
- it fits the budget.
One VM bigger than a group is analyzed a time window at a time, cut at its quiet points
(windows.py); where such a cut cannot be exact yet, it stays one group.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from pvtrace.analyze import context, windows
from pvtrace.analyze.exits import merge_exit_reasons
from pvtrace.analyze.fidelity import capabilities
from pvtrace.analyze.lock_kind import in_handoff_order
from pvtrace.analyze.prepare import (
    LOCK_EVENT_KINDS,
    SLICE_ROWS,
    USED_COLUMNS,
    EventSource,
    Prepared,
    _canonical_types,
    _footer_extent,
    _kind_counts,
    _spin_locks_only,
    ordered_after,
    prepare_source,
    source_of_parquet,
)
from pvtrace.analyze.result import Analysis, empty_table
from pvtrace.analyze.run import STEPS, Measured, added, finish, measure
from pvtrace.analyze.waste import in_waste_order
from pvtrace.errors import UsageError
from pvtrace.trace import TraceMeta

I64, STR = pl.Int64(), pl.String()

# Peak memory of analyze_parquet() per event (5.35 GiB at 50M events, benchmarks/README.md): a
# group gets at most budget / (BYTES_PER_EVENT * WORKERS) events.
BYTES_PER_EVENT = 115
WORKERS = 2
PLACEMENT_KINDS = ("vcpu_run", "vcpu_preempt", "vcpu_halt")
# The biggest tables, written to disk as each group finishes: the summary reads none of them but
# through the sums each group adds (summary.table_sums). So are vm_exits, pcpu_timeline and
# incidents, the context tables built after the summary.
SPILLED = ("vcpu_states", "holds", "yields", "waits", "pause_exits")
# Tables whose rows come in time order in the whole analysis: the merge sorts them again (stably:
# rows of one group keep their order, so only ties of the key across VMs can differ in order).
TIME_ORDER = {
    "waits": ["start"],
    "pause_exits": ["ts"],
    "kicks": ["ts"],
    "yields": ["ts"],
    "lost_windows": ["start", "end"],
    "vm_exits": ["start"],
}


def default_budget() -> int:
    """Half the memory available now (MemAvailable), else 8 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 8 << 30


def parse_budget(text: str) -> int:
    """A size in bytes from `8G`, `512M`, `800K` or a number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1
    if value <= 0:
        raise UsageError(f"--memory-budget must be a size such as 8G or 512M, not {text!r}")
    return int(value)


def plan(path: Path | str, meta: TraceMeta, budget: int) -> list[list[str]] | None:
    """Groups of VM names (in name order) to analyze one at a time, or None when the trace is
    analyzed whole (it fits the budget, or cannot be split exactly: see the module doc)."""
    if not _canonical_types(path) or _footer_extent(path)[0] * BYTES_PER_EVENT <= budget:
        return None
    scan = pl.scan_parquet(path, glob=False)
    host_lost = (pl.col("kind") == "lost_events") & (pl.col("origin") != "guest")
    if scan.filter(host_lost).select(pl.len()).collect(engine="streaming").item():
        return None
    per_vm = scan.group_by(pl.col("vm").cast(STR)).agg(pl.len()).collect(engine="streaming")
    rows = {vm: 0 for vm in meta.vms} | {vm: int(c) for vm, c in per_vm.iter_rows() if vm is not None}
    limit = group_rows(budget)
    groups: list[list[str]] = []
    size = limit
    for vm in sorted(rows):
        if size + rows[vm] > limit:
            groups.append([])
            size = 0
        groups[-1].append(vm)
        size += rows[vm]
    return groups if len(groups) > 1 or rows[groups[0][0]] > limit else None


def group_rows(budget: int) -> int:
    """The most events a group (or a time window of one VM) gets under a memory budget."""
    return max(budget // (BYTES_PER_EVENT * WORKERS), 1)


@dataclass
class _Split:
    """The trace written as one set of Parquet parts per group of VMs, and what is whole-trace."""

    files: list[list[Path]]
    rows: list[int]
    n_events: int
    kinds: dict[str, int]
    lock_origins: frozenset[str]
    first_ts: int | None
    last_ts: int | None


def analyze_partitioned(
    path: Path | str,
    meta: TraceMeta,
    groups: list[list[str]],
    *,
    lock_kind: str | None = None,
    kind_given: bool = False,
    unaligned: str | None = None,
    progress: Callable[[str], None] | None = None,
    window_rows: int | None = None,
) -> Analysis | None:
    """The analysis of the trace at `path` (pvtrace Parquet, canonical types), one group of VMs at a
    time, a VM bigger than `window_rows` events a time window at a time; None when the file is
    out of canonical order (it cannot be split as it is)."""
    done = progress or (lambda step: None)
    out = SpilledTables(Path(tempfile.mkdtemp(prefix="pvtrace-tables-")))
    with tempfile.TemporaryDirectory(prefix="pvtrace-partitions-") as tmp:
        split = _split(Path(path), groups, meta, Path(tmp))
        if split is None:
            return None
        all_ts = _WholeTs(path)

        def one(i: int) -> tuple[Measured, dict[str, pl.DataFrame], object]:
            return _analyze_group(
                split, i, groups[i], meta, (lock_kind, kind_given, unaligned), window_rows, all_ts, out
            )

        with ThreadPoolExecutor(WORKERS, thread_name_prefix="pvtrace-partition") as pool:
            parts = list(pool.map(one, range(len(groups))))
    for step in STEPS[:-1]:
        done(step)
    prep = parts[0][2]
    caps = capabilities(prep)
    result = finish(_merge([m for m, _, _ in parts], out), caps, prep, done, unaligned=unaligned)
    names = set(pl.read_parquet_schema(path))
    callers = [c.pop("lock_callers") for _, c, _ in parts if "lock_callers" in c]
    if callers:
        result.tables["lock_callers"] = context.in_wait_order(pl.concat(callers))
        # a median does not add up over groups: it is taken over every group's waits (the
        # warning is added with the trace's own, run.analyze_parquet)
        delays = pl.concat([c.pop("stack_delays") for _, c, _ in parts])
        result.summary.extra["stack_cost"] = context.stack_cost(delays)
    result.tables["vm_exits"] = _OnDisk("vm_exits", [f for _, c, _ in parts for f in c["vm_exits"].files])
    del parts
    placed = (
        pl.scan_parquet(path, glob=False)
        .filter(
            pl.col("kind").is_in(PLACEMENT_KINDS)
            & pl.col("pcpu").is_not_null()
            & pl.col("vcpu").is_not_null()
        )
        .select("ts", "kind", "vm", "vcpu", "pcpu")
        .collect(engine="streaming")  # never the whole columns at once
        .lazy()
    )
    if "pcpu" in names:
        result.tables["pcpu_timeline"] = out.spill("pcpu_timeline", context.pcpu_timeline(placed))
    incidents = context.incidents(
        result.table("lhp_incidents"), result.table("lwp_incidents"), placed if "pcpu" in names else None
    )
    result.tables["incidents"] = out.spill("incidents", incidents)
    return result


def _split(path: Path, groups: list[list[str]], meta: TraceMeta, tmp: Path) -> _Split | None:
    """One pass over the file, a slice at a time: each slice's rows, with their whole-trace `ord`,
    go to their group's parts (events of no VM to the first group); the kinds are counted, the
    lock origins collected, the canonical order checked (None: out of order)."""
    group_of = {vm: i for i, g in enumerate(groups) for vm in g}
    whole = source_of_parquet(path)
    n, first, last_ts = whole.n_events, whole.first_ts, whole.last_ts
    scan = pl.scan_parquet(path, glob=False)
    files: list[list[Path]] = [[] for _ in groups]
    rows = [0] * len(groups)
    kinds: Counter = Counter()
    lock_keys, last = [], None
    lock_cond = (
        pl.col("kind").is_in(LOCK_EVENT_KINDS)
        & pl.col("vm").is_not_null()
        & pl.col("vcpu").is_not_null()
        & pl.col("lock").is_not_null()
    )
    if n:  # the window prepare_source() takes the lock events of
        t_start = meta.t_start if meta.t_start is not None else first
        t_end = max(meta.t_end if meta.t_end is not None else last_ts, t_start)
        lock_cond &= pl.col("ts").is_between(t_start, t_end)
    names = scan.collect_schema().names()
    cols = [pl.col(c) for c in USED_COLUMNS]
    if {"event", "args"} <= set(names):  # lock_callers reads the stacks: only those rows keep them
        stack = (pl.col("kind") == "other") & (pl.col("event").cast(STR) == "kernel_stack")
        cols += [pl.when(stack).then(pl.col(c)).alias(c) for c in ("event", "args")]
    group = pl.col("vm").replace_strict(group_of, default=0, return_dtype=pl.Int32()).fill_null(0)
    for offset in range(0, n, SLICE_ROWS):
        chunk = (
            scan.slice(offset, SLICE_ROWS)
            .select(*cols, pl.int_range(offset, offset + pl.len(), dtype=I64).alias("ord"))
            .collect()
        )
        last = ordered_after(chunk, last)
        if last is None:
            return None
        kinds.update(_kind_counts(chunk["kind"]))
        lock_keys.append(chunk.filter(lock_cond).select("vm", "lock", "kind", "reason", "origin").unique())
        of = chunk.select(group).to_series()
        for g in of.unique().to_list():  # a filter per group: much cheaper than partition_by here
            part = chunk.filter(of == g)
            file = tmp / f"g{g}-{offset}.parquet"
            part.write_parquet(file, compression="uncompressed", statistics=False)
            files[g].append(file)
            rows[g] += part.height
    # the origins of lock events, as prepare() sees them in the whole trace: sleeping locks dropped
    keys = pl.concat(lock_keys).unique() if lock_keys else pl.DataFrame()
    origins = _spin_locks_only(keys)[0]["origin"].unique().cast(STR).to_list() if keys.height else []
    return _Split(
        files=files,
        rows=rows,
        n_events=n,
        kinds={k: c for k, c in kinds.items() if c},
        lock_origins=frozenset(o for o in origins if o is not None),
        first_ts=first,
        last_ts=last_ts,
    )


@dataclass
class _OnDisk:
    """A result table kept in Parquet files (one per group, in group order) until read, and what is
    done to it as it is read (SpilledTables.transform)."""

    name: str
    files: list[Path]
    then: tuple[Callable[[pl.DataFrame], pl.DataFrame], ...] = ()

    def read(self) -> pl.DataFrame:
        table = (
            _in_time_order(pl.read_parquet(self.files), self.name) if self.files else empty_table(self.name)
        )
        for step in self.then:
            table = step(table)
        return table


class SpilledTables(MutableMapping):
    """The result tables of a partitioned analysis: the big ones that the summary does not read
    (SPILLED, and the context tables) stay in Parquet files, read on each access, so they never
    all sit in memory at once. The folder goes when the mapping does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._tables: dict[str, pl.DataFrame | _OnDisk] = {}
        weakref.finalize(self, shutil.rmtree, folder, True)

    def spill(self, name: str, table: pl.DataFrame, part: str = "") -> _OnDisk:
        file = self.folder / f"{name}{part}.parquet"
        table.write_parquet(file, compression="lz4")
        return _OnDisk(name, [file])

    def transform(self, name: str, step: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
        """tables[name] = step(tables[name]), done as it is read when the table is on disk."""
        table = self._tables[name]
        if isinstance(table, _OnDisk):
            self._tables[name] = replace(table, then=(*table.then, step))
        else:
            self._tables[name] = step(table)

    def __getitem__(self, name: str) -> pl.DataFrame:
        table = self._tables[name]
        return table.read() if isinstance(table, _OnDisk) else table

    def __setitem__(self, name: str, table: pl.DataFrame | _OnDisk) -> None:
        self._tables[name] = table

    def __delitem__(self, name: str) -> None:
        del self._tables[name]

    def __iter__(self):
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)


class _WholeTs:
    """The ts of every event of the trace, read once when a group first needs them (holders
    inferred at a time take the position of the first event at or after it) and shared."""

    def __init__(self, path: Path | str) -> None:
        self._path, self._lock, self._ts = path, threading.Lock(), None

    def __call__(self) -> pl.Series:
        with self._lock:
            if self._ts is None:
                self._ts = pl.scan_parquet(self._path, glob=False).select("ts").collect().to_series()
        return self._ts


def _analyze_group(
    split: _Split,
    i: int,
    vms: list[str],
    meta: TraceMeta,
    options: tuple[str | None, bool, str | None],
    window_rows: int | None,
    all_ts: _WholeTs,
    out: SpilledTables,
):
    """One group's measured tables (the SPILLED ones on disk) and per-VM context tables, and its
    Prepared (whose window, event count, kinds and lock origins are the whole trace's). `options`:
    lock_kind, kind_given, unaligned (as analyze_partitioned takes them)."""
    lock_kind, kind_given, unaligned = options
    any_file = next(f for files in split.files for f in files)
    frame = pl.scan_parquet(split.files[i] or any_file)
    if not split.files[i]:  # declared VMs without events
        frame = frame.clear()
    group_meta = replace(meta, vms={vm: info for vm, info in meta.vms.items() if vm in vms})

    def prepared(events: pl.LazyFrame, n: int) -> Prepared:
        src = EventSource(
            frame=events, n_events=n, kinds={}, first_ts=split.first_ts, last_ts=split.last_ts, eager=False
        )
        prep = prepare_source(src, group_meta, lock_kind=lock_kind)
        prep.n_events, prep.kinds, prep.lock_origins, prep.all_ts = (
            split.n_events,
            split.kinds,
            split.lock_origins,
            all_ts,
        )
        return prep

    def measured_of(prep: Prepared, span: tuple[int, int] | None = None) -> Measured:
        caps = capabilities(prep)
        return measure(prep, caps, lambda step: None, kind_given=kind_given, unaligned=unaligned, span=span)

    def spill(name: str, table: pl.DataFrame, part: str) -> _OnDisk:
        return out.spill(name, table, f"-{i}{part}")

    events = frame.select(*USED_COLUMNS, "ord")
    cuts = None
    if len(vms) == 1 and window_rows:
        cuts = windows.window_cuts(events, vms[0], meta, lock_kind, split.rows[i], window_rows)
    if cuts:
        measured, prep = windows.measure_windows(
            events, vms[0], cuts, lambda ev: prepared(ev.lazy(), ev.height), measured_of, spill
        )
    else:
        prep = prepared(events, split.rows[i])
        measured = measured_of(prep)
    ctx = {"vm_exits": out.spill("vm_exits", context.vm_exits(frame), f"-{i}")}
    waits = measured.tables["waits"]
    if {"event", "args"} <= set(frame.collect_schema().names()):
        tied = context.tie_stacks(frame, waits if isinstance(waits, pl.DataFrame) else waits.read())
        ctx["lock_callers"] = context.lock_callers(tied)
        ctx["stack_delays"] = context.stack_delays(tied)
    for name in SPILLED:
        if isinstance(measured.tables[name], pl.DataFrame):  # a VM in windows has them on disk already
            measured.tables[name] = out.spill(name, measured.tables[name], f"-{i}")
    return measured, ctx, prep if i == 0 else None  # finish() needs one of them


def _in_time_order(table: pl.DataFrame, name: str) -> pl.DataFrame:
    """Groups' rows (in group order) of a time-ordered table sorted again by time (TIME_ORDER)."""
    key = TIME_ORDER.get(name)
    return table.sort(key, maintain_order=True) if key else table


def _merge(parts: list[Measured], tables: SpilledTables) -> Measured:
    """The groups' tables (into `tables`), counts and sums as the whole trace's."""
    for name in list(parts[0].tables):  # each group's copy is dropped once merged: one copy at a time
        pieces = [m.tables.pop(name) for m in parts]
        if isinstance(pieces[0], _OnDisk):  # the steps of a VM in windows apply to every group's rows
            steps = tuple(dict.fromkeys(step for p in pieces for step in p.then))
            tables[name] = _OnDisk(name, [f for p in pieces for f in p.files], steps)
        else:
            tables[name] = _in_time_order(pl.concat(pieces, how="vertical", rechunk=True), name)
    tables["exit_reasons"] = merge_exit_reasons(pl.concat([m.exit_parts for m in parts]))
    tables["waste_by_lock"] = in_waste_order(tables["waste_by_lock"])
    tables["lock_kinds"] = in_handoff_order(tables["lock_kinds"])

    return Measured(
        tables=tables,
        counts=added([m.counts for m in parts]),
        sums=added([m.sums for m in parts]),
        host_estimates=added([m.host_estimates for m in parts]),
        exit_parts=pl.concat([m.exit_parts for m in parts]),
        lock_evidence=pl.concat([m.lock_evidence for m in parts]),
    )
