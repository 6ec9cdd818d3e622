"""Spin waste per lock and per VM, split useful / LHP / LWP / unattributed."""

from __future__ import annotations

import altair as alt
import polars as pl

from pvtrace.analyze.result import Analysis
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.labels import fmt_ns, unavailable_reason, with_lock_label

TOP_LOCKS = 15
WIDTH = 600

# Spin parts in stacking order, with colours; LWP is split by the next owner's state when known.
PARTS: dict[str, tuple[str, str]] = {
    "spin_useful_ns": ("useful", "#59a14f"),
    "waste_lhp_ns": ("LHP", "#b6001b"),
    "waste_lwp_preempted_ns": ("LWP, next owner preempted", "#1f5fbf"),
    "waste_lwp_halted_ns": ("LWP, next owner halted", "#7fa6e0"),
    "waste_lwp_ns": ("LWP", "#4a7bd0"),
    "spin_unattributed_ns": ("unattributed", "#bab0ac"),
}


def _color_scale(long: pl.DataFrame) -> alt.Scale:
    present = set(long["part"].unique().to_list())
    shown = [(p, c) for p, c in PARTS.values() if p in present]
    return alt.Scale(domain=[p for p, _ in shown], range=[c for _, c in shown])


def _part_columns(df: pl.DataFrame, unavailable: set[str]) -> tuple[list[str], list[str]]:
    """The spin part columns to draw, and the parts that are unavailable.

    A part is unavailable when the summary says so (the analyzer may still fill
    the column with zeros) or when the table has no values for it.
    """
    have = {c for c in PARTS if c not in unavailable and df.height and df[c].null_count() < df.height}
    split = {"waste_lwp_preempted_ns", "waste_lwp_halted_ns"} <= have
    cols = [c for c in PARTS if c in have and not (c == "waste_lwp_ns" and split)]
    missing = [
        c for c in ("spin_useful_ns", "waste_lhp_ns", "waste_lwp_ns", "spin_unattributed_ns") if c not in have
    ]
    return cols, missing


def unavailable_metrics(analysis: Analysis) -> set[str]:
    """Names of the summary metrics this analysis cannot give."""
    return {u.metric for u in analysis.summary.unavailable}


def running_time(analysis: Analysis) -> int | None:
    """Total vCPU running time, or None when the analysis knows no vCPU state (e.g. a guest-only trace)."""
    states = analysis.table("vcpu_states")
    known = states.filter(pl.col("state") != "unknown")
    if known.height == 0:
        return None
    return int(known.filter(pl.col("state") == "running")["dur"].sum())


def waste_parts(
    df: pl.DataFrame,
    label: str,
    by: tuple[str, ...] = (),
    unavailable: set[str] | frozenset[str] = frozenset(),
) -> tuple[pl.DataFrame, list[str]]:
    """Long frame (by..., label, part, ms) of the spin parts, and the parts that are unavailable."""
    cols, missing = _part_columns(df, set(unavailable))
    if not cols:
        return pl.DataFrame(), missing
    long = (
        df.select(*by, label, *cols)
        .unpivot(index=[*by, label], on=cols, variable_name="column", value_name="ns")
        .filter(pl.col("ns").is_not_null())
        .with_columns(
            pl.col("column").replace_strict({c: p for c, (p, _) in PARTS.items()}).alias("part"),
            pl.col("column")
            .replace_strict({c: i for i, c in enumerate(PARTS)}, return_dtype=pl.Int32)
            .alias("order"),
            (pl.col("ns") / 1e6).alias("ms"),
        )
        .drop("column")
    )
    return long, missing


def top_locks(table: pl.DataFrame, n: int = TOP_LOCKS, by: tuple[str, ...] = ()) -> pl.DataFrame:
    """The n locks with the most spin (per `by` group), the rest summed into one 'other' row."""
    if table.height == 0:
        return table.with_columns(pl.lit(None, dtype=pl.String).alias("lock_label"))
    ranked = table.with_columns(
        pl.col("spin_ns")
        .fill_null(0)
        .rank("ordinal", descending=True)
        .over(list(by) or pl.lit(1))
        .alias("_rank")
    )
    top = with_lock_label(ranked.filter(pl.col("_rank") <= n).sort(*by, "_rank"))
    rest = ranked.filter(pl.col("_rank") > n)
    sums = [c for c in PARTS if c in table.columns] + ["spin_ns"]
    if rest.height:
        other = rest.group_by(list(by) or pl.lit(1).alias("_all")).agg(
            *[
                pl.col(c).sum() if rest[c].null_count() < rest.height else pl.lit(None, pl.Int64).alias(c)
                for c in sums
            ],
            pl.len().alias("_n"),
        )
        other = other.with_columns(("other " + pl.col("_n").cast(pl.String) + " locks").alias("lock_label"))
        top = pl.concat([top.select(*by, "lock_label", *sums), other.select(*by, "lock_label", *sums)])
    return top.select(*by, "lock_label", *sums)


def chart_stacked_waste(
    long: pl.DataFrame, label: str, label_title: str, run: str | None = None, runs: list[str] | None = None
) -> alt.Chart:
    """Horizontal stacked bars of spin parts per label (grouped by run when given)."""
    totals = long.group_by(label).agg(
        pl.col("ms").sum(), pl.col(label).str.starts_with("other ").first().alias("_o")
    )
    order = totals.sort("_o", "ms", descending=[False, True])[label].to_list()
    enc = [
        alt.X("ms:Q", title="spin (ms)", stack="zero"),
        alt.Y(f"{label}:N", title=label_title, sort=order),
        alt.Color("part:N", title="spin", scale=_color_scale(long), legend=alt.Legend(orient="top")),
        alt.Order("order:Q"),
    ]
    tips = [
        alt.Tooltip(f"{label}:N", title=label_title),
        "part:N",
        alt.Tooltip("ms:Q", title="ms", format=",.3f"),
    ]
    if run:
        enc.append(alt.YOffset(f"{run}:N", title="run", sort=runs))
        tips.insert(0, alt.Tooltip(f"{run}:N", title="run"))
        enc.append(
            alt.Opacity(f"{run}:O", title="run", sort=runs, scale=alt.Scale(domain=runs, range=[1.0, 0.5]))
        )
    step = 14 if run else 20
    return (
        alt.Chart(long).mark_bar().encode(*enc, tooltip=tips).properties(width=WIDTH, height=alt.Step(step))
    )


def _missing_note(analysis: Analysis, missing: list[str]) -> str:
    if not missing:
        return ""
    why = unavailable_reason(analysis.summary, missing) or "the analysis gives no values for them"
    return f"Not shown: {', '.join(missing)} ({why})."


def _no_spin(analysis: Analysis, table: pl.DataFrame) -> str | None:
    """Why there is no spin to draw, or None when there is."""
    why = unavailable_reason(analysis.summary, ["spin_ns"])
    if why:
        return why
    if table.height == 0 or not table["spin_ns"].fill_null(0).sum():
        if analysis.summary.fidelity.get("spin_ns") == "host-only":
            spin = fmt_ns(analysis.summary.totals.get("spin_ns"))
            return (
                f"spin ({spin}) is estimated from PAUSE exits: without guest lock events it cannot be "
                "split per lock or per VM"
            )
        return "no lock spin in this trace"
    return None


def chart_waste_by_lock(analysis: Analysis, top_n: int = TOP_LOCKS) -> Figure:
    """Spin per lock, the top locks by spin, split into its parts."""
    name, title = "waste-by-lock", "Spin waste per lock"
    table = analysis.table("waste_by_lock")
    reason = _no_spin(analysis, table)
    if reason:
        return no_data(name, title, reason)
    long, missing = waste_parts(
        top_locks(table, top_n), "lock_label", unavailable=unavailable_metrics(analysis)
    )
    caption = (
        f"The {min(top_n, table.height)} locks with the most spin, of {table.height}. Spin is wait time while the "
        "waiter ran; LHP and LWP are the wasted part (the holder, or the next owner, was not running)."
    )
    if long.height == 0:
        return no_data(name, title, _missing_note(analysis, missing), caption)
    chart = chart_stacked_waste(long, "lock_label", "lock")
    return Figure(name, title, chart, caption, _missing_note(analysis, missing))


def chart_waste_by_vm(analysis: Analysis) -> Figure:
    """Spin per VM split into its parts, with the waste's share of running time."""
    name, title = "waste-by-vm", "Spin waste per VM"
    table = analysis.table("waste_by_vm")
    reason = _no_spin(analysis, table)
    if reason:
        return no_data(name, title, reason)
    unavailable = unavailable_metrics(analysis)
    long, missing = waste_parts(table, "vm", unavailable=unavailable)
    running = running_time(analysis)
    totals = analysis.summary.totals
    if running and "waste_lhp_ns" in totals and "waste_lwp_ns" in totals:
        wasted = totals["waste_lhp_ns"] + totals["waste_lwp_ns"]
        share = f"Spin waste (LHP + LWP) is {fmt_ns(wasted)}, {100 * wasted / running:.2f}% of all vCPU running time."
    else:
        share = "The share of running time is unavailable (no vCPU states or no waste split)."
    if long.height == 0:
        return no_data(name, title, _missing_note(analysis, missing), share)
    return Figure(name, title, chart_stacked_waste(long, "vm", "VM"), share, _missing_note(analysis, missing))
