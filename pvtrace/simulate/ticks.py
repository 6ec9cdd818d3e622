"""The guest's scheduler ticks and steal samples of a run, derived from its vCPU states.

What a guest kernel itself would log (pvtrace/guest_signals.py): a vCPU that runs
guest code and is not idle takes a tick at every multiple of 1/HZ of its guest
clock; none while preempted or halted; a vCPU that resumes after missing a tick
takes the pending one the instant it runs again (that late tick is how a
resumed vCPU's clock shows the jump). Steal is the time a vCPU was runnable but
not running (the simulator's `preempted` state: KVM's steal is the vCPU thread's
run_delay, so a directed yield's stop counts and a halt does not), sampled by a
recorder task on whichever vCPU of the VM runs at each sample time, in USER_HZ
units, as /proc/stat shows it: a CPU's counter moves only at its own tick (the
guest accounts steal there), so a vCPU preempted at the sample shows its steal up
to its last tick; and it counts since boot, so the capture's first sample sits at
any fraction of a unit (drawn from the run's seed).
"""

from __future__ import annotations

import random

import polars as pl

from pvtrace.guest_signals import STEAL_INTERVAL_NS, TICK_EVENTS, TICK_VECTOR_ARGS, USER_HZ, steal_marker
from pvtrace.trace import Trace

GUEST_HZ = 1000  # the simulated guests' CONFIG_HZ (tick period 1 ms)
_STATE = {"vcpu_run": "running", "vcpu_preempt": "preempted", "vcpu_halt": "halted"}


def state_intervals(events: pl.DataFrame, t_end: int) -> pl.DataFrame:
    """Per vCPU, maximal stretches of one state: vm, vcpu, state, start, end, idle (a halt outside
    any lock wait: the guest is idle, NO_HZ stops its tick)."""
    ev = events.filter(pl.col("kind").is_in([*_STATE, "vcpu_wake"]))
    base = pl.col("kind").cast(pl.String).replace_strict(_STATE, default=None)
    prev = base.forward_fill().shift(1).over(["vm", "vcpu"], order_by=["ts", "seq"])
    state = (
        pl.when(pl.col("kind") == "vcpu_wake")
        .then(pl.when(prev == "running").then(pl.lit("running")).otherwise(pl.lit("preempted")))
        .otherwise(base)
    )
    ev = ev.sort("vm", "vcpu", "ts", "seq").with_columns(state.alias("state"))
    ev = ev.filter(pl.col("state") != pl.col("state").shift(1).over(["vm", "vcpu"]).fill_null(""))
    iv = ev.select(
        "vm",
        "vcpu",
        "state",
        pl.col("ts").alias("start"),
        pl.col("ts").shift(-1).over(["vm", "vcpu"]).fill_null(t_end).alias("end"),
    ).filter(pl.col("end") > pl.col("start"))
    waits = (
        events.filter(pl.col("kind").is_in(["lock_contend", "lock_acquire"]))
        .select("vm", "vcpu", "ts", (pl.col("kind") == "lock_contend").alias("waiting"))
        .sort("ts")
    )
    iv = iv.sort("start").join_asof(
        waits, left_on="start", right_on="ts", by=["vm", "vcpu"], strategy="backward", check_sortedness=False
    )
    idle = (pl.col("state") == "halted") & ~pl.col("waiting").fill_null(False)
    return iv.select("vm", "vcpu", "state", "start", "end", idle.alias("idle")).sort("vm", "vcpu", "start")


def tick_events(iv: pl.DataFrame, offsets: dict[str, int], hz: int = GUEST_HZ) -> pl.DataFrame:
    """Tick rows (vm, vcpu, ts) of every running stretch: grid ticks plus the late one at a resume."""
    period = 1_000_000_000 // hz
    off = pl.col("vm").cast(pl.String).replace_strict(offsets, default=0, return_dtype=pl.Int64)
    first_k = (pl.col("start") - off + period - 1).floordiv(period)
    end_k = (pl.col("end") - off + period - 1).floordiv(period)
    idle_so_far = pl.col("idle").cast(pl.Int32).cum_sum().over(["vm", "vcpu"], order_by="start")
    per_run = ["vm", "vcpu"]
    runs = (
        iv.with_columns(idle_so_far.alias("n_idle"))
        .filter(pl.col("state") == "running")
        .with_columns(
            # The stretch before a run is [end of the previous run, start); a tick due in it is
            # taken the instant the vCPU runs again, unless the guest was idle (NO_HZ) meanwhile.
            pl.col("end").shift(1).over(per_run, order_by="start").alias("gap_start"),
            (pl.col("n_idle") - pl.col("n_idle").shift(1).over(per_run, order_by="start")).alias("idles"),
        )
    )
    missed = (pl.col("gap_start") - off + period - 1).floordiv(period) * period + off < pl.col("start")
    late = runs.filter(
        pl.col("gap_start").is_not_null() & missed & (pl.col("idles").fill_null(0) == 0)
    ).select("vm", "vcpu", pl.col("start").alias("ts"))
    grid = (
        runs.select("vm", "vcpu", off.alias("off"), pl.int_ranges(first_k, end_k).alias("k"))
        .explode("k")
        .filter(pl.col("k").is_not_null())
        .select("vm", "vcpu", (pl.col("k") * period + pl.col("off")).alias("ts"))
    )
    return pl.concat([grid, late]).unique(maintain_order=False).sort("vm", "vcpu", "ts")


def steal_samples(
    iv: pl.DataFrame,
    vms: dict[str, int],
    t_start: int,
    t_end: int,
    ticks: pl.DataFrame,
    interval: int = STEAL_INTERVAL_NS,
    pv: dict[str, bool] | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """Marker rows (vm, vcpu = the writer's CPU, ts, args): every vCPU's steal at the start, every
    `interval` and at the end, written when and where a vCPU of the VM runs; each CPU's counter holds
    its steal up to its last tick (`ticks`: vm, vcpu, ts) plus what it counted before the capture;
    `pv`: whether each VM's spinlocks are paravirt, as the recorder notes it."""
    unit = 1_000_000_000 // USER_HZ
    rng = random.Random(seed)
    rows = []
    for vm, n_vcpus in vms.items():
        mine = iv.filter(pl.col("vm") == vm)
        runs = mine.filter(pl.col("state") == "running")
        steal = mine.filter(pl.col("state") == "preempted")
        if runs.is_empty():
            continue
        before = {c: rng.randrange(unit) for c in range(n_vcpus)}  # steal since boot, within a unit
        own_ticks = ticks.filter(pl.col("vm") == vm).select("vcpu", "ts").sort("ts")
        wanted = [*range(t_start, t_end, interval), t_end - 1]
        for t in wanted:
            on = runs.filter((pl.col("start") <= t) & (pl.col("end") > t))
            if on.height:
                at, cpu = t, int(on["vcpu"].min())
            else:
                later = runs.filter(pl.col("start") > t).sort("start", "vcpu")
                earlier = runs.filter(pl.col("end") <= t).sort("end", "vcpu")
                if later.height and t < t_end - 1:
                    at, cpu = int(later["start"][0]), int(later["vcpu"][0])
                else:
                    at, cpu = int(earlier["end"][-1]) - 1, int(earlier["vcpu"][-1])
            counted = (
                own_ticks.filter(pl.col("ts") <= at).group_by("vcpu").agg(pl.col("ts").max().alias("upto"))
            )
            per_cpu = (
                steal.join(counted, on="vcpu")
                .filter(pl.col("start") < pl.col("upto"))
                .group_by("vcpu")
                .agg((pl.min_horizontal("end", "upto") - pl.col("start")).sum().alias("ns"))
            )
            ns = dict(zip(per_cpu["vcpu"].to_list(), per_cpu["ns"].to_list(), strict=True))
            counters = {c: (before[c] + int(ns.get(c, 0))) // unit for c in range(n_vcpus)}
            rows.append((vm, cpu, at, steal_marker(USER_HZ, counters, (pv or {}).get(vm))))
    schema = {"vm": pl.String, "vcpu": pl.Int32, "ts": pl.Int64, "args": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row").unique(["vm", "ts"], keep="first").sort("vm", "ts")


def guest_signal_events(trace: Trace, hz: int = GUEST_HZ) -> pl.DataFrame:
    """The run's tick and steal-marker events, as canonical `other` rows (event, args set)."""
    events = trace.events
    t_start = trace.meta.t_start or 0
    t_end = trace.meta.t_end if trace.meta.t_end is not None else int(events["ts"].max() or 0) + 1
    iv = state_intervals(events, t_end)
    offsets = {k: int(v) for k, v in (trace.meta.clock.get("guest_offset_ns") or {}).items()}
    ticks = tick_events(iv, offsets, hz).filter(pl.col("ts").is_between(t_start, t_end, closed="left"))
    vms = {vm: info.n_vcpus for vm, info in trace.meta.vms.items()}
    pv = {vm: (info.lock_algorithm or "").startswith("pv-") for vm, info in trace.meta.vms.items()}
    seed = int(trace.meta.extra.get("seed") or 0)
    markers = steal_samples(iv, vms, t_start, t_end, ticks, pv=pv, seed=seed)
    tick_rows = ticks.with_columns(
        pl.lit(TICK_EVENTS[0]).alias("event"), pl.lit(TICK_VECTOR_ARGS).alias("args")
    )
    marker_rows = markers.with_columns(pl.lit("tracing_mark_write").alias("event"))
    out = pl.concat([tick_rows.select(marker_rows.columns), marker_rows], how="vertical_relaxed")
    out = after_exits(out, events).filter(pl.col("ts") < t_end)
    return out.with_columns(pl.lit("other").alias("kind"), pl.lit("sim").alias("origin"))


def after_exits(rows: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Rows (vm, vcpu, ts) due while their vCPU is in a VM exit, or scheduled in but not yet
    entered, moved to its (re-)entry: a running vCPU handling a PAUSE exit or a hypercall, or
    returning into KVM's run loop after a sched-in, is in the host, and the guest takes a timer
    interrupt (or writes a marker) only once it is back in guest mode (vmx/svm deliver the pending
    interrupt at VM entry)."""
    exits = (
        events.filter(pl.col("kind").is_in(["vm_exit", "vm_entry", "vcpu_run"]))
        .sort("vm", "vcpu", "ts", "seq")
        .with_columns(
            pl.col("ts").shift(-1).over(["vm", "vcpu"]).alias("entry"),
            (pl.col("kind").shift(-1).over(["vm", "vcpu"]) == "vm_entry").alias("entered"),
        )
        .filter((pl.col("kind") != "vm_entry") & pl.col("entered").fill_null(False))
        .select(
            pl.col("vm").cast(pl.String), pl.col("vcpu").cast(pl.Int32), pl.col("ts").alias("exit"), "entry"
        )
        .sort("exit")
    )
    if exits.height == 0 or rows.height == 0:
        return rows
    cols = rows.columns
    keyed = rows.with_columns(pl.col("vm").cast(pl.String), pl.col("vcpu").cast(pl.Int32)).sort("ts")
    moved = keyed.join_asof(
        exits, left_on="ts", right_on="exit", by=["vm", "vcpu"], strategy="backward", check_sortedness=False
    ).with_columns(
        pl.when(pl.col("entry").is_not_null() & (pl.col("ts") < pl.col("entry")))
        .then(pl.col("entry"))
        .otherwise(pl.col("ts"))
        .alias("ts")
    )
    return (
        moved.select(cols)
        .unique(["vm", "vcpu", "ts", "event"], keep="first", maintain_order=True)
        .sort("vm", "vcpu", "ts", "event", maintain_order=True)
    )
