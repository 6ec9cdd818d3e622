"""What each kind of tracer could have seen of a simulator run.

A run holds every event the model knows. A host tracer sees only the host's
side (vCPU thread scheduling, exits, kicks), a guest tracer only the guest
kernel's lock tracepoints (with its scheduler ticks and the recorder's steal
samples, pvtrace/simulate/ticks.py), and `contention_end` fires only for
acquisitions that waited. Rendering a view and ingesting it back must give the view again,
so the views are defined once here and the renderers use them too.
"""

from __future__ import annotations

import dataclasses

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.guest_signals import TICK_EVENTS
from pvtrace.schema import conform_events
from pvtrace.simulate.output import OTHER_EVENTS
from pvtrace.simulate.ticks import GUEST_HZ, guest_signal_events
from pvtrace.trace import Trace

VIEWS: tuple[str, ...] = ("full", "host", "guest", "merged")

# Kinds a host tracer (sched + kvm tracepoints) sees.
HOST_KINDS: tuple[str, ...] = (
    "vcpu_run",
    "vcpu_preempt",
    "vcpu_halt",
    "vcpu_wake",
    "vm_exit",
    "vm_entry",
    "pv_kick",
    "yield_to",
    "ple_window",
)
# Kinds a guest tracer (lock:contention_begin/end) sees; lock_acquire only when contended.
GUEST_KINDS: tuple[str, ...] = ("lock_contend", "lock_acquire")
# `other` events of a guest-only view: the guest's ticks, the recorder's steal samples and the
# guest's IPI tracepoints (TLB shootdowns: csd and ipi events).
SIGNAL_EVENTS: tuple[str, ...] = (*TICK_EVENTS, "tracing_mark_write", *OTHER_EVENTS)


def last_exit_reason(
    partition: tuple[str, ...] = ("vm", "vcpu"), order_by: tuple[str, ...] | None = ("ts", "seq")
) -> pl.Expr:
    """Per row: the reason of the latest vm_exit of the row's vCPU up to that row, in canonical
    order (order_by=None when the frame is already in that order)."""
    reason = pl.when(pl.col("kind") == "vm_exit").then(pl.col("reason").cast(pl.String)).forward_fill()
    return reason.over(list(partition), order_by=list(order_by) if order_by else None)


def contended_acquire(events: pl.DataFrame) -> pl.Series:
    """Per row: True for a lock_acquire that closes a wait, i.e. whose vCPU's
    previous lock_contend/lock_acquire on that lock (canonical order) is a lock_contend."""
    indexed = events.with_row_index("_row")
    waits = indexed.filter(pl.col("kind").is_in(GUEST_KINDS)).select(
        "_row",
        (
            (pl.col("kind") == "lock_acquire")
            & (pl.col("kind").shift(1).over(["vm", "vcpu", "lock"], order_by=["ts", "seq"]) == "lock_contend")
        ).alias("contended"),
    )
    contended_rows = waits.filter(pl.col("contended"))["_row"]
    return indexed["_row"].is_in(contended_rows.implode()).alias("contended")


def select_view(trace: Trace, view: str, *, guest_hz: int | None = None) -> Trace:
    """The events of `trace` that `view` (full, host, guest, merged) can see, in the same order.

    Guest-side events lose their pCPU (a guest tracer cannot know the host CPU);
    every other column is kept as the simulator wrote it. A guest view of a full run
    also holds the guest's ticks (at `guest_hz`, else the scenario's vm.guest_hz) and steal samples.
    """
    if view not in VIEWS:
        raise UsageError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    events = trace.events
    if view != "full":
        # A directed yield is visible only as the SCHED_YIELD hypercall; the one KVM
        # makes on a PAUSE exit (kvm_vcpu_on_spin) has no tracepoint.
        invisible_yield = (pl.col("kind") == "yield_to") & (last_exit_reason() != "HYPERCALL").fill_null(True)
        host = pl.col("kind").is_in(HOST_KINDS) & ~invisible_yield
        signal = (pl.col("kind") == "other") & pl.col("event").cast(pl.String).is_in(SIGNAL_EVENTS)
        guest = (
            (pl.col("kind") == "lock_contend")
            | ((pl.col("kind") == "lock_acquire") & pl.lit(contended_acquire(events)))
            | (signal if view == "guest" else pl.lit(False))
        )
        keep = {"host": host, "guest": guest, "merged": host | guest}[view]
        events = events.filter(keep).with_columns(
            pl.when(pl.col("kind").is_in(GUEST_KINDS))
            .then(pl.lit(None, dtype=pl.Int32))
            .otherwise(pl.col("pcpu"))
            .alias("pcpu")
        )
    if view == "guest" and trace.meta.view == "full":
        scenario_hz = ((trace.meta.extra.get("scenario") or {}).get("vm") or {}).get("guest_hz")
        events = _with_guest_signals(events, trace, guest_hz or scenario_hz or GUEST_HZ)
    meta = dataclasses.replace(trace.meta, view=view)
    return Trace(events=events, meta=meta)


def _with_guest_signals(seen: pl.DataFrame, full: Trace, hz: int) -> pl.DataFrame:
    """The guest view plus the ticks and steal samples a guest capture logs (as `other` events,
    numbered after the run's own events so every row keeps a distinct seq)."""
    signals = guest_signal_events(full, hz)
    if signals.is_empty():
        return seen
    first_seq = int(full.events["seq"].max() or 0) + 1
    extra = conform_events(
        signals.sort("ts", "vm", "vcpu").with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + first_seq).alias("seq")
        )
    ).cast(dict(seen.schema))
    return pl.concat([seen, extra]).sort("ts", "seq", maintain_order=True)
