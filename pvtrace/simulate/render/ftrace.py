"""Host and guest ftrace text: what `cat /sys/kernel/tracing/trace` prints on a 6.x kernel.

Data lines follow the kernel's `"%16s-%-7d [%03d] %s %5lu.%06lu: %s: %s"`
(comm, pid, CPU, the 5-character flag column, microsecond timestamp, event,
TP_printk body). Timestamps are truncated to microseconds as the kernel does.
"""

from __future__ import annotations

from typing import TextIO

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.simulate.render.guest import guest_comm, guest_flags, guest_payload, guest_records
from pvtrace.simulate.render.host import host_records
from pvtrace.simulate.render.identities import n_pcpus, n_vcpus, pick_vm
from pvtrace.simulate.render.order import numbered
from pvtrace.simulate.render.payloads import host_flags, line_comm, line_pid, with_payload
from pvtrace.simulate.render.text import batched, ljust, rjust, timestamp, write_lines, zpad
from pvtrace.trace import Trace

LEGEND = """#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


def header(n_entries: int, n_cpus: int) -> str:
    """The `trace` file header of the nop tracer (nothing overwritten: entries = written)."""
    return (
        "# tracer: nop\n#\n"
        f"# entries-in-buffer/entries-written: {n_entries}/{n_entries}   #P:{n_cpus}\n" + LEGEND
    )


def _line(comm: pl.Expr, pid: pl.Expr, flags: pl.Expr, payload: pl.Expr) -> pl.Expr:
    return pl.concat_str(
        [
            rjust(comm, 16),
            pl.lit("-"),
            ljust(pid, 7),
            pl.lit(" ["),
            zpad(pl.col("cpu"), 3),
            pl.lit("] "),
            flags,
            pl.lit(" "),
            timestamp(pl.col("ts"), 6),
            pl.lit(": "),
            pl.col("event"),
            pl.lit(": "),
            payload,
        ]
    )


def _host_lines(records: pl.DataFrame):
    for batch in batched(records):
        yield (
            with_payload(batch, plugins=False)
            .select(_line(line_comm("<idle>"), line_pid(), host_flags(), pl.col("payload")))
            .to_series()
        )


def _guest_lines(records: pl.DataFrame):
    for batch in batched(records):
        yield batch.select(
            _line(guest_comm(), pl.col("pid"), guest_flags(), guest_payload("hashed"))
        ).to_series()


def to_ftrace(trace: Trace, out: TextIO, side: str = "host", vm: str | None = None) -> int:
    """Write the run as the ftrace `trace` file of the host (side="host") or of one guest
    (side="guest", on its own clock: host ts - meta.clock["guest_offset_ns"][vm]).
    Returns the number of event lines written."""
    events = numbered(trace)
    if side == "host":
        if vm is not None:
            raise UsageError("a host trace holds every VM; vm is only for side='guest'")
        records = host_records(trace, events)
        out.write(header(records.height, n_pcpus(trace)))
        return write_lines(_host_lines(records), out)
    if side == "guest":
        name = pick_vm(trace, vm)
        records = guest_records(trace, events, name, guest_clock=True)
        out.write(header(records.height, n_vcpus(trace, name)))
        return write_lines(_guest_lines(records), out)
    raise UsageError(f"unknown side {side!r}; choose host or guest")
