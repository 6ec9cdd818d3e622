"""LHP and LWP incident durations, and the convoy length distribution."""

from __future__ import annotations

import altair as alt
import polars as pl

from pvtrace.analyze.partial import partial_note, partial_why
from pvtrace.analyze.result import Analysis
from pvtrace.fmt import plural
from pvtrace.report.aggregate import log_histogram
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.histogram import chart_log_histogram
from pvtrace.report.labels import fmt_count, fmt_ns, unavailable_reason
from pvtrace.report.window import incidents

MAX_LENGTH_BARS = 40  # beyond this many distinct convoy lengths, lengths are binned by powers of two


def incident_series(analysis: Analysis) -> pl.DataFrame:
    """Incidents (kind, dur) labelled by kind and state ('LHP, holder preempted', ...) as `incident`."""
    inc = incidents(analysis)
    who = pl.when(pl.col("kind") == "LHP").then(pl.lit("holder")).otherwise(pl.lit("next owner"))
    return inc.select(
        "kind",
        (pl.col("kind") + ", " + who + " " + pl.col("state").fill_null("?")).alias("incident"),
        "dur",
    )


def chart_incident_durations(analysis: Analysis) -> Figure:
    """How long LHP and LWP incidents last, log-binned, by kind and state."""
    name, title = "incident-durations", "LHP and LWP incident durations"
    inc = incident_series(analysis)
    lhp_why = unavailable_reason(analysis.summary, ["n_lhp", "n_lhp_harmful"])
    lwp_why = unavailable_reason(analysis.summary, ["n_lwp", "n_lwp_preempted", "n_lwp_halted"])
    n_lhp = analysis.table("lhp_incidents").height
    n_lwp = analysis.table("lwp_incidents").height
    notes = []
    if n_lhp == 0:
        notes.append(f"no LHP incidents: {lhp_why}" if lhp_why else "no LHP incidents in this trace")
    if n_lwp == 0:
        notes.append(f"no LWP incidents: {lwp_why}" if lwp_why else "no LWP incidents in this trace")
    if inc.height == 0:
        return no_data(name, title, "; ".join(notes))
    hist, left_out = log_histogram(inc, "dur", by=("incident",))
    durs = inc["dur"]
    caption = (
        f"{fmt_count(n_lhp)} LHP and {fmt_count(n_lwp)} LWP incidents; median {fmt_ns(durs.median())}, "
        f"longest {fmt_ns(durs.max())}. An LHP incident lasts while a lock's holder is not running; "
        "an LWP incident from a release until a next owner that was not running takes the lock."
    )
    if left_out:
        notes.append(
            f"{plural(left_out, 'zero-length incident')} {'is' if left_out == 1 else 'are'} not on the log axis"
        )
    chart = chart_log_histogram(
        hist, "incident duration (µs, log scale)", series="incident", series_title="incident"
    )
    return Figure(name, title, chart, caption, "; ".join(notes))


def convoy_lengths(convoys: pl.DataFrame, by: tuple[str, ...] = ()) -> tuple[pl.DataFrame, bool]:
    """Convoy counts per length (or per power-of-two length bin when lengths spread widely) and cause."""
    binned = convoys["length"].n_unique() > MAX_LENGTH_BARS
    if binned:
        lo = (2 ** pl.col("length").cast(pl.Float64).log(2).floor()).cast(pl.Int64)
        key = (lo.cast(pl.String) + "–" + (lo * 2 - 1).cast(pl.String)).alias("length_bin")
        order = lo.alias("_order")
    else:
        key = pl.col("length").cast(pl.String).alias("length_bin")
        order = pl.col("length").alias("_order")
    counts = (
        convoys.group_by(*by, key, pl.col("cause").fill_null("none"))
        .agg(pl.len().cast(pl.Int64).alias("count"), order.first())
        .sort("_order", *by, "cause")  # ties in a fixed order: the same trace, the same page
    )
    return counts, binned


def chart_convoy_lengths(
    analysis: Analysis,
    run: str | None = None,
    convoys: pl.DataFrame | None = None,
    runs: list[str] | None = None,
) -> Figure:
    """How many hand-offs convoys chain, coloured by the incident that started them."""
    name, title = "convoy-lengths", "Convoy lengths"
    convoys = analysis.table("convoys") if convoys is None else convoys
    if convoys.height == 0:
        reason = unavailable_reason(analysis.summary, ["n_convoys"]) or (
            "no convoys (runs of 2+ consecutive hand-offs)"
            + partial_note(analysis.summary.extra, "n_convoys")
        )
        return no_data(name, title, reason)
    counts, binned = convoy_lengths(convoys, by=(run,) if run else ())
    order = counts.sort("_order")["length_bin"].unique(maintain_order=True).to_list()
    enc = [
        alt.X("length_bin:N", title="convoy length (hand-offs)" + (", binned" if binned else ""), sort=order),
        alt.Y("count:Q", title="convoys", stack="zero"),
        alt.Color(
            "cause:N",
            title="started by",
            scale=alt.Scale(domain=["lhp", "lwp", "none"], range=["#b6001b", "#1f5fbf", "#bab0ac"]),
        ),
    ]
    tips = [
        alt.Tooltip("length_bin:N", title="length"),
        alt.Tooltip("cause:N"),
        alt.Tooltip("count:Q", format=","),
    ]
    if run:
        enc += [
            alt.XOffset(f"{run}:N", title="run", sort=runs),
            alt.Opacity(f"{run}:O", title="run", sort=runs, scale=alt.Scale(domain=runs, range=[1.0, 0.5])),
        ]
        tips.insert(0, alt.Tooltip(f"{run}:N", title="run"))
    chart = (
        alt.Chart(counts.drop("_order"))
        .mark_bar()
        .encode(*enc, tooltip=tips)
        .properties(width=600, height=220)
    )
    lengths = convoys["length"]
    caption = (
        f"{fmt_count(convoys.height)} convoys; length median {lengths.median():.0f}, max {lengths.max()}. "
        "A convoy is a run of consecutive hand-offs on one lock; its cause is the LHP or LWP incident open "
        "when it began."
    )
    why = partial_why(analysis.summary.extra, "n_convoys")
    return Figure(name, title, chart, caption, f"Partial: {why}." if why else "")
