"""Totals of an analysis, in the Summary layout shared with the simulator's ground truth."""

from __future__ import annotations

from typing import Any

import polars as pl

from pvtrace.analyze.fidelity import Capabilities, plan, summary_level
from pvtrace.analyze.intervals import union
from pvtrace.analyze.prepare import Prepared
from pvtrace.summary import SPIN_SPLIT_KEYS, Summary


def table_sums(tables: dict[str, pl.DataFrame]) -> dict[str, int]:
    """What the summary reads of the waits and pause_exits tables, as sums. They add up over VM
    partitions, so a partitioned analysis keeps those two big tables on disk (analyze/partitioned.py)."""
    row = (
        tables["waits"]
        .select(
            *[pl.col(c).sum() for c in SPIN_SPLIT_KEYS],
            pl.col("halted_ns").sum().alias("wait_halted_ns"),
            pl.col("preempted_ns").sum().alias("wait_preempted_ns"),
            pl.col("dur").sum().alias("wait_dur_ns"),
            pl.col("truncated").sum().alias("n_open_waits"),
            (~pl.col("truncated")).sum().alias("n_closed_waits"),
        )
        .row(0, named=True)
    )
    pauses = tables["pause_exits"]["n_siblings_preempted"]
    return {
        **{k: int(v or 0) for k, v in row.items()},
        "n_pause_exits": pauses.len(),
        "n_pause_exits_sibling_preempted": int((pauses > 0).sum() or 0),
    }


def totals_of(tables: dict[str, pl.DataFrame], counts: dict[str, int]) -> dict[str, int]:
    """Every total key computed from the result tables and counts (before fidelity drops what is
    unavailable)."""
    lhp = tables["lhp_incidents"]
    lwp = tables["lwp_incidents"]
    conv = tables["convoys"]
    t = {c: counts[c] for c in SPIN_SPLIT_KEYS}
    t["wait_halted_ns"] = counts["wait_halted_ns"]
    t["wait_preempted_ns"] = counts["wait_preempted_ns"]
    t["n_acquisitions"] = counts["n_acquisitions"]
    t["n_contended"] = counts["n_contended"]
    t["n_lhp"] = lhp.height
    t["n_lhp_harmful"] = int(lhp["harmful"].sum() or 0) if lhp.height else 0
    t["n_lwp"] = lwp.height
    t["n_lwp_preempted"] = lwp.filter(pl.col("next_owner_state") == "preempted").height
    t["n_lwp_halted"] = lwp.filter(pl.col("next_owner_state") == "halted").height
    t["n_convoys"] = conv.height
    t["convoy_len_max"] = int(conv["length"].max() or 0) if conv.height else 0
    t["n_truncated"] = (
        counts["n_truncated_waits"]
        + counts["n_truncated_holds"]
        + int(lhp["truncated"].sum() or 0)
        + int(lwp["truncated"].sum() or 0)
    )
    t["n_pause_exits"] = counts["n_pause_exits"]
    t["n_kicks"] = tables["kicks"].height
    return t


def build_summary(
    tables: dict[str, pl.DataFrame],
    counts: dict[str, int],
    caps: Capabilities,
    *,
    unknown_kind_locks: bool,
    host_estimates: dict[str, int],
    extra: dict[str, Any],
    clocks_unaligned: str | None = None,
) -> Summary:
    """The Summary: totals this trace can give, their levels, and what is unavailable."""
    n_pause = counts["n_pause_exits"]
    fidelity, unavailable = plan(
        caps,
        unknown_kind_locks=unknown_kind_locks,
        pause_exits=n_pause > 0,
        clocks_unaligned=clocks_unaligned,
    )
    all_totals = totals_of(tables, counts)
    if caps.level == "host-only":
        all_totals["spin_ns"] = host_estimates["spin_ns"]
        if n_pause:
            extra = {**extra, "spin_waste_ns": host_estimates["spin_waste_ns"]}
    totals = {k: v for k, v in all_totals.items() if k in fidelity}
    return Summary(
        totals=totals,
        fidelity=fidelity,
        unavailable=unavailable,
        extra={"level": summary_level(caps, clocks_unaligned), **extra},
    )


def state_sums(states, prep: Prepared, windows: pl.DataFrame) -> dict[str, int]:
    """The summary's per-vCPU context totals of one prepared trace (they add up over VM partitions)."""
    part = states.partition
    dur = pl.col("end") - pl.col("start")
    lost_ns = 0
    if states.unknown.height:
        lost_ns = int(union(states.unknown, key="vid").select(dur.sum()).item() or 0)
    return {
        "n_vcpus": prep.n_vcpus,
        "n_locks": prep.n_locks,
        "vcpu_ns": prep.n_vcpus * prep.window.dur,
        "running_ns": int(part.filter(pl.col("state") == "running").select(dur.sum()).item() or 0),
        "unknown_state_ns": int(part.filter(pl.col("state") == "unknown").select(dur.sum()).item() or 0),
        "excluded_ns": lost_ns,
        "n_lost_windows": windows.height,
        # the events the tracer says it dropped, where its marker gives a count, and the markers without
        "n_events_lost": int(windows["n_lost"].sum() or 0),
        "n_lost_windows_uncounted": int(windows["n_lost"].is_null().sum()),
    }


STATE_SUMS = (
    "n_vcpus",
    "n_locks",
    "vcpu_ns",
    "running_ns",
    "unknown_state_ns",
    "excluded_ns",
    "n_lost_windows",
)


def total_wait(counts: dict[str, int], waits_measured: bool) -> int | None:
    """The summary's wait_ns, set here only. The waits' lengths when any wait ended (one still
    open at the trace end counts to the end, as the truth does); a true 0 when the trace measures
    waits (its contention events are there: caps.waits) and none began; else null, never 0:
    waits began but none ever ends, so none has a length."""
    if counts["n_closed_waits"]:
        return counts["wait_dur_ns"]
    return 0 if waits_measured and not counts["n_open_waits"] else None


def extra_context(
    tables: dict[str, pl.DataFrame],
    counts: dict[str, int],
    sums: dict[str, int],
    prep: Prepared,
    waits_measured: bool,
) -> dict:
    """Context for the totals: excluded time, pause-exit and kick figures, ingest-like notes.
    waits_measured: the trace has the contention events (caps.waits), so no wait is a true 0."""
    vcpu_time, running_ns, lost_ns = sums["vcpu_ns"], sums["running_ns"], sums["excluded_ns"]
    n_pauses = counts["n_pause_exits"]
    kicks = tables["kicks"]
    out = {
        "t_start": prep.window.t_start,
        "t_end": prep.window.t_end,
        "n_events": prep.n_events,
        **{k: sums[k] for k in STATE_SUMS[:6]},
        "excluded_pct": round(100.0 * lost_ns / vcpu_time, 4) if vcpu_time else 0.0,
        "n_lost_windows": sums["n_lost_windows"],
        "wait_ns": total_wait(counts, waits_measured),
        "n_open_waits": counts["n_open_waits"],
        "n_pause_exits_sibling_preempted": counts["n_pause_exits_sibling_preempted"],
        "pause_exits_per_vcpu_s": round(n_pauses / (running_ns / 1e9), 3) if running_ns else None,
        "kick_latency_p50_ns": int(kicks["latency_ns"].quantile(0.5, "nearest"))
        if kicks["latency_ns"].drop_nulls().len()
        else None,
        "kick_latency_max_ns": int(kicks["latency_ns"].max())
        if kicks["latency_ns"].drop_nulls().len()
        else None,
        "spin_waste_pct_of_running": None,
    }
    waste = counts["waste_lhp_ns"] + counts["waste_lwp_ns"]
    if running_ns:
        out["spin_waste_pct_of_running"] = round(100.0 * waste / running_ns, 4)
    out.update({k: v for k, v in sums.items() if k not in STATE_SUMS})  # the notes
    if prep.guest_preemption is not None:
        out["guest_preemption"] = prep.guest_preemption.as_extra()
    return out
