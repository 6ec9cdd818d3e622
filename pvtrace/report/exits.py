"""Hypervisor-side figures: pause exits against preempted siblings, exit reasons, kick latency."""

from __future__ import annotations

import altair as alt
import polars as pl

from pvtrace.analyze.result import Analysis
from pvtrace.fmt import plural
from pvtrace.report.aggregate import bin_overlaps, bin_width, log_histogram, time_bin
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.histogram import chart_log_histogram
from pvtrace.report.labels import fmt_count, fmt_ns, unavailable_reason

N_TIME_BINS = 150
MAX_SIBLING_CLASSES = 4  # 0, 1, 2, 3+ siblings preempted
MAX_REASONS = 30
WIDTH = 600


def pause_exit_bins(pause_exits: pl.DataFrame, t0: int, width: int) -> pl.DataFrame:
    """Pause exits per time bin and per number of preempted siblings (last class open-ended)."""
    top = MAX_SIBLING_CLASSES - 1
    siblings = (
        pl.when(pl.col("n_siblings_preempted").is_null())
        .then(pl.lit("unknown"))
        .when(pl.col("n_siblings_preempted") >= top)
        .then(pl.lit(f"{top}+"))
        .otherwise(pl.col("n_siblings_preempted").cast(pl.String))
        .alias("siblings_preempted")
    )
    return (
        pause_exits.group_by(time_bin("ts", t0, width), siblings)
        .agg(pl.len().cast(pl.Int64).alias("n_exits"))
        .sort("bin", "siblings_preempted")
        .with_columns(pl.col("n_exits").cum_sum().over("bin").alias("y_top"))
        .with_columns((pl.col("y_top") - pl.col("n_exits")).alias("y_bottom"))
        .with_columns(
            (pl.col("bin") * width / 1e6).round(6).alias("t_ms"),
            ((pl.col("bin") + 1) * width / 1e6).round(6).alias("t_end_ms"),
        )
        .sort("bin")
    )


def preempted_per_bin(states: pl.DataFrame, t0: int, t1: int, width: int) -> pl.DataFrame:
    """Time-averaged number of preempted vCPUs per VM in each bin (0 where none was)."""
    preempted = states.filter(pl.col("state") == "preempted").select("vm", "start", "end")
    per_bin = bin_overlaps(preempted, t0, t1, width).group_by("vm", "bin").agg(pl.col("overlap_ns").sum())
    n_bins = (t1 - t0 + width - 1) // width
    grid = (
        states.lazy()
        .select(pl.col("vm").unique())
        .join(pl.LazyFrame({"bin": pl.int_range(0, n_bins, eager=True)}), how="cross")
    )
    return (
        grid.join(per_bin, on=["vm", "bin"], how="left")
        .with_columns(
            (pl.col("overlap_ns").fill_null(0) / width).round(3).alias("n_preempted"),
            (pl.col("bin") * width / 1e6).round(6).alias("t_ms"),
        )
        .drop("overlap_ns")
        .sort("vm", "bin")
        .collect()
    )


def chart_pause_exits(analysis: Analysis, t0: int, t1: int) -> Figure:
    """Pause exits over time, stacked by how many sibling vCPUs were preempted, above the preempted count."""
    name, title = "pause-exits", "Pause exits and preempted siblings"
    pauses = analysis.table("pause_exits")
    if pauses.height == 0:
        reason = unavailable_reason(analysis.summary, ["n_pause_exits"]) or (
            "no pause exits in this trace (pause-loop exiting off, or no spin long enough to trigger it)"
        )
        return no_data(name, title, reason)
    width = bin_width(t0, t1, N_TIME_BINS)
    bins = pause_exit_bins(pauses, t0, width)
    x = alt.X(
        "t_ms:Q",
        title="time since trace start (ms)",
        scale=alt.Scale(domain=[0, (t1 - t0) / 1e6], nice=False),
    )
    classes = [*[str(i) for i in range(MAX_SIBLING_CLASSES - 1)], f"{MAX_SIBLING_CLASSES - 1}+"]
    if bins["siblings_preempted"].eq("unknown").any():
        classes.append("unknown")
    top = (
        alt.Chart(bins)
        .mark_rect()
        .encode(
            x,
            alt.X2("t_end_ms:Q"),
            alt.Y("y_top:Q", title=f"pause exits per {fmt_ns(width)}"),
            alt.Y2("y_bottom:Q"),
            alt.Color(
                "siblings_preempted:N",
                title="siblings preempted",
                scale=alt.Scale(domain=classes, scheme="orangered"),
                sort=classes,
            ),
            tooltip=["t_ms:Q", "siblings_preempted:N", "n_exits:Q"],
        )
        .properties(width=WIDTH, height=160)
    )
    panels = [top]
    states = analysis.table("vcpu_states")
    note = ""
    if states.height:
        pre = preempted_per_bin(states, t0, t1, width)
        panels.append(
            alt.Chart(pre)
            .mark_line(interpolate="step-after")
            .encode(
                x,
                alt.Y("n_preempted:Q", title="preempted vCPUs (mean)"),
                alt.Stroke("vm:N", title="VM"),
                tooltip=["vm:N", "t_ms:Q", alt.Tooltip("n_preempted:Q", format=".2f")],
            )
            .properties(width=WIDTH, height=120)
        )
    else:
        note = "No vCPU states in the analysis: the preempted-vCPU panel is missing."
    n_sib = pauses.filter(pl.col("n_siblings_preempted") > 0).height
    caption = (
        f"{fmt_count(pauses.height)} pause exits; {fmt_count(n_sib)} ({100 * n_sib / pauses.height:.1f}%) while at "
        "least one sibling vCPU of the same VM was preempted, the sign of spinning on a preempted holder."
    )
    chart = alt.vconcat(*panels).resolve_scale(color="independent")
    return Figure(name, title, chart, caption, note)


def chart_kick_latency(analysis: Analysis) -> Figure:
    """From a pv kick to the kicked vCPU running again, log-binned."""
    name, title = "kick-latency", "pv kick latency"
    kicks = analysis.table("kicks")
    if kicks.height == 0:
        reason = unavailable_reason(analysis.summary, ["n_kicks"]) or (
            "no pv kicks in this trace (no pv spinlock slow path, or nobody halted on a lock)"
        )
        return no_data(name, title, reason)
    hist, left_out = log_histogram(kicks, "latency_ns")
    lat = kicks["latency_ns"].drop_nulls()
    n_never = kicks["latency_ns"].null_count()
    if lat.len() == 0:
        return no_data(
            name, title, f"{fmt_count(kicks.height)} kicks, but no kicked vCPU ran again within the trace"
        )
    caption = (
        f"{fmt_count(kicks.height)} kicks; latency from the kick to the target vCPU running again: median "
        f"{fmt_ns(lat.median())}, p99 {fmt_ns(lat.quantile(0.99))}, max {fmt_ns(lat.max())}."
    )
    notes = []
    if n_never:
        notes.append(f"{plural(n_never, 'kicked vCPU')} did not run again before the trace ended")
    if left_out - n_never:
        n = left_out - n_never
        notes.append(
            f"{plural(n, 'zero latency', 'zero latencies')} {'is' if n == 1 else 'are'} not on the log axis"
        )
    chart = chart_log_histogram(hist, "kick latency (µs, log scale)")
    return Figure(name, title, chart, caption, "; ".join(notes))


def exit_reason_rows(table: pl.DataFrame) -> pl.DataFrame:
    """The exit-reason table formatted for a page (durations with units), biggest count first."""
    fmt = {
        c: pl.col(c).map_elements(fmt_ns, return_dtype=pl.String).fill_null("n/a")
        for c in ("total_ns", "min_ns", "avg_ns", "max_ns")
    }
    return (
        table.sort("count", descending=True)
        .head(MAX_REASONS)
        .select(
            pl.col("reason").alias("reason"),
            pl.col("count").map_elements(fmt_count, return_dtype=pl.String).alias("exits"),
            pl.col("share_pct").round(2).cast(pl.String).alias("share %"),
            fmt["total_ns"].alias("time in exit"),
            fmt["min_ns"].alias("min"),
            fmt["avg_ns"].alias("avg"),
            fmt["max_ns"].alias("max"),
        )
    )


def exit_reasons_figure(analysis: Analysis) -> Figure:
    """The `perf kvm stat`-like exit-reason table."""
    name, title = "exit-reasons", "VM exits by reason"
    table = analysis.table("exit_reasons")
    if table.height == 0:
        reason = unavailable_reason(analysis.summary, ["n_pause_exits"]) or "no VM exits in this trace"
        return no_data(name, title, reason)
    caption = (
        f"{plural(int(table['count'].sum()), 'exit')} of {plural(table.height, 'reason')}; time in exit runs "
        "from the exit to "
        "the same vCPU's next entry."
    )
    note = f"Only the {MAX_REASONS} most frequent reasons are listed." if table.height > MAX_REASONS else ""
    return Figure(name, title, None, caption, note, table=exit_reason_rows(table))
