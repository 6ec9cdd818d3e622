"""One VM bigger than a group of a partitioned analysis, analyzed a time window at a time.

The VM is cut at quiet points (quiet_points.py): no lock of the VM is held or waited for there
and no lost-event window is open, so every wait, hold, incident, convoy and lost window lies
inside one window. What crosses a cut is carried as original events, with their whole-trace ords:
- into a window, each vCPU's last state events before it (its last explicit state, and a wake
  after it), its PLE window in force and its last pv halt;
- out of it, a lookahead of each vCPU's next run (kick latency, incident ends), next state event
  (the end of its last state piece) and next vm_entry when it is in an exit (exit duration).
Each window is measured over the whole trace's window with its vCPU state pieces clipped to the
window's time span, so pieces that cross a cut are joined again when the windows are merged, and
the time sums add up. Per-lock and per-vCPU aggregates are rebuilt from the windows' rows and sums.

A VM stays one group (analyze_partitioned's usual path) when a window cut cannot be exact yet:
- its lock kinds are not given (trace metadata or --lock-kind): inferring them needs the order
  evidence of the whole VM before any window is measured (not built);
- it has 2 vCPUs: queue-jump tries (lock_kind.queue_jumps) use a contention rate over the whole
  VM, which does not add over windows;
- it has vCPUs or targets outside the ones the metadata declares (each window must time the same
  vCPUs);
- a requested cut has no quiet point near it (a lock that is never free, releases not traced).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import polars as pl

from pvtrace.analyze.exits import merge_exit_reasons
from pvtrace.analyze.intervals import merge_equal
from pvtrace.analyze.lock_kind import classify, lock_kinds_table
from pvtrace.analyze.prepare import STATE_KINDS, Prepared
from pvtrace.analyze.quiet_points import place_cuts, quiet_cuts
from pvtrace.analyze.run import Measured, added
from pvtrace.analyze.waste import SPLIT_COLUMNS, in_waste_order, wait_percentiles, waste_by_vm
from pvtrace.schema import LOCK_KINDS
from pvtrace.trace import TraceMeta

I64 = pl.Int64()
# A cut moves at most this share of a window's events to reach a quiet point.
REACH = 4
# Per-VM sums of the summary that are not added over windows: each window has them whole.
WHOLE_VM_SUMS = ("n_vcpus", "vcpu_ns")
# Tables whose rows each come from one window, in the whole analysis's order: by lock, then start.
ROW_ORDER = ("lhp_incidents", "lwp_incidents", "convoys")


def window_cuts(
    frame: pl.LazyFrame, vm: str, meta: TraceMeta, lock_kind: str | None, rows: int, limit: int
) -> list[int] | None:
    """Whole-trace ords at which the VM's windows of about `limit` events start; None when the VM
    is analyzed whole (it fits, or a cut cannot be exact: see the module doc)."""
    info = meta.vms.get(vm)
    given = lock_kind if lock_kind is not None else (info.lock_kind if info else None)
    if rows <= limit or info is None or given not in set(LOCK_KINDS) - {"unknown"}:
        return None
    if info.n_vcpus == 2:  # queue-jump tries (lock_kind.queue_jumps): a rate over the whole VM
        return None
    ev = frame.filter(pl.col("vm").cast(pl.String) == vm)
    ids = ev.select(
        pl.min_horizontal(pl.col("vcpu").min(), pl.col("target").min()).alias("low"),
        pl.max_horizontal(pl.col("vcpu").max(), pl.col("target").max()).alias("high"),
    )
    low, high = ids.collect().row(0)
    if low is not None and (low < 0 or high >= info.n_vcpus):
        return None
    quiet = quiet_cuts(ev.select("ord", "ts", "kind", "vcpu", "pcpu", "lock", "origin"))
    if meta.t_start is not None:  # windows inside the trace's window: every event of one is analyzed
        quiet = quiet.filter(pl.col("ts") > meta.t_start)
    if meta.t_end is not None:
        quiet = quiet.filter(pl.col("ts") < meta.t_end)
    return place_cuts(quiet, list(range(limit, rows - limit // REACH, limit)), limit // REACH) or None


def measure_windows(
    frame: pl.LazyFrame,
    vm: str,
    cuts: list[int],
    prepare: Callable[[pl.DataFrame], Prepared],
    measure: Callable[[Prepared, tuple[int, int]], Measured],
    spill: Callable[[str, pl.DataFrame, str], Any],
) -> tuple[Measured, Prepared]:
    """The VM's measured tables and counts, a window at a time, as one measure() of it whole would
    give them; and the first window's Prepared (whose window is the whole trace's). Each window's
    events are read once (a slice of `frame`, in ord order), and the next one's ahead of time.
    `spill(name, table, part)` keeps a window's big table on disk (partitioned.SpilledTables)."""
    vcpus = frame.filter(_of_vm(vm)).select(pl.col("vcpu").unique()).collect()
    ords = frame.select("ord").collect().to_series()
    edges = [0, *ords.search_sorted(pl.Series(cuts, dtype=I64)).to_list(), ords.len()]
    del ords

    def core(k: int) -> pl.DataFrame | None:
        return frame.slice(edges[k], edges[k + 1] - edges[k]).collect() if k + 1 < len(edges) else None

    carried, this = frame.clear().collect(), core(0)
    parts, first = [], None
    for k in range(len(edges) - 1):
        following = core(k + 1)
        rest = frame.slice(edges[k + 2]) if k + 2 < len(edges) - 1 else None
        ahead = _lookahead(following, rest, vm, vcpus) if following is not None else carried.clear()
        events = pl.concat([carried, this, ahead]).unique("ord", keep="first").sort("ord")
        prep = prepare(events)
        t0 = prep.window.t_start if k == 0 else int(this["ts"][0])
        t1 = prep.window.t_end if following is None else int(following["ts"][0])
        m = measure(prep, (t0, t1))
        m.tables.update({name: spill(name, m.tables[name], f"-w{k}") for name in ON_READ})
        parts.append(m)
        first = first or prep
        carried = _last_per_vcpu(pl.concat([carried, this]), vm)
        this = following
        del events, prep, m
    return _merge_windows(parts), first


def _of_vm(vm: str) -> pl.Expr:
    return (pl.col("vm").cast(pl.String) == vm) & pl.col("vcpu").is_not_null()


def _last_per_vcpu(events: pl.DataFrame, vm: str) -> pl.DataFrame:
    """What a window carries in: per vCPU, its last state event and last explicit state (a wake's
    state depends on it), its last PLE window and its last pv halt."""
    kind = pl.col("kind").cast(pl.String)
    state = kind.is_in(STATE_KINDS)
    classes = (state, state & (kind != "vcpu_wake"), kind == "ple_window", kind == "pv_halt")
    ev = events.filter(_of_vm(vm))
    last = [ev.filter(c).filter(pl.col("ord") == pl.col("ord").max().over("vcpu")) for c in classes]
    return pl.concat(last).unique("ord").sort("ord")


# What a window looks ahead to past its end, per vCPU: its next run (kick latency, incident
# ends), its next state event (the end of its last state piece) and its next exit event, kept
# when it is a vm_entry (the end of an exit open at the cut).
AHEAD = {"run": ("vcpu_run",), "state": STATE_KINDS, "exit": ("vm_exit", "vm_entry")}


def _lookahead(
    following: pl.DataFrame, rest: pl.LazyFrame | None, vm: str, vcpus: pl.DataFrame
) -> pl.DataFrame:
    """The lookahead events (AHEAD) of a window: found in the next window's events, else (for the
    vCPUs, of `vcpus`, not found there) in the rest of the VM's."""
    found = _firsts(following.lazy(), vm)
    if rest is not None:
        seen = found.group_by("vcpu").agg(pl.col("_class").n_unique())
        short = vcpus.join(seen.filter(pl.col("_class") == len(AHEAD)), on="vcpu", how="anti")["vcpu"]
        if short.len():
            later = _firsts(rest.filter(pl.col("vcpu").is_in(short.implode())), vm)
            found = pl.concat([found, later.join(found, on=["vcpu", "_class"], how="anti")])
    kind = pl.col("kind").cast(pl.String)
    return found.filter((pl.col("_class") != "exit") | (kind == "vm_entry")).drop("_class").unique("ord")


def _firsts(ev: pl.LazyFrame, vm: str) -> pl.DataFrame:
    kind = pl.col("kind").cast(pl.String)
    first = pl.col("ord") == pl.col("ord").min().over("vcpu")
    rows = [
        ev.filter(_of_vm(vm) & kind.is_in(kinds)).filter(first).with_columns(pl.lit(name).alias("_class"))
        for name, kinds in AHEAD.items()
    ]
    return pl.concat(pl.collect_all(rows))


def _merge_windows(parts: list[Measured]) -> Measured:
    """The windows' tables and counts as the VM's (the big ones stay on disk, ON_READ)."""
    tables: dict[str, Any] = {}
    for name in parts[0].tables:
        pieces = [m.tables[name] for m in parts]
        if name in ON_READ:
            tables[name] = replace(pieces[0], files=[f for p in pieces for f in p.files], then=ON_READ[name])
        else:
            tables[name] = pl.concat(pieces, how="vertical", rechunk=True)
    for name in ROW_ORDER:
        tables[name] = tables[name].sort("lock", "start", maintain_order=True)
    waits = pl.read_parquet(tables["waits"].files, columns=["vm", "lock", "dur", "truncated"])
    tables["waste_by_lock"] = _waste_by_lock(tables["waste_by_lock"], waits)
    del waits
    by_vcpu = tables["waste_by_vcpu"]
    tables["waste_by_vcpu"] = (
        by_vcpu.group_by("vm", "vcpu", maintain_order=True)
        .agg(pl.col(c).sum() for c in by_vcpu.columns[2:])
        .sort("vm", "vcpu")
        .cast(by_vcpu.schema)
    )
    tables["waste_by_vm"] = waste_by_vm(tables["waste_by_vcpu"]).cast(tables["waste_by_vm"].schema)
    evidence = pl.concat([m.lock_evidence for m in parts])
    tables["lock_kinds"] = _lock_kinds(evidence).cast(tables["lock_kinds"].schema)
    exit_parts = pl.concat([m.exit_parts for m in parts])
    tables["exit_reasons"] = merge_exit_reasons(exit_parts).cast(tables["exit_reasons"].schema)

    sums = added([m.sums for m in parts]) | {k: parts[0].sums[k] for k in WHOLE_VM_SUMS}
    sums["n_locks"] = evidence.select("lock").n_unique()
    return Measured(
        tables=tables,
        counts=added([m.counts for m in parts]),
        sums=sums,
        host_estimates=added([m.host_estimates for m in parts]),
        exit_parts=exit_parts,
        lock_evidence=evidence,
    )


def joined_states(table: pl.DataFrame) -> pl.DataFrame:
    """vcpu_states of windows read back: each vCPU's pieces in time order, and the two pieces a cut
    split (same state, one ending where the other starts) one piece again. Rows of VMs not cut are
    left as they are (their pieces already differ in state from the one before)."""
    key = (pl.col("vm").rank("dense").cast(I64) * (1 << 32) + pl.col("vcpu").cast(I64)).alias("_key")
    ordered = table.with_columns(key).sort("_key", "start", maintain_order=True)
    joined = merge_equal(ordered, key="_key", values=["state"])
    return joined.with_columns((pl.col("end") - pl.col("start")).alias("dur")).select(table.columns)


def holds_in_order(table: pl.DataFrame) -> pl.DataFrame:
    """holds of windows read back in the whole analysis's order: by VM, lock, then start."""
    return table.sort("vm", "lock", "start", maintain_order=True)


# The big tables of each window, kept on disk, and what is done to their rows as they are read
# (in the order of the whole analysis; waits, pause_exits and yields are put in time order then).
ON_READ = {
    "vcpu_states": (joined_states,),
    "holds": (holds_in_order,),
    "waits": (),
    "pause_exits": (),
    "yields": (),
}


def _waste_by_lock(rows: pl.DataFrame, waits: pl.DataFrame) -> pl.DataFrame:
    """waste_by_lock of the windows' rows: counts and spin added, wait percentiles over all waits."""
    added = ["n_acquisitions", "n_contended", *SPLIT_COLUMNS]
    sums = rows.group_by("vm", "lock", maintain_order=True).agg(pl.col(c).sum() for c in added)
    pct = waits.filter(~pl.col("truncated")).group_by("vm", "lock").agg(*wait_percentiles())
    merged = sums.join(pct, on=["vm", "lock"], how="left").sort("vm", "lock")
    return in_waste_order(merged.select(rows.columns).cast(rows.schema))


def _lock_kinds(evidence: pl.DataFrame) -> pl.DataFrame:
    """lock_kinds from the windows' evidence (vm, lock, lock_kind, source, n_handoffs, n_in_order,
    jump_tries, jump_seen) added per lock; the kinds are given, so each window has the VM's."""
    added = evidence.group_by("vm", "lock", maintain_order=True).agg(
        pl.col("lock_kind", "source").first(),
        pl.col("n_handoffs", "n_in_order", "jump_tries", "jump_seen").sum(),
    )
    decided = classify(
        added.sort("vm", "lock").with_row_index("lid").with_columns(pl.col("lid").cast(I64)), states=True
    )
    locks = SimpleNamespace(locks=decided.select("lid", "vm", "lock"))  # all lock_kinds_table reads
    return lock_kinds_table(decided.drop("vm", "lock"), locks)
