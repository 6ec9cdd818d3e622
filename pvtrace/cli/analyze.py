"""`pvtrace analyze`: measure spin waste, LHP/LWP incidents, convoys and exits of one or more traces."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape

from pvtrace.analyze import Analysis, analyze
from pvtrace.analyze.context import lock_table
from pvtrace.analyze.filters import filter_result, filter_trace, parse_filters
from pvtrace.analyze.result import TABLES
from pvtrace.analyze.run import STEPS, analyze_parquet
from pvtrace.cli import no_teardown
from pvtrace.cli.common import (
    LOCK_KIND_HELP,
    checked_lock_kind,
    err,
    handle_errors,
    print_input_notes,
    progress,
    stdout_console,
)
from pvtrace.cli.ingest import check_read_options, parse_guest_offset, refuse_text_options
from pvtrace.cli.summary_view import render_summary
from pvtrace.errors import UsageError
from pvtrace.fmt import lock_hex
from pvtrace.ingest.load import is_one_parquet, load
from pvtrace.outputs import OutputSet, atomic_file
from pvtrace.trace import Trace


def load_inputs(
    files: list[Path],
    *,
    fmt: str,
    strict: bool,
    side: str,
    vm_name: str | None,
    vcpu_map: Path | None,
    guest_offset_ns: int | dict[str, int] | None,
    quiet: bool,
) -> Trace:
    """Read the inputs the way `pvtrace ingest` does (several files are merged), with a progress bar."""
    total = sum(f.stat().st_size for f in files if f.is_file())
    with progress("reading", total=total or None, quiet=quiet) as bar:
        return load(
            files,
            format=fmt,
            strict=strict,
            side=side,
            vm_name=vm_name,
            vcpu_map_path=vcpu_map,
            guest_offset_ns=guest_offset_ns,
            progress=bar.advance,
        )


# Every table `--csv -` may print: the summary's lock table, the result tables, and the perf
# summary tables an input may carry.
CSV_TABLES = ("locks", *sorted(TABLES), "perf_kvm_stat", "perf_lock_contention")


def checked_table(name: str) -> str:
    """--table as given, or a usage error before the analysis (it came after it, on a big trace
    minutes later)."""
    if name not in CSV_TABLES:
        raise UsageError(f"--table: no table {name!r} (one of {', '.join(CSV_TABLES)})")
    return name


def stdout_table(a: Analysis, name: str) -> pl.DataFrame:
    """The table `--csv -` prints: `locks` (the summary's lock table), or any result table."""
    if name == "locks":
        return lock_table(a.table("waste_by_lock"), a.table("waits"), a.table("lock_callers"))
    if name not in a.tables:  # a perf summary table this trace does not carry
        names = ", ".join(["locks", *sorted(a.tables)])
        raise UsageError(f"--table: this trace has no table {name!r} (it has {names})")
    return a.tables[name]


# The totals a `--csv -` table's rows come from: when the trace cannot give them, its table is empty
# for want of events, not of rows (a host trace's `--table waits` was a bare header, read as none).
TABLE_METRICS: dict[str, tuple[str, ...]] = {
    "locks": ("n_contended",),
    "waits": ("n_contended",),
    "lock_callers": ("n_contended",),
    "holds": ("n_acquisitions",),
    "incidents": ("n_lhp", "n_lhp_harmful", "n_lwp"),
    "lhp_incidents": ("n_lhp", "n_lhp_harmful"),
    "lwp_incidents": ("n_lwp",),
    "convoys": ("n_convoys",),
    "waste_by_lock": ("spin_ns",),
    "waste_by_vcpu": ("spin_ns",),
    "waste_by_vm": ("spin_ns",),
    "pause_exits": ("n_pause_exits",),
    "kicks": ("n_kicks",),
}


def unavailable_table(a: Analysis, name: str) -> str | None:
    """Why table `name` cannot have rows in this trace (TABLE_METRICS), or None."""
    keys = TABLE_METRICS.get(name, ())
    gone = {u.metric for u in a.summary.unavailable}
    if not keys or not set(keys) <= gone:
        return None
    from pvtrace.report.labels import unavailable_reason  # the report package: only for this note

    return unavailable_reason(a.summary, keys)


def for_csv(df: pl.DataFrame) -> pl.DataFrame:
    """A table as CSV shows it: lock ids in 0x hex (as the terminal and the report write them),
    other 64-bit unsigned ids as text (spreadsheets round them)."""
    hexed = [c for c in ("lock", "address") if c in df.columns and df.schema[c] == pl.UInt64]
    return df.with_columns(*[lock_hex(c) for c in hexed]).with_columns(pl.col(pl.UInt64).cast(pl.String))


def output_targets(json_path: Path | None, out_dir: Path | None, csv: bool) -> list[Path]:
    """Every file --json and --out-dir will write (the tables of TABLES, then summary.json); `-` is stdout."""
    targets: list[Path] = [json_path] if json_path is not None and json_path != Path("-") else []
    if out_dir is not None:
        ext = "csv" if csv else "parquet"
        targets += [out_dir / f"{name}.{ext}" for name in TABLES]
        targets.append(out_dir / "summary.json")
    return targets


def write_outputs(a: Analysis, *, json_path: Path | None, out_dir: Path | None, csv: bool) -> list[Path]:
    """Stage the summary JSON and the tables in the command's OutputSet (placed together at its end)."""
    targets: list[Path] = []
    if out_dir is not None:
        for name, df in a.tables.items():
            path = out_dir / f"{name}.{'csv' if csv else 'parquet'}"
            with atomic_file(path) as tmp:
                if csv:
                    for_csv(df).write_csv(tmp)
                else:
                    df.write_parquet(tmp)
            targets.append(path)
    summary = a.summary.to_json() + "\n"
    for path in ([out_dir / "summary.json"] if out_dir is not None else []) + (
        [json_path] if json_path is not None and json_path != Path("-") else []
    ):
        with atomic_file(path) as tmp:
            tmp.write_text(summary, encoding="utf-8")
        targets.append(path)
    return targets


def write_report(trace: Trace, result: Analysis, path: Path, files: list[Path], quiet: bool = False) -> None:
    """The report page of this analysis (pvtrace.report), as `pvtrace report -o` writes it."""
    # imported here: the report stage pulls in altair, which a plain analysis does not need
    from pvtrace.report.page import write_page
    from pvtrace.report.trace_page import render_report, report_sections

    names = ", ".join(f.name for f in files)
    sections = report_sections(trace, result, None)
    with progress("writing the page", total=sum(len(s.figures) for s in sections), quiet=quiet) as bar:
        page = render_report(
            trace, result, sections=sections, title=f"pvtrace report: {names}", progress=bar.advance
        )
    write_page(page, path)


def finish(
    result: Analysis,
    files: list[Path],
    *,
    json_out: Path | None,
    written: list[Path],
    csv_out: str | None,
    table: str,
    quiet: bool,
    width: int | None,
) -> None:
    """Show the summary once the outputs are in place (not when stdout carries --json - or --csv -)."""
    to_stdout = json_out == Path("-") or csv_out == "-"
    if json_out == Path("-"):
        sys.stdout.write(result.summary.to_json() + "\n")
    elif csv_out == "-":
        rows = stdout_table(result, table)
        sys.stdout.write(for_csv(rows).write_csv())
        if rows.height == 0 and (why := unavailable_table(result, table)):
            err.print(f"{table}: no rows, as {escape(why)}", highlight=False, soft_wrap=True)
    if not quiet and not to_stdout:
        con = stdout_console(width, soft_wrap=False)
        render_summary(con, result, [str(f) for f in files])
    print_input_notes(result.summary.extra)  # after the results: read with them, not above their first line
    if written and not quiet:
        err.print(f"wrote {escape(written_text(written))}", highlight=False, soft_wrap=True)


def written_text(paths: list[Path]) -> str:
    """The files written, by name ('wrote 1 file(s)' named none), a folder's tables as one count."""
    by_dir: dict[Path, list[Path]] = {}
    for p in paths:
        by_dir.setdefault(p.parent, []).append(p)
    parts = []
    for folder, files in by_dir.items():
        many = len(files) > 3  # --out-dir's tables
        parts += [f"{len(files)} files in {folder}{os.sep}"] if many else [str(f) for f in files]
    return ", ".join(parts)


def _yes_no(option: str, value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() not in ("yes", "no"):
        raise UsageError(f"{option} must be yes or no, not {value!r}")
    return value.lower() == "yes"


def register(app: typer.Typer) -> None:
    """Add `pvtrace analyze`."""

    @app.command("analyze")
    @handle_errors
    def analyze_cmd(
        files: Annotated[
            list[Path], typer.Argument(help="Trace files (any format `ingest` reads; several are merged).")
        ],
        json_out: Annotated[
            Path | None,
            typer.Option(
                "--json", help="Write the summary (totals, fidelity, unavailable) as JSON; `-`: to stdout."
            ),
        ] = None,
        out_dir: Annotated[
            Path | None, typer.Option("--out-dir", help="Write every result table into this folder.")
        ] = None,
        csv: Annotated[
            bool,
            typer.Option(
                "--csv",
                help="With --out-dir: tables as CSV instead of Parquet. `--csv -`: one table (--table) "
                "as CSV on stdout.",
            ),
        ] = False,
        table: Annotated[
            str | None,
            typer.Option(
                "--table",
                help="Table `--csv -` prints: locks (the summary's lock table, the default) or a result table.",
            ),
        ] = None,
        window: Annotated[
            str | None,
            typer.Option(
                "--window",
                help="Analyze only START:END, trace timestamps as the trace prints them (1938.45:1938.46), "
                "or with a unit from the trace start (2ms:5ms); either side may be empty.",
            ),
        ] = None,
        vm: Annotated[str | None, typer.Option("--vm", help="Analyze only this VM.")] = None,
        vcpu: Annotated[
            int | None,
            typer.Option("--vcpu", help="Show only rows involving this vCPU (totals cover every vCPU)."),
        ] = None,
        lock: Annotated[str | None, typer.Option("--lock", help="Analyze only this lock (hex id).")] = None,
        width: Annotated[
            int | None,
            typer.Option(
                "--width", help="Summary width in columns (default: the terminal's; unlimited when piped)."
            ),
        ] = None,
        lock_kind: Annotated[
            str | None,
            typer.Option(
                "--lock-kind",
                help=LOCK_KIND_HELP,
            ),
        ] = None,
        pv_spinlocks: Annotated[
            str | None,
            typer.Option(
                "--pv-spinlocks",
                help="yes or no: whether the guest kernel's spinlocks are paravirt (dmesg: 'kvm-guest: PV "
                "spinlocks enabled'), for a guest trace with ticks whose steal samples do not say.",
            ),
        ] = None,
        fmt: Annotated[str, typer.Option("--format", help="Input format (auto: detect).")] = "auto",
        side: Annotated[str, typer.Option("--side", help="host, guest or auto.")] = "auto",
        vm_name: Annotated[
            str | None, typer.Option("--vm-name", help="Name of the guest VM (guest text traces).")
        ] = None,
        vcpu_map: Annotated[
            Path | None, typer.Option("--vcpu-map", help="CSV tid,pid,vm,vcpu tying host threads to vCPUs.")
        ] = None,
        guest_offset: Annotated[
            list[str] | None,
            typer.Option(
                "--guest-offset",
                help="ns to add to guest timestamps to put them on the host clock: N for every guest VM, "
                "or VM=N (repeatable).",
            ),
        ] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Malformed input lines are fatal.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
        report: Annotated[
            Path | None,
            typer.Option("--report", help="Also write the HTML report page (as `pvtrace report -o`)."),
        ] = None,
        quiet: Annotated[
            bool, typer.Option("-q", "--quiet", help="No progress bar and no terminal summary.")
        ] = False,
        memory_budget: Annotated[
            str | None,
            typer.Option(
                "--memory-budget",
                help="Memory the analysis of one pvtrace Parquet trace (no --report, no filter) may use "
                "(8G, 512M); a bigger trace "
                "is analyzed a group of VMs at a time, and a bigger VM a time window at a time where "
                "its locks are all free, with the same result (default: half the available memory).",
            ),
        ] = None,
    ) -> None:
        """Measure spin waste, LHP/LWP incidents, convoys, exits and pv kicks of a trace."""
        no_teardown()  # its only threads (the analysis pool's) are idle once it returns
        checked_lock_kind(lock_kind)
        pv = _yes_no("--pv-spinlocks", pv_spinlocks)
        # `--csv -`: the flag, then `-` (stdout), which the parser hands over as one more input
        # (a `-` before it is the trace on stdin: `trace-cmd report | pvtrace analyze - --csv -`)
        csv_out = "-" if csv and Path("-") in files else None
        if csv_out:
            last = len(files) - 1 - files[::-1].index(Path("-"))
            files = files[:last] + files[last + 1 :]
        if not files:
            raise UsageError("no trace file given")
        tables_csv = csv and out_dir is not None
        if csv and not tables_csv and csv_out is None:
            raise UsageError(
                "--csv needs --out-dir (tables as CSV files), or `-` after it (one table on stdout)"
            )
        if table is not None and csv_out is None:
            raise UsageError("--table names the table `--csv -` prints; without `--csv -` it does nothing")
        table = checked_table(table or "locks")
        if json_out == Path("-") and csv_out == "-":
            raise UsageError("--json - and --csv - both write to stdout: give one of them a file")
        if width is not None and width < 40:
            raise UsageError(f"--width must be at least 40, not {width}")
        filters = parse_filters(window, vm, vcpu, lock)
        # a pvtrace Parquet file is analyzed concept by concept, never loaded whole: less memory
        # (50M events: 5.4 GiB instead of 9.9) and no slower (benchmarks/README.md)
        streamed = report is None and not filters.any and is_one_parquet(files, fmt)
        budget = None
        if memory_budget is not None:  # the partitioned analysis, imported only for a big Parquet trace
            from pvtrace.analyze.partitioned import parse_budget

            budget = parse_budget(memory_budget)
            if not streamed:  # it was dropped without a word, the trace loaded whole
                raise UsageError(
                    "--memory-budget: for one pvtrace Parquet trace analyzed without --report, --window, "
                    "--vm, --vcpu or --lock; this analysis reads its trace whole"
                )
        check_read_options(fmt, side)
        refuse_text_options(files, fmt, side=side, vm=None, vcpu_map=vcpu_map, guest_offset=guest_offset)
        if vm_name is not None and is_one_parquet(files, fmt):
            raise UsageError(
                f"--vm-name: for text traces; {files[0]} is a pvtrace Parquet trace, read as it is"
            )
        # Every output checked before the (possibly long) analysis; all placed together at the end.
        outputs = OutputSet(force=force, inputs=[*files, *([vcpu_map] if vcpu_map else [])])
        table_files = output_targets(None, out_dir, tables_csv)
        if json_out is not None and any(json_out.resolve() == t.resolve() for t in table_files):
            raise UsageError(
                f"--json {json_out}: --out-dir {out_dir} writes {json_out.name} there itself; "
                "drop --json (the folder's summary.json is the same JSON) or name another file"
            )
        for path in [*output_targets(json_out, out_dir, tables_csv), *([report] if report else [])]:
            outputs.plan(path, new=True)
        with outputs:
            if streamed:
                with progress("analyzing", total=len(STEPS), quiet=quiet) as bar:
                    result = analyze_parquet(
                        files[0],
                        lock_kind=lock_kind,
                        pv_spinlocks=pv,
                        progress=lambda step: bar.advance(1),
                        memory_budget=budget,
                    )
            else:
                trace = load_inputs(
                    files,
                    fmt=fmt,
                    strict=strict,
                    side=side,
                    vm_name=vm_name,
                    vcpu_map=vcpu_map,
                    guest_offset_ns=parse_guest_offset(guest_offset),
                    quiet=quiet,
                )
                described = filters.describe(trace.t_start)  # units count from the start of the whole trace
                whole = trace
                if filters.any:
                    trace = filter_trace(trace, filters)
                with progress("analyzing", total=len(STEPS), quiet=quiet) as bar:
                    result = analyze(
                        trace, lock_kind=lock_kind, pv_spinlocks=pv, progress=lambda step: bar.advance(1)
                    )
                result = filter_result(result, filters, whole)
                if filters.any:
                    result.summary.extra["filters"] = described
                if report is not None:
                    write_report(trace, result, report, files, quiet)
            written = write_outputs(result, json_path=json_out, out_dir=out_dir, csv=tables_csv)
        finish(
            result,
            files,
            json_out=json_out,
            written=[*written, *([report] if report else [])],
            csv_out=csv_out,
            table=table,
            quiet=quiet,
            width=width,
        )
