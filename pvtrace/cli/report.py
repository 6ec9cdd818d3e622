"""CLI for the report stage: `pvtrace report` (one trace's page) and `pvtrace compare` (two runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pvtrace.analyze import Analysis, analyze
from pvtrace.analyze.filters import filter_result, filter_trace, parse_filters
from pvtrace.analyze.run import STEPS
from pvtrace.cli.common import (
    LOCK_KIND_HELP,
    checked_lock_kind,
    err,
    handle_errors,
    out,
    print_input_notes,
    progress,
    stdout_console,
)
from pvtrace.cli.fit import print_fitted
from pvtrace.errors import FormatError, UsageError
from pvtrace.ingest.load import load
from pvtrace.outputs import OutputSet, atomic_file
from pvtrace.trace import Trace

# Image formats of --figures (pvtrace.report.figures.FORMATS; not imported here: the report stage
# pulls in altair, which only the commands that write pages need).
FIGURE_FORMATS = ("png", "svg")


def load_trace(paths: list[Path], what: str, quiet: bool = False) -> Trace:
    """Read the input(s) of a report or compare (any format `pvtrace ingest` reads), with a progress bar."""
    missing = [p for p in paths if str(p) != "-" and not p.exists()]  # `-`: stdin, as analyze reads it
    if missing:  # as `pvtrace analyze` says it (exit 1: the input, not the command line, is wrong)
        raise FormatError("no such file", str(missing[0]))
    total = sum(p.stat().st_size for p in paths if p.is_file())
    with progress(f"reading {what}", total=total or None, quiet=quiet) as bar:
        return load(paths, progress=bar.advance)


def analyze_with_progress(
    trace: Trace, what: str, lock_kind: str | None = None, quiet: bool = False
) -> Analysis:
    """Run the analyzer, with a progress bar on a terminal."""
    with progress(f"analyzing {what}", total=len(STEPS), quiet=quiet) as bar:
        return analyze(trace, lock_kind=lock_kind, progress=lambda step: bar.advance())


def sniff_runs(paths: tuple[Path, Path]) -> None:
    """Both runs' files there and recognized before either is read: `compare A.txt.xz B` read and
    analyzed A (3 s for a 1.2 MB real trace) before it said B was missing, a folder or no trace.
    A summary JSON is checked as it is read; a FIFO or stdin can be read only once: not here."""
    from pvtrace.ingest.inputs import close_quietly, open_sniffed

    for path in paths:
        stream = str(path) == "-" or (path.exists() and not (path.is_file() or path.is_dir()))
        if stream or path.suffix.lower() == ".json":
            continue
        run = open_sniffed(path, "auto")  # no such file, a folder, not a trace: one line now
        close_quietly(run.stream, run.raw_file)


def read_run(path: Path, label: str, quiet: bool = False) -> Trace | Analysis:
    """One run of a compare, read: a trace (to analyze); or a summary JSON (`analyze --json`,
    `generate --truth`), its totals as they are (so an analysis is checked against the simulator's
    truth). Both runs are read before either is analyzed: a run B that is missing or no trace was
    found only after run A's analysis (seconds to minutes)."""
    if path.suffix.lower() != ".json":
        return load_trace([path], label, quiet)
    from pvtrace.report.compare import summary_run

    if not path.exists():
        raise FormatError("no such file", str(path))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"not JSON a compare reads ({exc})", str(path)) from None
    return summary_run(raw, str(path))


def report(
    files: list[Path] = typer.Argument(
        ..., help="Trace file(s): one Parquet trace, or the inputs of one merged trace."
    ),
    out_path: Path | None = typer.Option(None, "-o", "--out", help="The HTML page to write."),
    window: str | None = typer.Option(
        None,
        "--window",
        help="Report only START:END, trace timestamps as the trace prints them (1938.45:1938.46), or with "
        "a unit from the trace start (2ms:5ms); either side may be empty. The timeline opens on it. "
        "Default: everything, the timeline around the worst incident.",
    ),
    vm: str | None = typer.Option(None, "--vm", help="Report only this VM."),
    vcpu: int | None = typer.Option(
        None, "--vcpu", help="Show only rows involving this vCPU (totals cover every vCPU)."
    ),
    lock: str | None = typer.Option(None, "--lock", help="Report only this lock (hex id)."),
    lock_kind: str | None = typer.Option(None, "--lock-kind", help=LOCK_KIND_HELP),
    figures: Path | None = typer.Option(
        None, "--figures", help="Also write every chart as an image into DIR."
    ),
    figure_format: str | None = typer.Option(
        None,
        "--figure-format",
        help=f"Image format for --figures: {', '.join(FIGURE_FORMATS)} (default: png).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar and no 'wrote' lines."),
) -> None:
    """Write a self-contained HTML report of a trace (works offline), and optionally its charts as images."""
    if out_path is None and figures is None:
        raise UsageError("nothing to write: give -o OUT.html and/or --figures DIR")
    from pvtrace.report.figures import FORMATS, export_figures
    from pvtrace.report.page import write_page
    from pvtrace.report.trace_page import all_figures, render_report, report_sections

    if figure_format is not None and figures is None:  # it was dropped without a word
        raise UsageError("--figure-format is the format of --figures DIR; without --figures it does nothing")
    figure_format = figure_format or "png"
    if figure_format not in FORMATS:
        raise UsageError(f"--figure-format must be one of {', '.join(FORMATS)}, not {figure_format!r}")
    filters = parse_filters(window, vm, vcpu, lock)
    checked_lock_kind(lock_kind)
    outputs = OutputSet(force=force, inputs=files)
    if out_path is not None:
        outputs.plan(out_path, new=True)
    if figures is not None:
        outputs.plan(figures / f"figure.{figure_format}")  # the folder: creatable and writable
    names = ", ".join(p.name for p in files)
    with outputs:
        trace = load_trace(files, names, quiet)
        lo, hi = filters.bounds(trace.t_start)  # units count from the start of the whole trace
        whole = trace
        if filters.any:
            trace = filter_trace(trace, filters)
        analysis = filter_result(analyze_with_progress(trace, names, lock_kind, quiet), filters, whole)
        win = None
        if filters.window is not None:  # the timeline opens on the window asked for
            t0 = trace.t_start or 0
            win = (None if lo is None else lo - t0, None if hi is None else hi - t0)
        sections = report_sections(trace, analysis, win)
        if out_path is not None:
            with progress(
                "writing the page", total=sum(len(s.figures) for s in sections), quiet=quiet
            ) as bar:
                page = render_report(
                    trace, analysis, sections=sections, title=f"pvtrace report: {names}", progress=bar.advance
                )
            write_page(page, out_path, force)
        if figures is not None:
            written = export_figures(all_figures(sections), figures, figure_format, force)
    print_input_notes(analysis.summary.extra, strict=False)  # never silent, even with -q
    if quiet:
        return
    if out_path is not None:
        err.print(
            f"wrote {escape(str(out_path))} ({out_path.stat().st_size / 1e6:.1f} MB)",
            highlight=False,
            soft_wrap=True,
        )
    if figures is not None:
        err.print(
            f"wrote {len(written)} {figure_format.upper()} figures to {escape(str(figures))}",
            highlight=False,
            soft_wrap=True,
        )


def compare(
    a: Path = typer.Argument(
        ...,
        help="First run (A): one trace file `pvtrace analyze` reads (a host trace and its guests: "
        "`pvtrace ingest` them into one Parquet file first).",
    ),
    b: Path = typer.Argument(
        ..., help="Second run (B). Either run may be a summary JSON (analyze --json, generate --truth)."
    ),
    label_a: str | None = typer.Option(None, "--label-a", help="Name of run A (default: its file name)."),
    label_b: str | None = typer.Option(None, "--label-b", help="Name of run B (default: its file name)."),
    out_path: Path | None = typer.Option(None, "-o", "--out", help="Also write the comparison page here."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the comparison (totals, rates, deltas) as JSON; `-`: to stdout."
    ),
    lock_kind: str | None = typer.Option(None, "--lock-kind", help=LOCK_KIND_HELP + " Applies to both runs."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar and no terminal table."),
    width: int | None = typer.Option(
        None, "--width", help="Table width in columns (default: the terminal's; unlimited when piped)."
    ),
) -> None:
    """Compare two runs: headline metrics side by side with deltas, and a page with both overlaid."""
    checked_lock_kind(lock_kind)
    if width is not None and width < 40:
        raise UsageError(f"--width must be at least 40, not {width}")
    if str(a) == str(b) == "-":
        raise UsageError("both runs are `-`: stdin can be read once; give one of them as a file")
    labels = (label_a or run_label(a), label_b or run_label(b))
    if labels[0] == labels[1]:
        labels = (f"A: {labels[0]}", f"B: {labels[1]}")
    outputs = OutputSet(force=force, inputs=[a, b])
    for path in (out_path, json_out):
        if path is not None and path != Path("-"):
            outputs.plan(path, new=True)
    from pvtrace.report.compare import (
        compare_metrics,
        comparison_json,
        in_neither,
        resolution_note,
        write_compare,
    )
    from pvtrace.report.compare_rates import run_extent

    with outputs:
        sniff_runs((a, b))
        runs = [read_run(path, label, quiet) for path, label in zip((a, b), labels, strict=True)]
        if lock_kind is not None and not any(isinstance(run, Trace) for run in runs):
            raise UsageError(
                "--lock-kind: both runs are summaries, analyzed already; it would apply to neither"
            )
        (ta, xa), (tb, xb) = (
            (run, analyze_with_progress(run, label, lock_kind, quiet))
            if isinstance(run, Trace)
            else (None, run)
            for run, label in zip(runs, labels, strict=True)
        )
        metrics = compare_metrics(xa, xb, (ta, tb))
        extents = run_extent(xa, ta), run_extent(xb, tb)
        text = comparison_json(metrics, labels, extents)
        if json_out is not None and json_out != Path("-"):
            with atomic_file(json_out) as tmp:
                tmp.write_text(text, encoding="utf-8")
        if out_path is not None:
            with progress("writing the page", total=None, quiet=quiet) as bar:
                write_compare(xa, xb, labels, out_path, force=force, traces=(ta, tb), progress=bar.advance)
    for label, path, x, t in zip(labels, (a, b), (xa, xb), (ta, tb), strict=True):  # as analyze says it
        print_input_notes(x.summary.extra, run=label, strict=False)
        if t is not None and (nearby := t.meta.extra.get("guest_files_nearby")):  # one file per run
            err.print(
                f"{escape(label)}: compare reads one file per run; join a host trace and its guests first: "
                f"pvtrace ingest {escape(' '.join([str(path), *nearby]))} -o {escape(run_label(path))}.parquet",
                highlight=False,
                soft_wrap=True,
            )
    if json_out == Path("-"):  # stdout carries the JSON alone
        sys.stdout.write(text)
    elif not quiet:
        con = out if width is None else stdout_console(width, soft_wrap=False)
        print_comparison(con, metrics, labels, extents, resolution_note(xa, xb, labels))
        if missing := in_neither(xa, xb):  # rows left out: said, not dropped in silence
            con.print(
                f"In neither run: {escape('; '.join(missing))} (`pvtrace analyze` of a run says what each needs).",
                highlight=False,
                soft_wrap=True,
            )
    if not quiet:
        for path in (out_path, json_out):
            if path is not None and path != Path("-"):
                err.print(f"wrote {escape(str(path))}", highlight=False, soft_wrap=True)


# What a run's default label leaves out of its file name: compression, then the format's suffix.
LABEL_SUFFIXES = (".gz", ".xz", ".zst", ".bz2", ".txt", ".dat", ".parquet", ".json")


def run_label(path: Path) -> str:
    """A run's default name: its file name without the suffixes every run has ('futex-ftrace', not
    'futex-ftrace.txt' from futex-ftrace.txt.xz: each label heads two columns of the table)."""
    if str(path) == "-":
        return "stdin"
    name = path.name
    while Path(name).suffix in LABEL_SUFFIXES and Path(name).stem:
        name = Path(name).stem
    return name


def print_comparison(
    con: Console, metrics: pl.DataFrame, labels: tuple[str, str], extents, resolution: str = ""
) -> None:
    """The comparison on a terminal: fitted to its width (the rates and their delta go first; metric,
    A, B and Δ % stay), each partial metric numbered, and why under the table; `resolution`: the
    runs print time differently (compare.resolution_note)."""
    from pvtrace.report.compare import format_comparison
    from pvtrace.report.compare_rates import RATE_CAPTION, extent_text

    title = f"A = {extent_text(labels[0], extents[0])}; B = {extent_text(labels[1], extents[1])}"
    notes: list[str] = []
    table = comparison_table(format_comparison(metrics, labels, notes))
    rates = tuple(str(c.header) for c in table.columns[3:6])  # A, rate; B, rate; Δ (B − A)
    # title and caption as lines of their own: a table too narrow printed a row per line without
    # them, and rich padded them to the table's width
    con.print(escape(title), highlight=False, soft_wrap=True)
    left_out = print_fitted(con, table, drop=(rates,), wrap=("metric",))
    con.print(RATE_CAPTION, highlight=False, soft_wrap=True)
    if left_out:
        # without the rates, 16,000 acquisitions against 16,000 at +1.4% read as a wrong number
        con.print(
            "Δ % compares the rates left out where a metric has one, so equal totals of runs of "
            "different length differ.",
            highlight=False,
            soft_wrap=True,
        )
    for i, why in enumerate(notes, 1):
        con.print(f"[{i}] partial in {escape(why)}", highlight=False, soft_wrap=True)
    if resolution:
        con.print(escape(resolution) + ".", highlight=False, soft_wrap=True)


def comparison_table(table: pl.DataFrame) -> Table:
    """The formatted comparison as a rich table."""
    t = Table()
    for i, col in enumerate(table.columns):
        t.add_column(col, justify="left" if i == 0 else "right", no_wrap=i > 0)
    for row in table.iter_rows():
        t.add_row(*(escape(c) for c in row))
    return t


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("report")(handle_errors(report))
    app.command("compare")(handle_errors(compare))
