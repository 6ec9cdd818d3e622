"""The guest tracepoint records of one VM: lock:contention_begin / contention_end, ticks, steal.

A guest kernel prints contention_begin when a spinlock acquisition starts to
wait and contention_end when it gets the lock, on the guest CPU (= vCPU index)
of the workload task that waits. Acquisitions that never waited print nothing.
A guest view also carries the scheduler ticks (`local_timer_entry`, in hard
irq context on the workload task) and the recorder's steal samples
(`tracing_mark_write`, written by the recorder task), pvtrace/simulate/ticks.py.
"""

from __future__ import annotations

import polars as pl

from pvtrace.errors import PvtraceError
from pvtrace.guest_signals import TICK_EVENTS
from pvtrace.simulate.output import OTHER_EVENTS
from pvtrace.simulate.render.identities import GUEST_COMM, GUEST_PID_BASE, hashed_lock_addresses
from pvtrace.simulate.render.text import hex_lx
from pvtrace.simulate.views import contended_acquire
from pvtrace.trace import Trace

# Flag column of spinlock contention events (taken with interrupts off, one lock held).
GUEST_FLAGS = "d..1."

TICK_FLAGS = "d.h1."  # hard irq, interrupts off
MARKER_FLAGS = "....."
SEND_FLAGS = "...1."  # smp_call_function_many_cond: preemption off, interrupts on
IRQ_EVENTS = ("csd_function_entry", "csd_function_exit")  # the call-function IPI's handler: hard irq
GUEST_EVENTS: tuple[tuple[str, str], ...] = (
    ("lock", "contention_begin"),
    ("lock", "contention_end"),
    ("irq_vectors", "local_timer_entry"),
    ("csd", "csd_queue_cpu"),
    ("ipi", "ipi_send_cpumask"),
    ("csd", "csd_function_entry"),
    ("csd", "csd_function_exit"),
)
MARKER = "tracing_mark_write"
RECORDER_COMM = "python3"  # pvtrace record, writing the steal samples
RECORDER_PID = GUEST_PID_BASE - 1


def guest_offset_ns(trace: Trace, vm: str) -> int:
    """The VM's guest clock offset (guest clock = host clock - offset); 0 when the run has none."""
    offsets = trace.meta.clock.get("guest_offset_ns") or {}
    return int(offsets.get(vm, 0))


def guest_clock_ts(trace: Trace, vm: str) -> pl.Expr:
    """Host `ts` as the VM's guest clock reads it: host - offset, plus meta.clock["guest_drift_ppm"]
    (a guest clock running fast by that many ppm of host time since 0; the simulator sets none, the
    clock estimator's accuracy runs do, so the drift lands before the printer cuts the digits)."""
    ppm = float((trace.meta.clock.get("guest_drift_ppm") or {}).get(vm, 0.0))
    ts = pl.col("ts") - guest_offset_ns(trace, vm)
    return ts + (pl.col("ts") * (ppm / 1e6)).floor().cast(pl.Int64) if ppm else ts


def guest_records(trace: Trace, events: pl.DataFrame, vm: str, *, guest_clock: bool) -> pl.DataFrame:
    """The VM's guest lines in print order: ts (guest clock when `guest_clock`, else host), ord, cpu,
    pid, event, lock flags, the lock and its hashed `%p` text (see guest_payload)."""
    signals = events.filter(
        (pl.col("vm") == vm)
        & (pl.col("kind") == "other")
        & pl.col("event").is_in([*TICK_EVENTS, MARKER, *OTHER_EVENTS])
    )
    mine = events.filter((pl.col("vm") == vm) & pl.col("kind").is_in(["lock_contend", "lock_acquire"]))
    mine = mine.filter((pl.col("kind") == "lock_contend") | contended_acquire(mine))
    offset = guest_offset_ns(trace, vm) if guest_clock else 0
    clock = guest_clock_ts(trace, vm).alias("ts") if guest_clock else pl.col("ts")
    if mine.height and mine["ts"].min() - offset < 0:
        raise PvtraceError(
            f"guest clock offset of {vm} ({offset} ns) puts its first lock event before guest time 0; "
            "render on the host clock (trace-cmd merged report) or use a smaller offset"
        )
    hashed = hashed_lock_addresses(mine.select("vm", "lock"))
    mine = mine.join(hashed.drop("vm"), on="lock", how="left", maintain_order="left")
    begin = pl.col("kind") == "lock_contend"
    locks = mine.select(
        clock,
        "ord",
        pl.lit(0, dtype=pl.Int8).alias("sub"),
        pl.col("vcpu").alias("cpu"),
        (pl.lit(GUEST_PID_BASE) + pl.col("vcpu")).cast(pl.Int32).alias("pid"),
        pl.when(begin).then(pl.lit("contention_begin")).otherwise(pl.lit("contention_end")).alias("event"),
        pl.coalesce(pl.col("reason"), pl.lit("SPIN")).alias("flags"),
        pl.col("lock").cast(pl.UInt64),
        pl.col("hashed").cast(pl.Categorical),
        pl.lit(None, pl.String).alias("args"),
    )
    if signals.is_empty():
        return locks
    marker = pl.col("event") == MARKER
    other = signals.select(
        clock,
        "ord",
        pl.lit(0, dtype=pl.Int8).alias("sub"),
        pl.col("vcpu").alias("cpu"),
        pl.when(marker)
        .then(RECORDER_PID)
        .otherwise(GUEST_PID_BASE + pl.col("vcpu"))
        .cast(pl.Int32)
        .alias("pid"),
        pl.col("event").cast(pl.String),
        pl.lit(None, pl.String).alias("flags"),
        pl.lit(None, pl.UInt64).alias("lock"),
        pl.lit(None, pl.String).cast(pl.Categorical).alias("hashed"),
        pl.col("args"),
    )
    return pl.concat([locks, other], how="vertical_relaxed").sort("ord")


def guest_payload(pointer: str) -> pl.Expr:
    """The body of a guest record. `pointer` is how `%p` prints: "hashed" (tracefs with
    options/hash-ptr, the default) or "address" (libtraceevent in trace-cmd and perf: 0x + raw value)."""
    if pointer == "hashed":
        address = pl.col("hashed").cast(pl.String)
    else:
        address = pl.concat_str([pl.lit("0x"), hex_lx(pl.col("lock"))])
    detail = (
        pl.when(pl.col("event") == "contention_begin")
        .then(pl.concat_str([pl.lit(" (flags="), pl.col("flags"), pl.lit(")")]))
        .otherwise(pl.lit(" (ret=0)"))
    )
    is_lock = pl.col("event").is_in(["contention_begin", "contention_end"])
    return pl.when(is_lock).then(pl.concat_str([address, detail])).otherwise(pl.col("args"))


def guest_comm() -> pl.Expr:
    """The comm of the task a guest line is about: the workload task, or the recorder for a marker."""
    marker = pl.col("event").is_in([MARKER, "print"])
    return pl.when(marker).then(pl.lit(RECORDER_COMM)).otherwise(pl.lit(GUEST_COMM))


def guest_flags() -> pl.Expr:
    """The irq-info column of a guest ftrace line."""
    event = pl.col("event")
    return (
        pl.when(event.is_in([*TICK_EVENTS, *IRQ_EVENTS]))
        .then(pl.lit(TICK_FLAGS))
        .when(event == MARKER)
        .then(pl.lit(MARKER_FLAGS))
        .when(event.is_in(["csd_queue_cpu", "ipi_send_cpumask"]))
        .then(pl.lit(SEND_FLAGS))
        .otherwise(pl.lit(GUEST_FLAGS))
    )
