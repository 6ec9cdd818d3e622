"""The guest view's ticks and steal samples follow the run's vCPU states (pvtrace/simulate/ticks.py)."""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.guest_signals import parse_steal_markers
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset
from pvtrace.simulate.ticks import state_intervals
from pvtrace.simulate.views import select_view

PERIOD = 1_000_000  # GUEST_HZ = 1000


@pytest.fixture(scope="module")
def run():
    trace, truth = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 60_000_000}), seed=3)
    guest = select_view(trace, "guest").events
    return trace, guest, state_intervals(trace.events, truth.t_end)


def _at(ticks: pl.DataFrame, iv: pl.DataFrame) -> pl.DataFrame:
    """Each tick with the state of its vCPU at that instant (intervals are [start, end))."""
    return ticks.sort("ts").join_asof(
        iv.sort("start").select("vm", "vcpu", "state", "start", "end"),
        left_on="ts",
        right_on="start",
        by=["vm", "vcpu"],
        check_sortedness=False,
    )


def test_ticks_only_while_running(run):
    _, guest, iv = run
    ticks = guest.filter(pl.col("event") == "local_timer_entry").select(
        pl.col("vm").cast(pl.String), "vcpu", "ts"
    )
    at = _at(ticks, iv.with_columns(pl.col("vm").cast(pl.String)))
    assert ticks.height > 100
    assert at["state"].to_list() == ["running"] * at.height


def test_a_tick_at_every_grid_instant_of_a_run_and_one_on_resume(run):
    trace, guest, iv = run
    offsets = trace.meta.clock["guest_offset_ns"]
    ticks = set(
        guest.filter(pl.col("event") == "local_timer_entry")
        .select(pl.col("vm").cast(pl.String), "vcpu", "ts")
        .iter_rows()
    )
    runs = (
        iv.filter(pl.col("state") == "running")
        .with_columns(pl.col("vm").cast(pl.String))
        .sort("vm", "vcpu", "start")
    )
    # a tick missed while not running is taken at the vCPU's next entry into the guest
    entries = (
        trace.events.filter(pl.col("kind") == "vm_entry")
        .select(pl.col("vm").cast(pl.String), "vcpu", pl.col("ts").alias("entry"))
        .sort("entry")
    )
    runs = runs.sort("start").join_asof(
        entries, left_on="start", right_on="entry", by=["vm", "vcpu"], strategy="forward"
    )
    n_late = 0
    prev_end: dict = {}
    for vm, vcpu, start, end, entry in runs.select("vm", "vcpu", "start", "end", "entry").iter_rows():
        off = offsets[vm]
        k = -(-(start - off) // PERIOD)
        while k * PERIOD + off < end:
            assert (vm, vcpu, k * PERIOD + off) in ticks
            k += 1
        gap_start = prev_end.get((vm, vcpu))
        if gap_start is not None and -(-(gap_start - off) // PERIOD) * PERIOD + off < start:
            assert (vm, vcpu, entry) in ticks  # it missed a tick while not running: taken on resume
            n_late += 1
        prev_end[(vm, vcpu)] = end
    assert n_late > 5


def test_steal_samples_are_the_floored_preempted_time_up_to_each_cpus_tick(run):
    """Each CPU's counter holds its preempted time up to its own last tick (the guest accounts steal
    at its tick) plus its steal from before the capture (under a unit), floored to USER_HZ units."""
    _, guest, iv = run
    markers = guest.filter(pl.col("event") == "tracing_mark_write").select(
        pl.col("vm").cast(pl.String), "ts", "args"
    )
    ticks = guest.filter(pl.col("event") == "local_timer_entry").select(
        pl.col("vm").cast(pl.String), "vcpu", "ts"
    )
    samples = parse_steal_markers(markers)
    assert samples["ts"].min() == 0 and samples.height >= 4 * 2  # start, every 100 ms... and the end
    preempted = iv.filter(pl.col("state") == "preempted").with_columns(pl.col("vm").cast(pl.String))
    lagged = 0
    for vm, ts, vcpu, steal_ns, unit in samples.iter_rows():
        mine = preempted.filter((pl.col("vm") == vm) & (pl.col("vcpu") == vcpu))
        upto = ticks.filter((pl.col("vm") == vm) & (pl.col("vcpu") == vcpu) & (pl.col("ts") <= ts))[
            "ts"
        ].max()
        true = int(
            mine.filter(pl.col("start") < (upto or 0))
            .select((pl.min_horizontal("end", pl.lit(upto)) - pl.col("start")).sum())
            .item()
            or 0
        )
        assert steal_ns // unit in (true // unit, true // unit + 1)
        lagged += bool(mine.filter((pl.col("start") < ts) & (pl.col("end") > ts)).height)
    assert lagged > 0  # some sample came while a vCPU was preempted: its counter waits for its tick


def test_markers_are_written_from_a_running_vcpu(run):
    _, guest, iv = run
    markers = guest.filter(pl.col("event") == "tracing_mark_write").select(
        pl.col("vm").cast(pl.String), "vcpu", "ts"
    )
    at = _at(markers, iv.with_columns(pl.col("vm").cast(pl.String)))
    assert at["state"].to_list() == ["running"] * at.height


def test_guest_hz_is_a_scenario_key_and_pv_spinlocks_are_noted():
    """vm.guest_hz sets the tick of the guest view (250: every 4 ms); the steal samples say whether the
    guest's spinlocks are paravirt, as `pvtrace record --guest` would."""
    from pvtrace.errors import ScenarioError
    from pvtrace.guest_signals import pv_spinlocks_of

    base = load_preset("lhp-demo").replace(run={"duration_ns": 30_000_000})
    trace, _ = simulate_trace(base.replace(vm={"guest_hz": 250}, lock={"algorithm": "pv-qspinlock"}), seed=3)
    guest = select_view(trace, "guest").events
    ticks = guest.filter(pl.col("event") == "local_timer_entry")
    gaps = ticks.select(pl.col("ts").diff().over("vm", "vcpu", order_by="ts").alias("d"))["d"].drop_nulls()
    assert gaps.is_not_null().all() and int(gaps.mode().min()) == 4 * PERIOD
    markers = guest.filter(pl.col("event") == "tracing_mark_write").select(
        pl.col("vm").cast(pl.String), "ts", "args"
    )
    assert pv_spinlocks_of(markers) is True
    with pytest.raises(ScenarioError, match=r"vm\.guest_hz"):
        base.replace(vm={"guest_hz": 500})
