"""CLI for the ingest stage: `pvtrace ingest FILE... -o events.parquet` and its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from pvtrace.cli.common import handle_errors, out, print_titled, progress
from pvtrace.errors import UsageError
from pvtrace.fmt import fmt_ns, fmt_ts
from pvtrace.ingest.ftrace import RECORD
from pvtrace.ingest.load import FORMATS, ingest_to_parquet, is_one_parquet
from pvtrace.ingest.perf_script import SAMPLE
from pvtrace.outputs import OutputSet
from pvtrace.trace import TraceMeta, scan_events, vcpu_counts

SIDES = ("auto", "host", "guest")
N_SHOWN = 15


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, show_edge=False, pad_edge=False)
    for name in columns:
        # a long file name or tracepoint folds onto the next line, never cut to '…'
        table.add_column(
            name, justify="right" if name in ("count", "lines", "records") else "left", overflow="fold"
        )
    return table


def _counts_table(title: str, counts: dict[str, int], label: str) -> Table:
    table = _table(title, (label, "count"))
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    for name, n in items[:N_SHOWN]:
        table.add_row(escape(str(name)), f"{n:,}")
    if len(items) > N_SHOWN:
        rest = sum(n for _, n in items[N_SHOWN:])
        table.add_row(f"... {len(items) - N_SHOWN} more", f"{rest:,}")
    return table


def layouts(fmt: str, variants: dict[str, int]) -> str:
    """The record layouts of an input worth naming beside its format: not the format's ordinary
    record line (ftrace's, which trace-cmd report prints too; perf script's), and without the
    format's name again ('ftrace: ftrace', 'trace-cmd: trace-cmd-prefixed', 'dat: trace-cmd-prefixed')."""
    if fmt == "dat":  # the lines of the `trace-cmd report` pvtrace ran itself: no news to the user
        return ""
    plain = {RECORD.name, SAMPLE.name}
    return ", ".join(sorted(v.removeprefix(f"{fmt}-") for v in variants if v not in plain))


def _span(meta: TraceMeta) -> str:
    lo, hi = meta.extra.get("ts_min"), meta.extra.get("ts_max")
    if lo is None or hi is None:
        return "no timestamps"
    # as analyze's first line writes it: timestamps as the trace prints them (searchable), the
    # length in a readable unit ('0.000000 .. 0.299279 s (0.299279 s)' cut nanosecond stamps)
    return f"{fmt_ts(lo)} to {fmt_ts(hi)} ({fmt_ns(hi - lo)})"


def print_summary(meta: TraceMeta, out_path: Path) -> None:
    """What was read: inputs, events by kind and tracepoint, unknown events, problems, span, CPUs, VMs."""
    extra: dict[str, Any] = meta.extra
    n_events = extra.get("n_events", 0)
    out.print(
        f"[bold]Ingested {n_events:,} events[/] into {escape(str(out_path))} (format {meta.format}, view {meta.view})"
    )
    inputs = _table("Inputs", ("file", "format", "lines", "records", "lost", "clock"))
    for i in extra.get("inputs", []):
        st = i.get("stats", {})
        fmt = i["format"] + (f" ({i['compression']})" if i.get("compression") else "")
        variants = layouts(i["format"], i.get("variants", {}))
        lost = st.get("lost_events_reported", 0)
        lost_txt = f"{st.get('lost_lines', 0):,} lines / {lost:,} events" if st.get("lost_lines") else "-"
        inputs.add_row(
            escape(Path(i["path"]).name),
            escape(f"{fmt}{': ' + variants if variants else ''}"),
            f"{st.get('lines', 0):,}",
            f"{st.get('records', 0):,}",
            lost_txt,
            i.get("clock", "?"),
        )
    print_titled(out, inputs)
    if extra.get("events_by_kind"):
        print_titled(out, _counts_table("Events by kind", extra["events_by_kind"], "kind"))
    if extra.get("events_by_tracepoint"):
        print_titled(out, _counts_table("Records by tracepoint", extra["events_by_tracepoint"], "tracepoint"))
    if extra.get("unknown_events"):
        print_titled(
            out,
            _counts_table(
                "Other events, kept as kind other (analyze reads guest ticks, stack traces and steal samples "
                "among them; the rest are carried along)",
                extra["unknown_events"],
                "tracepoint",
            ),
        )
    if extra.get("unparsed_payloads"):
        print_titled(
            out,
            _counts_table(
                "Known events with unreadable payloads (kept)", extra["unparsed_payloads"], "tracepoint"
            ),
        )
    for name, rows in extra.get("summary_tables", {}).items():
        out.print(f"Summary table [bold]{escape(name)}[/]: {len(rows)} rows (kept in the output's metadata)")
    problems = meta.problems
    if problems:
        table = _table("Problems (lines not read)", ("file:line", "what", "count"))
        for path, kinds in problems.items():
            for _kind, p in kinds.items():
                samples = p.get("samples", [])
                name = escape(Path(path).name)
                first = f"{name}:{samples[0]['line']}" if samples else name
                what = f"{p['what']}: {samples[0]['text'][:60]!r}" if samples else p["what"]
                table.add_row(first, escape(what), f"{p['count']:,}")
                for sample in samples[1:]:
                    table.add_row(f"{name}:{sample['line']}", escape(repr(sample["text"][:60])), "")
        print_titled(out, table)
    else:
        out.print("Problems: none (every line was read)")
    out.print(f"Time span: {_span(meta)}")
    cpus = extra.get("cpus_seen")
    if meta.view == "guest":
        out.print(f"CPUs: {cpus if cpus is not None else 'no'} guest CPUs (vCPUs) seen in records")
    else:
        out.print(
            f"CPUs: {meta.n_pcpus if meta.n_pcpus is not None else 'unknown'} host CPUs"
            + (f"; {cpus} CPU numbers seen in records" if cpus is not None else "")
        )
    frames = {
        "stack_frames": "stack-trace frame lines attached to their records",
        "continuation_lines": "continuation lines attached to their records",
        "callchain_frames": "perf callchain frame lines skipped",
    }
    for key, what in frames.items():
        n = sum(i.get("stats", {}).get(key, 0) for i in extra.get("inputs", []))
        if n:
            out.print(f"Multi-line records: {n:,} {what}")
    if meta.vms:
        n = vcpu_counts(scan_events(out_path), meta)  # as analyze counts them, not max index + 1
        vms = escape(", ".join(f"{vm} ({n.get(vm, 0)} vCPUs)" for vm in meta.vms))
        out.print(f"VMs: {vms}")
        hows = sorted({str(r.get("how")) for r in meta.vcpu_map if r.get("how")})
        if meta.vcpu_map:
            out.print(f"vCPU threads mapped: {len(meta.vcpu_map)} ({escape('; '.join(hows))})")
    else:
        out.print("VMs: none found")
    clock = meta.clock
    if clock.get("mode"):
        offsets = clock.get("guest_offset_ns")
        if isinstance(offsets, dict):
            offsets = ", ".join(f"{vm} {ns} ns" for vm, ns in offsets.items() if ns)
        out.print(f"Clock: {clock['mode']}" + (f"; guest offset {offsets}" if offsets else ""))
    units = {i["path"]: i.get("clock") for i in extra.get("inputs", []) if i.get("clock") not in (None, "ns")}
    for path, unit in units.items():
        what = {
            "raw": "bare integer timestamps (a counter clock such as x86-tsc): kept as printed, units unknown",
            "relative": "latency-format timestamps: microseconds since the buffer started",
            "none": "no timestamps at all: records keep their file order",
            "mixed": "mixed timestamp forms",
        }.get(unit, unit)
        out.print(f"[yellow]note:[/] {escape(Path(path).name)}: {what}")
    for note in extra.get("notes", []):
        out.print(f"[yellow]note:[/] {escape(note)}")


def check_read_options(fmt: str, side: str = "auto") -> None:
    """--format and --side as the readers take them, before any input is read (`analyze --side
    sideways` read the whole trace first, then said 'side must be one of ...')."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if side not in SIDES:
        raise UsageError(f"--side must be one of {', '.join(SIDES)}, not {side!r}")


def refuse_text_options(
    files: list[Path],
    fmt: str,
    *,
    side: str,
    vm: str | None,
    vcpu_map: Path | None,
    guest_offset: list[str] | None,
) -> None:
    """One pvtrace Parquet input is read as it is: the options that say how to read a text trace
    would be dropped, so they are refused (an offset the user asked for must not silently vanish)."""
    if not is_one_parquet(files, fmt):
        return
    given = [
        name
        for name, value in (
            ("--side", side != "auto"),
            ("--vm", vm is not None),
            ("--vcpu-map", vcpu_map is not None),
            ("--guest-offset", bool(guest_offset)),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)}: for text traces; {files[0]} is a pvtrace Parquet trace, read as it is"
        )


def parse_guest_offset(values: list[str] | None) -> int | dict[str, int] | None:
    """`--guest-offset N` (every guest VM) or `--guest-offset vm0=N --guest-offset vm1=M`."""
    if not values:
        return None
    per_vm: dict[str, int] = {}
    for value in values:
        vm, sep, ns = value.rpartition("=")
        try:
            n = int(ns)
        except ValueError:
            raise UsageError(f"--guest-offset wants N or VM=N (integer ns), not {value!r}") from None
        if not sep:
            if len(values) > 1:
                raise UsageError("--guest-offset N applies to every VM; give VM=N to set several")
            return n
        per_vm[vm] = n
    return per_vm


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""

    @app.command("ingest")
    @handle_errors
    def ingest_cmd(
        files: list[Path] = typer.Argument(
            ...,
            help="Trace files: tracefs text, trace-cmd report/.dat, perf script, "
            "perf kvm stat / lock contention tables, pvtrace Parquet; .gz/.xz/.zst ok.",
        ),
        output: Path = typer.Option(..., "-o", "--out", help="Output Parquet file of canonical events."),
        format: str = typer.Option("auto", "--format", help=f"Input format: {', '.join(FORMATS)}."),
        strict: bool = typer.Option(False, "--strict", help="Fail at the first line that cannot be read."),
        force: bool = typer.Option(False, "--force", help="Overwrite the output file if it exists."),
        side: str = typer.Option("auto", "--side", help="Who recorded the trace: auto, host or guest."),
        vm: str | None = typer.Option(None, "--vm", help="Name of the guest VM (guest traces)."),
        vcpu_map: Path | None = typer.Option(
            None,
            "--vcpu-map",
            help="CSV tid,pid,vm,vcpu mapping host threads to vCPUs (default: <input>.vcpus.csv).",
        ),
        guest_offset: list[str] | None = typer.Option(
            None,
            "--guest-offset",
            help="ns to add to guest timestamps to put them on the host clock: N for every guest VM, "
            "or VM=N (repeatable).",
        ),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar and no summary."),
    ) -> None:
        """Read traces (any supported format) into one Parquet file of canonical events, with a summary."""
        check_read_options(format, side)
        refuse_text_options(files, format, side=side, vm=vm, vcpu_map=vcpu_map, guest_offset=guest_offset)
        total = sum(f.stat().st_size for f in files if f.is_file())
        outputs = OutputSet(force=force, inputs=[*files, *([vcpu_map] if vcpu_map else [])])
        outputs.plan(output)  # before the work: an existing file, an input, an unwritable folder
        with outputs, progress("ingest", total=total or None, quiet=quiet) as bar:
            meta = ingest_to_parquet(
                files,
                output,
                force=force,
                format=format,
                strict=strict,
                side=side,
                vm_name=vm,
                vcpu_map_path=vcpu_map,
                guest_offset_ns=parse_guest_offset(guest_offset),
                progress=bar.advance,
            )
        if not quiet:
            print_summary(meta, output)
