"""`pvtrace sweep report`: gain and waste against any two swept parameters, as heatmaps and as
lines with error bars (mean and standard deviation over seeds and the parameters not drawn).

Gain is the cure's: (baseline completion - completion) / baseline completion, in percent, each
run paired with the baseline run of the same other parameters and seed (as in the experiment).
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from pvtrace.errors import UsageError
from pvtrace.fleet.sweep import params_of, read_results
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.page import Section, render_page, write_page

W, H = 420, 260


def parse_baseline(text: str | None, params: list[str], results: pl.DataFrame) -> tuple[str, object] | None:
    """PARAM=VALUE, typed like the column; default: the first value of a swept lock.algorithm."""
    if text is None:
        if "lock.algorithm" in params:
            return "lock.algorithm", results["lock.algorithm"].unique(maintain_order=True)[0]
        return None
    name, sep, raw = text.partition("=")
    if not sep or name not in params:
        raise UsageError(f"--baseline wants PARAM=VALUE with PARAM one of {', '.join(params)}; got {text!r}")
    values = results[name].unique(maintain_order=True).to_list()
    for v in values:
        if str(v) == raw:
            return name, v
    raise UsageError(f"--baseline {text}: {name} takes {', '.join(map(str, values))} in this sweep")


def gains(results: pl.DataFrame, params: list[str], baseline: tuple[str, object]) -> pl.DataFrame:
    """Per non-baseline run: gain_pct against the baseline run with the same other parameters and seed."""
    name, value = baseline
    others = [p for p in params if p != name]
    keys = [*others, "seed"]
    base = results.filter(pl.col(name) == value).select(*keys, pl.col("completion_mean_ns").alias("_base"))
    return (
        results.filter(pl.col(name) != value)
        .join(base, on=keys, how="inner", nulls_equal=True)
        .with_columns(
            ((pl.col("_base") - pl.col("completion_mean_ns")) / pl.col("_base") * 100).alias("gain_pct")
        )
        .drop("_base")
    )


def _summary(df: pl.DataFrame, metric: str, by: list[str]) -> pl.DataFrame:
    return (
        df.group_by(by)
        .agg(
            pl.col(metric).mean().alias("mean"),
            pl.col(metric).std().alias("std"),
            pl.len().alias("n"),
        )
        .with_columns(
            (pl.col("mean") - pl.col("std").fill_null(0)).alias("lo"),
            (pl.col("mean") + pl.col("std").fill_null(0)).alias("hi"),
        )
        .sort(by)
    )


def _field(df: pl.DataFrame, name: str) -> str:
    """Altair field for a parameter: quantitative when numeric, else ordinal; escaped dots."""
    esc = name.replace(".", "\\.")
    return f"{esc}:{'Q' if df.schema[name].is_numeric() else 'O'}"


def heatmap(df: pl.DataFrame, metric: str, title: str, x: str, y: str, fmt: str) -> Figure:
    s = _summary(df.drop_nulls(metric), metric, [x, y])
    name = f"heat-{metric}"
    if s.height == 0:
        return no_data(name, title, f"no run gives {metric}")
    xe, ye = x.replace(".", "\\."), y.replace(".", "\\.")
    base = alt.Chart(s).encode(alt.X(f"{xe}:O", title=x), alt.Y(f"{ye}:O", title=y))
    chart = base.mark_rect().encode(
        alt.Color("mean:Q", title=title, scale=alt.Scale(scheme="viridis")),
        tooltip=[
            alt.Tooltip(f"{xe}:O", title=x),
            alt.Tooltip(f"{ye}:O", title=y),
            alt.Tooltip("mean:Q", format=fmt),
            alt.Tooltip("std:Q", format=fmt),
            "n:Q",
        ],
    ) + base.mark_text(color="white").encode(alt.Text("mean:Q", format=fmt))
    return Figure(
        name,
        f"{title}: {y} against {x}",
        chart.properties(width=W, height=H),
        caption="Mean over seeds and over the parameters not drawn.",
    )


def lines(df: pl.DataFrame, metric: str, title: str, x: str, y: str | None, fmt: str) -> Figure:
    by = [x] + ([y] if y else [])
    s = _summary(df.drop_nulls(metric), metric, by)
    name = f"lines-{metric}"
    if s.height == 0:
        return no_data(name, title, f"no run gives {metric}")
    xf = _field(s, x)
    enc = [alt.X(xf, title=x)]
    if y:
        enc.append(alt.Color(f"{y.replace('.', chr(92) + '.')}:N", title=y))
    base = alt.Chart(s).encode(*enc)
    chart = base.mark_line(point=True).encode(
        alt.Y("mean:Q", title=title),
        tooltip=[
            *(alt.Tooltip(_field(s, k), title=k) for k in by),
            alt.Tooltip("mean:Q", format=fmt),
            alt.Tooltip("std:Q", format=fmt),
            "n:Q",
        ],
    ) + base.mark_errorbar().encode(alt.Y("lo:Q", title=title), alt.Y2("hi:Q"))
    return Figure(
        name,
        f"{title} against {x}" + (f", one line per {y}" if y else ""),
        chart.properties(width=W, height=H),
        caption="Mean, error bars one standard deviation over seeds and the parameters not drawn.",
    )


def write_sweep_report(
    root: Path, path: Path, *, x: str | None, y: str | None, baseline: str | None, force: bool
) -> str:
    results = read_results(root)
    params = params_of(root)
    if results.height == 0:
        raise UsageError(f"{root}: the sweep has no finished runs")
    base = parse_baseline(baseline, params, results)
    free = [p for p in params if base is None or p != base[0]]
    for given, flag in ((x, "--x"), (y, "--y")):
        if given is not None and given not in free:
            raise UsageError(f"{flag} {given}: choose one of {', '.join(free) or '(no swept parameter)'}")
    x = x or (free[0] if free else None)
    y = y or next((p for p in free if p != x), None)
    waste = results.with_columns((pl.col("truth_waste_ns") / 1e6).alias("waste_ms"))
    sections = []
    if x is None:
        raise UsageError("the sweep has no parameter besides the baseline to draw against")
    if base is not None:
        g = gains(results, params, base)
        cured = g[base[0]].unique(maintain_order=True).to_list()
        figs = []
        for v in cured:
            gv = g.filter(pl.col(base[0]) == v)
            title = f"gain of {v} over {base[1]} (%)"
            figs.append(lines(gv, "gain_pct", title, x, y, ".1f"))
            if y:
                figs.append(heatmap(gv, "gain_pct", title, x, y, ".1f"))
        sections.append(
            Section(
                "Gain", figs, intro=f"Completion time gain against {base[0]} = {base[1]}, paired by seed."
            )
        )
    else:
        sections.append(
            Section("Gain", [no_data("gain", "Gain", "no baseline: give --baseline PARAM=VALUE")])
        )
    wf = [lines(waste, "waste_ms", "spin waste, LHP + LWP (ms, truth)", x, y, ".3g")]
    if y:
        wf.append(heatmap(waste, "waste_ms", "spin waste (ms, truth)", x, y, ".3g"))
    sections.append(Section("Waste", wf, intro="The simulator's ground truth of spin waste per run."))
    page = render_page(
        f"pvtrace sweep report: {root.name}", f"{results.height} runs; axes: {', '.join(params)}", sections
    )
    write_page(page, path, force)
    return f"sweep {root}: {results.height} runs, x = {x}, y = {y or '-'}, baseline = {base[0] + '=' + str(base[1]) if base else '-'}"
