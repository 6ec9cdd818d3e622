"""What an analysis returns: named tables plus the summary.

This is the contract between the analyzer and its readers (CLI summary,
report pages, compare). Each table's columns are documented here; a table
that the trace cannot give is an empty frame of its schema and the reason is
in `summary.unavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pvtrace.analyze.context import (
    INCIDENTS_COLUMNS,
    LOCK_CALLERS_COLUMNS,
    PCPU_TIMELINE_COLUMNS,
    VM_EXITS_COLUMNS,
)
from pvtrace.fmt import clock_tick
from pvtrace.schema import (
    CONVOY_COLUMNS,
    LHP_INCIDENT_COLUMNS,
    LWP_INCIDENT_COLUMNS,
    VCPU_STATE,
    Column,
    schema_of,
)
from pvtrace.summary import Summary

I64, I32, U64, STR, BOOL, F64 = pl.Int64(), pl.Int32(), pl.UInt64(), pl.String(), pl.Boolean(), pl.Float64()

_SPLIT = (
    Column("spin_ns", I64, "Wait time while the waiter ran."),
    Column("spin_useful_ns", I64, "Spin while the holder ran, or during a normal hand-off."),
    Column("waste_lhp_ns", I64, "Spin while the holder was not running."),
    Column("waste_lwp_ns", I64, "Spin while the lock was free and its next owner not running."),
    Column("waste_lwp_preempted_ns", I64, "waste_lwp_ns with the next owner preempted."),
    Column("waste_lwp_halted_ns", I64, "waste_lwp_ns with the next owner halted."),
    Column("spin_unattributed_ns", I64, "Spin while the holder was unknown."),
)

_UNDECIDED = Column(
    "spin_undecided_ns",
    I64,
    "Spin on locks of undecided kind, whose LWP waste is unknown: waste_lwp_ns leaves it out where "
    "this is not 0 (it stays in spin_useful_ns).",
)

TABLES: dict[str, tuple[Column, ...]] = {
    "vcpu_states": (
        Column("vm", STR, "VM."),
        Column("vcpu", I32, "vCPU index."),
        Column("state", VCPU_STATE, "running, preempted, halted or unknown."),
        Column("start", I64, "ns."),
        Column("end", I64, "ns (exclusive)."),
        Column("dur", I64, "end - start, ns."),
    ),
    "waits": (
        Column("vm", STR, "VM."),
        Column("lock", U64, "Lock address."),
        Column("vcpu", I32, "Waiting vCPU."),
        Column("start", I64, "ns: contention begins."),
        Column("end", I64, "ns: acquisition (or trace end)."),
        Column("dur", I64, "end - start, ns."),
        *_SPLIT,
        Column("halted_ns", I64, "Wait time while the waiter was halted (pv slow path)."),
        Column("preempted_ns", I64, "Wait time while the waiter was preempted."),
        Column("handoff", BOOL, "The wait began before the previous release (a hand-off)."),
        Column("truncated", BOOL, "Still open at the end of the trace."),
    ),
    "holds": (
        Column("vm", STR, "VM."),
        Column("lock", U64, "Lock address."),
        Column("vcpu", I32, "Holder; null when unknown."),
        Column("start", I64, "ns: acquisition (trace start when held before it)."),
        Column("end", I64, "ns: release (or trace end)."),
        Column("dur", I64, "end - start, ns."),
        Column("inferred", BOOL, "Holder inferred from contention events, not seen acquiring."),
        Column("truncated", BOOL, "Still open at the end of the trace."),
    ),
    "waste_by_lock": (
        Column("vm", STR, "VM."),
        Column("lock", U64, "Lock address."),
        Column("n_acquisitions", I64, "Acquisitions seen (null-free only at exact fidelity)."),
        Column("n_contended", I64, "Acquisitions that ended a wait."),
        *_SPLIT,
        Column("wait_p50_ns", I64, "Median wait."),
        Column("wait_p90_ns", I64, "90th percentile wait."),
        Column("wait_p99_ns", I64, "99th percentile wait."),
        Column("wait_max_ns", I64, "Longest wait."),
    ),
    "waste_by_vcpu": (
        Column("vm", STR, "VM."),
        Column("vcpu", I32, "vCPU."),
        *_SPLIT,
        _UNDECIDED,
        Column("running_ns", I64, "Time the vCPU ran."),
    ),
    "waste_by_vm": (
        Column("vm", STR, "VM."),
        *_SPLIT,
        _UNDECIDED,
        Column("running_ns", I64, "Time the VM's vCPUs ran."),
    ),
    "lhp_incidents": LHP_INCIDENT_COLUMNS,
    "lwp_incidents": LWP_INCIDENT_COLUMNS,
    "convoys": CONVOY_COLUMNS,
    "exit_reasons": (
        Column("reason", STR, "Normalized exit reason."),
        Column("count", I64, "Exits."),
        Column("share_pct", F64, "Share of all exits, percent."),
        Column("total_ns", I64, "Time in exit (exit to next entry of the same vCPU)."),
        Column("min_ns", I64, "Shortest time in exit."),
        Column("avg_ns", I64, "Mean time in exit."),
        Column("max_ns", I64, "Longest time in exit."),
    ),
    "pause_exits": (
        Column("ts", I64, "ns."),
        Column("vm", STR, "VM."),
        Column("vcpu", I32, "vCPU that exited."),
        Column("n_siblings_preempted", I64, "Other vCPUs of the VM preempted at the exit."),
    ),
    "kicks": (
        Column("ts", I64, "ns: the kick."),
        Column("vm", STR, "VM."),
        Column("vcpu", I32, "Kicker."),
        Column("target", I32, "Kicked vCPU."),
        Column("latency_ns", I64, "Kick to the target running again; null if it never did in the trace."),
    ),
    "yields": (
        Column("ts", I64, "ns."),
        Column("vm", STR, "VM."),
        Column("vcpu", I32, "Yielding vCPU."),
        Column("target", I32, "Yielded-to vCPU."),
        Column("target_held_lock", BOOL, "The target held a lock at the yield; null when unknown."),
    ),
    "lock_kinds": (
        Column("vm", STR, "VM."),
        Column("lock", U64, "Lock address."),
        Column("kind", STR, "fifo, unfair or undecided (too little or mixed evidence)."),
        Column(
            "source",
            STR,
            "--lock-kind, trace metadata, inferred (from the order evidence), or its VM's locks (too "
            "little evidence of its own; its VM's locks together decided the kind).",
        ),
        Column("n_handoffs", I64, "Contended acquisitions taken while another waiter was queued."),
        Column("n_in_order", I64, "Of those, the ones that overtook no earlier waiter."),
        Column("in_order_pct", F64, "n_in_order / n_handoffs, percent; null without hand-offs."),
        Column(
            "jump_tries",
            F64,
            "Two-vCPU VMs: tries the other vCPU would make while a waiter is queued and stopped (0 elsewhere).",
        ),
        Column("jump_seen", I64, "Of those, the contentions seen (fifo: every try; unfair: none)."),
    ),
    "incidents": INCIDENTS_COLUMNS,
    "lock_callers": LOCK_CALLERS_COLUMNS,
    "pcpu_timeline": PCPU_TIMELINE_COLUMNS,
    "vm_exits": VM_EXITS_COLUMNS,
    "lost_windows": (
        Column("origin", STR, "host or guest."),
        Column("cpu", I32, "pCPU (host) or guest CPU whose events were lost."),
        Column("start", I64, "ns: last event seen before the loss."),
        Column("end", I64, "ns: the loss marker."),
        Column("n_lost", I64, "Events lost; null when unknown."),
    ),
}

TABLE_SCHEMAS: dict[str, pl.Schema] = {name: schema_of(cols) for name, cols in TABLES.items()}


def empty_table(name: str) -> pl.DataFrame:
    """An empty frame of one result table's schema."""
    return pl.DataFrame(schema=TABLE_SCHEMAS[name])


@dataclass
class Analysis:
    """Every table of one analysis, by name, and the summary."""

    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    summary: Summary = field(default_factory=Summary)

    def table(self, name: str) -> pl.DataFrame:
        """A result table (an empty one of the right schema when absent)."""
        return self.tables.get(name, empty_table(name))

    def clock_tick(self) -> int:
        """The trace's time resolution as its waits (else its vCPU states) show it (fmt.clock_tick)."""
        return clock_tick(self.table("waits"), self.table("vcpu_states"))
