"""Spin waste per lock and per VM, split useful / LHP / LWP / unattributed."""

from __future__ import annotations

import altair as alt
import polars as pl

from pvtrace.analyze.partial import partial_note
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
    shown = long.select("order", "part", "color").unique().sort("order")
    return alt.Scale(domain=shown["part"].to_list(), range=shown["color"].to_list())


def part_labels(partial: dict[str, str]) -> dict[str, tuple[str, str]]:
    """PARTS with the parts a summary lists as partial relabelled (and paler): a useful spin that
    still holds the LWP waste it cannot separate is never drawn as plain useful spin."""
    return {
        c: (f"{label}{partial[c]}", _PALE.get(c, color)) if partial.get(c) else (label, color)
        for c, (label, color) in PARTS.items()
    }


# Colours of partial parts: the same hue, paler.
_PALE = {"spin_useful_ns": "#b5d8ac", "waste_lhp_ns": "#e08c99", "waste_lwp_ns": "#a4bde8"}


def partial_parts(*analyses: Analysis) -> dict[str, str]:
    """Column -> ' (partial: ...)' of the spin parts any of the analyses lists as partial."""
    out: dict[str, str] = {}
    for a in analyses:
        for c in PARTS:
            note = partial_note(a.summary.extra, c)
            if note and c not in out:
                out[c] = note
    return out


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
    partial: dict[str, str] | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Long frame (by..., label, part, color, ms) of the spin parts, and the parts that are
    unavailable; `partial` (partial_parts) relabels the parts that are not whole."""
    cols, missing = _part_columns(df, set(unavailable))
    if not cols:
        return pl.DataFrame(), missing
    parts = part_labels(partial or {})
    long = (
        df.select(*by, label, *cols)
        .unpivot(index=[*by, label], on=cols, variable_name="column", value_name="ns")
        .filter(pl.col("ns").is_not_null())
        .with_columns(
            pl.col("column").replace_strict({c: p for c, (p, _) in parts.items()}).alias("part"),
            pl.col("column").replace_strict({c: k for c, (_, k) in parts.items()}).alias("color"),
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
        # a partial part's label says why (a sentence): whole, a part per line; in a row they were
        # cut to 'useful (partial: includes the LWP ...'
        alt.Color(
            "part:N",
            title="spin",
            scale=_color_scale(long),
            legend=alt.Legend(orient="top", direction="vertical", labelLimit=0),
        ),
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
    return f"Not shown: {', '.join(PARTS[c][0] for c in missing)} spin ({why})."


def waste_share(analysis: Analysis) -> tuple[int, float, str] | None:
    """(spin waste ns, % of vCPU running time, which parts it covers), as `pvtrace analyze` prints
    it; None when the trace gives no waste or no running time."""
    t = analysis.summary.totals
    if "waste_lhp_ns" not in t:
        return None
    wasted = t["waste_lhp_ns"] + t.get("waste_lwp_ns", 0)
    pct = analysis.summary.extra.get("spin_waste_pct_of_running")
    if pct is None:
        running = running_time(analysis)
        pct = 100.0 * wasted / running if running else None
    if pct is None:
        return None
    covers = "LHP + LWP" if "waste_lwp_ns" in t else "LHP only: LWP needs each lock's kind"
    parts = (analysis.summary.extra.get("partial") or {}).get("spin_waste")
    if parts and "waste_lwp_ns" in t:  # as summary_view.waste_label says it
        covers += "; partial: " + "; ".join(p["missing"] for p in parts)
    return wasted, pct, covers


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
        top_locks(table, top_n),
        "lock_label",
        unavailable=unavailable_metrics(analysis),
        partial=partial_parts(analysis),
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
    long, missing = waste_parts(table, "vm", unavailable=unavailable, partial=partial_parts(analysis))
    got = waste_share(analysis)
    if got is not None:
        wasted, pct, covers = got
        x = analysis.summary.extra
        # with some VMs' waits left out, the share is of the running of the VMs it covers
        whose = "of the measured VMs'" if x.get("unjoined_vms") or x.get("untraced_vms") else "of all"
        share = f"Spin waste ({covers}) is {fmt_ns(wasted)}, {pct:.2f}% {whose} vCPU running time."
    else:
        share = "The share of running time is unavailable (no vCPU states or no waste split)."
    if long.height == 0:
        return no_data(name, title, _missing_note(analysis, missing), share)
    return Figure(name, title, chart_stacked_waste(long, "vm", "VM"), share, _missing_note(analysis, missing))
