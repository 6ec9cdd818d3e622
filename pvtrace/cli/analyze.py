"""`pvtrace analyze`: measure spin waste, LHP/LWP incidents, convoys and exits of one or more traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from pvtrace.analyze import Analysis, analyze
from pvtrace.analyze.result import TABLES
from pvtrace.analyze.run import STEPS, analyze_parquet
from pvtrace.cli.common import err, handle_errors, out, progress
from pvtrace.cli.ingest import parse_guest_offset, refuse_text_options
from pvtrace.errors import UsageError
from pvtrace.ingest.load import is_one_parquet, load
from pvtrace.outputs import OutputSet, atomic_file
from pvtrace.schema import LOCK_KINDS
from pvtrace.trace import Trace, read_meta


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


def output_targets(json_path: Path | None, out_dir: Path | None, csv: bool) -> list[Path]:
    """Every file --json and --out-dir will write (the tables of TABLES, then summary.json)."""
    targets: list[Path] = [json_path] if json_path is not None else []
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
                    df.with_columns(pl.col(pl.UInt64).cast(pl.String)).write_csv(tmp)
                else:
                    df.write_parquet(tmp)
            targets.append(path)
    summary = a.summary.to_json() + "\n"
    for path in ([out_dir / "summary.json"] if out_dir is not None else []) + (
        [json_path] if json_path is not None else []
    ):
        with atomic_file(path) as tmp:
            tmp.write_text(summary, encoding="utf-8")
        targets.append(path)
    return targets


def fmt_ns(ns: int | float | None) -> str:
    """A duration for people: ns, us, ms or s."""
    if ns is None:
        return "-"
    ns = float(ns)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.0f} ns"


def _lock(addr: int | None) -> str:
    return "-" if addr is None else f"{addr:#x}"


def render_summary(a: Analysis, sources: list[str]) -> None:
    """The terminal summary: headline numbers, top locks, worst incidents, convoys, fidelity."""
    s = a.summary
    t = s.totals
    x = s.extra
    out.print(
        f"[bold]pvtrace analyze[/] {', '.join(sources)}  level [bold]{x.get('level')}[/]  "
        f"window {fmt_ns(x.get('t_end', 0) - x.get('t_start', 0))}  {x.get('n_events', 0):,} events  "
        f"{x.get('n_vcpus', 0)} vCPUs  {x.get('n_locks', 0)} locks",
        highlight=False,
    )
    head = Table(title="Headline", show_header=True, header_style="bold")
    head.add_column("metric")
    head.add_column("value", justify="right")
    head.add_column("level")

    def row(label: str, key: str, value: str | None = None) -> None:
        if key in t:
            head.add_row(label, value if value is not None else f"{t[key]:,}", s.fidelity.get(key, ""))
        else:
            head.add_row(label, "[dim]unavailable[/]", "")

    row("spin", "spin_ns", fmt_ns(t.get("spin_ns")))
    pct = x.get("spin_waste_pct_of_running")
    waste = t.get("waste_lhp_ns", 0) + t.get("waste_lwp_ns", 0)
    if "waste_lhp_ns" in t:
        label = fmt_ns(waste) + (f" ({pct:.2f}% of running)" if pct is not None else "")
        head.add_row("spin waste (LHP + LWP)", label, s.fidelity.get("waste_lhp_ns", ""))
    row("  waste LHP", "waste_lhp_ns", fmt_ns(t.get("waste_lhp_ns")))
    row(
        "  waste LWP, next owner preempted", "waste_lwp_preempted_ns", fmt_ns(t.get("waste_lwp_preempted_ns"))
    )
    row("  waste LWP, next owner halted", "waste_lwp_halted_ns", fmt_ns(t.get("waste_lwp_halted_ns")))
    row("  useful spin", "spin_useful_ns", fmt_ns(t.get("spin_useful_ns")))
    row("  unattributed spin", "spin_unattributed_ns", fmt_ns(t.get("spin_unattributed_ns")))
    row("wait while halted", "wait_halted_ns", fmt_ns(t.get("wait_halted_ns")))
    row("wait while preempted", "wait_preempted_ns", fmt_ns(t.get("wait_preempted_ns")))
    row("acquisitions", "n_acquisitions")
    row("contended", "n_contended")
    row("LHP incidents", "n_lhp")
    row("  harmful", "n_lhp_harmful")
    row("LWP incidents", "n_lwp")
    row(
        "  next owner preempted / halted",
        "n_lwp_preempted",
        f"{t.get('n_lwp_preempted', 0):,} / {t.get('n_lwp_halted', 0):,}",
    )
    row("convoys (longest)", "n_convoys", f"{t.get('n_convoys', 0):,} ({t.get('convoy_len_max', 0)})")
    row("pause exits", "n_pause_exits")
    row("pv kicks", "n_kicks")
    row("truncated at trace end", "n_truncated")
    out.print(head)
    if x.get("excluded_ns"):
        out.print(
            f"lost events: {x['n_lost_windows']} windows, {x['excluded_pct']:.2f}% of vCPU time excluded"
        )

    locks = a.table("waste_by_lock").head(10)
    if locks.height:
        tl = Table(title="Top locks by waste", header_style="bold")
        for c in ("vm", "lock", "contended", "spin", "LHP", "LWP", "wait p50", "p99", "max"):
            tl.add_column(c, justify="left" if c in ("vm", "lock") else "right")
        for r in locks.iter_rows(named=True):
            tl.add_row(
                r["vm"],
                _lock(r["lock"]),
                f"{r['n_contended']:,}",
                fmt_ns(r["spin_ns"]),
                fmt_ns(r["waste_lhp_ns"]),
                fmt_ns(r["waste_lwp_ns"]),
                fmt_ns(r["wait_p50_ns"]),
                fmt_ns(r["wait_p99_ns"]),
                fmt_ns(r["wait_max_ns"]),
            )
        out.print(tl)

    for name, who, title in (
        ("lhp_incidents", "holder", "Worst LHP incidents"),
        ("lwp_incidents", "next_owner", "Worst LWP incidents"),
    ):
        inc = a.table(name).sort("waste_ns", "dur", descending=True).head(5)
        if inc.height == 0 or (name.split("_")[0] == "lhp" and "n_lhp_harmful" not in t):
            continue
        ti = Table(title=title, header_style="bold")
        for c in ("vm", "lock", who, "state", "start", "dur", "waiters", "waste"):
            ti.add_column(c, justify="left" if c in ("vm", "lock", "state") else "right")
        state_col = "holder_state" if who == "holder" else "next_owner_state"
        for r in inc.iter_rows(named=True):
            ti.add_row(
                r["vm"],
                _lock(r["lock"]),
                str(r[who]),
                r[state_col],
                fmt_ns(r["start"] - x.get("t_start", 0)),
                fmt_ns(r["dur"]),
                str(r["n_waiters"]),
                fmt_ns(r["waste_ns"]),
            )
        out.print(ti)

    conv = a.table("convoys")
    if conv.height:
        tc = Table(title="Convoy lengths", header_style="bold")
        tc.add_column("length", justify="right")
        tc.add_column("convoys", justify="right")
        for label, n in convoy_length_buckets(conv["length"]):
            tc.add_row(label, f"{n:,}")
        causes = ", ".join(f"{c}: {n}" for c, n in conv.group_by("cause").len().sort("cause").iter_rows())
        out.print(tc)
        out.print(f"convoy causes: {causes}")

    if s.unavailable:
        tu = Table(title="Unavailable at this level", header_style="bold")
        tu.add_column("metrics")
        tu.add_column("missing events")
        tu.add_column("how to capture")
        groups: dict[tuple, list[str]] = {}
        for u in s.unavailable:
            groups.setdefault((tuple(u.missing_events), u.how_to_capture), []).append(u.metric)
        for (missing, how), metrics in groups.items():
            tu.add_row(", ".join(metrics), ", ".join(missing) or "-", how)
        out.print(tu)


def convoy_length_buckets(lengths: pl.Series) -> list[tuple[str, int]]:
    """(label, convoys) per power-of-two bucket of lengths, shortest first: 2, 3-4, 5-8, ... (a row
    per distinct length runs to hundreds on a big trace)."""
    buckets: dict[int, int] = {}
    for length, n in lengths.value_counts().iter_rows():
        b = (int(length) - 1).bit_length()  # lengths in (2**(b-1), 2**b]
        buckets[b] = buckets.get(b, 0) + int(n)
    rows = []
    for b in sorted(buckets):
        hi = 1 << b
        lo = hi // 2 + 1
        rows.append((f"{lo}-{hi}" if hi > lo else str(hi), buckets[b]))
    return rows


def write_report(trace: Trace, result: Analysis, path: Path, files: list[Path]) -> None:
    """The report page of this analysis (pvtrace.report), as `pvtrace report -o` writes it."""
    # imported here: the report stage pulls in altair, which a plain analysis does not need
    from pvtrace.report.page import write_page
    from pvtrace.report.trace_page import render_report, report_sections

    names = ", ".join(f.name for f in files)
    page = render_report(
        trace, result, sections=report_sections(trace, result, None), title=f"pvtrace report: {names}"
    )
    write_page(page, path)


def skipped_lines(problems: dict) -> dict:
    """What the ingester could not read, for the summary: total lines and counts by reason."""
    by_reason: dict[str, int] = {}
    first = None
    for path, kinds in sorted(problems.items()):
        if not isinstance(kinds, dict):
            continue
        for kind, info in kinds.items():
            if isinstance(info, dict) and isinstance(info.get("count"), int):
                by_reason[kind] = by_reason.get(kind, 0) + info["count"]
                sample = (info.get("samples") or [{}])[0]
                if first is None and sample:
                    first = f"{path}:{sample.get('line')}: {info.get('what', kind)}"
    return {"total": sum(by_reason.values()), "by_reason": by_reason, "first": first}


def print_skipped(skipped: dict, quiet: bool) -> None:
    """One line: how many input lines the analysis skipped, and why (never silent, even with -q)."""
    if not skipped["total"]:
        if not quiet:
            err.print("skipped lines: none", highlight=False)
        return
    reasons = ", ".join(f"{n:,} {kind}" for kind, n in sorted(skipped["by_reason"].items()))
    err.print(
        f"[bold yellow]skipped {skipped['total']:,} input lines[/] ({escape(reasons)}; first: "
        f"{escape(str(skipped['first']))}); `pvtrace ingest` lists them, --strict makes them fatal",
        highlight=False,
        soft_wrap=True,
    )


def finish(result: Analysis, files: list[Path], *, written: list[Path], quiet: bool) -> None:
    """Show the summary (the outputs are in place)."""
    print_skipped(result.summary.extra["skipped_lines"], quiet)
    for warning in result.summary.extra.get("warnings", []):
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if not quiet:
        render_summary(result, [str(f) for f in files])
        if written:
            err.print(f"wrote {len(written)} file(s)", highlight=False)


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
            typer.Option("--json", help="Write the summary (totals, fidelity, unavailable) as JSON."),
        ] = None,
        out_dir: Annotated[
            Path | None, typer.Option("--out-dir", help="Write every result table into this folder.")
        ] = None,
        csv: Annotated[bool, typer.Option("--csv", help="Tables as CSV instead of Parquet.")] = False,
        lock_kind: Annotated[
            str | None, typer.Option("--lock-kind", help="Lock kind of every VM: fifo, unfair or unknown.")
        ] = None,
        fmt: Annotated[str, typer.Option("--format", help="Input format (auto: detect).")] = "auto",
        side: Annotated[str, typer.Option("--side", help="host, guest or auto.")] = "auto",
        vm_name: Annotated[
            str | None, typer.Option("--vm", help="Name of the guest VM (guest traces).")
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
    ) -> None:
        """Measure spin waste, LHP/LWP incidents, convoys, exits and pv kicks of a trace."""
        if lock_kind is not None and lock_kind not in LOCK_KINDS:
            raise UsageError(f"--lock-kind must be one of {', '.join(LOCK_KINDS)}, not {lock_kind!r}")
        if csv and out_dir is None:
            raise UsageError("--csv needs --out-dir")
        refuse_text_options(files, fmt, side=side, vm=vm_name, vcpu_map=vcpu_map, guest_offset=guest_offset)
        # Every output checked before the (possibly long) analysis; all placed together at the end.
        outputs = OutputSet(force=force, inputs=[*files, *([vcpu_map] if vcpu_map else [])])
        for path in [*output_targets(json_out, out_dir, csv), *([report] if report else [])]:
            outputs.plan(path, new=True)
        with outputs:
            if report is None and is_one_parquet(files, fmt):
                # a pvtrace Parquet file is analyzed concept by concept, never loaded whole: less memory
                # (50M events: 5.4 GiB instead of 9.9) and no slower (benchmarks/README.md)
                with progress("analyzing", total=len(STEPS), quiet=quiet) as bar:
                    result = analyze_parquet(
                        files[0], lock_kind=lock_kind, progress=lambda step: bar.advance(1)
                    )
                result.summary.extra["skipped_lines"] = skipped_lines(read_meta(files[0]).problems)
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
                with progress("analyzing", total=len(STEPS), quiet=quiet) as bar:
                    result = analyze(trace, lock_kind=lock_kind, progress=lambda step: bar.advance(1))
                result.summary.extra["skipped_lines"] = skipped_lines(trace.meta.problems)
                if report is not None:
                    write_report(trace, result, report, files)
            written = write_outputs(result, json_path=json_out, out_dir=out_dir, csv=csv)
        finish(result, files, written=[*written, *([report] if report else [])], quiet=quiet)
