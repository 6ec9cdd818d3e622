"""`pvtrace sweep report`: gain and waste against any two swept parameters, as heatmaps and as
lines with error bars (mean and standard deviation over seeds and the parameters not drawn).

Gain is the cure's: (baseline completion - completion) / baseline completion, in percent, each
run paired with the baseline run of the same other parameters and seed (as in the experiment);
above 0 the run finished sooner than its baseline. A parameter's values are drawn as categories,
one tick per value swept (a numeric axis would show 1.5 VMs between 1 and 2), unless there are
more than MAX_CATEGORIES of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import altair as alt
import polars as pl

from pvtrace.errors import UsageError
from pvtrace.fleet.sweep import params_of, read_results
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.page import Section, render_page, write_page

W, H = 420, 260
MAX_CATEGORIES = 12


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


# Why a chart has nothing to draw, in the words of the page (not the metric's column name).
_UNFINISHED = (
    "the guests of no run, or of no baseline run, finished their work before it ended (give the runs "
    "more time, run.duration_ns, or less work, vm.ops)"
)
_NO_DATA = {
    "gain_pct": f"no gain: a gain compares completion times, and {_UNFINISHED}",
    "waste_ms": "no run gives a spin waste",
}


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


def _summary(df: pl.DataFrame, metric: str, by: list[str], floor: float | None = None) -> pl.DataFrame:
    """Mean, standard deviation and count per group; the error bar's ends (clipped at floor: a
    waste is never below 0, whatever mean - std says)."""
    lo = pl.col("mean") - pl.col("std").fill_null(0)
    return (
        df.group_by(by)
        .agg(
            pl.col(metric).mean().alias("mean"),
            pl.col(metric).std().alias("std"),
            pl.len().alias("n"),
        )
        .with_columns(
            (lo if floor is None else pl.max_horizontal(lo, pl.lit(floor))).alias("lo"),
            (pl.col("mean") + pl.col("std").fill_null(0)).alias("hi"),
        )
        .sort(by)
    )


def _field(df: pl.DataFrame, name: str) -> str:
    """Altair field for a parameter: ordinal (one tick per value swept), quantitative only for a
    numeric one with more than MAX_CATEGORIES values; escaped dots."""
    esc = name.replace(".", "\\.")
    many = df.schema[name].is_numeric() and df[name].n_unique() > MAX_CATEGORIES
    return f"{esc}:{'Q' if many else 'O'}"


def _axis_x(df: pl.DataFrame, name: str) -> alt.X:
    integer = df.schema[name].is_integer()
    return alt.X(
        _field(df, name), title=name, axis=alt.Axis(labelAngle=0, format="d" if integer else alt.Undefined)
    )


def heatmap(
    df: pl.DataFrame, metric: str, title: str, legend: str, x: str, y: str, fmt: str, diverging: bool = False
) -> Figure:
    """Mean per (x, y) cell. diverging: a red-blue scale centred on 0 (gains: blue is sooner), dark
    at both ends; else viridis, dark at the low end. Numbers are white on dark cells."""
    s = _summary(df.drop_nulls(metric), metric, [x, y])
    name = f"heat-{metric}"
    if s.height == 0:
        return no_data(name, title, _NO_DATA.get(metric, f"no run gives {metric}"))
    lo, hi = s["mean"].min(), s["mean"].max()
    if diverging:
        scale = alt.Scale(scheme="redblue", domainMid=0)
        dark = alt.expr.abs(alt.datum.mean) > 0.6 * max(abs(lo), abs(hi))
    else:
        scale = alt.Scale(scheme="viridis")
        dark = alt.datum.mean < lo + 0.5 * (hi - lo)
    xe, ye = x.replace(".", "\\."), y.replace(".", "\\.")
    base = alt.Chart(s).encode(
        alt.X(f"{xe}:O", title=x, axis=alt.Axis(labelAngle=0)), alt.Y(f"{ye}:O", title=y)
    )
    chart = base.mark_rect().encode(
        alt.Color("mean:Q", title=legend, scale=scale),
        tooltip=[
            alt.Tooltip(f"{xe}:O", title=x),
            alt.Tooltip(f"{ye}:O", title=y),
            alt.Tooltip("mean:Q", format=fmt),
            alt.Tooltip("std:Q", format=fmt),
            "n:Q",
        ],
    ) + base.mark_text().encode(
        alt.Text("mean:Q", format=fmt), color=alt.condition(dark, alt.value("white"), alt.value("black"))
    )
    return Figure(
        name,
        f"{title}, by {x} (across) and {y} (down)",
        chart.properties(width=W, height=H),
        caption="Each cell: the mean over seeds and over the parameters not drawn.",
    )


def lines(
    df: pl.DataFrame, metric: str, title: str, x: str, y: str | None, fmt: str, floor: float | None = None
) -> Figure:
    by = [x] + ([y] if y else [])
    s = _summary(df.drop_nulls(metric), metric, by, floor)
    name = f"lines-{metric}"
    if s.height == 0:
        return no_data(name, title, _NO_DATA.get(metric, f"no run gives {metric}"))
    enc = [_axis_x(s, x)]
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
        f"{title}, by {x}" + (f", one line per {y}" if y else ""),
        chart.properties(width=W, height=H),
        caption="Mean over seeds and over the parameters not drawn; error bars: one standard deviation"
        + (" (cut at 0)." if floor is not None else "."),
    )


def write_sweep_report(
    root: Path,
    path: Path,
    *,
    x: str | None,
    y: str | None,
    baseline: str | None,
    force: bool,
    progress: Callable[[], None] | None = None,
) -> str:
    results = read_results(root)
    params = params_of(root)
    if results.height == 0:
        raise UsageError(f"{root}: the sweep has no finished runs")
    base = parse_baseline(baseline, params, results)
    free = [p for p in params if base is None or p != base[0]]
    # with the baseline's parameter the only one swept, it is the x axis (each cure's gain)
    allowed = {"--x": free or ([base[0]] if base is not None else []), "--y": free}
    for given, flag in ((x, "--x"), (y, "--y")):
        if given is not None and given not in allowed[flag]:
            why = (
                f" ({given} is the baseline the gain is measured against; --baseline PARAM=VALUE picks another)"
                if base is not None and given == base[0]
                else ""
            )
            choose = ", ".join(allowed[flag]) or "(no other swept parameter)"
            raise UsageError(f"{flag} {given}: choose one of {choose}{why}")
    x = x or (free[0] if free else None)
    y = y or next((p for p in free if p != x), None)
    waste = results.with_columns((pl.col("truth_waste_ns") / 1e6).alias("waste_ms"))
    sections = []
    if x is None and base is None:
        raise UsageError("the sweep has no swept parameter to draw against")
    one_axis = not free  # the baseline's parameter is the only one swept (cure vs no cure):
    x = x or base[0]  # each cure's gain, and the waste, against it
    if base is not None:
        g = gains(results, params, base)
        cured = g[base[0]].unique(maintain_order=True).to_list()
        figs = []
        if one_axis:
            figs.append(lines(g, "gain_pct", f"time saved over {base[1]} (%)", x, None, ".1f"))
        for v in [] if one_axis else cured:
            gv = g.filter(pl.col(base[0]) == v)
            title = f"time saved by {v} over {base[1]} (%)"
            figs.append(lines(gv, "gain_pct", title, x, y, ".1f"))
            if y:
                figs.append(heatmap(gv, "gain_pct", title, "time saved (%)", x, y, ".1f", diverging=True))
        sections.append(
            Section(
                "Gain",
                figs,
                intro=f"Completion time saved against {base[0]} = {base[1]}: (baseline - run) / baseline, "
                "each run paired with the baseline run of the same other parameters and seed. Above 0 "
                "the run finished sooner; below 0, later.",
            )
        )
    else:
        sections.append(
            Section("Gain", [no_data("gain", "Gain", "no baseline: give --baseline PARAM=VALUE")])
        )
    wf = [lines(waste, "waste_ms", "spin waste, LHP + LWP (ms, truth)", x, y, ".3g", floor=0.0)]
    if y:
        wf.append(heatmap(waste, "waste_ms", "spin waste, LHP + LWP (ms, truth)", "waste (ms)", x, y, ".3g"))
    sections.append(Section("Waste", wf, intro="The simulator's ground truth of spin waste per run."))
    page = render_page(
        f"pvtrace sweep report: {root.name}",
        f"{results.height} runs; axes: {', '.join(params)}",
        sections,
        progress,
    )
    write_page(page, path, force)
    line = f"sweep {root}: {results.height} runs, x = {x}, y = {y or '-'}, baseline = {base[0] + '=' + str(base[1]) if base else '-'}"
    if base is not None and results["completion_mean_ns"].null_count() == results.height:
        line += f"\nno gain on the page: {_UNFINISHED}"
    return line
