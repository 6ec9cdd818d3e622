"""`trace-cmd report -t` text (trace-cmd 3.x with the default libtraceevent plugins).

Per record trace-cmd prints `"%16s-%-5d [%03d] %5lu.%09lu: "` (with `-t`; six
decimals without), the event name followed by `:` and padded to 20 columns,
then the plugin-formatted body. With several inputs (`-i host.dat -i
trace-vm0.dat ...`) each record is prefixed by its file name right-aligned to
the longest name, and each file first prints its `name: cpus=N` line. The
merged report is on the host clock, as after trace-cmd's host-guest tsync.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.simulate.render.guest import MARKER, guest_comm, guest_payload, guest_records
from pvtrace.simulate.render.host import host_records
from pvtrace.simulate.render.identities import n_pcpus, n_vcpus, pick_vm, vm_names
from pvtrace.simulate.render.order import numbered
from pvtrace.simulate.render.payloads import line_comm, line_pid, with_payload
from pvtrace.simulate.render.text import batched, ljust, rjust, timestamp, write_lines, zpad
from pvtrace.trace import Trace

HOST_INPUT = "host.dat"


def guest_input(vm: str) -> str:
    """The guest's file name in a host-guest recording (`trace-<guest>.dat`)."""
    return f"trace-{vm}.dat"


def _body(comm: pl.Expr, pid: pl.Expr, payload: pl.Expr, decimals: int) -> pl.Expr:
    return pl.concat_str(
        [
            rjust(comm, 16),
            pl.lit("-"),
            ljust(pid, 5),
            pl.lit(" ["),
            zpad(pl.col("cpu"), 3),
            pl.lit("] "),
            timestamp(pl.col("ts"), decimals),
            pl.lit(": "),
            ljust(pl.concat_str([pl.col("event"), pl.lit(":")]), 21),
            pl.lit(" "),
            payload,
        ]
    )


def _lines(records: pl.DataFrame, width: int, decimals: int) -> Iterator[pl.Series]:
    """Format mixed host (source null) and guest (source = input name) records batch by batch."""
    for batch in batched(records.with_row_index("_row")):
        host = batch.filter(pl.col("is_host"))
        guest = batch.filter(~pl.col("is_host"))
        parts = []
        if host.height:
            host = with_payload(host, plugins=True)
            parts.append(
                host.select(
                    "_row",
                    "source",
                    _body(line_comm("<idle>"), line_pid(), pl.col("payload"), decimals).alias("body"),
                )
            )
        if guest.height:
            # trace-cmd prints a trace_marker write as the ftrace `print` event: `print: tracing_mark_write: text`.
            marker = pl.col("event") == MARKER
            guest = guest.with_columns(
                pl.when(marker)
                .then(pl.concat_str([pl.lit(MARKER + ": "), pl.col("args")]))
                .otherwise(pl.col("args"))
                .alias("args"),
                pl.when(marker).then(pl.lit("print")).otherwise(pl.col("event")).alias("event"),
            )
            parts.append(
                guest.select(
                    "_row",
                    "source",
                    _body(guest_comm(), pl.col("pid"), guest_payload("address"), decimals).alias("body"),
                )
            )
        merged = pl.concat(parts).sort("_row")
        if width:
            prefix = pl.concat_str([rjust(pl.col("source"), width), pl.lit(": ")])
            yield merged.select(pl.concat_str([prefix, pl.col("body")])).to_series()
        else:
            yield merged["body"]


def to_trace_cmd_report(
    trace: Trace, out: TextIO, side: str = "merged", vm: str | None = None, ns: bool = True
) -> int:
    """Write the run as `trace-cmd report -t` prints it.

    side="merged": host.dat plus every VM's trace-<vm>.dat, merged on the host clock with file prefixes;
    side="host": the host file alone; side="guest": one VM's file alone, on its own clock.
    ns=False prints what `trace-cmd report` without -t prints (microseconds).
    Returns the number of event lines written.
    """
    if side not in ("merged", "host", "guest"):
        raise UsageError(f"unknown side {side!r}; choose merged, host or guest")
    if side != "guest" and vm is not None:
        raise UsageError("vm is only for side='guest' (host and merged reports hold every VM)")
    events = numbered(trace)
    decimals = 9 if ns else 6
    inputs: list[tuple[str, int]] = []
    parts: list[pl.DataFrame] = []
    if side in ("merged", "host"):
        host = host_records(trace, events)
        parts.append(host.with_columns(pl.lit(HOST_INPUT).alias("source"), pl.lit(True).alias("is_host")))
        inputs.append((HOST_INPUT, n_pcpus(trace)))
    if side in ("merged", "guest"):
        names = vm_names(trace) if side == "merged" else [pick_vm(trace, vm)]
        for name in names:
            guest = guest_records(trace, events, name, guest_clock=side == "guest")
            parts.append(
                guest.with_columns(pl.lit(guest_input(name)).alias("source"), pl.lit(False).alias("is_host"))
            )
            inputs.append((guest_input(name), n_vcpus(trace, name)))
    records = pl.concat(parts, how="diagonal_relaxed").sort(
        "ord", "sub", nulls_last=False, maintain_order=True
    )
    width = max(len(name) for name, _ in inputs) if len(inputs) > 1 else 0
    for name, cpus in inputs:
        out.write(f"{name.rjust(width)}: cpus={cpus}\n" if width else f"cpus={cpus}\n")
    return write_lines(_lines(records, width, decimals), out)
