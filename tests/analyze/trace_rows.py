"""Hand-written traces with small integer times for the analyzer tests."""

from __future__ import annotations

import polars as pl

from pvtrace.analyze import analyze
from pvtrace.analyze.result import Analysis
from pvtrace.schema import conform_events
from pvtrace.trace import Trace, TraceMeta, VmInfo


def trace_of(
    rows: list[tuple],
    *,
    t_end: int,
    t_start: int = 0,
    n_vcpus: int = 3,
    lock_kind: str = "fifo",
    view: str = "full",
) -> Trace:
    """A trace from rows (ts, kind, vcpu, extra dict); vm is vm0, seq is the row order."""
    records = []
    for seq, row in enumerate(rows):
        ts, kind, vcpu, *rest = row
        extra = rest[0] if rest else {}
        rec = {"ts": ts, "seq": seq, "vm": "vm0", "vcpu": vcpu, "kind": kind, "origin": "sim", "event": kind}
        rec.update(extra)
        records.append(rec)
    schema = {
        "ts": pl.Int64(),
        "seq": pl.Int64(),
        "vm": pl.String(),
        "vcpu": pl.Int32(),
        "kind": pl.String(),
        "origin": pl.String(),
        "event": pl.String(),
        "pcpu": pl.Int32(),
        "lock": pl.UInt64(),
        "reason": pl.String(),
        "target": pl.Int32(),
        "value": pl.Int64(),
        "args": pl.String(),
    }
    df = pl.DataFrame(records, schema=schema)
    meta = TraceMeta(
        format="test",
        view=view,
        t_start=t_start,
        t_end=t_end,
        vms={"vm0": VmInfo(n_vcpus=n_vcpus, lock_kind=lock_kind, lock_algorithm=None)},
    )
    return Trace(events=conform_events(df), meta=meta)


def analyze_merged(rows: list[tuple], *, t_end: int, n_vcpus: int = 4, lock_kind: str = "fifo") -> Analysis:
    """analyze() of rows in any order (sorted here by time) as a merged host + guest trace: holders
    inferred."""
    rows = sorted(rows, key=lambda r: r[0])
    return analyze(trace_of(rows, t_end=t_end, n_vcpus=n_vcpus, lock_kind=lock_kind, view="merged"))


def run(vcpu: int, ts: int, pcpu: int | None = None) -> tuple:
    return (ts, "vcpu_run", vcpu, {"pcpu": vcpu if pcpu is None else pcpu})


def preempt(vcpu: int, ts: int, pcpu: int | None = None) -> tuple:
    return (ts, "vcpu_preempt", vcpu, {"pcpu": vcpu if pcpu is None else pcpu, "reason": "R+"})


def halt(vcpu: int, ts: int) -> tuple:
    return (ts, "vcpu_halt", vcpu, {"pcpu": vcpu, "reason": "HLT"})


def wake(vcpu: int, ts: int) -> tuple:
    return (ts, "vcpu_wake", vcpu)


def contend(vcpu: int, ts: int, lock: int = 1) -> tuple:
    return (ts, "lock_contend", vcpu, {"lock": lock, "reason": "SPIN"})


def acquire(vcpu: int, ts: int, lock: int = 1) -> tuple:
    return (ts, "lock_acquire", vcpu, {"lock": lock})


def release(vcpu: int, ts: int, lock: int = 1) -> tuple:
    return (ts, "lock_release", vcpu, {"lock": lock})


def user_exit(vcpu: int, ts: int, pcpu: int | None = None) -> tuple:
    """An interrupt exit that found the guest in user mode (kvm_exit's rip in user space)."""
    return (
        ts,
        "vm_exit",
        vcpu,
        {"pcpu": vcpu if pcpu is None else pcpu, "reason": "EXTERNAL_INTERRUPT", "value": 1},
    )
