"""What a perf user asks next about a wait or an incident: who called, and what ran instead.

Two tables built after the analysis from the raw events (they read columns the
concept tables drop: `event`, `args`, and pCPUs of other vCPUs):

- `lock_callers`: the kernel stack `pvtrace record` captures per SPIN wait (a
  `<stack trace>` record right after `contention_begin`) reduced to its caller,
  the first frame outside the lock code, with the waits and wait time per caller.
- `incidents`: LHP and LWP incidents in one list with the pCPU the preempted vCPU
  left and the vCPUs that ran on that pCPU during the incident.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import cum_sum_within, same_as_next, sort_by_key
from pvtrace.schema import Column, schema_of

# The events the context tables read besides the stacks: placements (pcpu_timeline, what ran
# instead) and exits (vm_exits); analyze_parquet() takes them from its one read of the file.
CONTEXT_KINDS = ("vcpu_run", "vcpu_preempt", "vcpu_halt", "vm_exit", "vm_entry")
CONTEXT_COLUMNS = ("ts", "kind", "vm", "vcpu", "pcpu", "reason")

# Frames of the tracing and locking code itself; the caller is the first frame after them.
_LOCK_FRAME = (
    r"^(trace_event_raw_event_|perf_trace_|__traceiter_|__bpf_trace_|trace_contention)"
    r"|spin_lock|spin_trylock|_raw_|queued_|lock_slowpath|^__lock_|^do_raw_|^pv_|native_queued"
    r"|read_lock|write_lock|mutex_lock|^__mutex|down_read|down_write|rwsem|^lock_acquire|contention_begin"
)


def tie_stacks(events: pl.LazyFrame, waits: pl.DataFrame) -> pl.DataFrame:
    """The stack each wait's contention_begin triggered: vm, vcpu, ts, stack and the wait's lock,
    start, dur. A stack is tied to the latest contention_begin of the same vCPU at or before it;
    the wait is the one that begins there (its first stack). Empty when the trace has no stacks."""
    stacks = (
        events.filter((pl.col("kind") == "other") & (pl.col("event").cast(pl.String) == "kernel_stack"))
        .select(pl.col("vm").cast(pl.String), "vcpu", "ts", pl.col("args").alias("stack"))
        .filter(pl.col("stack").str.contains("contention_begin"))
        .collect()
    )
    w = waits.select("vm", "vcpu", "lock", "start", "dur").sort("start")
    return (
        stacks.sort("ts")
        .join_asof(w, left_on="ts", right_on="start", by=["vm", "vcpu"], check_sortedness=False)
        .filter(pl.col("lock").is_not_null())
        .unique(["vm", "vcpu", "start"], keep="first", maintain_order=True)
    )


def stack_delays(tied: pl.DataFrame) -> pl.Series:
    """Per wait with a stack inside it (`tied`: tie_stacks), the time from its start to its stack:
    what taking the stack added to the wait. A median does not add up over groups of VMs, so the
    partitioned analysis carries these and takes stack_cost of them all."""
    inside = tied.filter(pl.col("ts") - pl.col("start") <= pl.col("dur"))
    return (inside["ts"] - inside["start"]).alias("delay_ns")


def stack_cost(delays: pl.Series) -> dict | None:
    """What taking a stack at each contention_begin added to the waits: the median of
    stack_delays (the capture's time, inside the wait), None without stacks."""
    if delays.len() == 0:
        return None
    return {"median_ns": int(delays.median()), "n_waits": delays.len()}


def lock_callers(tied: pl.DataFrame) -> pl.DataFrame:
    """vm, lock, caller, n_waits, total_wait_ns, max_wait_ns per caller of each lock, most wait
    first, from the waits' stacks (`tied`: tie_stacks); empty when there are none."""
    if tied.height == 0:
        return pl.DataFrame(schema=LOCK_CALLERS_SCHEMA)
    frames = (
        tied.with_row_index("sid")
        .select("sid", pl.col("stack").str.split("\n").alias("frame"))
        .explode("frame")
        .with_columns(
            pl.col("frame").str.strip_chars().str.replace(r"\+0x[0-9a-fA-F]+(/0x[0-9a-fA-F]+)?$", "")
        )
        .filter((pl.col("frame") != "") & ~pl.col("frame").str.contains(_LOCK_FRAME))
        .group_by("sid", maintain_order=True)
        .agg(pl.col("frame").first().alias("caller"))
    )
    return (
        tied.with_row_index("sid")
        .join(frames, on="sid", how="left")
        .with_columns(pl.col("caller").fill_null("?"))
        .group_by("vm", "lock", "caller")
        .agg(
            pl.len().cast(pl.Int64).alias("n_waits"),
            pl.col("dur").sum().cast(pl.Int64).alias("total_wait_ns"),
            pl.col("dur").max().cast(pl.Int64).alias("max_wait_ns"),
        )
        .pipe(in_wait_order)
        .cast(dict(LOCK_CALLERS_SCHEMA))
    )


def in_wait_order(table: pl.DataFrame) -> pl.DataFrame:
    """lock_callers' rows as reported: the callers that waited longest first."""
    return table.sort(
        ["total_wait_ns", "n_waits", "vm", "lock", "caller"],
        descending=[True, True, False, False, False],
        maintain_order=True,
    )


def incident_union(lhp: pl.DataFrame, lwp: pl.DataFrame) -> pl.DataFrame:
    """LHP then LWP incidents in one frame, in their tables' order: kind, vm, lock, vcpu (holder /
    next owner), state, start, end, dur, n_waiters, waste_ns, truncated, guessed."""

    def tagged(df: pl.DataFrame, kind: str, who: str) -> pl.DataFrame:
        guessed = pl.col("holder_guessed") if "holder_guessed" in df.columns else pl.lit(False)
        return df.select(
            pl.lit(kind).alias("kind"),
            "vm",
            "lock",
            pl.col(who).alias("vcpu"),
            pl.col(f"{who}_state").alias("state"),
            "start",
            "end",
            "dur",
            "n_waiters",
            "waste_ns",
            "truncated",
            guessed.alias("guessed"),
        )

    return pl.concat([tagged(lhp, "LHP", "holder"), tagged(lwp, "LWP", "next_owner")], how="vertical_relaxed")


def incidents(lhp: pl.DataFrame, lwp: pl.DataFrame, events: pl.LazyFrame | None) -> pl.DataFrame:
    """LHP and LWP incidents in one table (INCIDENTS_SCHEMA), worst waste first, with the pCPU the
    preempted vCPU left and what ran there during the incident (null when the trace has no pCPUs)."""
    both = incident_union(lhp, lwp).with_row_index("iid")
    # what ran instead is looked up for the worst MAX_CONTEXT_INCIDENTS (every output shows the
    # worst first); the rest keep null there, which the column's doc says
    worst = both.sort(["waste_ns", "dur"], descending=True, nulls_last=True).head(MAX_CONTEXT_INCIDENTS)
    ctx = _ran_instead(worst, events) if events is not None and both.height else None
    if ctx is None:
        both = both.with_columns(
            pl.lit(None, pl.Int32).alias("pcpu"), pl.lit(None, pl.String).alias("ran_instead")
        )
    else:
        both = both.join(ctx, on="iid", how="left")
    return (
        both.sort(["waste_ns", "dur", "start"], descending=[True, True, False], nulls_last=True)
        .drop("iid")
        .cast(dict(INCIDENTS_SCHEMA))
        .select(list(INCIDENTS_SCHEMA))
    )


MAX_RUNS_PER_INCIDENT = 4
MAX_CONTEXT_INCIDENTS = 20_000


def _runs_inside(spans: pl.DataFrame, runs: pl.DataFrame) -> pl.DataFrame:
    """spans joined with the first MAX_RUNS_PER_INCIDENT runs on their pCPU in [start, end).

    Each pCPU's runs are numbered in time order; two as-of lookups give the numbers of the first
    run at or after start and after end, and only those runs are joined: memory follows the
    runs inside incidents, never incidents x runs of a pCPU (an inequality join would)."""
    numbered = sort_by_key(runs, "run_pcpu", then="run_ts").with_columns(pl.lit(1, pl.Int64).alias("pos"))
    numbered = numbered.with_columns(cum_sum_within("pos", "run_pcpu") - 1)  # (a pCPU's rows together)
    index = numbered.select("run_pcpu", "run_ts", "pos").sort("run_ts")

    def count_before(col: str) -> pl.DataFrame:  # runs on the pCPU strictly before `col`
        probe = spans.select("iid", "pcpu", (pl.col(col) - 1).alias("_t")).sort("_t")
        return probe.join_asof(
            index,
            left_on="_t",
            right_on="run_ts",
            by_left="pcpu",
            by_right="run_pcpu",
            strategy="backward",
            check_sortedness=False,
        ).select("iid", (pl.col("pos").fill_null(-1) + 1).alias(col + "_n"))

    bounds = count_before("start").join(count_before("end"), on="iid")
    picks = (
        spans.join(bounds, on="iid")
        .filter(pl.col("end_n") > pl.col("start_n"))
        .with_columns(
            pl.int_ranges(
                "start_n", pl.min_horizontal("end_n", pl.col("start_n") + MAX_RUNS_PER_INCIDENT)
            ).alias("pos")
        )
        .explode("pos")
    )
    return picks.join(numbered, left_on=["pcpu", "pos"], right_on=["run_pcpu", "pos"], how="inner")


def _ran_instead(inc: pl.DataFrame, events: pl.LazyFrame) -> pl.DataFrame | None:
    """iid, pcpu, ran_instead: the vCPU's last pCPU at the incident start and the other vCPUs
    (vm/vcpu) that started running there before the incident ended."""
    placed = (
        events.filter(
            pl.col("kind").is_in(["vcpu_run", "vcpu_preempt", "vcpu_halt"])
            & pl.col("pcpu").is_not_null()
            & pl.col("vcpu").is_not_null()
        )
        .select("vm", "vcpu", "pcpu", "ts", "kind")
        .collect()
    )
    if placed.height == 0:
        return None
    # VM names stay encoded as in the events (the incidents' few are encoded alike): decoding one
    # per placement event cost GiBs on a big trace; (VM, vCPU) is matched as one Int64
    inc = inc.with_columns(pl.col("vm").cast(placed.schema["vm"]))
    if not placed["ts"].is_sorted():  # (a file's events are in time order already)
        placed = placed.sort("ts")
    vcpu = (pl.col("vm").to_physical().cast(pl.Int64) * (1 << 32) + pl.col("vcpu").cast(pl.Int64)).alias("_v")
    where = (
        inc.select("iid", "vm", "vcpu", "start", vcpu)
        .sort("start")
        .join_asof(
            placed.select("ts", "pcpu", vcpu),
            left_on="start",
            right_on="ts",
            by="_v",
            strategy="backward",
            check_sortedness=False,
        )
        .drop("ts", "_v")
    )
    runs = placed.filter(pl.col("kind") == "vcpu_run").select(
        pl.col("pcpu").alias("run_pcpu"),
        pl.col("ts").alias("run_ts"),
        pl.col("vm").alias("run_vm"),
        pl.col("vcpu").alias("run_vcpu"),
    )
    # only a preempted vCPU had something else run in its place (a halted one left its pCPU idle)
    where = where.join(inc.select("iid", "state"), on="iid").with_columns(
        pl.when(pl.col("state") == "preempted").then(pl.col("pcpu")).alias("pcpu")
    )
    spans = where.filter(pl.col("pcpu").is_not_null()).join(inc.select("iid", "end"), on="iid")
    if spans.height == 0:
        return where.select("iid", "pcpu", pl.lit(None, pl.String).alias("ran_instead"))
    later = _runs_inside(spans, runs)
    # and the vCPU already on that pCPU at the start (it took over at the preemption, before an
    # LWP incident's release): the pCPU's last placement event then is its run
    occupant = placed.select(
        pl.col("pcpu").alias("run_pcpu"),
        pl.col("ts").alias("run_ts"),
        (pl.col("kind") == "vcpu_run").alias("is_run"),
        pl.col("vm").alias("run_vm"),
        pl.col("vcpu").alias("run_vcpu"),
    )
    before = (
        spans.sort("start")
        .join_asof(
            occupant,
            left_on="start",
            right_on="run_ts",
            by_left="pcpu",
            by_right="run_pcpu",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("is_run"))
    )
    cols = ["iid", "vm", "vcpu", "run_vm", "run_vcpu", "run_ts"]
    # labels for the matched runs only (one per placement event would cost GiBs on a big trace)
    other = (pl.col("run_vm").cast(pl.String) + "/" + pl.col("run_vcpu").cast(pl.String)).alias("other")
    hits = (
        pl.concat([before.select(cols), later.select(cols)], how="vertical_relaxed")
        .filter((pl.col("run_vm") != pl.col("vm")) | (pl.col("run_vcpu") != pl.col("vcpu")))
        .with_columns(other)
        .sort("iid", "run_ts")
        .group_by("iid", maintain_order=True)
        .agg(pl.col("other").unique(maintain_order=True).head(3).str.join(", ").alias("ran_instead"))
    )
    return (
        where.select("iid", "pcpu")
        .join(hits, on="iid", how="left")
        .with_columns(
            pl.when(pl.col("pcpu").is_not_null())
            .then(pl.col("ran_instead").fill_null("host task"))
            .alias("ran_instead")
        )
    )  # the vCPU was runnable and no other vCPU took its pCPU: a host thread ran there


def pcpu_timeline(events: pl.LazyFrame) -> pl.DataFrame:
    """Who had each pCPU (PCPU_TIMELINE_SCHEMA): a vCPU from its run to its next placement event
    there, `host task` after a vCPU was preempted (something runnable took the pCPU), `idle or host`
    after it halted. Empty when the trace has no pCPUs (guest-only)."""
    placed = (
        events.filter(
            pl.col("kind").is_in(["vcpu_run", "vcpu_preempt", "vcpu_halt"])
            & pl.col("pcpu").is_not_null()
            & pl.col("vcpu").is_not_null()
        )
        .select("pcpu", "ts", "kind", "vm", "vcpu")  # VM names decoded in the output only: memory
        .collect()
    )
    if placed.height == 0:
        return pl.DataFrame(schema=PCPU_TIMELINE_SCHEMA)
    run = pl.col("kind") == "vcpu_run"
    return (
        placed.sort("pcpu", "ts", maintain_order=True)
        .with_columns(pl.when(same_as_next("pcpu")).then(pl.col("ts").shift(-1)).alias("end"))
        .filter(pl.col("end").is_not_null() & (pl.col("end") > pl.col("ts")))
        .select(
            "pcpu",
            pl.col("ts").alias("start"),
            "end",
            (pl.col("end") - pl.col("ts")).alias("dur"),
            pl.when(run)
            .then(pl.lit("vCPU"))
            .when(pl.col("kind") == "vcpu_preempt")
            .then(pl.lit("host task"))
            .otherwise(pl.lit("idle or host"))
            .alias("what"),
            pl.when(run).then(pl.col("vm")).alias("vm"),
            pl.when(run).then(pl.col("vcpu")).alias("vcpu"),
        )
        .cast(dict(PCPU_TIMELINE_SCHEMA))
    )


def vm_exits(events: pl.LazyFrame) -> pl.DataFrame:
    """Every VM exit (VM_EXITS_SCHEMA) with its time in the host, exit to the vCPU's next entry, so
    a host trace with only kvm_exit/kvm_entry still shows when each vCPU ran guest code."""
    # each vCPU's exits matched with its entries on one Int64 key (VM code, vCPU): strings cost
    # twice the time; VM names are decoded on the output rows only
    vcpu = (pl.col("vm").to_physical().cast(pl.Int64) * (1 << 32) + pl.col("vcpu").cast(pl.Int64)).alias("_v")
    ev = (
        events.filter(pl.col("kind").is_in(["vm_exit", "vm_entry"]) & pl.col("vcpu").is_not_null())
        .select("vm", "vcpu", "pcpu", "ts", "kind", "reason", vcpu)
        .collect()
    )
    exits = ev.filter(pl.col("kind") == "vm_exit").sort("ts")
    if exits.height == 0:
        return pl.DataFrame(schema=VM_EXITS_SCHEMA)
    entries = ev.filter(pl.col("kind") == "vm_entry").select("_v", pl.col("ts").alias("end")).sort("end")
    return (
        exits.join_asof(
            entries, left_on="ts", right_on="end", by="_v", strategy="forward", check_sortedness=False
        )
        .select(
            pl.col("vm").cast(pl.String),
            "vcpu",
            "pcpu",
            pl.col("reason").cast(pl.String),
            pl.col("ts").alias("start"),
            "end",
            (pl.col("end") - pl.col("ts")).alias("dur"),
        )
        .cast(dict(VM_EXITS_SCHEMA))
    )


LOCK_CALLERS_COLUMNS: tuple[Column, ...] = (
    Column("vm", pl.String(), "VM."),
    Column("lock", pl.UInt64(), "Lock address."),
    Column("caller", pl.String(), "First stack frame outside the tracing and lock code (`?`: none)."),
    Column("n_waits", pl.Int64(), "Waits whose stack names this caller."),
    Column("total_wait_ns", pl.Int64(), "Their total wait, ns."),
    Column("max_wait_ns", pl.Int64(), "Their longest wait, ns."),
)
INCIDENTS_COLUMNS: tuple[Column, ...] = (
    Column("kind", pl.String(), "LHP (holder not running) or LWP (next owner not running)."),
    Column("vm", pl.String(), "VM of the lock."),
    Column("lock", pl.UInt64(), "Lock address."),
    Column("vcpu", pl.Int32(), "The holder (LHP) or the next owner (LWP)."),
    Column("state", pl.String(), "That vCPU's state: preempted or halted."),
    Column("start", pl.Int64(), "ns, trace clock."),
    Column("end", pl.Int64(), "ns, trace clock."),
    Column("dur", pl.Int64(), "end - start, ns."),
    Column("n_waiters", pl.Int64(), "Distinct vCPUs that spun on the lock meanwhile."),
    Column("waste_ns", pl.Int64(), "Their spin meanwhile, ns."),
    Column("truncated", pl.Boolean(), "Still open at the end of the trace."),
    Column(
        "guessed",
        pl.Boolean(),
        "LHP: no take by the holder is in the trace; it is the likeliest unseen holder "
        "(lhp_incidents.holder_guessed). False for LWP.",
    ),
    Column("pcpu", pl.Int32(), "pCPU the preempted vCPU left; null when halted or unknown."),
    Column(
        "ran_instead",
        pl.String(),
        "vCPUs (vm/vcpu) that ran on that pCPU during the incident, or `host task`; null when unknown "
        "or beyond the 20,000 worst incidents (looked up for those only: bounded cost).",
    ),
)
LOCK_CALLERS_SCHEMA = schema_of(LOCK_CALLERS_COLUMNS)
INCIDENTS_SCHEMA = schema_of(INCIDENTS_COLUMNS)


def lock_table(waste_by_lock: pl.DataFrame, waits: pl.DataFrame, callers: pl.DataFrame) -> pl.DataFrame:
    """One row per lock as perf lock contention sorts it (total wait first): contended waits,
    total, max and median wait, the spin wasted on LHP + LWP (null when the trace cannot tell;
    LHP alone where the lock's LWP is unknown, flagged `waste_lhp_only`: its kind is undecided)
    and the top three callers with their share of the lock's waits."""
    ended = waits if (~waits["truncated"]).any() else waits.clear()  # no wait ends: none has a length
    wait = ended.group_by("vm", "lock").agg(pl.col("dur").sum().cast(pl.Int64).alias("total_wait_ns"))
    top = (
        callers.sort("total_wait_ns", descending=True)
        .group_by("vm", "lock", maintain_order=True)
        .agg(
            pl.format("{} ({})", "caller", "n_waits").head(3).str.join(", ").alias("top_callers"),
        )
    )
    waste = pl.col("waste_lhp_ns") + pl.col("waste_lwp_ns").fill_null(0)
    return (
        waste_by_lock.join(wait, on=["vm", "lock"], how="left")
        .join(top, on=["vm", "lock"], how="left")
        .select(
            "vm",
            "lock",
            "n_contended",
            pl.col("total_wait_ns").fill_null(0),
            pl.when(pl.col("waste_lhp_ns").is_not_null()).then(waste).alias("waste_ns"),
            (pl.col("waste_lhp_ns").is_not_null() & pl.col("waste_lwp_ns").is_null()).alias("waste_lhp_only"),
            pl.col("wait_max_ns").alias("max_wait_ns"),
            pl.col("wait_p50_ns").alias("p50_wait_ns"),
            pl.col("wait_p99_ns").alias("p99_wait_ns"),
            "top_callers",
        )
        .sort(["total_wait_ns", "n_contended", "vm", "lock"], descending=[True, True, False, False])
    )


PCPU_TIMELINE_COLUMNS: tuple[Column, ...] = (
    Column("pcpu", pl.Int32(), "Host CPU."),
    Column("start", pl.Int64(), "ns."),
    Column("end", pl.Int64(), "ns (the pCPU's next placement event)."),
    Column("dur", pl.Int64(), "end - start, ns."),
    Column(
        "what", pl.String(), "vCPU, host task (a vCPU was preempted off it) or idle or host (one halted)."
    ),
    Column("vm", pl.String(), "The vCPU's VM (what = vCPU)."),
    Column("vcpu", pl.Int32(), "The vCPU (what = vCPU)."),
)
VM_EXITS_COLUMNS: tuple[Column, ...] = (
    Column("vm", pl.String(), "VM."),
    Column("vcpu", pl.Int32(), "vCPU that exited."),
    Column("pcpu", pl.Int32(), "Host CPU; null when unknown."),
    Column("reason", pl.String(), "Normalized exit reason."),
    Column("start", pl.Int64(), "ns: the exit."),
    Column("end", pl.Int64(), "ns: the vCPU's next entry; null when none in the trace."),
    Column("dur", pl.Int64(), "Time in the host, ns; null without an entry."),
)
PCPU_TIMELINE_SCHEMA = schema_of(PCPU_TIMELINE_COLUMNS)
VM_EXITS_SCHEMA = schema_of(VM_EXITS_COLUMNS)
