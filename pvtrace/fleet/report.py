"""`pvtrace fleet report`: where a fleet loses time, as distributions, top offenders (each with
the `pvtrace report` command that drills into it), waste against each label, and failures.

Waste is spin while the lock holder (LHP) or the next owner (LWP) was not running. Traces whose
level cannot give it (host-only, guest-only) are counted and named, never drawn as zero.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import polars as pl

from pvtrace.analyze.partial import KIND_FIX
from pvtrace.errors import UsageError
from pvtrace.fleet import store
from pvtrace.fmt import LHP_ONLY, LWP_UNKNOWN, fmt_2dp, fmt_waste
from pvtrace.report.aggregate import log_histogram
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.histogram import chart_log_histogram
from pvtrace.report.labels import fmt_ns
from pvtrace.report.page import Section, render_page, write_page

SMALL = 260


@dataclass
class FleetData:
    root: Path
    traces: pl.DataFrame
    locks: pl.DataFrame
    vms: pl.DataFrame
    failures: pl.DataFrame

    @property
    def labels(self) -> list[str]:
        return [c for c in self.traces.columns if c.startswith("label_")]

    @property
    def measured(self) -> pl.DataFrame:
        """Traces whose level gives waste."""
        return self.traces.filter(pl.col("waste_ns").is_not_null()) if self.traces.height else self.traces

    @property
    def unmeasured(self) -> pl.DataFrame:
        """Traces whose level gives no waste (trace, level, files), named wherever they are counted."""
        t = self.traces
        return t.filter(pl.col("waste_ns").is_null()).select("trace", "level", "files") if t.height else t

    @property
    def n_partial(self) -> int:
        """Measured traces whose waste leaves a part out (LWP on locks of undecided kind, say)."""
        m = self.measured
        return int(m.select(PARTIAL_WASTE.sum()).item()) if m.height else 0

    @property
    def partial_fixes(self) -> list[str]:
        """What completes the partial waste of the measured traces: each part's fix, once."""
        m = self.measured
        m = m.filter(PARTIAL_WASTE) if m.height else m
        if not m.height:
            return []
        parts = m.select(
            pl.col("summary_json")
            .str.json_path_match("$.partial.spin_waste")
            .str.json_decode(PARTS)
            .alias("p")
        ).explode("p")
        return (
            parts.select(pl.col("p").struct.field("fix"))
            .to_series()
            .drop_nulls()
            .unique(maintain_order=True)
            .to_list()
        )


# A trace's waste is partial where its summary lists parts missing from it (docs/metrics.md).
PARTIAL_WASTE = pl.col("summary_json").str.json_path_match("$.partial.spin_waste").is_not_null()
PARTS = pl.List(pl.Struct({"missing": pl.String, "fix": pl.String}))
PARTIAL_NOTE = (
    "LWP is left out on locks of undecided kind; `pvtrace fleet analyze --lock-kind fifo|unfair` "
    "completes it where the guests' spinlock algorithm is known"
)


def partial_mark(data: FleetData) -> str:
    """What a fleet total of waste says when some of its traces' waste is partial: the undecided
    locks' note when that is all they lack, else each fix their summaries name."""
    if not data.n_partial:
        return ""
    fixes = data.partial_fixes
    if fixes == [KIND_FIX]:
        return f"; partial in {data.n_partial} of them: {PARTIAL_NOTE}"
    return (
        f"; partial in {data.n_partial} of them: each leaves out parts its summary's `partial` list names "
        f"(`pvtrace analyze TRACE`); what completes them: {'; '.join(fixes)}"
    )


def load_fleet(root: Path) -> FleetData:
    if not store.is_fleet(root):
        raise UsageError(f"{root}: not a fleet folder (no fleet.json); run `pvtrace fleet analyze -o {root}`")
    return FleetData(
        root,
        store.read(root, "trace"),
        store.read(root, "locks"),
        store.read(root, "vms"),
        store.read(root, "failures"),
    )


def drill_command(files: list[str], trace: str) -> str:
    """The command that writes the full report page of one trace."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in trace) + ".html"
    return "pvtrace report " + " ".join(shlex.quote(f) for f in files) + f" -o {shlex.quote(out)}"


def waste_by(data: FleetData, level: str) -> pl.DataFrame:
    """Waste (ns) per trace, host label, VM or lock, largest first."""
    if level == "trace":
        return data.measured.select(
            "trace",
            "files",
            *data.labels,
            "level",
            "waste_ns",
            "spin_waste_pct_of_running",
            PARTIAL_WASTE.alias("partial"),
        ).sort("waste_ns", descending=True)
    if level == "host":
        if "label_host" not in data.traces.columns:
            return pl.DataFrame()
        return (
            data.measured.group_by("label_host")
            .agg(pl.col("waste_ns").sum(), pl.len().alias("traces"), pl.col("running_ns").sum())
            .with_columns((100 * pl.col("waste_ns") / pl.col("running_ns")).alias("pct_of_running"))
            .rename({"label_host": "host"})
            .sort("waste_ns", descending=True)
        )
    table = data.vms if level == "vm" else data.locks
    if table.height == 0:
        return pl.DataFrame()
    keys = ["trace_id", "trace", "vm"] + (["lock"] if level == "lock" else [])
    # a lock of undecided kind has LHP and no LWP: its waste is LHP alone, flagged
    return (
        table.filter(pl.col("waste_lhp_ns").is_not_null())
        .select(
            *keys,
            (pl.col("waste_lhp_ns") + pl.col("waste_lwp_ns").fill_null(0)).alias("waste_ns"),
            "waste_lhp_ns",
            "waste_lwp_ns",
            pl.col("waste_lwp_ns").is_null().alias("partial"),
        )
        .sort("waste_ns", descending=True)
    )


def render_terminal(data: FleetData, console, top: int = 10) -> None:
    """Counts, levels, total waste, the top offenders with their drill-in commands, failures."""
    from rich.markup import escape
    from rich.table import Table

    t = data.traces
    levels = (
        ", ".join(f"{lvl} {n}" for lvl, n in t.group_by("level").len().sort("level").iter_rows())
        if t.height
        else "-"
    )
    m = data.measured
    console.print(
        f"[bold]fleet[/] {data.root}: {t.height} traces analyzed ({levels}), {data.failures.height} failed",
        highlight=False,
    )
    if t.height and m.height < t.height:
        u = data.unmeasured
        named = ", ".join(f"{r['trace']} ({r['level']})" for r in u.head(top).iter_rows(named=True))
        more = f" and {u.height - top} more" if u.height > top else ""
        console.print(
            f"waste unavailable for {u.height} trace(s), whose level lacks lock or vCPU-state events: "
            f"{escape(named)}{more}; `pvtrace analyze` of one says what it lacks",
            highlight=False,
            soft_wrap=True,
        )
    if m.height:
        total = int(m["waste_ns"].sum())
        running = int(m["running_ns"].sum() or 0)
        pct = f" ({100 * total / running:.2f}% of vCPU running time)" if running else ""
        console.print(
            f"spin waste (LHP + LWP) over {m.height} traces: {fmt_ns(total)}{pct}{partial_mark(data)}",
            highlight=False,
        )
        tt = Table(title="Top traces by waste", header_style="bold", title_justify="left")
        for c in ("trace", "level", "waste", "% running", "drill in"):
            tt.add_column(c, justify="right" if c in ("waste", "% running") else "left")
        for r in waste_by(data, "trace").head(top).iter_rows(named=True):
            pct_r = r["spin_waste_pct_of_running"]
            tt.add_row(
                r["trace"],
                r["level"],
                fmt_ns(r["waste_ns"]) + (" (partial)" if r["partial"] else ""),
                fmt_2dp(pct_r),
                drill_command(r["files"], r["trace"]),
            )
        console.print(tt)
        locks = waste_by(data, "lock").head(top)
        if locks.height:
            tl = Table(title="Top locks by waste", header_style="bold", title_justify="left")
            for c in ("trace", "vm", "lock", "waste", "LHP", "LWP"):
                tl.add_column(c, justify="left" if c in ("trace", "vm", "lock") else "right")
            for r in locks.iter_rows(named=True):
                tl.add_row(
                    r["trace"],
                    r["vm"],
                    f"{r['lock']:#x}",
                    fmt_waste(r["waste_ns"], r["partial"]),
                    fmt_ns(r["waste_lhp_ns"]),
                    LWP_UNKNOWN if r["partial"] else fmt_ns(r["waste_lwp_ns"]),
                )
            console.print(tl)
    for r in data.failures.head(top).iter_rows(named=True):
        console.print(
            f"[red]failed[/] {escape(r['trace'])} ({r['stage']}): {escape(r['error'])}",
            highlight=False,
            soft_wrap=True,
        )
    if data.failures.height > top:
        console.print(f"... and {data.failures.height - top} more failures", highlight=False)


def _distribution(data: FleetData, level: str, title: str) -> Figure:
    df = waste_by(data, level)
    name = f"dist-{level}"
    if df.height == 0:
        why = "no host label in the manifest" if level == "host" else "no trace gives waste"
        return no_data(name, title, why)
    hist, left_out = log_histogram(df, "waste_ns")
    note = f"{left_out} with no waste are not on the log axis." if left_out else ""
    if hist.height == 0:
        return no_data(name, title, f"all {df.height} have zero waste")
    return Figure(
        name,
        title,
        chart_log_histogram(hist, "spin waste (µs)"),
        note=note,
        caption=f"{df.height} {level}s; waste = LHP + LWP spin.",
    )


# Page headers of the offender tables' columns (the terminal's words, not the column names).
_HEADERS = {
    "label_host": "host",
    "waste_ns": "waste",
    "waste_lhp_ns": "LHP",
    "waste_lwp_ns": "LWP",
    "running_ns": "vCPU running",
    "pct_of_running": "% of running",
}


def _offenders(data: FleetData, top: int) -> list[Figure]:
    figs = []
    traces = waste_by(data, "trace").head(top)
    if traces.height:
        figs.append(
            Figure(
                "top-traces",
                "Top traces",
                table=traces.select(
                    "trace",
                    *data.labels,
                    "level",
                    (
                        pl.col("waste_ns").map_elements(fmt_ns, return_dtype=pl.String)
                        + pl.when(pl.col("partial")).then(pl.lit(" (partial)")).otherwise(pl.lit(""))
                    ).alias("waste"),
                    pl.col("spin_waste_pct_of_running").round(3).alias("% of running"),
                    pl.struct("files", "trace")
                    .map_elements(lambda r: drill_command(r["files"], r["trace"]), return_dtype=pl.String)
                    .alias("drill in"),
                ),
            )
        )
    for level, title in (("host", "Top hosts"), ("vm", "Top VMs"), ("lock", "Top locks")):
        df = waste_by(data, level).head(top)
        if df.height == 0:
            continue
        if "lock" in df.columns:
            df = df.with_columns(pl.col("lock").map_elements(lambda a: f"{a:#x}", return_dtype=pl.String))
        shown = df.drop("trace_id", strict=False).with_columns(
            pl.col(c).map_elements(fmt_ns, return_dtype=pl.String) for c in df.columns if c.endswith("_ns")
        )
        if "partial" in shown.columns:  # a lock of undecided kind: LHP alone, its LWP unknown
            shown = shown.with_columns(
                pl.when(pl.col("partial"))
                .then(pl.col("waste_ns") + LHP_ONLY)
                .otherwise("waste_ns")
                .alias("waste_ns"),
                pl.when(pl.col("partial"))
                .then(pl.lit(LWP_UNKNOWN))
                .otherwise("waste_lwp_ns")
                .alias("waste_lwp_ns"),
            ).drop("partial")
        if "pct_of_running" in shown.columns:
            shown = shown.with_columns(pl.col("pct_of_running").map_elements(fmt_2dp, return_dtype=pl.String))
        figs.append(Figure(f"top-{level}", title, table=shown.rename(_HEADERS, strict=False)))
    return figs or [no_data("top", "Top offenders", "no trace gives waste")]


def _against_label(data: FleetData, label: str) -> Figure:
    name = f"label-{label}"
    title = label.removeprefix("label_")
    df = data.measured.select(pl.col(label).alias("value"), "spin_waste_pct_of_running", "trace").drop_nulls()
    if df.height == 0:
        return no_data(name, title, f"no trace with waste has a {title} label")
    numeric = df.with_columns(pl.col("value").cast(pl.Float64, strict=False).alias("num"))
    y = alt.Y("spin_waste_pct_of_running:Q", title="waste, % of running")
    tips = ["trace:N", "value:N", alt.Tooltip("spin_waste_pct_of_running:Q", format=".3f")]
    if numeric["num"].null_count() == 0:
        base = alt.Chart(numeric).encode(alt.X("num:Q", title=title))
        chart = base.mark_circle(opacity=0.5).encode(y, tooltip=tips) + base.mark_line(color="black").encode(
            alt.Y("mean(spin_waste_pct_of_running):Q")
        )
    else:
        chart = alt.Chart(df).mark_boxplot(extent="min-max").encode(alt.X("value:N", title=title), y)
    return Figure(name, title, chart.properties(width=SMALL, height=180))


def build_sections(data: FleetData, top: int) -> list[Section]:
    t, m = data.traces, data.measured
    facts = pl.DataFrame(
        {
            "": ["traces analyzed", "traces with waste", "traces failed", "total waste"],
            "value": [
                str(t.height),
                str(m.height),
                str(data.failures.height),
                (fmt_ns(int(m["waste_ns"].sum())) + partial_mark(data)) if m.height else "unavailable",
            ],
        }
    )
    levels = t.group_by("level").len("traces").sort("level") if t.height else pl.DataFrame()
    overview = [Figure("facts", "The fleet", table=facts)]
    if levels.height:
        overview.append(Figure("levels", "Traces per level", table=levels))
    if data.unmeasured.height:  # counted above: named here, with the command that says what each lacks
        overview.append(
            Figure(
                "unmeasured",
                "Traces without waste (their level lacks lock or vCPU-state events)",
                table=data.unmeasured.head(top).select(
                    "trace",
                    "level",
                    pl.col("files")
                    .map_elements(
                        lambda f: "pvtrace analyze " + " ".join(map(shlex.quote, f)), return_dtype=pl.String
                    )
                    .alias("what it lacks"),
                ),
            )
        )
    sections = [
        Section("Overview", overview),
        Section(
            "Waste distributions",
            [_distribution(data, lvl, f"Waste per {lvl}") for lvl in ("trace", "host", "vm", "lock")],
            intro="Spin waste (LHP + LWP) per trace, host, VM and lock, on a log axis.",
        ),
        Section(
            "Top offenders",
            _offenders(data, top),
            intro="Largest waste first; `drill in` writes the full report page of that trace.",
        ),
    ]
    labels = [_against_label(data, lbl) for lbl in data.labels]
    sections.append(
        Section(
            "Waste against labels",
            labels or [no_data("labels", "Labels", "the traces have no labels (give a manifest)")],
            intro="One small chart per label: waste in percent of vCPU running time, so traces of different lengths compare.",
        )
    )
    if data.failures.height:
        fails = data.failures.select("trace", "stage", "error").sort("trace")
        sections.append(
            Section("Failures", [Figure("failures", f"{fails.height} traces failed", table=fails)])
        )
    else:
        sections.append(Section("Failures", [no_data("failures", "Failures", "no trace failed")]))
    return sections


def write_fleet_report(
    data: FleetData,
    path: Path,
    top: int = 10,
    force: bool = False,
    progress: Callable[[], None] | None = None,
) -> Path:
    page = render_page(
        f"pvtrace fleet report: {data.root.name}",
        f"{data.traces.height} traces, {data.failures.height} failed",
        build_sections(data, top),
        progress,
    )
    return write_page(page, path, force)
