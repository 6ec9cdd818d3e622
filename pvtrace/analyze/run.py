"""analyze(trace): every interval table, metric and total of one trace, at the best fidelity it allows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pvtrace.analyze import context, perf_tables
from pvtrace.analyze import convoys as convoys_mod
from pvtrace.analyze import exits as exits_mod
from pvtrace.analyze import incidents as incidents_mod
from pvtrace.analyze import locks as locks_mod
from pvtrace.analyze import waste as waste_mod
from pvtrace.analyze.clock_join import (
    clocks_unaligned,
    leave_out,
    left_out_parts,
    left_out_vids,
    untraced_parts,
)
from pvtrace.analyze.count_gaps import add_count_gaps, add_lost_parts
from pvtrace.analyze.fidelity import CROSS_KEYS, Capabilities, capabilities
from pvtrace.analyze.frames import full, with_series
from pvtrace.analyze.guest_lwp import mark_ambiguous_lhp
from pvtrace.analyze.guest_preemption import STATE_KINDS as GUEST_STATE_KINDS
from pvtrace.analyze.guest_preemption import GuestPreemption, has_guest_ticks, with_guest_states
from pvtrace.analyze.hold_inference import infer_holds
from pvtrace.analyze.lock_kind import infer_lock_kinds, kind_summary, lock_kinds_table
from pvtrace.analyze.lost import lost_windows, vcpu_unknown_windows
from pvtrace.analyze.partial import add_parts, kind_gaps
from pvtrace.analyze.prepare import LOCK_KIND, Prepared, prepare, prepare_source, source_of_parquet
from pvtrace.analyze.result import TABLE_SCHEMAS, Analysis, empty_table
from pvtrace.analyze.summary import build_summary, extra_context, state_sums, table_sums
from pvtrace.analyze.vcpu_states import build_states, clipped, state_changes, vcpu_states_table
from pvtrace.guest_signals import TICK_EVENTS
from pvtrace.ingest.problems import skipped_lines
from pvtrace.schema import EVENT_SCHEMA
from pvtrace.summary import TOTAL_KEYS
from pvtrace.trace import Trace, TraceMeta, read_meta, read_trace

STEPS = (
    "prepare",
    "vcpu states",
    "waits and holds",
    "spin classification",
    "incidents",
    "convoys",
    "exits",
    "summary",
)


def analyze(
    trace: Trace,
    *,
    lock_kind: str | None = None,
    pv_spinlocks: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> Analysis:
    """Analyze one trace: interval tables, incidents, convoys, exits and the summary.

    `lock_kind` (fifo, unfair, unknown) overrides the lock kind of every VM.
    `pv_spinlocks` declares whether a guest-only trace's spinlocks are paravirt (guest-inferred level).
    `progress`, if given, is called with each step's name (see STEPS) once it is done.
    """
    n_read = trace.events.height
    trace, guest = _with_guest_states(trace, pv_spinlocks)
    prep = prepare(trace, lock_kind=lock_kind)
    prep.guest_preemption = guest
    result = _run(prep, progress, kind_given=_given(lock_kind), unaligned=clocks_unaligned(trace.meta))
    if guest is not None:  # the events the trace holds, as ingest counts them, not the states inferred
        result.summary.extra["n_events"] = n_read
    return _with_perf_tables(
        _with_context(_with_warnings(result, trace.meta), _context_events(trace.events.lazy())), trace.meta
    )


def _with_guest_states(trace: Trace, pv_spinlocks: bool | None) -> tuple[Trace, GuestPreemption | None]:
    """A guest-only trace with scheduler ticks gets vCPU states inferred from them (guest-inferred)."""
    if trace.events.is_empty() or not has_guest_ticks(trace.events):
        return trace, None
    t_end = trace.meta.t_end if trace.meta.t_end is not None else int(trace.events["ts"].max())
    found = with_guest_states(trace.events, t_end, pv_spinlocks)
    if found is None:
        return trace, None
    events, info = found
    return Trace(events=events, meta=trace.meta), info


def analyze_parquet(
    path: Path | str,
    *,
    lock_kind: str | None = None,
    pv_spinlocks: bool | None = None,
    progress: Callable[[str], None] | None = None,
    memory_budget: int | None = None,
) -> Analysis:
    """analyze() a pvtrace Parquet file without loading it whole: each concept's events are read
    on their own (only the rows and columns it needs), so big traces fit in memory. A trace
    whose analysis would need more than `memory_budget` bytes (default: half the available
    memory) is analyzed a group of VMs at a time, a bigger VM a time window at a time, with the
    same result (analyze/partitioned.py, analyze/windows.py)."""
    from pvtrace.analyze import partitioned

    meta = read_meta(path)
    if _guest_ticks_without_states(path):  # a guest-only capture: small, and its states are inferred
        return analyze(read_trace(path), lock_kind=lock_kind, pv_spinlocks=pv_spinlocks, progress=progress)
    budget = memory_budget if memory_budget is not None else partitioned.default_budget()
    groups = partitioned.plan(path, meta, budget)
    if groups:
        result = partitioned.analyze_partitioned(
            path,
            meta,
            groups,
            lock_kind=lock_kind,
            kind_given=_given(lock_kind),
            unaligned=clocks_unaligned(meta),
            progress=progress,
            window_rows=partitioned.group_rows(budget),
        )
        if result is not None:  # its stack cost, taken over every group's waits, is warned of here
            cost = result.summary.extra.pop("stack_cost", None)
            return _with_perf_tables(_warn_stack_cost(_with_warnings(result, meta), cost), meta)
    prep = prepare_source(source_of_parquet(path), meta, lock_kind=lock_kind)
    # the context tables that need no result are built on the pool's thread meanwhile (the lock
    # chain keeps polars on about one core): from the concept tables when they hold every event
    # those tables read, else (stacks, events of no vCPU or outside the window) read again
    names = set(pl.read_parquet_schema(path))
    events = None if "other" in prep.kinds and {"event", "args"} <= names else _context_of_concepts(prep)
    if events is None:
        ctx = _POOL.submit(_context_events, _scan_events(path))
    else:
        ctx = _POOL.submit(_context_tables, events, names - {"event", "args"})
    result = _run(prep, progress, kind_given=_given(lock_kind), unaligned=clocks_unaligned(meta))
    return _with_perf_tables(_with_context(_with_warnings(result, meta), ctx.result()), meta)


def _scan_events(path: Path | str) -> pl.LazyFrame:
    """The file's events, lazily, in the canonical types (a file not written by pvtrace may hold
    them as other types: text timestamps, 64-bit ids)."""
    lf = pl.scan_parquet(path, glob=False)
    names = lf.collect_schema().names()
    return lf.with_columns(pl.col(c).cast(EVENT_SCHEMA[c]) for c in names if c in EVENT_SCHEMA)


def _given(lock_kind: str | None) -> bool:
    """--lock-kind fifo/unfair fixes every lock's kind; unknown asks for inference from the trace."""
    return lock_kind is not None and lock_kind != "unknown"


def _with_perf_tables(result: Analysis, meta: TraceMeta) -> Analysis:
    """perf kvm stat / perf lock contention tables of the inputs, as tables and in the summary."""
    tables = perf_tables.perf_tables(meta.extra)
    result.tables.update(tables)
    result.summary.extra.update(perf_tables.summary_json(tables))
    return result


@dataclass
class _Context:
    """The few events the context tables read (placements, exits, stacks), read once, and the
    tables built from them alone."""

    events: pl.LazyFrame
    names: set[str]  # the trace's columns
    tables: dict[str, pl.DataFrame]  # pcpu_timeline (with pCPUs), vm_exits


def _context_events(events: pl.LazyFrame) -> _Context:
    """Read the context events once and build the tables that need nothing else."""
    names = set(events.collect_schema().names())
    wanted = pl.col("kind").is_in(context.CONTEXT_KINDS)
    if {"event", "args"} <= names:
        wanted |= (pl.col("kind") == "other") & (pl.col("event") == "kernel_stack")  # no cast: 10x cheaper
    cols = [c for c in (*context.CONTEXT_COLUMNS, "event", "args") if c in names]
    return _context_tables(events.filter(wanted).select(cols), names)


def _context_of_concepts(prep: Prepared) -> pl.LazyFrame | None:
    """The context events as the file holds them (context.CONTEXT_COLUMNS, file order within the
    placements and within the exits, which is all the context tables read), from the states and
    exits tables, lazily; None when those lack some (a file read out of order and sorted, events
    of no vCPU or outside the window: the kinds' counts differ)."""
    placements = context.CONTEXT_KINDS[:3]
    states = prep.states.filter(pl.col("kind").is_in(placements))
    held = {k: n for k, n in prep.kinds.items() if k in context.CONTEXT_KINDS}
    if prep.source.eager or sum(held.values()) != states.height + prep.exits.height:
        return None
    vm = pl.lit(prep.vcpus["vm"].cast(pl.Categorical())).gather(pl.col("vid")).alias("vm")
    return pl.concat(
        [
            df.lazy().select("ts", "kind", vm, prep.vcpu_attr("vcpu"), "pcpu", "reason")
            for df in (states, prep.exits)
        ]
    )


def _context_tables(events: pl.LazyFrame, names: set[str]) -> _Context:
    """The context tables that need nothing but the context events (`names`: the trace's columns),
    which are collected once here (three tables read them)."""
    events = events.collect().lazy()
    tables = {"pcpu_timeline": context.pcpu_timeline(events)} if "pcpu" in names else {}
    tables["vm_exits"] = context.vm_exits(events)
    return _Context(events, names, tables)


# A stack taken at each contention_begin that costs this much (median) makes wait times read long.
STACK_COST_WARN_NS = 1_000


def _warn_stack_cost(result: Analysis, cost: dict | None) -> Analysis:
    """stack_cost in the summary, and a warning when it makes waits read long (the whole and the
    partitioned analysis alike, after the trace's own warnings)."""
    if cost is None:
        return result
    x = result.summary.extra
    x["stack_cost"] = cost
    if cost["median_ns"] >= STACK_COST_WARN_NS:
        x.setdefault("warnings", []).append(
            f"each lock wait includes the stack trace its contention_begin triggered: "
            f"{cost['median_ns'] / 1000:.1f} us (median over {cost['n_waits']:,} waits) of capture time, "
            "not of the lock, so wait times and percentiles read that much long "
            "(capture with `pvtrace record --guest --no-stacktrace` for exact waits)"
        )
        # the rows that show wait time say so too (the count of waits is right; their time is not)
        part = {
            "missing": f"wait time includes {cost['median_ns'] / 1000:.1f} us of stack capture per wait "
            "(median): too long by that much",
            "fix": "record with pvtrace record --guest --no-stacktrace",
        }
        times = [k for k in ("spin_ns", "wait_preempted_ns", "wait_halted_ns") if k in result.summary.totals]
        for key in (["wait_ns"] if x.get("wait_ns") is not None else []) + times:  # (not the count)
            add_parts(x.setdefault("partial", {}), key, part)
    return result


def _with_context(result: Analysis, ctx: _Context) -> Analysis:
    """Add the tables that read raw event columns the concepts drop (analyze/context.py): callers
    per lock from the captured stacks, the pCPU timeline, VM exits, and all incidents with what
    ran in the preempted vCPU's place."""
    if {"event", "args"} <= ctx.names:
        tied = context.tie_stacks(ctx.events, result.table("waits"))
        result.tables["lock_callers"] = context.lock_callers(tied)
        _warn_stack_cost(result, context.stack_cost(context.stack_delays(tied)))
    result.tables.update(ctx.tables)
    result.tables["incidents"] = context.incidents(
        result.table("lhp_incidents"),
        result.table("lwp_incidents"),
        ctx.events if "pcpu" in ctx.names else None,
    )
    return result


def _guest_ticks_without_states(path: Path | str) -> bool:
    if "event" not in pl.read_parquet_schema(path):  # not from pvtrace: no tick events
        return False
    scan = pl.scan_parquet(path, glob=False).select("kind", "event")
    states = scan.filter(pl.col("kind").cast(pl.String).is_in(list(GUEST_STATE_KINDS))).head(1).collect()
    if states.height:
        return False
    ticks = scan.filter(pl.col("event").cast(pl.String).is_in(list(TICK_EVENTS))).head(1).collect()
    return ticks.height > 0


def _with_warnings(result: Analysis, meta: TraceMeta) -> Analysis:
    """Carry what makes the numbers doubtful (host and guest clocks not aligned) into the summary."""
    clock = meta.clock or {}
    if clock.get("guests") or "synchronized" in clock:
        result.summary.extra["clock"] = {
            k: clock[k]
            for k in (
                "mode",
                "synchronized",
                "guest_offset_ns",
                "guest_drift",
                "guests",
                "offsets_file",
                "unmapped_guests",
            )
            if k in clock
        }
    if clock.get("untimed_records"):  # records without a timestamp: the span says nothing
        result.summary.extra["untimed_records"] = clock["untimed_records"]
    warning = clock.get("warning")
    if warning:
        result.summary.extra.setdefault("warnings", []).append(warning)
    for warning in (meta.extra or {}).get("warnings", []):  # ingest's (guest files left out)
        result.summary.extra.setdefault("warnings", []).append(warning)
    x = result.summary.extra
    x["skipped_lines"] = skipped_lines(meta.problems or {})  # what the ingester could not read
    headers = [i.get("header") or {} for i in (meta.extra or {}).get("inputs", [])]
    overwritten = sum(max(0, h.get("entries_written", 0) - h.get("entries_in_buffer", 0)) for h in headers)
    if overwritten:  # older events the ring buffer overwrote: the trace starts after them
        x["n_events_overwritten"] = overwritten
    add_lost_parts(result.summary)  # lost events (or broken timestamps): lower bounds, said so
    n_kicks, n_yields = x.get("n_kicks_unmapped") or 0, x.get("n_yields_unmapped") or 0
    if n_kicks or n_yields:
        x.setdefault("warnings", []).append(
            f"{n_kicks:,} pv kick(s) and {n_yields:,} directed yield(s) came from threads not known as vCPUs "
            "(no `CPU n/KVM` name, no kvm_entry/kvm_exit vcpu id, not in a --vcpu-map): they are not "
            "counted in pv kicks (give the thread's vCPU in a --vcpu-map file)"
        )
    n_open, n_unmatched = x.get("n_open_waits") or 0, x.get("n_unmatched_contend") or 0
    n_ends = x.get("n_unmatched_acquire") or 0
    if (n_unmatched or n_ends) and result.summary.totals.get("n_contended"):
        x.setdefault("warnings", []).append(
            f"{n_unmatched + n_ends:,} lock events out of sequence ({n_unmatched:,} contention begins "
            f"followed by another begin, {n_ends:,} ends followed by another end, on one vCPU and lock): "
            "events lost or reordered (records of one CPU with the same timestamp keep their file order); "
            "the waits they break are not counted"
        )
    if (n_open or n_unmatched) and not result.summary.totals.get("n_contended"):
        if "n_contended" in result.summary.totals:  # no wait ends: each begin is one contention
            result.summary.totals["n_contended"] = n_open + n_unmatched
        x.setdefault("warnings", []).append(
            f"no lock wait ends ({n_unmatched:,} contention begins without an end, {n_open:,} waits "
            "open at the trace end; no contention_end or acquisition events?): wait lengths cannot be "
            "measured; each begin is counted as one contention"
        )
    return result


@dataclass
class Measured:
    """An analysis's result tables and the counts behind its summary, before the summary is built:
    what each VM partition of a big trace gives, merged before one finish() (analyze/partitioned.py)."""

    tables: dict[str, pl.DataFrame]
    counts: dict[str, int]  # n_acquisitions, n_contended, n_truncated_*, and summary.table_sums
    sums: dict[str, int]  # per-vCPU totals of the summary's context (summary.state_sums), and the notes
    host_estimates: dict[str, int]  # spin estimated from the pause exits (exits.pause_spin)
    exit_parts: pl.DataFrame  # exit_reasons before its shares and averages (exits.exit_reason_parts)
    lock_evidence: pl.DataFrame  # per lock (vm, lock): its kind, the kind's source and order evidence


def added(dicts: list[dict[str, int]]) -> dict[str, int]:
    """Counts of several Measured (groups of VMs, windows of one VM) added, keys in first-seen order."""
    total: Counter = Counter()
    for d in dicts:
        total.update(d)
    return {k: total[k] for d in dicts for k in d}


def _run(
    prep: Prepared,
    progress: Callable[[str], None] | None,
    *,
    kind_given: bool = False,
    unaligned: str | None = None,
) -> Analysis:
    done = progress or (lambda step: None)
    caps = capabilities(prep)
    done("prepare")
    measured = measure(prep, caps, done, kind_given=kind_given, unaligned=unaligned)
    return finish(measured, caps, prep, done, unaligned=unaligned)


def measure(
    prep: Prepared,
    caps: Capabilities,
    done: Callable[[str], None],
    *,
    kind_given: bool = False,
    unaligned: str | None = None,
    span: tuple[int, int] | None = None,
) -> Measured:
    """Every result table (cast to its schema) and the counts of one prepared trace. `span`: the
    time span of a window of one VM (analyze/windows.py), to which its vCPU states are clipped."""

    windows = lost_windows(prep)
    guest_windows = windows.filter(pl.col("origin") == "guest")
    changes = state_changes(prep)
    _release(prep, "states")
    states = build_states(prep, changes, vcpu_unknown_windows(windows, changes, prep))
    if span is not None:
        states = clipped(states, *span)
    tables: dict[str, pl.DataFrame | None] = {"vcpu_states": vcpu_states_table(states, prep)}
    done("vcpu states")
    hypervisor = _POOL.submit(_hypervisor_tables, states, prep)

    waits, notes = locks_mod.waits(prep, guest_windows, uncontended_visible=caps.holds)
    pieces = waste_mod.wait_pieces(waits, states, prep)
    if prep.unjoined:  # guests whose waits cannot be placed on their vCPUs' states (clock_join)
        pieces = pieces.filter(~pl.col("vid").is_in(left_out_vids(prep.vcpus, prep.unjoined).implode()))
    joined = caps.states and not unaligned  # waits and vCPU states on one timeline
    kinds = infer_lock_kinds(prep, waits, pieces if joined else None, states, override=kind_given)
    if caps.holds:
        holds, hold_notes = locks_mod.holds(prep)
        notes.update(hold_notes)
    else:
        holds = infer_holds(prep, waits, pieces, states) if caps.states and caps.waits else None
    # (for convoys of inferred holds: waits that began before the trace, from the lock events)
    from_before = locks_mod.waited_from_before(prep, waits) if holds is not None and not caps.holds else None
    _release(prep, "lock_events")
    acq = locks_mod.acquisitions(holds, waits) if holds is not None else None
    del holds
    tables["holds"] = locks_mod.holds_table(acq, prep) if acq is not None else None
    counts = {
        "n_acquisitions": int(acq["start_ord"].is_not_null().sum()) if acq is not None else 0,
        "n_contended": int(waits.filter(pl.col("end_ord").is_not_null()).height),
        "n_truncated_waits": int(waits["truncated"].sum() or 0),
        "n_truncated_holds": int(acq["truncated"].sum() or 0) if acq is not None else 0,
    }
    done("waits and holds")

    if acq is not None:
        status = locks_mod.lock_status(acq, prep, guest_windows)
        # (read below by sums per wait and per incident only: row order does not matter)
        spin = waste_mod.spin_pieces(
            pieces, status, states, prep, queue_heads=None if caps.holds else waits, any_order=True
        )
        del status
    else:
        spin = _unclassified(pieces)
    per_wait = waste_mod.per_wait(waits, pieces, spin, acq if acq is not None else _no_acq())
    del pieces
    tables["waits"] = waste_mod.waits_table(per_wait, prep)
    tables["waste_by_lock"] = waste_mod.waste_by_lock(
        per_wait, acq if acq is not None else _no_acq(), prep, acquisitions_known=caps.holds
    )
    tables["waste_by_vcpu"] = waste_mod.waste_by_vcpu(per_wait, states, prep)
    del per_wait
    tables["waste_by_vm"] = waste_mod.waste_by_vm(tables["waste_by_vcpu"])
    done("spin classification")

    if acq is not None:
        lhp = incidents_mod.lhp_incidents(acq, spin, states, prep)
        if not caps.holds:  # inferred holders: only incidents that waiters saw are real evidence
            lhp = lhp.filter(pl.col("harmful"))
        lwp = incidents_mod.lwp_incidents(acq, spin, states, prep)
        tables["lhp_incidents"] = incidents_mod.lhp_table(lhp, prep)
        tables["lwp_incidents"] = incidents_mod.lwp_table(lwp, prep)
    del spin
    done("incidents")
    if acq is not None:
        conv = convoys_mod.convoys(acq, waits, lhp, lwp, prep, from_before)
        tables["convoys"] = convoys_mod.convoys_table(conv, prep)
        del lhp, lwp
    done("convoys")

    exit_tables, host_estimates = hypervisor.result()
    exit_parts = exit_tables.pop("exit_parts")
    tables.update(exit_tables)
    _release(prep, "exits", "ple")
    tables["yields"] = exits_mod.yields(acq, prep)
    del acq
    tables["lock_kinds"] = lock_kinds_table(kinds, prep)
    evidence = kinds.join(prep.locks.select("lid", "vm", "lock"), on="lid", how="left")
    tables["lost_windows"] = windows.select("origin", "cpu", "start", "end", "n_lost")
    tables = {
        name: (tables.get(name) if tables.get(name) is not None else pl.DataFrame(schema=schema))
        for name, schema in TABLE_SCHEMAS.items()
    }
    tables = {  # by Series: a cast and a select of each of some 20 tables are 40 queries
        name: pl.DataFrame([df[c].cast(dtype) for c, dtype in TABLE_SCHEMAS[name].items()])
        for name, df in tables.items()
    }
    tables = leave_out(tables, {**prep.unjoined, **prep.untraced})
    counts.update(table_sums(tables))
    done("exits")
    sums = {**state_sums(states, prep, windows), **prep.notes, **notes}
    evidence = evidence.select(
        "vm", "lock", "lock_kind", "source", "n_handoffs", "n_in_order", "jump_tries", "jump_seen"
    )
    return Measured(tables, counts, sums, host_estimates, exit_parts, evidence)


def finish(
    m: Measured,
    caps: Capabilities,
    prep: Prepared,
    done: Callable[[str], None],
    *,
    unaligned: str | None = None,
) -> Analysis:
    """The summary of measured tables, and the tables as the trace's fidelity allows them."""
    tables, counts = m.tables, m.counts
    if unaligned:  # nothing that joins waits with vCPU states is given from unaligned clocks
        for name in ("holds", "lhp_incidents", "lwp_incidents", "convoys"):
            tables[name] = empty_table(name)
        tables["yields"] = tables["yields"].with_columns(pl.lit(None, pl.Boolean()).alias("target_held_lock"))
    tables, partial, lwp_unavailable = kind_gaps(tables, holders_inferred=not caps.holds)
    if prep.guest_preemption is not None:  # preemption too short for the guest's ticks to place
        if not unaligned and not (caps.guest_limited or caps.guest_halting):
            mark_ambiguous_lhp(tables, prep.guest_preemption)  # fifo hand-offs to stopped waiters
        for metric, parts in prep.guest_preemption.partial.items():
            add_parts(partial, metric, *parts)
    if unaligned:
        partial = {}
    if prep.unjoined:  # the joined totals leave those guests out (their rows are null: clock_join)
        left_out = left_out_parts(tables, prep.unjoined)
        for key in (*CROSS_KEYS, "spin_waste"):
            add_parts(partial, key, *left_out)
    if prep.untraced and not unaligned:  # and those no guest input covers, their contentions too
        for key in (*CROSS_KEYS, "spin_waste", "n_contended"):
            add_parts(partial, key, *untraced_parts(prep.untraced))
    extra = extra_context(tables, counts, m.sums, prep, waits_measured=caps.waits)
    if prep.unjoined:
        extra["unjoined_vms"] = dict(prep.unjoined)
    if prep.untraced:
        extra["untraced_vms"] = dict(prep.untraced)
    extra["lock_kinds"] = kind_summary(tables["lock_kinds"])
    if prep.host_cut:  # the window is the host trace's span: the guests' events past it are left out
        extra.setdefault("warnings", []).append(prep.host_cut)
    if not caps.holds:  # harmful LHP incidents whose holder no take in the trace shows
        lhp = tables["lhp_incidents"]
        extra["n_lhp_harmful_guessed"] = int(lhp.filter(pl.col("harmful") & pl.col("holder_guessed")).height)
    if unaligned:
        extra["spin_waste_pct_of_running"] = None
    elif prep.unjoined or prep.untraced:  # of the running of the guests it covers
        out = [*prep.unjoined, *prep.untraced]
        running = tables["waste_by_vm"].filter(~pl.col("vm").is_in(out))["running_ns"].sum()
        waste = counts["waste_lhp_ns"] + counts["waste_lwp_ns"]
        extra["spin_waste_pct_of_running"] = round(100.0 * waste / running, 4) if running else None
    extra["partial"] = partial
    summary = build_summary(
        tables,
        counts,
        caps,
        unknown_kind_locks=lwp_unavailable,
        host_estimates=m.host_estimates,
        extra=extra,
        clocks_unaligned=unaligned,
    )
    # an unavailable total is not partial (nor is the waste share when no waste is measured), and
    # its share of running time is unknown, not 0
    measured_waste = any(k in summary.fidelity for k in ("waste_lhp_ns", "waste_lwp_ns"))
    summary.extra["partial"] = {
        k: v
        for k, v in partial.items()
        if k in summary.fidelity or (measured_waste if k == "spin_waste" else k not in TOTAL_KEYS)
    }
    if not measured_waste:
        summary.extra["spin_waste_pct_of_running"] = None
    add_count_gaps(summary)  # kicks of unknown threads: lower bounds, said so
    if summary.fidelity.get("spin_ns") == "host-only":  # from the pause exits: an estimate, said so
        add_parts(summary.extra.setdefault("partial", {}), "spin_ns", exits_mod.HOST_SPIN_PART)
    tables = _blank_unavailable(tables, summary.fidelity)
    if caps.guest_limited or caps.guest_halting:  # the guest's ticks cannot place the preemptions or
        # tell spin from halting: no incident is evidence
        for name in ("lhp_incidents", "lwp_incidents", "convoys", "holds"):
            tables[name] = empty_table(name)
    done("summary")
    return Analysis(tables=tables, summary=summary)


# Per-row columns of the waits/waste tables and the total each one adds up to.
_COLUMN_TOTAL = {
    **{c: c for c in waste_mod.SPLIT_COLUMNS},
    waste_mod.UNDECIDED: "spin_ns",
    "halted_ns": "wait_halted_ns",
    "preempted_ns": "wait_preempted_ns",
}


def _blank_unavailable(tables: dict[str, pl.DataFrame], fidelity: dict[str, str]) -> dict[str, pl.DataFrame]:
    """Null (not 0) every per-row column whose total this trace cannot give from events (in place:
    a table kept on disk is blanked as it is read, analyze/partitioned.py)."""
    for name in ("waits", "waste_by_lock", "waste_by_vcpu", "waste_by_vm"):
        schema = TABLE_SCHEMAS[name]
        gone = [
            c
            for c, key in _COLUMN_TOTAL.items()
            if c in schema and fidelity.get(key) not in ("exact", "inferred", "guest-inferred")
        ]
        if not gone:
            continue
        blank = [pl.lit(None, schema[c]).alias(c) for c in gone]
        transform = getattr(tables, "transform", None)
        if transform is not None:
            transform(name, lambda df, blank=blank: df.with_columns(*blank))
        else:  # by Series: no query
            df = tables[name]
            tables[name] = with_series(df, [full(df.height, None, schema[c]).alias(c) for c in gone])
    return tables


# The hypervisor-side tables need only the events and the vCPU states, so they are built on this
# thread while the lock chain runs: inferring holders keeps polars on about one core, and this
# takes the other (the merged view of 7.9M events: about 0.3 s less; benchmarks/README.md).
_POOL = ThreadPoolExecutor(1, thread_name_prefix="pvtrace-exits")


def _hypervisor_tables(states, prep: Prepared) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """exit_reasons (and its parts), pause_exits and kicks, with the host-only spin estimates from
    the pause exits."""
    exit_rows = exits_mod.exit_durations(prep)
    pauses = exits_mod.pause_exits(exit_rows, states, prep)
    parts = exits_mod.exit_reason_parts(exit_rows)
    tables = {
        "exit_parts": parts,
        "exit_reasons": exits_mod.merge_exit_reasons(parts),
        "pause_exits": pauses,
        "kicks": exits_mod.kicks(states, prep),
    }
    return tables, exits_mod.pause_spin(pauses)


def _release(prep, *names: str) -> None:
    """Drop per-concept event tables once nothing needs them (peak memory on big traces)."""
    for name in names:
        setattr(prep, name, getattr(prep, name).clear())


def _no_acq() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "lid": pl.Int64(),
            "start_ord": pl.Int64(),
            "contended": pl.Boolean(),
            "handoff": pl.Boolean(),
        }
    )


def _unclassified(pieces: pl.DataFrame) -> pl.DataFrame:
    """Spin pieces without holder knowledge: all unattributed."""
    return pieces.filter(pl.col("state") == "running").select(
        "wid",
        "lid",
        "vid",
        "start",
        "end",
        pl.lit("unattributed", waste_mod.SPIN_CLASS).alias("cls"),
        pl.lit(None, pl.Boolean()).alias("held"),
        pl.lit(None, pl.Int64()).alias("ref"),
        pl.lit(None, pl.String()).alias("ref_state"),
        pl.lit(None, LOCK_KIND).alias("lock_kind"),
    )
