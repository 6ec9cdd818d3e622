"""The log-scale duration histogram that waits, incidents and kick latencies share."""

from __future__ import annotations

import altair as alt
import polars as pl

WIDTH = 600


def chart_log_histogram(
    hist: pl.DataFrame,
    x_title: str,
    series: str | None = None,
    series_title: str = "",
    y: str = "count",
    series_order: list[str] | None = None,
    dash: str | None = None,
) -> alt.Chart:
    """Counts per log-spaced duration bin (from aggregate.log_histogram); x in µs on a log axis.

    One series draws bars spanning each bin; several series (locks, runs) draw one
    line each so they can be read on top of one another (`dash` adds a second
    grouping drawn as line style, e.g. the incident kind while colour is the run).
    """
    data = hist.with_columns(
        (pl.col("lo_ns") / 1e3).alias("lo_us"),
        (pl.col("hi_ns") / 1e3).alias("hi_us"),
        (pl.col("mid_ns") / 1e3).alias("mid_us"),
    ).drop("lo_ns", "hi_ns", "mid_ns")
    y_title = "share of the series (%)" if y == "share_pct" else "count (waits, incidents, kicks)"
    tips = [
        alt.Tooltip("lo_us:Q", title="from (µs)", format=",.3g"),
        alt.Tooltip("hi_us:Q", title="to (µs)", format=",.3g"),
        alt.Tooltip("count:Q", title="count", format=","),
        alt.Tooltip("share_pct:Q", title="share (%)", format=".1f"),
    ]
    x_scale = alt.Scale(type="log")
    if series is None:
        chart = (
            alt.Chart(data)
            .mark_bar(stroke="white", strokeWidth=0.5)
            .encode(
                alt.X("lo_us:Q", title=x_title, scale=x_scale),
                alt.X2("hi_us:Q"),
                alt.Y(f"{y}:Q", title=y_title),
                alt.Y2(datum=0),
                tooltip=tips,
            )
        )
    else:
        enc = [
            alt.X("mid_us:Q", title=x_title, scale=x_scale),
            alt.Y(f"{y}:Q", title=y_title),
            alt.Color(
                f"{series}:N",
                title=series_title or series,
                scale=alt.Scale(domain=series_order) if series_order else alt.Undefined,
            ),
        ]
        series_tips = [alt.Tooltip(f"{series}:N", title=series_title or series)]
        if dash:  # a legend of dash strokes: point symbols would all look the same
            legend = alt.Legend(
                symbolType="stroke", symbolStrokeWidth=2, symbolSize=400, symbolStrokeColor="#444"
            )
            enc.append(alt.StrokeDash(f"{dash}:N", title=dash, legend=legend))
            series_tips.append(alt.Tooltip(f"{dash}:N"))
        chart = (
            alt.Chart(data)
            .mark_line(point=True, interpolate="linear")
            .encode(*enc, tooltip=[*series_tips, *tips])
        )
    return chart.properties(width=WIDTH, height=220)
