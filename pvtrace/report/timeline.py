"""The vCPU timeline: one lane per vCPU, its states, lock holds and waits, LHP/LWP incidents."""

from __future__ import annotations

import altair as alt
import polars as pl

from pvtrace.analyze.result import Analysis
from pvtrace.report.aggregate import MAX_LAYER_ROWS, clip_intervals, coarsen_intervals
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.labels import fmt_ns, with_lock_label
from pvtrace.report.window import Window, incidents

MAX_LANES = 40
LANE_PX = 30
WIDTH = 900

# Every category drawn on the timeline, with its colour (one shared legend).
CATEGORIES: dict[str, str] = {
    "running": "#59a14f",
    "preempted": "#e15759",
    "halted": "#a0cbe8",
    "unknown": "#d4d4d4",
    "lock hold": "#4e2a84",
    "lock wait": "#f28e2b",
    "LHP incident": "#b6001b",
    "LWP incident": "#1f5fbf",
}
COLOR = alt.Color(
    "what:N",
    title=None,
    scale=alt.Scale(domain=list(CATEGORIES), range=list(CATEGORIES.values())),
    legend=alt.Legend(orient="top", columns=8),
)

# Holds and waits also get an outline in their colour, so that ones shorter than a pixel still show.
STROKE = alt.Stroke(
    "what:N", title=None, scale=alt.Scale(domain=list(CATEGORIES), range=list(CATEGORIES.values()))
)


def _lanes(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        (pl.col("vm").cast(pl.String) + "/" + pl.col("vcpu").cast(pl.String)).alias("lane")
    )


def _ms(df: pl.DataFrame, t0: int) -> pl.DataFrame:
    return df.with_columns(
        ((pl.col("start") - t0) / 1e6).round(6).alias("start_ms"),
        ((pl.col("end") - t0) / 1e6).round(6).alias("end_ms"),
        ((pl.col("end") - pl.col("start")) / 1e3).round(3).alias("dur_us"),
    )


def _pick_lanes(
    states: pl.DataFrame, holds: pl.DataFrame, waits: pl.DataFrame, inc: pl.DataFrame
) -> list[str]:
    """Lanes to draw, in (vm, vcpu) order: at most MAX_LANES, incident lanes and the busiest waiters first."""
    cols = ["lane", "vm", "vcpu"]
    everything = pl.concat(
        [
            inc.select(*cols, pl.lit(3).alias("prio"), pl.col("dur").alias("weight")),
            waits.select(*cols, pl.lit(2).alias("prio"), pl.col("dur").alias("weight")),
            holds.select(*cols, pl.lit(1).alias("prio"), pl.col("dur").alias("weight")),
            states.select(*cols, pl.lit(0).alias("prio"), pl.col("dur").alias("weight")),
        ],
        how="vertical_relaxed",
    )
    ranked = (
        everything.group_by(cols)
        .agg(pl.col("prio").max(), pl.col("weight").sum())
        .sort(["prio", "weight", "vm", "vcpu"], descending=[True, True, False, False])
        .head(MAX_LANES)
    )
    return (
        ranked.with_columns(pl.col("vm").str.len_chars().alias("_n"))
        .sort("_n", "vm", "vcpu")["lane"]
        .to_list()
    )


def chart_timeline(analysis: Analysis, window: Window, t0: int) -> Figure:
    """vCPU lanes over `window` (times shown relative to t0, the trace start)."""
    name, title = "timeline", "vCPU timeline"
    lo, hi = window.start, window.end
    states = _lanes(clip_intervals(analysis.table("vcpu_states"), lo, hi))
    holds = _lanes(clip_intervals(analysis.table("holds").filter(pl.col("vcpu").is_not_null()), lo, hi))
    waits = _lanes(clip_intervals(analysis.table("waits"), lo, hi))
    inc = _lanes(clip_intervals(incidents(analysis).filter(pl.col("vcpu").is_not_null()), lo, hi))
    if states.height + holds.height + waits.height == 0:
        reason = "no vCPU states, lock holds or waits in this window"
        if analysis.table("vcpu_states").height == 0 and analysis.table("waits").height == 0:
            reason = "the analysis has no vCPU states and no lock waits to draw"
        return no_data(name, title, reason, caption=f"Window: {window.why}.")

    lanes = _pick_lanes(states, holds, waits, inc)
    notes = []
    n_all = pl.concat([states["lane"], holds["lane"], waits["lane"]]).n_unique()
    if n_all > len(lanes):
        notes.append(
            f"showing {len(lanes)} of {n_all} vCPUs (those with incidents and the most waiting first)"
        )
    keep = pl.col("lane").is_in(lanes)
    states, holds, waits, inc = (f.filter(keep) for f in (states, holds, waits, inc))

    y = alt.Y("lane:N", title=None, sort=lanes, axis=alt.Axis(labelFontSize=10))
    x = alt.X(
        "start_ms:Q",
        title="time since trace start (ms)",
        scale=alt.Scale(domain=[(lo - t0) / 1e6, (hi - t0) / 1e6], nice=False, zero=False),
    )
    layers = []

    if states.height:
        shown, width = coarsen_intervals(states, "lane", "state", lo, hi, MAX_LAYER_ROWS, mode="dominant")
        if width:
            notes.append(
                f"vCPU states coarsened to {fmt_ns(width)} bins (each bar: the state that filled most of it)"
            )
        data = _ms(shown.with_columns(pl.col("state").cast(pl.String).alias("what")), t0)
        layers.append(
            alt.Chart(data)
            .mark_bar(height={"band": 0.85}, cornerRadius=0)
            .encode(x, alt.X2("end_ms:Q"), y, COLOR, tooltip=_tips("lane", "what"))
        )
    else:
        notes.append("no vCPU states in the analysis (a guest-only trace does not see host scheduling)")

    for frame, what, offset in ((holds, "lock hold", -9), (waits, "lock wait", 9)):
        if frame.height == 0:
            continue
        if frame.height > MAX_LAYER_ROWS:
            shown, width = coarsen_intervals(
                frame.with_columns(pl.lit(what).alias("what")),
                "lane",
                "what",
                lo,
                hi,
                MAX_LAYER_ROWS,
                mode="any",
            )
            if width:
                notes.append(f"{what}s coarsened to {fmt_ns(width)} bins")
            data, tips = _ms(shown, t0), _tips("lane", "what")
        else:
            data = _ms(with_lock_label(frame.with_columns(pl.lit(what).alias("what"))), t0)
            data = data.select("lane", "what", "lock_label", "start_ms", "end_ms", "dur_us")
            tips = _tips("lane", "what", "lock_label")
        layers.append(
            alt.Chart(data)
            .mark_bar(height=6, yOffset=offset, strokeWidth=1)
            .encode(x, alt.X2("end_ms:Q"), y, COLOR, STROKE, tooltip=tips)
        )

    if inc.height:
        top = inc.sort("dur", descending=True).head(MAX_LAYER_ROWS)
        if inc.height > top.height:
            notes.append(f"the {top.height} longest of {inc.height} incidents in the window are outlined")
        data = _ms(
            with_lock_label(top.with_columns((pl.col("kind") + " incident").alias("what"))), t0
        ).select("lane", "what", "lock_label", "state", "start_ms", "end_ms", "dur_us", "waste_ns")
        layers.append(
            alt.Chart(data)
            .mark_bar(filled=False, strokeWidth=2, height={"band": 1.0})
            .encode(
                x,
                alt.X2("end_ms:Q"),
                y,
                COLOR,
                tooltip=_tips("lane", "what", "lock_label", "state", "waste_ns"),
            )
        )

    lost = analysis.table("lost_windows").filter((pl.col("end") >= lo) & (pl.col("start") < hi))
    if lost.height:
        notes.append(
            f"{lost.height} lost-event windows fall in this window: what happened there is unknown, not idle"
        )
    chart = alt.layer(*layers).properties(width=WIDTH, height=alt.Step(LANE_PX))
    caption = (
        f"Window: {window.why} ({fmt_ns(hi - lo)} shown). Each lane is one vCPU: its state (running, "
        "preempted, halted), the locks it holds (purple, above) and waits for (orange, below); "
        "LHP incidents outline the preempted holder, LWP incidents the next owner that was not running. "
        "Choose another window with --window START:END."
    )
    return Figure(name, title, chart, caption=caption, note="; ".join(notes))


def _tips(*fields: str) -> list[alt.Tooltip]:
    extra = {
        "lock_label": alt.Tooltip("lock_label:N", title="lock"),
        "waste_ns": alt.Tooltip("waste_ns:Q", title="spin wasted (ns)", format=","),
    }
    return [
        *(extra.get(f, alt.Tooltip(f"{f}:N", title=f)) for f in fields),
        alt.Tooltip("start_ms:Q", title="start (ms)", format=".4f"),
        alt.Tooltip("dur_us:Q", title="duration (µs)", format=",.2f"),
    ]
