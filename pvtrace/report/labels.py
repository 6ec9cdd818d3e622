"""How values are written on report pages: durations, counts, lock ids, missing metrics."""

from __future__ import annotations

import polars as pl

from pvtrace.fmt import fmt_lock, fmt_ns
from pvtrace.summary import Summary


def fmt_count(n: float | int | None) -> str:
    """A count with thousands separators."""
    if n is None:
        return "n/a"
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"


def with_lock_label(
    df: pl.DataFrame, vm: str = "vm", lock: str = "lock", out: str = "lock_label"
) -> pl.DataFrame:
    """Add `vm:0xaddr` labels for the locks of a small (already aggregated) frame."""
    if df.height == 0:
        return df.with_columns(pl.lit(None, dtype=pl.String).alias(out))
    hexes = {a: ("?" if a is None else fmt_lock(a)) for a in df[lock].unique().to_list()}
    return df.with_columns(
        (pl.col(vm).cast(pl.String) + ":" + pl.col(lock).replace_strict(hexes, return_dtype=pl.String)).alias(
            out
        )
    )


def unavailable_reason(summary: Summary, metrics: tuple[str, ...] | list[str]) -> str | None:
    """Why the first of `metrics` the summary lists as unavailable cannot be computed, or None."""
    for u in summary.unavailable:
        if u.metric in metrics:
            label = METRIC_LABELS.get(u.metric, u.metric)
            if not u.missing_events:  # no event is missing: what it needs is the whole reason
                return f"{label} unavailable: {u.how_to_capture or 'the analysis cannot give it'}"
            text = f"{label} unavailable: the trace lacks {', '.join(u.missing_events)}"
            if u.how_to_capture:
                text += f" (capture with: {u.how_to_capture})"
            return text
    return None


# What each summary total means, in the words a page uses.
METRIC_LABELS: dict[str, str] = {
    "spin_ns": "spin (waiting while running)",
    "spin_useful_ns": "useful spin",
    "waste_lhp_ns": "spin wasted on LHP",
    "waste_lwp_ns": "spin wasted on LWP",
    "waste_lwp_preempted_ns": "LWP waste, next owner preempted",
    "waste_lwp_halted_ns": "LWP waste, next owner halted",
    "spin_unattributed_ns": "unattributed spin",
    "wait_halted_ns": "wait while halted (pv slow path)",
    "wait_preempted_ns": "wait while preempted",
    "n_acquisitions": "lock acquisitions",
    "n_contended": "contended acquisitions",
    "n_lhp": "LHP incidents",
    "n_lhp_harmful": "harmful LHP incidents",
    "n_lwp": "LWP incidents",
    "n_lwp_preempted": "LWP incidents, next owner preempted",
    "n_lwp_halted": "LWP incidents, next owner halted",
    "n_convoys": "convoys",
    "convoy_len_max": "longest convoy (hand-offs)",
    "n_truncated": "waits, holds and incidents cut by the trace end",
    "n_pause_exits": "pause exits",
    "n_kicks": "pv kicks",
}


def fmt_metric(key: str, value: float | int | None) -> str:
    """A summary value in its unit: ns keys as durations, the rest as counts."""
    return fmt_ns(value) if key.endswith("_ns") else fmt_count(value)
