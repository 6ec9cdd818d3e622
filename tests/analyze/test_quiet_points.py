"""Quiet points of a VM: no wait, hold, convoy or lost-event window of the whole analysis crosses one,
and cut requests at awkward places move to the nearest one (or the VM stays whole)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pvtrace.analyze.quiet_points import busy_spans, place_cuts, quiet_cuts
from pvtrace.analyze.run import analyze_parquet
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset, preset_names
from pvtrace.simulate.views import select_view
from tests.analyze.test_partitioned import WHOLE, write

COLUMNS = ("ts", "kind", "vm", "vcpu", "pcpu", "lock", "origin")


def events_of(path, vm: str) -> pl.LazyFrame:
    """One VM's events with their whole-trace ord, as a group's parts hold them."""
    scan = pl.scan_parquet(path).with_row_index("ord").with_columns(pl.col("ord").cast(pl.Int64))
    return scan.filter(pl.col("vm").cast(pl.String) == vm).select("ord", *COLUMNS)


def tiny(rows: list[tuple]) -> pl.LazyFrame:
    """Events (ts, kind, vcpu, lock, origin) of one VM, ord = 100 + position (other VMs' events
    came first)."""
    frame = pl.DataFrame(rows, schema=["ts", "kind", "vcpu", "lock", "origin"], orient="row")
    return (
        frame.with_row_index("ord", offset=100)
        .with_columns(pl.col("ord").cast(pl.Int64), pl.lit(None, pl.Int32()).alias("pcpu"))
        .lazy()
    )


def test_quiet_points_of_a_small_trace():
    ev = tiny(
        [
            (10, "lock_release", 1, 7, "sim"),  # 0: held since the trace start
            (20, "vcpu_run", 0, None, "sim"),  # 1: quiet
            (30, "lock_acquire", 0, 7, "sim"),  # 2: quiet (the hold starts here)
            (40, "lock_contend", 1, 7, "sim"),  # 3
            (50, "lock_release", 0, 7, "sim"),  # 4: vCPU 1 still waits
            (50, "lock_acquire", 1, 7, "sim"),  # 5: same instant as 4
            (60, "lock_release", 1, 7, "sim"),  # 6
            (70, "vcpu_run", 1, None, "guest"),  # 7: vCPU 0 may hold lock 7 (its next release)
            (80, "lock_release", 0, 7, "sim"),  # 8: a release after a release: busy since 4
            (90, "vcpu_run", 1, None, "guest"),  # 9: quiet
            (95, "lost_events", 1, None, "guest"),  # 10: the guest window from 9 to here
            (99, "lock_contend", 0, 8, "sim"),  # 11: quiet; never acquired: busy to the end
            (120, "vcpu_run", 1, None, "guest"),  # 12
        ]
    )
    never = np.iinfo(np.int64).max
    assert busy_spans(ev).sort("start").rows() == [
        (-1, 100),
        (102, 104),
        (103, 106),
        (104, 108),
        (111, never),
    ]
    quiet = quiet_cuts(ev)
    assert quiet.rows() == [(101, 1, 20), (102, 2, 30), (109, 9, 90), (111, 11, 99)]  # (ord, row, ts)
    for rows in (1, 2, 5):  # a slice of events at a time gives the same
        assert busy_spans(ev, rows).sort("start").equals(busy_spans(ev).sort("start"))
        assert quiet_cuts(ev, rows).equals(quiet)
    assert place_cuts(quiet, [3, 10], reach=1) == [102, 109]  # a tie goes to the earlier point
    assert place_cuts(quiet, [5], reach=3) == [102]
    assert place_cuts(quiet, [5], reach=2) is None


def spanning(intervals: pl.DataFrame, cuts: pl.DataFrame) -> pl.DataFrame:
    """Rows of `intervals` (start, end ns) that hold both sides of a cut (between ts_prev and ts)."""
    return intervals.select("start", "end").join_where(
        cuts, pl.col("start") <= pl.col("ts_prev"), pl.col("end") >= pl.col("ts")
    )


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("seed", [3, 8])
def test_no_interval_of_the_whole_analysis_crosses_a_quiet_point(tmp_path, preset, seed):
    trace, _ = simulate_trace(load_preset(preset).replace(run={"duration_ns": 20_000_000}), seed=seed)
    path = tmp_path / "t.parquet"
    write(select_view(trace, "full"), path, guest_loss=seed == 8)  # a guest lost window inside a wait
    whole = analyze_parquet(path, memory_budget=WHOLE)
    for vm in sorted(trace.meta.vms):
        ev = events_of(path, vm).select("ord", "ts").collect()
        ev = ev.with_columns(pl.col("ts").shift(1).alias("ts_prev"))
        quiet = quiet_cuts(events_of(path, vm))
        assert quiet_cuts(events_of(path, vm), 97).equals(quiet)  # slice by slice
        cuts = ev.join(quiet.drop("ts"), on="ord").select("ts_prev", "ts")
        assert cuts.height > 10, f"{preset} {vm}: too few quiet points to cut at"
        for name in ("waits", "holds", "convoys"):
            table = whole.tables[name].filter(pl.col("vm") == vm)
            assert spanning(table, cuts).is_empty(), f"{preset} {vm}: a row of {name} crosses a quiet point"
        lost = whole.tables["lost_windows"].filter(pl.col("origin") == "guest")
        assert spanning(lost, cuts).is_empty()
    assert seed != 8 or whole.tables["lost_windows"].height  # the lost window was met


def awkward_rows(path, vm: str, whole) -> dict[str, int]:
    """A row of the VM's events inside a hold, a wait, a convoy and a guest lost-event window."""
    ev = events_of(path, vm).select("ts").collect().with_row_index("row")

    ts = ev["ts"].to_numpy()

    def inside(table: pl.DataFrame) -> int:
        """The middle event of the row with the most events after its start, up to its end."""
        rows = table.filter(pl.col("vm") == vm)
        first = np.searchsorted(ts, rows["start"].to_numpy(), side="right")
        last = np.searchsorted(ts, rows["end"].to_numpy(), side="right")
        widest = int(np.argmax(last - first))
        assert last[widest] > first[widest], "no row with an event inside it"
        return int((first[widest] + last[widest]) // 2)

    rows = {name: inside(whole.tables[name]) for name in ("holds", "waits", "convoys")}
    marker = events_of(path, vm).with_row_index("row").filter(pl.col("kind") == "lost_events")
    rows["lost window"] = int(marker.select("row").collect().item())
    return rows


@pytest.mark.parametrize("seed", [1, 2])
def test_cuts_asked_at_awkward_places_move_to_the_nearest_quiet_point(tmp_path, seed):
    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 30_000_000}), seed=seed)
    path = tmp_path / "t.parquet"
    write(select_view(trace, "full"), path, guest_loss=True)
    whole = analyze_parquet(path, memory_budget=WHOLE)
    marker = pl.read_parquet(path).filter(pl.col("kind") == "lost_events")
    vm = str(marker["vm"][0])
    quiet = quiet_cuts(events_of(path, vm))
    quiet_rows = quiet["row"].to_numpy()
    asked = awkward_rows(path, vm, whole)
    assert not set(asked.values()) & set(quiet_rows.tolist())  # none of them is quiet
    distance = {place: int(np.abs(quiet_rows - row).min()) for place, row in asked.items()}
    cuts = place_cuts(quiet, list(asked.values()), reach=max(distance.values()))
    assert cuts is not None and set(cuts) <= set(quiet["ord"].to_list())
    by_row = dict(zip(quiet["ord"].to_list(), quiet_rows.tolist(), strict=True))
    for place, row in asked.items():
        assert min(abs(by_row[c] - row) for c in cuts) == distance[place], place
    # a reach shorter than the way to a quiet point: the VM is analyzed whole
    assert place_cuts(quiet, list(asked.values()), reach=max(distance.values()) - 1) is None


def test_a_vm_whose_releases_are_not_traced_has_no_quiet_point_after_its_first_lock_event(tmp_path):
    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 30_000_000}), seed=1)
    path = tmp_path / "t.parquet"
    write(select_view(trace, "merged"), path)  # guest lock events: contentions only, no releases
    ev = events_of(path, sorted(trace.meta.vms)[0])
    first_lock_event = ev.filter(pl.col("kind").cast(pl.String).str.starts_with("lock_")).select("ord").min()
    quiet = quiet_cuts(ev)
    assert quiet.filter(pl.col("ord") > first_lock_event.collect().item()).is_empty()
    n = ev.select(pl.len()).collect().item()
    assert n > 50 and place_cuts(quiet, [n // 2], reach=n // 4) is None  # analyzed whole
