"""Two runs side by side: headline metrics with deltas, and their distributions overlaid."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import altair as alt
import polars as pl

from pvtrace.analyze.partial import partial_why
from pvtrace.analyze.result import Analysis
from pvtrace.errors import FormatError
from pvtrace.report.aggregate import bin_width, log_histogram, time_bin
from pvtrace.report.compare_rates import RATE_CAPTION, extent_text, fmt_rate, rates, run_extent
from pvtrace.report.facts import facts_figure
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.histogram import chart_log_histogram
from pvtrace.report.incidents import chart_convoy_lengths, incident_series
from pvtrace.report.labels import METRIC_LABELS, fmt_metric, fmt_ns, unavailable_reason
from pvtrace.report.page import Section, render_page, write_page
from pvtrace.report.tables import limits_figure
from pvtrace.report.waste import (
    PARTS,
    chart_stacked_waste,
    partial_parts,
    running_time,
    unavailable_metrics,
    waste_parts,
    waste_share,
)
from pvtrace.summary import TOTAL_KEYS, Summary
from pvtrace.trace import Trace

N_TIME_BINS = 150
TOP_REASONS = 10

# Derived metrics shown after the summary totals: key -> (label, unit kind).
DERIVED: dict[str, str] = {
    "span_ns": "trace span",
    "running_ns": "vCPU running time",
    "spin_waste_pct": "spin waste, % of running time",
    "kick_latency_p50_ns": "kick latency, median",
    "wait_ns": "lock wait, total",
    "wait_p99_ns": "lock wait, p99",
}


def summary_run(raw: dict, source: str) -> Analysis:
    """A run given by its summary JSON (`pvtrace analyze --json`, or `pvtrace generate --truth`:
    the simulator's ground truth, of the text's window where it was written beside text),
    compared by its totals: it has no tables to chart."""
    if not isinstance(raw, dict) or not isinstance(raw.get("totals"), dict):
        raise FormatError(
            "not a summary compare reads (no totals): give a trace, a `pvtrace analyze --json` summary "
            "or a `pvtrace generate --truth` file",
            source,
        )
    window = raw.get("text_window")
    if isinstance(window, dict) and isinstance(window.get("totals"), dict):
        # a truth written beside text: the truth of the text's window (its first to last event),
        # which analyzing the text gives; the whole run's is longer (`generate` says so)
        s = Summary.from_dict({**raw, "totals": window["totals"]})
        end = window.get("t_end")  # exclusive: the text's last event is one ns before it
        s.extra.update(
            t_start=window.get("t_start"),
            t_end=None if end is None else end - 1,
            n_vcpus=len(raw.get("vcpus") or []),
            running_ns=window.get("running_ns"),
            wait_ns=window.get("wait_ns"),
        )
        wasted = s.totals.get("waste_lhp_ns", 0) + s.totals.get("waste_lwp_ns", 0)
        if s.extra["running_ns"] and "waste_lhp_ns" in s.totals:  # as analyze gives it
            s.extra["spin_waste_pct_of_running"] = round(100.0 * wasted / s.extra["running_ns"], 4)
        return Analysis(summary=s)
    s = Summary.from_dict(raw)
    if isinstance(raw.get("vcpus"), list) and "n_vcpus" not in raw:  # the truth: a row per vCPU
        s.extra["n_vcpus"] = len(raw["vcpus"])
        s.extra["running_ns"] = sum(int(v.get("running_ns") or 0) for v in raw["vcpus"])
        if isinstance(raw.get("locks"), list) and all("wait_ns" in r for r in raw["locks"]):
            s.extra["wait_ns"] = sum(int(r.get("wait_ns") or 0) for r in raw["locks"])  # as analyze's total
        s.extra.setdefault("t_start", 0)
        wasted = s.totals.get("waste_lhp_ns", 0) + s.totals.get("waste_lwp_ns", 0)
        if s.extra["running_ns"] and "waste_lhp_ns" in s.totals:
            s.extra["spin_waste_pct_of_running"] = round(
                100.0 * wasted / s.extra["running_ns"], 4
            )  # as analyze
    return Analysis(summary=s)


def _derived(analysis: Analysis, trace: Trace | None) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = dict.fromkeys(DERIVED)
    if trace is not None and trace.t_start is not None and trace.t_end is not None:
        out["span_ns"] = trace.t_end - trace.t_start
    elif trace is None:  # a summary run: the span its summary gives
        out["span_ns"] = run_extent(analysis, None)["span_ns"]
    out["running_ns"] = running_time(analysis)
    if out["running_ns"] is None and trace is None:  # a summary run: as its summary says
        out["running_ns"] = analysis.summary.extra.get("running_ns")
    share = waste_share(analysis)  # as `pvtrace analyze` prints it
    if share is not None:
        out["spin_waste_pct"] = share[1]
    lat = analysis.table("kicks")["latency_ns"].drop_nulls()
    if lat.len():
        out["kick_latency_p50_ns"] = int(lat.median())
    # the headline's total wait (`pvtrace analyze`), the one time a guest-only trace gives
    out["wait_ns"] = analysis.summary.extra.get("wait_ns")
    waits = analysis.table("waits")
    if waits.height:
        out["wait_p99_ns"] = int(waits["dur"].quantile(0.99))
    return out


def in_neither(a: Analysis, b: Analysis) -> list[str]:
    """The headline metrics neither run gives (left out of the comparison's rows), by label."""
    return [
        METRIC_LABELS.get(k, k)
        for k in TOTAL_KEYS
        if a.summary.totals.get(k) is None and b.summary.totals.get(k) is None
    ]


def compare_metrics(
    a: Analysis, b: Analysis, traces: tuple[Trace | None, Trace | None] = (None, None)
) -> pl.DataFrame:
    """One row per headline metric: key, metric, a, b (the runs' totals), basis, a_rate, b_rate,
    delta_of, delta (B - A), delta_pct; null where unavailable.

    Runs of different length compare as rates (rate_basis): a_rate/b_rate are counts per second of
    trace, or times per vCPU-second of trace as a percentage; delta is then on the rates
    (delta_of 'rate'), and on the totals only for a metric that is no rate or a run whose span or
    vCPUs are unknown (delta_of 'total'). partial_a/partial_b say what a run's value leaves out
    ('' when whole, analyze.partial); a delta between a part and a whole means nothing, so it is
    null then."""
    rows = []
    da, db = _derived(a, traces[0]), _derived(b, traces[1])
    ext = run_extent(a, traces[0]), run_extent(b, traces[1])
    for key in TOTAL_KEYS:
        va, vb = a.summary.totals.get(key), b.summary.totals.get(key)
        if va is None and vb is None:
            continue
        rows.append((key, METRIC_LABELS.get(key, key), va, vb, _partial(a, key), _partial(b, key)))
    for key, label in DERIVED.items():
        if da[key] is None and db[key] is None:
            continue
        rows.append((key, label, da[key], db[key], _partial(a, key), _partial(b, key)))
    rows = [(*r, *rates(r[0], r[2], r[3], ext)) for r in rows]
    df = pl.DataFrame(
        rows,
        schema={
            "key": pl.String,
            "metric": pl.String,
            "a": pl.Float64,
            "b": pl.Float64,
            "partial_a": pl.String,
            "partial_b": pl.String,
            "basis": pl.String,
            "a_rate": pl.Float64,
            "b_rate": pl.Float64,
        },
        orient="row",
    )
    by_rate = pl.col("basis").is_not_null() & pl.col("a_rate").is_not_null() & pl.col("b_rate").is_not_null()
    base = pl.when(by_rate).then(pl.col("a_rate")).otherwise(pl.col("a"))
    whole = (pl.col("partial_a") == "") & (pl.col("partial_b") == "")
    return df.with_columns(
        pl.when(by_rate).then(pl.lit("rate")).otherwise(pl.lit("total")).alias("delta_of"),
        pl.when(whole)
        .then(pl.when(by_rate).then(pl.col("b_rate") - pl.col("a_rate")).otherwise(pl.col("b") - pl.col("a")))
        .alias("delta"),
    ).with_columns(pl.when(base != 0).then(100.0 * pl.col("delta") / base.abs()).alias("delta_pct"))


# A derived value that does not exist when its run counted none of these: written so, not 'unavailable'.
NONE_OF: dict[str, tuple[str, str]] = {
    "kick_latency_p50_ns": ("n_kicks", "no kicks"),
    "wait_p99_ns": ("n_contended", "no waits"),
}


def _partial(analysis: Analysis, key: str) -> str:
    """What this run's value of `key` leaves out, '' when it is whole."""
    if key == "spin_waste_pct":
        share = waste_share(analysis)
        return "" if share is None or share[2] == "LHP + LWP" else share[2]
    return partial_why(analysis.summary.extra, key)


def _fmt(key: str, v: float | None, signed: bool = False) -> str:
    if v is None:
        return "unavailable"
    if key.endswith("_pct"):
        return f"{v:+.2f} pts" if signed else f"{v:.2f}%"
    text = fmt_metric(key, v)
    return ("+" + text if v > 0 else text) if signed else text


def format_comparison(
    df: pl.DataFrame, labels: tuple[str, str], notes: list[str] | None = None
) -> pl.DataFrame:
    """The comparison with every value written in its unit (for a terminal table or a page): both
    runs' totals, their rates (rate_basis; blank for a metric compared as it is) and the delta.
    With `notes` (a terminal), a partial metric is marked `(partial [n])` and why is appended to
    notes once, numbered: in the label it made the column too wide for a terminal."""
    rows = []
    counts = {r["key"]: (r["a"], r["b"]) for r in df.iter_rows(named=True)}
    for r in df.iter_rows(named=True):
        part = r["partial_a"] or r["partial_b"]
        by_rate = r["delta_of"] == "rate"
        if r["delta"] is None:
            delta = "n/a"
        elif r["delta"] == 0:
            delta = "0"
        else:
            delta = fmt_rate(r["basis"], r["delta"], True) if by_rate else _fmt(r["key"], r["delta"], True)
        pct = f"{r['delta_pct']:+.1f}%" if r["delta_pct"] is not None else "n/a"
        if part:
            delta = pct = "n/a (partial)"
        why = "; ".join(
            f"{run}: {w}" for run, w in zip(labels, (r["partial_a"], r["partial_b"]), strict=True) if w
        )
        if r["partial_a"] and r["partial_a"] == r["partial_b"]:
            why = f"both: {r['partial_a']}"
        if why and notes is not None:
            if why not in notes:
                notes.append(why)
            metric = f"{r['metric']} (partial [{notes.index(why) + 1}])"
        else:
            metric = r["metric"] + (f" (partial in {why})" if why else "")
        va, vb = (
            _fmt(r["key"], r[c]) + (" (partial)" if r[p] else "")
            for c, p in (("a", "partial_a"), ("b", "partial_b"))
        )
        if r["key"] in NONE_OF:  # a ticket run has no kick latency because it has no kicks
            count, none = NONE_OF[r["key"]]
            na, nb = counts.get(count, (None, None))
            va, vb = (
                none if v is None and n == 0 else text for v, n, text in ((r["a"], na, va), (r["b"], nb, vb))
            )
        ra, rb = ("" if r["basis"] is None else fmt_rate(r["basis"], r[c]) for c in ("a_rate", "b_rate"))
        rows.append((metric, va, vb, ra, rb, delta, pct))
    names = [labels[0], labels[1], f"{labels[0]}, rate", f"{labels[1]}, rate"]
    return pl.DataFrame(rows, schema=["metric", *names, "Δ (B − A)", "Δ %"], orient="row")


def comparison_json(
    df: pl.DataFrame, labels: tuple[str, str], extents: tuple[dict[str, int | None], dict[str, int | None]]
) -> str:
    """`compare --json`: each run's label, span and vCPUs, and compare_metrics' rows (the values
    in their raw unit: ns, counts, rates as compare_metrics defines them)."""
    runs = {ab: {"label": label, **e} for ab, label, e in zip("ab", labels, extents, strict=True)}
    return json.dumps({"runs": runs, "metrics": df.to_dicts()}, indent=2) + "\n"


def _both(a: pl.DataFrame, b: pl.DataFrame, labels: tuple[str, str]) -> pl.DataFrame:
    return pl.concat(
        [a.with_columns(pl.lit(labels[0]).alias("run")), b.with_columns(pl.lit(labels[1]).alias("run"))],
        how="vertical_relaxed",
    )


def chart_compare_waste(a: Analysis, b: Analysis, labels: tuple[str, str]) -> Figure:
    """Spin of each run and of each VM, split into parts, the runs side by side."""
    name, title = "compare-waste", "Spin waste"
    gone = unavailable_metrics(a) | unavailable_metrics(b)
    if "spin_ns" in gone:
        return no_data(
            name, title, "spin is unavailable in at least one run (it needs vCPU states and lock waits)"
        )
    both = _both(a.table("waste_by_vm"), b.table("waste_by_vm"), labels)
    if both.height == 0 or not both["spin_ns"].fill_null(0).sum():
        return no_data(name, title, "neither run has lock spin")
    long, missing = waste_parts(both, "vm", by=("run",), unavailable=gone, partial=partial_parts(a, b))
    note = (
        f"Not available in at least one run: {', '.join(PARTS[c][0] for c in missing)} spin."
        if missing
        else ""
    )
    return Figure(
        name,
        title,
        chart_stacked_waste(long, "vm", "VM", run="run", runs=list(labels)),
        f"Per VM; the upper, darker bar of each pair is {labels[0]}.",
        note,
    )


def _hist_figure(
    name: str,
    title: str,
    frames: tuple[pl.DataFrame, pl.DataFrame],
    col: str,
    labels: tuple[str, str],
    x_title: str,
    dash: str | None = None,
) -> Figure:
    """Log-binned distributions of both runs, colour = run (line style = `dash` groups)."""
    both = _both(frames[0], frames[1], labels)
    if both.height == 0:
        return no_data(name, title, "no data in either run")
    hist, left_out = log_histogram(both, col, by=("run", dash) if dash else ("run",))
    if hist.height == 0:
        return no_data(name, title, "no positive values in either run")
    counts = both.group_by("run").len()
    per_run = dict(counts.iter_rows())
    caption = (
        "; ".join(f"{r}: {per_run.get(r, 0):,}" for r in labels)
        + ". Share of each series per log-spaced bin."
    )
    note = f"{left_out:,} zero or missing values are not on the log axis." if left_out else ""
    chart = chart_log_histogram(
        hist, x_title, series="run", series_title="run", y="share_pct", series_order=list(labels), dash=dash
    )
    return Figure(name, title, chart, caption, note)


def chart_compare_pause_exits(
    a: Analysis, b: Analysis, labels: tuple[str, str], starts: tuple[int | None, int | None], span: int
) -> Figure:
    """Pause exits over time since each run's start, one line per run."""
    name, title = "compare-pause-exits", "Pause exits over time"
    pa, pb = a.table("pause_exits"), b.table("pause_exits")
    if pa.height + pb.height == 0:
        return no_data(name, title, "no pause exits in either run")
    width = bin_width(0, span, N_TIME_BINS)
    frames = []
    for df, label, t0 in ((pa, labels[0], starts[0]), (pb, labels[1], starts[1])):
        if df.height:
            origin = int(df["ts"].min()) if t0 is None else t0
            frames.append(
                df.group_by(time_bin("ts", origin, width))
                .agg(pl.len().alias("n_exits"))
                .with_columns((pl.col("bin") * width / 1e6).alias("t_ms"), pl.lit(label).alias("run"))
            )
    data = pl.concat(frames).sort("run", "bin")
    chart = (
        alt.Chart(data)
        .mark_line(interpolate="step-after")
        .encode(
            alt.X("t_ms:Q", title="time since the run's start (ms)"),
            alt.Y("n_exits:Q", title=f"pause exits per {fmt_ns(width)}"),
            alt.Color("run:N", scale=alt.Scale(domain=list(labels))),
            tooltip=["run:N", "t_ms:Q", "n_exits:Q"],
        )
        .properties(width=600, height=200)
    )
    return Figure(
        name, title, chart, f"{pa.height:,} pause exits in {labels[0]}, {pb.height:,} in {labels[1]}."
    )


def chart_compare_exit_reasons(a: Analysis, b: Analysis, labels: tuple[str, str]) -> Figure:
    """Exit counts per reason, the runs side by side (the most frequent reasons)."""
    name, title = "compare-exit-reasons", "VM exits by reason"
    both = _both(a.table("exit_reasons"), b.table("exit_reasons"), labels)
    if both.height == 0:
        return no_data(name, title, "no VM exits in either run")
    top = both.group_by("reason").agg(pl.col("count").sum()).sort("count", descending=True).head(TOP_REASONS)
    data = both.filter(pl.col("reason").is_in(top["reason"].implode())).select(
        "run", "reason", "count", "avg_ns"
    )
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            alt.Y("reason:N", sort=top["reason"].to_list(), title=None),
            alt.YOffset("run:N", sort=list(labels)),
            alt.X("count:Q", title="exits"),
            alt.Color("run:N", scale=alt.Scale(domain=list(labels))),
            tooltip=[
                "run:N",
                "reason:N",
                alt.Tooltip("count:Q", format=","),
                alt.Tooltip("avg_ns:Q", title="avg ns", format=","),
            ],
        )
        .properties(width=600, height=alt.Step(12))
    )
    return Figure(name, title, chart, f"The {top.height} most frequent exit reasons of both runs.")


def resolution_note(a: Analysis, b: Analysis, labels: tuple[str, str]) -> str:
    """A sentence when one run prints whole microseconds and the other nanoseconds (trace-cmd
    report text against its .dat, ftrace against perf --ns): short durations then differ by up to
    a microsecond from the print alone. '' when both print alike or a run has no intervals (a
    summary run)."""
    ticks = []
    for x in (a, b):
        if not (x.table("waits").height or x.table("vcpu_states").height):
            return ""
        ticks.append(x.clock_tick())
    if ticks[0] == ticks[1]:
        return ""
    words = {1000: "whole microseconds", 1: "nanoseconds"}
    return (
        f"{labels[0]} prints {words[ticks[0]]}, {labels[1]} {words[ticks[1]]}: short durations (lock wait "
        "p99, kick latency) differ by up to 1 µs from the print alone, not from the runs"
    )


def compare_sections(
    a: Analysis,
    b: Analysis,
    labels: tuple[str, str],
    traces: tuple[Trace | None, Trace | None] = (None, None),
) -> list[Section]:
    """Every figure of a comparison page."""
    table = format_comparison(compare_metrics(a, b, traces), labels)
    headline = Figure(
        "compare-headline",
        "Headline metrics",
        table=table,
        caption=f"A = {extent_text(labels[0], run_extent(a, traces[0]))}; "
        f"B = {extent_text(labels[1], run_extent(b, traces[1]))}. {RATE_CAPTION}"
        + (f" {note}." if (note := resolution_note(a, b, labels)) else ""),
    )
    inc = (incident_series(a), incident_series(b))
    convoys = _both(a.table("convoys"), b.table("convoys"), labels)
    starts = tuple(t.t_start if t is not None else None for t in traces)
    span = max(_span(x, t) for x, t in zip((a, b), traces, strict=True))
    sections = [
        Section("Headline", [headline, chart_compare_waste(a, b, labels)]),
        Section(
            "Distributions",
            [
                _hist_figure(
                    "compare-wait-times",
                    "Lock wait times",
                    (a.table("waits"), b.table("waits")),
                    "dur",
                    labels,
                    "wait time (µs, log scale)",
                ),
                _hist_figure(
                    "compare-incidents",
                    "LHP and LWP incident durations",
                    inc,
                    "dur",
                    labels,
                    "incident duration (µs, log scale)",
                    dash="kind",
                ),
                _convoys_figure(convoys, a, b, labels),
                _hist_figure(
                    "compare-kick-latency",
                    "pv kick latency",
                    (a.table("kicks"), b.table("kicks")),
                    "latency_ns",
                    labels,
                    "kick latency (µs, log scale)",
                ),
            ],
        ),
        Section(
            "Hypervisor",
            [chart_compare_pause_exits(a, b, labels, starts, span), chart_compare_exit_reasons(a, b, labels)],
        ),
    ]
    facts = []
    for i, (trace, analysis, label) in enumerate(zip(traces, (a, b), labels, strict=True)):
        if trace is not None:
            fig = facts_figure(trace, analysis)
            fig.name, fig.title = f"facts-{'ab'[i]}", f"Trace {label}"
            facts.append(fig)
    if facts:
        sections.append(Section("Trace facts", facts))
    limits = []
    for i, (analysis, label) in enumerate(zip((a, b), labels, strict=True)):
        fig = limits_figure(analysis, [])
        fig.name, fig.title = f"limits-{'ab'[i]}", f"What {label} cannot tell"
        limits.append(fig)
    sections.append(Section("What these runs cannot tell", limits))
    return _mark_summary_runs(sections, (a, b), labels)


def _mark_summary_runs(
    sections: list[Section], runs: tuple[Analysis, Analysis], labels: tuple[str, str]
) -> list[Section]:
    """A run given as its summary JSON has totals and no tables: its charts are not 'no data'. The
    lhp-demo truth against its analysis (72 ms of spin and 42 convoys in both) read 'neither run has
    lock spin' and 'no convoys'; beside a trace, its counts in the captions read 0."""
    summary = [label for label, x in zip(labels, runs, strict=True) if not x.tables]
    if not summary:
        return sections
    traced = [label for label in labels if label not in summary]
    what = " and ".join(summary) + (" are summary JSON files" if len(summary) == 2 else " is a summary JSON")
    for fig in (f for section in sections[:-1] for f in section.figures):
        if fig.table is not None or fig.name.startswith("facts-"):
            continue  # the headline compares the totals; the facts are of a trace
        fig.caption = ""  # its counts give the summary run 0
        if not traced:
            fig.chart, fig.note = None, f"Not charted: {what} (totals only, no tables to chart)."
        elif fig.chart is None:
            fig.note = f"{what} (totals only, no tables to chart), and {traced[0]} has nothing to draw here."
        else:
            fig.note = f"Only {traced[0]} is drawn: {what} (totals only, no tables to chart)."
    return sections


def _span(analysis: Analysis, trace: Trace | None) -> int:
    if trace is not None and trace.t_start is not None and trace.t_end is not None:
        return max(1, trace.t_end - trace.t_start)
    ts = analysis.table("pause_exits")["ts"]
    return max(1, int(ts.max() - ts.min())) if ts.len() else 1


def _convoys_figure(convoys: pl.DataFrame, a: Analysis, b: Analysis, labels: tuple[str, str]) -> Figure:
    fig = chart_convoy_lengths(a, run="run", convoys=convoys, runs=list(labels))
    fig.name = "compare-convoys"
    # what each run cannot count: a missing bar is never a zero
    gaps = []
    for label, x in zip(labels, (a, b), strict=True):
        part = partial_why(x.summary.extra, "n_convoys")
        why = unavailable_reason(x.summary, ["n_convoys"]) or (f"partial: {part}" if part else "")
        if why:
            gaps.append(f"{label}: {why}.")
    if gaps:
        fig.note = " ".join(gaps)
    if convoys.height:
        per_run = dict(convoys.group_by("run").len().iter_rows())
        fig.caption = (
            "Convoys: "
            + "; ".join(f"{r}: {per_run.get(r, 0):,}" for r in labels)
            + f" (left, darker bar of each pair: {labels[0]})."
        )
    return fig


def render_compare(
    a: Analysis,
    b: Analysis,
    labels: tuple[str, str],
    traces: tuple[Trace | None, Trace | None] = (None, None),
    progress: Callable[[], None] | None = None,
) -> str:
    """The comparison page as HTML text; `progress` is called after each figure."""
    sections = compare_sections(a, b, labels, traces)
    return render_page(
        f"pvtrace compare: {labels[0]} vs {labels[1]}",
        "Two runs, headline metrics and distributions overlaid.",
        sections,
        progress,
    )


def write_compare(
    a: Analysis,
    b: Analysis,
    labels: tuple[str, str],
    path: Path | str,
    force: bool = False,
    traces: tuple[Trace | None, Trace | None] = (None, None),
    progress: Callable[[], None] | None = None,
) -> Path:
    """Write the self-contained comparison page of two analyses (traces, when given, add their facts)."""
    if labels[0] == labels[1]:
        labels = (f"A: {labels[0]}", f"B: {labels[1]}")
    return write_page(render_compare(a, b, labels, traces, progress), path, force)
