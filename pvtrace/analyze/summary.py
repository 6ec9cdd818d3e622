"""Totals of an analysis, in the Summary layout shared with the simulator's ground truth."""

from __future__ import annotations

from typing import Any

import polars as pl

from pvtrace.analyze.fidelity import Capabilities, plan
from pvtrace.summary import SPIN_SPLIT_KEYS, Summary


def _sum(df: pl.DataFrame, col: str) -> int:
    return int(df[col].sum() or 0) if df.height else 0


def totals_of(tables: dict[str, pl.DataFrame], counts: dict[str, int]) -> dict[str, int]:
    """Every total key computed from the result tables (before fidelity drops what is unavailable)."""
    w = tables["waits"]
    lhp = tables["lhp_incidents"]
    lwp = tables["lwp_incidents"]
    conv = tables["convoys"]
    t = {c: _sum(w, c) for c in SPIN_SPLIT_KEYS}
    t["wait_halted_ns"] = _sum(w, "halted_ns")
    t["wait_preempted_ns"] = _sum(w, "preempted_ns")
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
    t["n_pause_exits"] = tables["pause_exits"].height
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
    n_pause = tables["pause_exits"].height
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
        totals=totals, fidelity=fidelity, unavailable=unavailable, extra={"level": caps.level, **extra}
    )
