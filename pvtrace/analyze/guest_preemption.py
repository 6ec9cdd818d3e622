"""vCPU states inferred from inside the guest: tick gaps reconciled with steal samples.

The "guest-inferred" fidelity level (docs/metrics.md). A running, non-idle guest CPU
takes its scheduler tick every 1/HZ; a grid tick it misses means it was not running
then. Each such gap between two consecutive events of a vCPU is a *not-running
interval*: it ends at the first event after it (a resumed vCPU takes its missed tick at
once) and starts somewhere between the last event before it and the first missed grid
tick, estimated at the middle (`start_lo`/`start_hi` bound it). Steal samples (the
recorder's `/proc/stat` markers, pvtrace/guest_signals.py) count a vCPU's preempted time
exactly but coarsely; they split the gaps inside lock waits (a pv waiter may be halted
instead) into halted then preempted, and size the preemption too short for the ticks to
place (under about two ticks): pvtrace/analyze/guest_steal.py judges from it which
metrics are partial or unavailable.

The intervals become canonical vcpu_run / vcpu_preempt / vcpu_halt / vcpu_wake events
(origin guest), so every rule of the inferred level applies to them unchanged.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.guest_steal import (
    HALT_UNSEEN,
    HALTED_SHARE,
    GuestPreemption,
    lock_waits,
    pv_halts,
    pv_spinlocks_evidence,
    split_by_steal,
    steal_per_vcpu,
    unseen_partial,
)
from pvtrace.analyze.guest_yields import late_handoffs, yields_in_waits
from pvtrace.guest_signals import HZ_CHOICES, TICK_EVENTS
from pvtrace.schema import KIND_PRIORITY, conform_events

STATE_KINDS = ("vcpu_run", "vcpu_preempt", "vcpu_halt", "vcpu_wake")
HZ_MATCH = 0.03  # a tick interval within 3% of 1/HZ counts for that HZ
RELEASE_NS = 50_000  # a waiter that gets the lock this soon after a silent vCPU resumes got it from it
MIN_INTERVALS = 5  # fewer intervals than this say little about how long the host's slices are
MAX_SHORT_SHARE = 0.10  # without steal samples: more intervals under two ticks than this, too coarse


def has_guest_ticks(events: pl.DataFrame) -> bool:
    """A trace this level applies to: tick events and no vCPU state events (no host trace)."""
    kinds = events["kind"]
    if kinds.is_in(list(STATE_KINDS)).any():
        return False
    return bool(events.select(_ticks_expr().any()).item())


def _ticks_expr() -> pl.Expr:
    return (pl.col("kind") == "other") & pl.col("event").cast(pl.String).is_in(list(TICK_EVENTS))


def tick_period(ticks: pl.DataFrame) -> int | None:
    """1/HZ of the guest kernel: the HZ choice that most intervals between consecutive ticks of
    one vCPU match (missed ticks make longer intervals, late ticks shorter ones)."""
    diffs = ticks.select(pl.col("ts").diff().over("vm", "vcpu", order_by="ts").alias("d"))["d"].drop_nulls()
    if diffs.is_empty():
        return None
    best = max(
        HZ_CHOICES,
        key=lambda hz: int(((diffs - 1e9 / hz).abs() <= HZ_MATCH * 1e9 / hz).sum()),
    )
    period = 1_000_000_000 // best
    return period if ((diffs - period).abs() <= HZ_MATCH * period).any() else None


def _phases(ticks: pl.DataFrame, period: int) -> pl.DataFrame:
    """Per VM, the tick grid's phase (ts mod period): the most common residue, in microseconds
    (text timestamps have that resolution; late ticks scatter, grid ticks pile up)."""
    us = ((pl.col("ts") % period) // 1000).alias("us")
    counts = ticks.select("vm", us).group_by("vm", "us").len()
    return (
        counts.sort("len", "us", descending=[True, False])
        .group_by("vm", maintain_order=True)
        .first()
        .select("vm", (pl.col("us") * 1000).alias("phase"))
    )


def _held_through(gaps: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """`held`: the gap's last event is a contended acquisition of a lock whose next acquisition (by
    a vCPU already waiting before the first missed tick) comes after that tick, and not as that
    waiter resumed from a stop inside its wait: a stopped waiter takes the lock only once it runs
    again, however early it was released (on a fifo lock, handed to it while stopped), so that
    acquisition says nothing about when the lock was released."""
    locks = events.filter(
        pl.col("kind").is_in(["lock_contend", "lock_acquire"]) & pl.col("lock").is_not_null()
    )
    contends = locks.filter(pl.col("kind") == "lock_contend").select(
        "vm", "vcpu", "lock", pl.col("ts").alias("wait_ts")
    )
    acq = (
        locks.filter(pl.col("kind") == "lock_acquire")
        .select("vm", "vcpu", "lock", "ts")
        .sort("ts")
        .join_asof(
            contends.sort("wait_ts"),
            left_on="ts",
            right_on="wait_ts",
            by=["vm", "vcpu", "lock"],
            strategy="backward",
            check_sortedness=False,
        )
    )
    resumed = gaps.select("vm", "vcpu", pl.col("next").alias("own_end"))
    acq = acq.sort("ts").join_asof(
        resumed.sort("own_end"),
        left_on="ts",
        right_on="own_end",
        by=["vm", "vcpu"],
        strategy="backward",
        check_sortedness=False,
    )
    at_resume = (
        (pl.col("own_end") > pl.col("wait_ts")) & (pl.col("ts") - pl.col("own_end") <= RELEASE_NS)
    ).fill_null(False)
    acq = acq.select(
        "vm",
        "lock",
        pl.col("ts").alias("next_acq"),
        "wait_ts",
        pl.col("vcpu").alias("next_vcpu"),
        at_resume.alias("at_resume"),
    )
    took = gaps.filter(pl.col("kind") == "lock_acquire").sort("ts")
    took = took.with_columns((pl.col("ts") + 1).alias("_after")).join_asof(
        acq.sort("next_acq"),
        left_on="_after",
        right_on="next_acq",
        by=["vm", "lock"],
        strategy="forward",
        check_sortedness=False,
    )
    held = (
        (pl.col("next_acq") > pl.col("g1"))
        & (pl.col("wait_ts") < pl.col("g1"))
        & (pl.col("next_vcpu") != pl.col("vcpu"))
        & ~pl.col("at_resume")
    ).fill_null(False)
    took = took.select("vm", "vcpu", "ts", held.alias("held"))
    return gaps.join(took, on=["vm", "vcpu", "ts"], how="left").with_columns(pl.col("held").fill_null(False))


def _waited_through(gaps: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """`sibling_waits`: another vCPU of the VM began a lock wait between the gap's last event and its
    first missed tick, and was still waiting at that tick (the gap's vCPU itself not waiting)."""
    locks = events.filter(
        pl.col("kind").is_in(["lock_contend", "lock_acquire"]) & pl.col("lock").is_not_null()
    )
    begin = pl.col("kind") == "lock_contend"
    waits = (
        locks.sort("ts", maintain_order=True)  # canonical order: a contend before its acquire at one instant
        .with_columns(pl.col("ts").shift(-1).over("vm", "vcpu", "lock").alias("wait_end"))
        .filter(begin)
        .select("vm", pl.col("vcpu").alias("waiter"), pl.col("ts").alias("wait_ts"), "wait_end")
    )
    pairs = gaps.select("vm", "vcpu", "ts", "g1", "next").join(waits, on="vm")
    through = (
        (pl.col("waiter") != pl.col("vcpu"))
        & (pl.col("wait_ts") >= pl.col("ts"))
        & (
            (
                (pl.col("wait_ts") < pl.col("g1"))
                & (pl.col("wait_end").is_null() | (pl.col("wait_end") > pl.col("g1")))
            )
            | (
                (pl.col("wait_ts") < pl.col("next"))
                & (pl.col("wait_end").is_null() | (pl.col("wait_end") >= pl.col("next")))
                & (pl.col("wait_end").is_null() | (pl.col("wait_end") <= pl.col("next") + RELEASE_NS))
            )
        )
    )
    waiting = (
        (pl.col("waiter") == pl.col("vcpu"))
        & (pl.col("wait_ts") <= pl.col("ts"))
        & (pl.col("wait_end").is_null() | (pl.col("wait_end") > pl.col("ts")))
    )
    waiters = pairs.filter(waiting).select("vm", "vcpu", "ts").unique()  # a waiter holds no lock
    found = pairs.filter(through).select("vm", "vcpu", "ts").unique()
    return found.join(waiters, on=["vm", "vcpu", "ts"], how="anti").with_columns(
        pl.lit(True).alias("sibling_waits")
    )


def _idle(events: pl.DataFrame) -> pl.DataFrame:
    """Guest scheduler switches: idle (switched to pid 0) after each, per vCPU."""
    return (
        events.filter(pl.col("kind") == "task_switch")
        .select("vm", "vcpu", "ts", (pl.col("value") == 0).alias("idle"))
        .sort("ts")
    )


def stretches(events: pl.DataFrame, t_end: int) -> tuple[pl.DataFrame, int] | None:
    """Per vCPU, each stretch from one event to the next (vm, vcpu, ts, kind, lock, next, tail: the
    last, open to the VM's end; lead rows of kind null: a vCPU silent from the VM's first event),
    its first grid tick g1 beyond the tolerance and `missed` (g1 passed without a tick: a gap);
    and the tick period. None without usable ticks."""
    guest = events.filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
    ticks = guest.filter(_ticks_expr()).select("vm", "vcpu", "ts")
    period = tick_period(ticks)
    if period is None:
        return None
    tol = max(20_000, period // 50)  # timestamp truncation and interrupt latency
    phases = _phases(ticks, period)
    # The capture starts for every vCPU at the VM's first event: one silent from there was not running.
    starts = (
        guest.group_by("vm", "vcpu")
        .agg(pl.col("ts").min().alias("own"))
        .with_columns(pl.col("own").min().over("vm").alias("ts"))
    )
    lead = starts.filter(pl.col("ts") < pl.col("own")).select(
        "vm",
        "vcpu",
        "ts",
        pl.lit(None, guest.schema["kind"]).alias("kind"),
        pl.lit(None, pl.UInt64).alias("lock"),
    )
    ev = (
        pl.concat([lead, guest.select("vm", "vcpu", "ts", "kind", "lock")], how="vertical_relaxed")
        .unique(["vm", "vcpu", "ts"], keep="last", maintain_order=True)
        .sort("vm", "vcpu", "ts")
        .with_columns(pl.col("ts").shift(-1).over("vm", "vcpu").alias("next"))
        .join(phases, on="vm", how="left")
    )
    # each VM's capture ends with its last event (guest files of several VMs have their own clocks)
    vm_end = pl.min_horizontal(pl.col("ts").max().over("vm"), pl.lit(t_end))
    ev = ev.with_columns(vm_end.alias("vm_end"))
    last = ev.filter(pl.col("next").is_null()).with_columns(
        pl.col("vm_end").alias("next"), pl.lit(True).alias("tail")
    )
    ev = pl.concat(
        [ev.filter(pl.col("next").is_not_null()).with_columns(pl.lit(False).alias("tail")), last],
        how="vertical_relaxed",
    )
    # first grid tick after the event (beyond the tolerance), and whether it is missed
    first_grid = ((pl.col("ts") + tol - pl.col("phase")) // period + 1) * period + pl.col("phase")
    ev = ev.with_columns(first_grid.alias("g1")).with_columns(
        (pl.col("g1") < pl.col("next") - tol).alias("missed")
    )
    return ev, period


def _with_waiting(df: pl.DataFrame, events: pl.DataFrame, on: str) -> pl.DataFrame:
    """df with `waiting`: whether its vCPU was inside a lock wait at time `on`."""
    return df.join_asof(
        lock_waits(events).rename({"ts": "wts"}),
        left_on=on,
        right_on="wts",
        by=["vm", "vcpu"],
        strategy="backward",
        check_sortedness=False,
    )


def _busy_stretches(ev: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """The closed stretches between two events of a vCPU, with `waiting` (inside a lock wait) and
    `idle` (after a switch to the idle task)."""
    closed = ev.filter(~pl.col("tail") & pl.col("kind").is_not_null()).sort("ts")
    closed = _with_waiting(closed, events, "ts")
    idle = _idle(events)
    if idle.height:
        closed = closed.join_asof(
            idle.rename({"ts": "sw"}),
            left_on="ts",
            right_on="sw",
            by=["vm", "vcpu"],
            strategy="backward",
            check_sortedness=False,
        )
    else:
        closed = closed.with_columns(pl.lit(None, pl.Boolean).alias("idle"))
    return closed.with_columns(pl.col("waiting").fill_null(False), pl.col("idle").fill_null(False))


def not_running_intervals(events: pl.DataFrame, t_end: int) -> tuple[pl.DataFrame, int] | None:
    """The gaps: vm, vcpu, start, start_lo, start_hi, end, tail (still open at t_end), ambiguous
    (inside a lock wait, or at the trace's end: maybe halted), and the tick period; None without
    usable ticks."""
    found = stretches(events, t_end)
    if found is None:
        return None
    ev, period = found
    return _gaps(ev, events), period


def _gaps(ev: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """The stretches with a missed tick, as not-running intervals (not_running_intervals)."""
    gaps = ev.filter("missed")
    gaps = _held_through(gaps, events).join(
        _waited_through(gaps, events), on=["vm", "vcpu", "ts"], how="left"
    )
    gaps = gaps.with_columns((pl.col("held") | pl.col("sibling_waits").fill_null(False)).alias("held"))
    # The stop is anywhere between the last event and the missed tick: the middle, unless a sibling
    # waits for a lock throughout (it began waiting there and still waits at the missed tick), or the
    # vCPU had just taken a lock that its queued waiter could take only after the missed tick: then
    # it most likely stopped while holding a lock, within a critical section of its last event.
    start = pl.when(pl.col("held")).then(pl.col("ts")).otherwise((pl.col("ts") + pl.col("g1")) // 2)
    gaps = gaps.select(
        "vm",
        "vcpu",
        pl.col("ts").alias("start_lo"),
        pl.col("g1").alias("start_hi"),
        start.alias("start"),
        pl.col("next").alias("end"),
        "tail",
    ).sort("start_lo")
    # a gap inside a guest-idle stretch is NO_HZ, not preemption
    idle = _idle(events)
    if idle.height:
        gaps = gaps.join_asof(
            idle.drop("ts").with_columns(idle["ts"].alias("sw")),
            left_on="start_lo",
            right_on="sw",
            by=["vm", "vcpu"],
            strategy="backward",
            check_sortedness=False,
        ).filter(~pl.col("idle").fill_null(False))
    gaps = _with_waiting(gaps, events, "start_lo")
    ambiguous = pl.col("waiting").fill_null(False) | pl.col("tail")
    cols = ("vm", "vcpu", "start", "start_lo", "start_hi", "end", "tail")
    return gaps.select(*cols, ambiguous.alias("ambiguous"))


def infer(
    events: pl.DataFrame, t_end: int, pv_spinlocks: bool | None = None
) -> tuple[pl.DataFrame, GuestPreemption] | None:
    """Synthetic vCPU state events (canonical rows, origin guest) and what was found; None when
    the trace has no usable ticks. `pv_spinlocks` declares whether the guest's spinlocks are
    paravirt (None: as the trace says, if it does)."""
    found = stretches(events, t_end)
    if found is None:
        return None
    ev, period = found
    gaps = _gaps(ev, events)
    info = GuestPreemption(hz=1_000_000_000 // period, tick_ns=period)
    gaps = gaps.with_columns(
        pl.col("vm").cast(pl.String), ((pl.col("end") - pl.col("start")) >= 2 * period).alias("placed")
    )
    steal = steal_per_vcpu(events)
    info.pv_spinlocks, info.pv_spinlocks_from = pv_spinlocks_evidence(events, pv_spinlocks)
    if steal.height:
        gaps = split_by_steal(gaps, steal, info)
    else:
        gaps = gaps.with_columns(pl.lit(1.0).alias("f"))
        info.notes.append("no steal samples: not-running time inside lock waits is taken as preempted")
    short = gaps.select((~pl.col("placed")).mean()).item() if gaps.height else None
    info.short_share = None if short is None else round(short, 4)
    if (
        info.steal_ns is None
        and short is not None
        and gaps.height >= MIN_INTERVALS
        and short > MAX_SHORT_SHARE
    ):
        info.limited = (
            f"{100 * short:.0f}% of the not-running intervals the guest ticks show (HZ={info.hz}) last under "
            "two ticks and there are no steal samples to say how much shorter preemption they miss; "
            "pvtrace record --guest writes them, a guest kernel with a higher CONFIG_HZ or a host trace resolves it"
        )
    dur = pl.col("end") - pl.col("start")
    gaps = gaps.with_columns(
        (dur * (1 - pl.col("f").fill_null(1.0))).round().cast(pl.Int64).alias("halted_ns")
    )
    info.n_intervals = gaps.height
    info.not_running_ns = int(gaps.select(dur.sum()).item() or 0)
    info.not_running_lo_ns = int(gaps.select((pl.col("end") - pl.col("start_hi")).sum()).item() or 0)
    info.not_running_hi_ns = int(gaps.select((pl.col("end") - pl.col("start_lo")).sum()).item() or 0)
    info.preempted_ns = info.not_running_ns - int(gaps["halted_ns"].sum() or 0)
    info.placed_ns = int(gaps.filter("placed").select(dur.sum()).item() or 0)
    info.stops = gaps.select("vm", "vcpu", "start", "start_lo", "start_hi", "end")
    halted = info.not_running_ns - info.preempted_ns
    if info.steal_unit_ns and halted > max(HALTED_SHARE * info.not_running_ns, 2 * info.steal_unit_ns):
        info.halting = (
            f"lock waiters halt (pv spinlocks: {halted / 1e6:.1f} ms of the vCPUs' silence inside lock waits "
            "is not steal): a halt shorter than a tick leaves no trace, so spin cannot be told from halting"
        )
    if info.pv_spinlocks:
        info.halting = info.halting or pv_halts(info.pv_spinlocks_from)
    handoffs = late_handoffs(gaps, events, period)
    info.wait_stops, yielded = yields_in_waits(_busy_stretches(ev, events), period, handoffs)
    if info.halting is None and info.limited is None:
        info.halting = yielded
    info.unavailable |= dict.fromkeys(("wait_halted_ns", "waste_lwp_halted_ns", "n_lwp_halted"), HALT_UNSEEN)
    info.partial = unseen_partial(info)
    return _state_events(events, gaps), info


def _state_events(events: pl.DataFrame, gaps: pl.DataFrame) -> pl.DataFrame:
    """vcpu_run at the VM's first event (the capture's start) and at each gap's end; at a gap's start vcpu_preempt, or
    vcpu_halt then vcpu_wake where its halted part ends."""
    first = (
        events.filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
        .group_by("vm", "vcpu")
        .agg(pl.col("ts").min())
        .select(
            pl.col("vm").cast(pl.String),
            "vcpu",
            pl.col("ts").min().over("vm"),
            pl.lit("vcpu_run").alias("kind"),
        )
    )
    halt_end = pl.col("start") + pl.col("halted_ns")
    rows = [
        first,
        gaps.filter(~pl.col("tail")).select(
            "vm", "vcpu", pl.col("end").alias("ts"), pl.lit("vcpu_run").alias("kind")
        ),
        gaps.select(
            "vm",
            "vcpu",
            pl.col("start").alias("ts"),
            pl.when(pl.col("halted_ns") > 0)
            .then(pl.lit("vcpu_halt"))
            .otherwise(pl.lit("vcpu_preempt"))
            .alias("kind"),
        ),
        gaps.filter((pl.col("halted_ns") > 0) & (halt_end < pl.col("end"))).select(
            "vm", "vcpu", halt_end.alias("ts"), pl.lit("vcpu_wake").alias("kind")
        ),
    ]
    return pl.concat(rows, how="vertical_relaxed").with_columns(pl.lit("guest").alias("origin"))


def with_guest_states(
    events: pl.DataFrame, t_end: int, pv_spinlocks: bool | None = None
) -> tuple[pl.DataFrame, GuestPreemption] | None:
    """The events plus the inferred vCPU state events, in canonical order (a run goes before the
    events at its instant: they happened once the vCPU ran again; a stop goes after)."""
    found = infer(events, t_end, pv_spinlocks)
    if found is None:
        return None
    states, info = found
    states = conform_events(
        states.with_columns(pl.col("kind").alias("event"), pl.lit(0, pl.Int64).alias("seq"))
    ).cast(dict(events.schema))
    rank = (
        pl.when(pl.col("_new") & (pl.col("kind") == "vcpu_run"))
        .then(0)
        .when(pl.col("_new"))
        .then(2)
        .otherwise(1)
    )
    prio = pl.col("kind").cast(pl.String).replace_strict(KIND_PRIORITY, default=0, return_dtype=pl.Int64)
    merged = (
        pl.concat(
            [
                events.with_columns(pl.lit(False).alias("_new")),
                states.with_columns(pl.lit(True).alias("_new")),
            ]
        )
        .sort(["ts", rank, "seq", prio], maintain_order=True)
        .drop("_new")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))
    )
    return merged, info
