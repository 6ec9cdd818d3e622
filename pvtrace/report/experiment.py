"""The founding experiment's page: completion time against guests per lock algorithm, with error bars.

Input: one row per simulated run (EXPERIMENT_COLUMNS); runs sharing scenario,
algorithm and n_guests are repeats (different seeds) and are summarized as
mean and standard deviation, as in the 2010 measurements (docs: science.md).
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from pvtrace.errors import UsageError
from pvtrace.fmt import plural
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.labels import METRIC_LABELS, fmt_ns
from pvtrace.report.page import Section, render_page, write_page

# Required columns of the results frame (one row per sample: a guest of a run, or a run).
EXPERIMENT_COLUMNS: dict[str, str] = {
    "algorithm": "guest lock algorithm of the run (ticket, pv-ticket, ...)",
    "n_guests": "number of guests (VMs) sharing the host",
    "seed": "the run's seed (repeats differ only by seed)",
    "completion_ns": "completion time of one sample (a guest, or a whole run), ns",
}
OPTIONAL_GROUP = "scenario"  # optional column: one chart and table block per scenario
MAX_EXTRA_METRICS = 6
WIDTH = 520


def check_results(results: pl.DataFrame) -> None:
    """Raise UsageError naming what is missing or wrong in an experiment results frame."""
    missing = [c for c in EXPERIMENT_COLUMNS if c not in results.columns]
    if missing:
        raise UsageError(
            "experiment results lack column(s) "
            + ", ".join(missing)
            + "; expected one row per run with "
            + ", ".join(f"{c} ({d})" for c, d in EXPERIMENT_COLUMNS.items())
        )
    if results.height == 0:
        raise UsageError("experiment results have no runs")
    if results["completion_ns"].null_count():
        raise UsageError("experiment results have runs without completion_ns")


def _groups(results: pl.DataFrame) -> list[str]:
    return [OPTIONAL_GROUP] if OPTIONAL_GROUP in results.columns else []


def _extra_metrics(results: pl.DataFrame) -> list[str]:
    """Numeric per-run metrics beyond the required columns (e.g. waste_lhp_ns), at most a few."""
    skip = set(EXPERIMENT_COLUMNS) | {OPTIONAL_GROUP}
    numeric = [c for c, t in results.schema.items() if c not in skip and t.is_numeric()]
    return numeric[:MAX_EXTRA_METRICS]


def summarize_runs(results: pl.DataFrame, metric: str = "completion_ns") -> pl.DataFrame:
    """Mean, standard deviation and repeat count of `metric` per (scenario,) algorithm and n_guests;
    n_runs counts seeds (a run may have a row per guest), the repeats the terminal reports."""
    keys = [*_groups(results), "algorithm", "n_guests"]
    repeats = pl.col("seed").n_unique() if "seed" in results.columns else pl.len()
    return (
        results.group_by(keys)
        .agg(
            pl.col(metric).cast(pl.Float64).mean().alias("mean"),
            pl.col(metric).cast(pl.Float64).std().alias("std"),
            repeats.cast(pl.UInt32).alias("n_runs"),
        )
        .sort(keys)
    )


def baseline_algorithm(results: pl.DataFrame) -> str:
    """The algorithm others are compared with: plain ticket when present, else the first by name."""
    algorithms = sorted(results["algorithm"].unique().to_list())
    return "ticket" if "ticket" in algorithms else algorithms[0]


def experiment_table(results: pl.DataFrame) -> pl.DataFrame:
    """Per (scenario,) level: each algorithm's completion as 'mean (std)' and its gain over the baseline."""
    groups = _groups(results)
    stats = summarize_runs(results)
    base = baseline_algorithm(results)
    base_mean = stats.filter(pl.col("algorithm") == base).select(
        *groups, "n_guests", pl.col("mean").alias("_base")
    )
    stats = stats.join(base_mean, on=[*groups, "n_guests"], how="left").with_columns(
        (100.0 * (pl.col("_base") - pl.col("mean")) / pl.col("_base")).alias("gain_pct")
    )
    scale, unit = (1e9, "s") if stats["mean"].max() >= 1e9 else (1e6, "ms")

    def cell(row: dict) -> str:
        std = "n/a" if row["std"] is None else f"{row['std'] / scale:.3f}"
        return f"{row['mean'] / scale:.3f} ({std}) {unit}"

    cells = stats.with_columns(
        pl.struct("mean", "std").map_elements(cell, return_dtype=pl.String).alias("cell"),
        pl.when(pl.col("algorithm") == base)
        .then(pl.lit(""))
        .otherwise(pl.format("{}%", pl.col("gain_pct").round(1).cast(pl.String)))
        .alias("gain"),
    )
    algorithms = [base, *sorted(a for a in results["algorithm"].unique().to_list() if a != base)]
    wide = cells.pivot(on="algorithm", index=[*groups, "n_guests"], values="cell", sort_columns=False)
    gains = cells.filter(pl.col("algorithm") != base).pivot(
        on="algorithm", index=[*groups, "n_guests"], values="gain", sort_columns=False
    )
    gains = gains.rename({a: f"gain {a}" for a in gains.columns if a not in (*groups, "n_guests")})
    table = wide.join(gains, on=[*groups, "n_guests"], how="left") if gains.width > len(groups) + 1 else wide
    ordered = [*groups, "n_guests", *[a for a in algorithms if a in table.columns]]
    ordered += [c for c in table.columns if c not in ordered]
    runs = stats.group_by(*groups, "n_guests").agg(pl.col("n_runs").min().alias("seeds"))
    return (
        table.select(ordered)
        .join(runs, on=[*groups, "n_guests"], how="left")
        .sort(*groups, "n_guests")
        .rename({"n_guests": "guests"})
        .with_columns(pl.col("guests").cast(pl.String), pl.col("seeds").cast(pl.String))
    )


def chart_completion(
    results: pl.DataFrame, metric: str = "completion_ns", title: str | None = None
) -> alt.Chart:
    """Mean `metric` against the number of guests, one line per algorithm, error bars of ± one std."""
    stats = summarize_runs(results, metric).with_columns(
        (pl.col("mean") / _scale(metric)).alias("value"),
        ((pl.col("mean") - pl.col("std").fill_null(0)) / _scale(metric)).alias("low"),
        ((pl.col("mean") + pl.col("std").fill_null(0)) / _scale(metric)).alias("high"),
    )
    y_title = title or _axis_title(metric)
    base = alt.Chart(stats).encode(
        alt.X("n_guests:Q", title="guests sharing the host", axis=alt.Axis(tickMinStep=1, format="d")),
        alt.Color("algorithm:N", title="lock algorithm"),
    )
    tips = ["algorithm:N", "n_guests:Q", alt.Tooltip("value:Q", format=",.4g"), "n_runs:Q"]
    line = base.mark_line(point=True).encode(alt.Y("value:Q", title=y_title), tooltip=tips)
    bars = base.mark_errorbar(ticks=True).encode(alt.Y("low:Q", title=y_title), alt.Y2("high:Q"))
    chart = alt.layer(bars, line).properties(width=WIDTH, height=260)
    if OPTIONAL_GROUP in results.columns and results[OPTIONAL_GROUP].n_unique() > 1:
        chart = chart.properties(width=300, height=200).facet(column=alt.Column(f"{OPTIONAL_GROUP}:N"))
    return chart


def _scale(metric: str) -> float:
    return 1e9 if metric == "completion_ns" else (1e6 if metric.endswith("_ns") else 1.0)


def _axis_title(metric: str) -> str:
    if metric == "completion_ns":
        return "completion time (s), mean ± std"
    label = METRIC_LABELS.get(metric, metric)
    return f"{label} ({'ms' if metric.endswith('_ns') else 'count'}), mean ± std"


def experiment_sections(results: pl.DataFrame) -> list[Section]:
    """The experiment page's sections."""
    check_results(results)
    base = baseline_algorithm(results)
    n_runs = results.select("seed").n_unique() if "seed" in results.columns else results.height
    fastest = summarize_runs(results).sort("mean").row(0, named=True)
    table = Figure(
        "experiment-table",
        "Completion time per algorithm",
        table=experiment_table(results),
        caption=(
            "Mean (standard deviation) over every guest's completion time in every seed (with one "
            f"seed, over its guests); gain = how much sooner than {base} the guests finished, as in "
            "the 2010 pv spinlock measurements."
        ),
    )
    plot = Figure(
        "experiment-completion",
        "Completion time against the number of guests",
        chart_completion(results),
        caption=(
            f"{plural(n_runs, 'seed')} per point. Error bars: ± one standard deviation over the guests of "
            f"{'the seed' if n_runs == 1 else 'every seed'}. Fastest: {fastest['algorithm']} "
            f"with {fastest['n_guests']} guest(s), {fmt_ns(fastest['mean'])}."
        ),
    )
    sections = [Section("Founding experiment", [table, plot])]
    extras = [
        Figure(f"experiment-{m.replace('_', '-')}", METRIC_LABELS.get(m, m), chart_completion(results, m))
        if results[m].null_count() < results.height
        else no_data(f"experiment-{m.replace('_', '-')}", METRIC_LABELS.get(m, m), "no run reports it")
        for m in _extra_metrics(results)
    ]
    if extras:
        sections.append(Section("Other measures", extras))
    return sections


def render_experiment(results: pl.DataFrame, title: str = "pvtrace experiment") -> str:
    """The experiment page as HTML text."""
    algorithms = (
        ", ".join(sorted(results["algorithm"].unique().to_list())) if "algorithm" in results.columns else ""
    )
    return render_page(title, f"Lock algorithms compared: {algorithms}.", experiment_sections(results))


def write_experiment_report(results: pl.DataFrame, path: Path | str, force: bool = False) -> Path:
    """Write the self-contained experiment page from one row per run (see EXPERIMENT_COLUMNS)."""
    return write_page(render_experiment(results), path, force)
