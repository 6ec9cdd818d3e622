"""vCPU state timelines: running, preempted, halted or unknown at every instant.

docs/metrics.md, vCPU states: vcpu_run -> running, vcpu_preempt -> preempted,
vcpu_halt -> halted, vcpu_wake -> preempted unless already running; unknown
before a vCPU's first state event and where lost events blind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pvtrace.analyze.guest_mode import guest_at_stops
from pvtrace.analyze.intervals import (
    changes_to_partition,
    lookup,
    overlay,
    same_as_previous,
    sort_by_key,
    union,
)
from pvtrace.analyze.prepare import Prepared
from pvtrace.schema import VCPU_STATE

I64 = pl.Int64()

_EXPLICIT = {"vcpu_run": "running", "vcpu_preempt": "preempted", "vcpu_halt": "halted"}


@dataclass
class VcpuStates:
    """State change points, the state partition (key = vid) and the lost-event unknown windows."""

    changes: pl.DataFrame  # vid, ts, ord, kind, pcpu, state, user (sorted by vid, ord)
    partition: pl.DataFrame  # vid, start, end, state (sorted by vid, start; covers the window)
    unknown: pl.DataFrame  # vid, start, end: lost-event windows that blind each vCPU


def state_changes(prep: Prepared) -> pl.DataFrame:
    """The state after each vCPU state event, sorted by (vid, ord)."""
    st = sort_by_key(prep.states, "vid")  # states come in canonical (ord) order
    explicit = pl.col("kind").replace_strict(_EXPLICIT, default=None, return_dtype=VCPU_STATE)
    # whether the last explicit state before each row, within its vCPU, was running (False at a
    # vCPU's first row); Enum throughout, never strings (2M rows on a big trace)
    prev_running = (
        pl.when(same_as_previous("vid")).then(pl.col("_explicit").shift(1) == "running").otherwise(False)
    ).forward_fill()
    woken = (
        pl.when(prev_running).then(pl.lit("running", VCPU_STATE)).otherwise(pl.lit("preempted", VCPU_STATE))
    )
    changes = (
        st.with_columns(_explicit=explicit)
        .with_columns(
            pl.when(pl.col("kind") == "vcpu_wake").then(woken).otherwise(pl.col("_explicit")).alias("state")
        )
        .drop("_explicit")
    )
    return changes.with_columns(*guest_at_stops(changes, prep))


def build_states(prep: Prepared, changes: pl.DataFrame, unknown: pl.DataFrame) -> VcpuStates:
    """The state partition of every vCPU over the window, with lost windows made unknown."""
    unknown = union(unknown, key="vid")
    part = changes_to_partition(
        changes.select(pl.col("vid").alias("key"), "ts", "state"),
        key="key",
        values=["state"],
        n_keys=prep.n_vcpus,
        window=prep.window,
        initial={"state": "unknown"},
    )
    if unknown.height:
        part = overlay(
            part,
            unknown.rename({"vid": "key"}),
            key="key",
            values=["state"],
            set_values={"state": "unknown"},
            window=prep.window,
        )
    return VcpuStates(changes=changes, partition=part, unknown=unknown)


def clipped(states: VcpuStates, t0: int, t1: int) -> VcpuStates:
    """The state pieces within [t0, t1) only (a time window of one VM, analyze/windows.py): the
    pieces that cross its ends are cut there, and joined again when the windows are merged."""
    inside = states.partition.filter((pl.col("end") > t0) & (pl.col("start") < t1))
    part = inside.with_columns(pl.col("start").clip(t0, None), pl.col("end").clip(None, t1))
    return VcpuStates(changes=states.changes, partition=part, unknown=states.unknown)


def state_at(
    points: pl.DataFrame, states: VcpuStates, prep: Prepared, *, vid: str, ord_col: str, ts_col: str
) -> pl.Series:
    """The state of vCPU `vid` at each point event (after every event before it in canonical order)."""
    found = lookup(
        points.select(pl.col(vid).alias("_v"), pl.col(ord_col).alias("_o"), pl.col(ts_col).alias("_t")),
        states.changes.select(pl.col("vid").alias("key"), "ord", "state"),
        by="_v",
        on="_o",
        table_on="ord",
        values=["state"],
        strict=True,
    )
    state = found["state"].fill_null(pl.lit("unknown", VCPU_STATE))
    if states.unknown.height:
        blind = lookup(
            found.select("_v", "_t"),
            states.unknown.select(pl.col("vid").alias("key"), "start", "end"),
            by="_v",
            on="_t",
            table_on="start",
            values=["end"],
        )
        inside = (blind["end"] > blind["_t"]).fill_null(False)
        state = pl.select(pl.when(inside).then(pl.lit("unknown", VCPU_STATE)).otherwise(state)).to_series()
    return state.cast(VCPU_STATE).alias("state")


def vcpu_states_table(states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """The vcpu_states result table: vm, vcpu, state, start, end, dur."""
    return states.partition.select(
        prep.vcpu_attr("vm", vid="key"),
        prep.vcpu_attr("vcpu", vid="key").cast(pl.Int32()),
        "state",
        "start",
        "end",
        (pl.col("end") - pl.col("start")).alias("dur"),
    )
