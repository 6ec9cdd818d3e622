"""Ground truth cut to a time window, for comparing with a capture that covers only that window.

A text trace covers the time between its first and last printed event, the
simulator's truth the whole run. Cutting the truth needs every spin instant's
class, known only with the full history: the run's full view is classified
with every event (at full fidelity the analyzer gives the simulator's truth
exactly, tests/analyze/test_vs_truth.py), then each spin piece is clipped to the
window. Counts: waits whose acquisition falls in the window, incidents and
convoys that overlap it (as a capture of the window sees them, cut at its
edges).
"""

from __future__ import annotations

import dataclasses

import polars as pl

from pvtrace.analyze import locks as locks_mod
from pvtrace.analyze import waste as waste_mod
from pvtrace.analyze.lost import lost_windows, vcpu_unknown_windows
from pvtrace.analyze.prepare import prepare
from pvtrace.analyze.run import analyze
from pvtrace.analyze.vcpu_states import build_states, state_changes
from pvtrace.trace import Trace

# spin class -> total key
_CLASS_KEYS = {
    "useful": "spin_useful_ns",
    "lhp": "waste_lhp_ns",
    "lwp_preempted": "waste_lwp_preempted_ns",
    "lwp_halted": "waste_lwp_halted_ns",
    "unattributed": "spin_unattributed_ns",
}


@dataclasses.dataclass
class WindowTruth:
    """Totals and incident tables of the truth inside [t_start, t_end)."""

    t_start: int
    t_end: int
    totals: dict[str, int]
    lhp_incidents: pl.DataFrame
    lwp_incidents: pl.DataFrame
    convoys: pl.DataFrame
    running_ns: int = 0  # every vCPU's running inside the window (what shares of running divide by)
    wait_ns: int = 0  # every lock wait's time inside the window


def _clipped(t0: int, t1: int) -> pl.Expr:
    return (
        pl.min_horizontal(pl.col("end"), pl.lit(t1)) - pl.max_horizontal(pl.col("start"), pl.lit(t0))
    ).clip(0)


def _overlapping(df: pl.DataFrame, t0: int, t1: int) -> pl.DataFrame:
    return df.filter((pl.col("end") > t0) & (pl.col("start") < t1))


def cut_truth(full: Trace, t_start: int, t_end: int) -> WindowTruth:
    """The truth of a simulator run (its full view) inside [t_start, t_end) on the host clock."""
    if full.meta.view != "full":
        raise ValueError("cut_truth needs the run's full view (every event the simulator knows)")
    whole = analyze(full)  # full history: every spin instant classified as the simulator does
    prep = prepare(full)
    windows = lost_windows(prep)
    changes = state_changes(prep)
    states = build_states(prep, changes, vcpu_unknown_windows(windows, changes, prep))
    guest_windows = windows.filter(pl.col("origin") == "guest")
    waits, _ = locks_mod.waits(prep, guest_windows, uncontended_visible=True)
    pieces = waste_mod.wait_pieces(waits, states, prep)
    holds, _ = locks_mod.holds(prep)
    acq = locks_mod.acquisitions(holds, waits)
    spin = waste_mod.spin_pieces(pieces, locks_mod.lock_status(acq, prep, guest_windows), states, prep)
    inside = spin.with_columns(_clipped(t_start, t_end).alias("dt"))
    by_class = {str(c): int(v) for c, v in inside.group_by("cls").agg(pl.col("dt").sum()).iter_rows()}
    totals = {key: by_class.get(cls, 0) for cls, key in _CLASS_KEYS.items()}
    totals["waste_lwp_ns"] = totals["waste_lwp_preempted_ns"] + totals["waste_lwp_halted_ns"]
    totals["spin_ns"] = sum(by_class.values())
    wait_inside = pieces.with_columns(_clipped(t_start, t_end).alias("dt"))
    by_state = {str(s): int(v) for s, v in wait_inside.group_by("state").agg(pl.col("dt").sum()).iter_rows()}
    totals["wait_halted_ns"] = by_state.get("halted", 0)
    totals["wait_preempted_ns"] = by_state.get("preempted", 0)
    done = waits.filter(~pl.col("truncated") & (pl.col("end") >= t_start) & (pl.col("end") < t_end))
    totals["n_contended"] = done.height
    lhp = _overlapping(whole.table("lhp_incidents"), t_start, t_end)
    lwp = _overlapping(whole.table("lwp_incidents"), t_start, t_end)
    conv = _overlapping(whole.table("convoys"), t_start, t_end)
    totals["n_lhp"] = lhp.height
    totals["n_lhp_harmful"] = int(lhp["harmful"].sum() or 0)
    totals["n_lwp"] = lwp.height
    for state in ("preempted", "halted"):
        totals[f"n_lwp_{state}"] = lwp.filter(pl.col("next_owner_state") == state).height
    totals["n_convoys"] = conv.height
    totals["convoy_len_max"] = int(conv["length"].max() or 0) if conv.height else 0
    takes = whole.table("holds").filter(pl.col("start").is_between(t_start, t_end, closed="left"))
    totals["n_acquisitions"] = takes.height
    for name, df in (("pause_exits", whole.table("pause_exits")), ("kicks", whole.table("kicks"))):
        totals[f"n_{name}"] = df.filter(pl.col("ts").is_between(t_start, t_end, closed="left")).height
    running = states.partition.filter(pl.col("state") == "running")
    running_ns = int(running.select(_clipped(t_start, t_end).sum()).item() or 0)
    wait_ns = int(wait_inside["dt"].sum() or 0)
    return WindowTruth(t_start, t_end, totals, lhp, lwp, conv, running_ns, wait_ns)
