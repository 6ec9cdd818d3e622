"""`perf script` text of tracepoint samples (perf 6.x, no libtraceevent plugins).

Each sample prints `"%16s %7d [%03d] %5lu.%06lu: %*s: %s"`: comm, tid, CPU,
time, then `system:event` right-aligned to the longest event name recorded,
and the kernel's TP_printk body (without plugins sched_switch keeps `R+`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.simulate.render.guest import GUEST_EVENTS, MARKER, guest_comm, guest_payload, guest_records
from pvtrace.simulate.render.host import HOST_EVENTS, host_records
from pvtrace.simulate.render.identities import pick_vm
from pvtrace.simulate.render.order import numbered
from pvtrace.simulate.render.payloads import line_comm, line_pid, with_payload
from pvtrace.simulate.render.text import batched, rjust, timestamp, write_lines, zpad
from pvtrace.trace import Trace


def _line(comm: pl.Expr, tid: pl.Expr, name: pl.Expr, width: int, payload: pl.Expr, decimals: int) -> pl.Expr:
    return pl.concat_str(
        [
            rjust(comm, 16),
            pl.lit(" "),
            rjust(tid, 7),
            pl.lit(" ["),
            zpad(pl.col("cpu"), 3),
            pl.lit("] "),
            timestamp(pl.col("ts"), decimals),
            pl.lit(": "),
            rjust(name, width),
            pl.lit(": "),
            payload,
        ]
    )


def _host_system() -> pl.Expr:
    return (
        pl.when(pl.col("event").cast(pl.String).str.starts_with("sched_"))
        .then(pl.lit("sched"))
        .otherwise(pl.lit("kvm"))
    )


def _guest_name() -> pl.Expr:
    systems = {event: f"{system}:" for system, event in GUEST_EVENTS}
    system = pl.col("event").cast(pl.String).replace_strict(systems, default="lock:", return_dtype=pl.String)
    return pl.concat_str([system, pl.col("event")])


def _host_lines(records: pl.DataFrame, decimals: int) -> Iterator[pl.Series]:
    width = max(len(f"{system}:{event}") for system, event in HOST_EVENTS)
    for batch in batched(records):
        name = pl.concat_str([_host_system(), pl.lit(":"), pl.col("event")])
        yield (
            with_payload(batch, plugins=False)
            .select(_line(line_comm("swapper"), line_pid(), name, width, pl.col("payload"), decimals))
            .to_series()
        )


def to_perf_script(
    trace: Trace, out: TextIO, side: str = "host", vm: str | None = None, ns: bool = False
) -> int:
    """Write the run as `perf script` prints the samples of a host recording (`perf record -e sched:...
    -e kvm:... -a`) or, with side="guest", of one guest's recording of lock:contention_* on its own clock.
    ns=True prints what `perf script --ns` prints. Returns the number of lines written."""
    events = numbered(trace)
    decimals = 9 if ns else 6
    if side == "host":
        if vm is not None:
            raise UsageError("a host trace holds every VM; vm is only for side='guest'")
        return write_lines(_host_lines(host_records(trace, events), decimals), out)
    if side == "guest":
        # perf records tracepoints, not trace_marker writes: the steal samples are not in its output.
        records = guest_records(trace, events, pick_vm(trace, vm), guest_clock=True)
        records = records.filter(pl.col("event") != MARKER)
        # perf pads to the longest name among the recorded events; ticks only when the view has them.
        present = set(records["event"].unique().to_list()) | {"contention_begin", "contention_end"}
        width = max(len(f"{system}:{event}") for system, event in GUEST_EVENTS if event in present)
        lines = (
            batch.select(
                _line(guest_comm(), pl.col("pid"), _guest_name(), width, guest_payload("address"), decimals)
            ).to_series()
            for batch in batched(records)
        )
        return write_lines(lines, out)
    raise UsageError(f"unknown side {side!r}; choose host or guest")
