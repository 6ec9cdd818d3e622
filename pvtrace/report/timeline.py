"""The vCPU timeline: one lane per vCPU, its states, lock holds and waits, LHP/LWP incidents."""

from __future__ import annotations

import altair as alt
import polars as pl

from pvtrace.analyze.result import Analysis
from pvtrace.fmt import fmt_ts
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
    "in VM exit": "#8c6d31",
    "vCPU on pCPU": "#76b7b2",
    "host task": "#9c755f",
    "idle or host": "#e7e1d7",
}
# The zoom/pan selection: drag to pan, wheel to zoom, double-click to reset; the incident table
# moves it (page.py) through its signal, ZOOM + "_start_ms".
ZOOM = "zoom"
COLOR = alt.Color(
    "what:N",
    title=None,
    scale=alt.Scale(domain=list(CATEGORIES), range=list(CATEGORIES.values())),
    legend=alt.Legend(orient="top", columns=6),
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


def drawn_span(analysis: Analysis, window: Window, t0: int, t1: int) -> tuple[int, int]:
    """The stretch the timeline carries data for, so that zooming out, panning and the incident
    list reach past the first view: the whole trace when every layer fits in MAX_LAYER_ROWS rows,
    else the widest stretch around the window (halving) that fits, at least the window."""
    tables = [
        analysis.table(name)
        for name in ("vcpu_states", "holds", "waits", "incidents", "pcpu_timeline", "vm_exits")
    ]
    tables = [df for df in tables if df.height]

    def fits(lo: int, hi: int) -> bool:
        return all(
            df.filter((pl.col("end").fill_null(hi) > lo) & (pl.col("start") < hi)).height <= MAX_LAYER_ROWS
            for df in tables
        )

    if fits(t0, t1):
        return t0, t1
    mid, half = (window.start + window.end) // 2, (t1 - t0) // 4
    while half > (window.end - window.start) // 2:
        lo, hi = max(t0, mid - half), min(t1, mid + half)
        if fits(lo, hi):
            return lo, hi
        half //= 2
    return window.start, window.end


def _exit_states(exits: pl.DataFrame) -> pl.DataFrame:
    """vm, vcpu, state (in VM exit / running), start, end, dur from the exits alone: a host trace
    with kvm_exit/kvm_entry but no scheduler events still shows when each vCPU ran guest code."""
    timed = exits.filter(pl.col("end").is_not_null())
    inside = timed.select("vm", "vcpu", pl.lit("in VM exit").alias("state"), "start", "end")
    guest = (
        exits.sort("vm", "vcpu", "start")
        .with_columns(pl.col("start").shift(-1).over("vm", "vcpu").alias("next"))
        .filter(pl.col("end").is_not_null() & pl.col("next").is_not_null() & (pl.col("next") > pl.col("end")))
        .select(
            "vm",
            "vcpu",
            pl.lit("running").alias("state"),
            pl.col("end").alias("start"),
            pl.col("next").alias("end"),
        )
    )
    return pl.concat([inside, guest]).with_columns((pl.col("end") - pl.col("start")).alias("dur"))


def _pcpu_lanes(analysis: Analysis, lo: int, hi: int) -> pl.DataFrame:
    """lane (pCPU n), what, who, start, end of what ran on each host CPU."""
    pc = clip_intervals(analysis.table("pcpu_timeline"), lo, hi)
    return pc.select(
        ("pCPU " + pl.col("pcpu").cast(pl.String)).alias("lane"),
        pl.when(pl.col("what") == "vCPU")
        .then(pl.lit("vCPU on pCPU"))
        .otherwise(pl.col("what"))
        .alias("what"),
        pl.coalesce(pl.col("vm") + "/" + pl.col("vcpu").cast(pl.String), pl.col("what")).alias("who"),
        "start",
        "end",
        "pcpu",
    )


def chart_timeline(analysis: Analysis, window: Window, t0: int, t1: int | None = None) -> Figure:
    """vCPU lanes (and a lane per pCPU) from t0 on; the view starts on `window` and zooms and pans."""
    name, title = "timeline", "vCPU timeline"
    t1 = window.end if t1 is None else t1
    lo, hi = drawn_span(analysis, window, t0, t1)
    raw_states = analysis.table("vcpu_states")
    exits_only = raw_states.height > 0 and (raw_states["state"] == "unknown").all()
    if (exits_only or raw_states.height == 0) and analysis.table("vm_exits").height:
        raw_states = _exit_states(analysis.table("vm_exits"))
        exits_only = True
    else:
        exits_only = False
    states = _lanes(clip_intervals(raw_states, lo, hi))
    holds = _lanes(clip_intervals(analysis.table("holds").filter(pl.col("vcpu").is_not_null()), lo, hi))
    waits = _lanes(clip_intervals(analysis.table("waits"), lo, hi))
    inc = _lanes(clip_intervals(incidents(analysis).filter(pl.col("vcpu").is_not_null()), lo, hi))
    pcpus = _pcpu_lanes(analysis, lo, hi)
    if states.height + holds.height + waits.height == 0:
        reason = "no vCPU states, lock holds or waits in this window"
        if raw_states.height == 0 and analysis.table("waits").height == 0:
            reason = "the analysis has no vCPU states and no lock waits to draw"
        return no_data(name, title, reason, caption=f"Window: {window.why}.")

    lanes = _pick_lanes(states, holds, waits, inc)
    notes = []
    if exits_only:
        notes.append(
            "no scheduler events: each vCPU lane shows guest mode (entry to exit) and time in VM exits; "
            "whether a vCPU was preempted or halted is unknown"
        )
    n_all = pl.concat([states["lane"], holds["lane"], waits["lane"]]).n_unique()
    if n_all > len(lanes):
        notes.append(
            f"showing {len(lanes)} of {n_all} vCPUs (those with incidents and the most waiting first)"
        )
    keep = pl.col("lane").is_in(lanes)
    states, holds, waits, inc = (f.filter(keep) for f in (states, holds, waits, inc))
    pcpu_lanes = [f"pCPU {p}" for p in sorted(pcpus["pcpu"].unique().to_list())][:MAX_LANES]
    pcpus = pcpus.filter(pl.col("lane").is_in(pcpu_lanes))
    all_lanes = lanes + pcpu_lanes

    zoom = alt.selection_interval(name=ZOOM, bind="scales", encodings=["x"])
    y = alt.Y("lane:N", title=None, sort=all_lanes, axis=alt.Axis(labelFontSize=10))
    x = alt.X(
        "start_ms:Q",
        title=f"time since trace start (ms); trace start = {fmt_ts(t0)} s",
        scale=alt.Scale(domain=[(window.start - t0) / 1e6, (window.end - t0) / 1e6], nice=False, zero=False),
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

    if pcpus.height:
        shown, width = coarsen_intervals(pcpus, "lane", "who", lo, hi, MAX_LAYER_ROWS, mode="dominant")
        if width:
            notes.append(f"pCPU lanes coarsened to {fmt_ns(width)} bins")
        shown = shown.with_columns(
            pl.when(pl.col("who").str.contains("/"))
            .then(pl.lit("vCPU on pCPU"))
            .otherwise(pl.col("who"))
            .alias("what")
        )
        data = _ms(shown, t0).select("lane", "what", "who", "start_ms", "end_ms", "dur_us")
        layers.append(
            alt.Chart(data)
            .mark_bar(height={"band": 0.85}, cornerRadius=0)
            .encode(x, alt.X2("end_ms:Q"), y, COLOR, tooltip=_tips("lane", "who"))
        )
        # which vCPU had the pCPU, written on its bar (cut to the bar's likely width)
        named = data.filter(pl.col("what") == "vCPU on pCPU").with_columns(
            ((pl.col("start_ms") + pl.col("end_ms")) / 2).alias("mid_ms")
        )
        layers.append(
            alt.Chart(named)
            .mark_text(fontSize=9, color="#123", limit=70)
            .encode(alt.X("mid_ms:Q"), y, text="who:N", tooltip=_tips("lane", "who"))
        )

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
            f"{lost.height} lost-event windows fall in this stretch: what happened there is unknown, not idle"
        )
    layers[0] = layers[0].add_params(zoom)
    chart = alt.layer(*layers).properties(width=WIDTH, height=alt.Step(LANE_PX))
    drawn = "the whole trace" if (lo, hi) == (t0, t1) else f"{fmt_ts(lo)} to {fmt_ts(hi)} s"
    caption = (
        f"Window: {window.why} ({fmt_ns(window.end - window.start)} shown; data covers {drawn}). "
        "Drag to pan, scroll to zoom, double-click to reset; pick a row of the incident table to jump there. "
        "Each vCPU lane shows its state (running, preempted, halted), the locks it holds (purple, above) and "
        "waits for (orange, below); LHP incidents outline the preempted holder, LWP incidents the next owner "
        "that was not running."
        + (
            " The pCPU lanes show what ran on each host CPU: a vCPU, a host task, or nothing."
            if pcpus.height
            else ""
        )
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
