"""One VM analyzed a time window at a time gives the tables and summary of the whole analysis.

Simulator runs are written to Parquet and analyzed whole and under a memory budget small enough
that every VM is cut into windows. The cuts are asked for at fixed event counts, so they fall
inside holds, waits, convoys and lost-event windows and move to the nearest quiet point.
"""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvtrace.analyze import windows
from pvtrace.analyze.quiet_points import place_cuts, quiet_cuts
from pvtrace.analyze.run import analyze_parquet
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario, load_preset
from pvtrace.simulate.views import select_view
from tests.analyze.test_partitioned import EVENT_BUDGET, WHOLE, assert_same, write
from tests.analyze.test_quiet_points import awkward_rows, events_of


@pytest.fixture
def cuts(monkeypatch) -> dict[str, list[int]]:
    """The cuts of each VM analyzed in windows, as the analysis makes them."""
    made: dict[str, list[int]] = {}
    measure = windows.measure_windows

    def spy(frame, vm, at, *rest):
        made[vm] = at
        return measure(frame, vm, at, *rest)

    monkeypatch.setattr(windows, "measure_windows", spy)
    return made


def analyzed_in_windows(path, n_windows: int) -> tuple:
    """(windowed, whole) analyses, the budget giving each VM about n_windows windows or more."""
    n = pl.scan_parquet(path).select(pl.len()).collect().item()
    return analyze_parquet(path, memory_budget=EVENT_BUDGET * (n // n_windows)), analyze_parquet(
        path, memory_budget=WHOLE
    )


# Seeds where a VM is cut, some cuts are asked inside a hold or a wait, and the lost window, if its
# VM is cut, lies after the first cut (the property itself held on seeds 1-8 of each preset).
@pytest.mark.parametrize(
    ("preset", "seed"),
    [
        ("kernel-build", 1),
        ("kernel-build", 3),
        ("tlb-shootdown", 1),
        ("tlb-shootdown", 4),
        ("overcommit-2x", 2),
        ("overcommit-2x", 4),
    ],
)
def test_windows_of_a_vm_give_the_whole_analysis(tmp_path, cuts, preset, seed):
    trace, _ = simulate_trace(load_preset(preset).replace(run={"duration_ns": 20_000_000}), seed=seed)
    path = tmp_path / "t.parquet"
    write(select_view(trace, "full"), path, guest_loss=True)
    split, whole = analyzed_in_windows(path, 8)
    assert cuts  # at least one VM was cut into windows
    assert_same(split, whole)
    for vm in cuts:  # some cuts were asked inside a hold or a wait, and moved
        quiet = quiet_cuts(events_of(path, vm))
        n = pl.scan_parquet(path).select(pl.len()).collect().item() // 8
        asked = set(range(n, int(quiet["row"].max()), n))
        assert asked - set(quiet["row"].to_list()), vm
    marker = (
        pl.read_parquet(path).with_row_index("ord").filter(pl.col("kind") == "lost_events").row(0, named=True)
    )
    if str(marker["vm"]) in cuts:  # the lost window lies in a window after the first, and is honoured
        assert cuts[str(marker["vm"])][0] < marker["ord"] and whole.tables["lost_windows"].height


BIG_VM = Scenario().replace(
    host={"pcpus": 6},
    vm={"count": 1, "vcpus": 6, "locks": 2, "compute_ns": 30_000, "hold_ns": 3_000, "hold_dist": "lognormal"},
    lock={"algorithm": "ticket"},
    run={"duration_ns": 15_000_000},
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), n_windows=st.integers(3, 12))
def test_cuts_asked_anywhere_move_to_quiet_points_and_give_the_whole_analysis(
    tmp_path, cuts, seed, n_windows
):
    cuts.clear()
    trace, _ = simulate_trace(BIG_VM, seed=seed)
    path = tmp_path / f"{seed}.parquet"
    write(select_view(trace, "full"), path)
    split, whole = analyzed_in_windows(path, n_windows)
    assert_same(split, whole)
    assert set(cuts["vm0"]) <= set(quiet_cuts(events_of(path, "vm0"))["ord"].to_list())


@pytest.mark.parametrize(
    ("preset", "seed"), [("kernel-build", 6), ("tlb-shootdown", 1), ("overcommit-2x", 5)]
)
def test_cuts_asked_inside_a_hold_a_wait_a_convoy_and_a_lost_window(
    tmp_path, monkeypatch, cuts, preset, seed
):
    """Seeds whose VM with the lost window has convoys."""
    trace, _ = simulate_trace(load_preset(preset).replace(run={"duration_ns": 30_000_000}), seed=seed)
    path = tmp_path / "t.parquet"
    write(select_view(trace, "full"), path, guest_loss=True)
    whole = analyze_parquet(path, memory_budget=WHOLE)
    vm = str(pl.read_parquet(path).filter(pl.col("kind") == "lost_events")["vm"][0])
    asked = awkward_rows(path, vm, whole)
    quiet = quiet_cuts(events_of(path, vm))
    assert not set(asked.values()) & set(quiet["row"].to_list())  # none of them is quiet
    at = place_cuts(quiet, sorted(asked.values()), reach=10**9)
    assert at is not None and len(at) >= 2
    monkeypatch.setattr(windows, "window_cuts", lambda ev, name, *rest: at if name == vm else None)
    n = pl.scan_parquet(path).select(pl.len()).collect().item()
    assert_same(analyze_parquet(path, memory_budget=EVENT_BUDGET * (n // 4)), whole)
    assert cuts == {vm: at}


def test_a_vm_that_cannot_be_cut_exactly_is_analyzed_whole(tmp_path, cuts):
    # lhp-demo: 2-vCPU VMs (queue-jump tries are a rate over the whole VM)
    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 20_000_000}), seed=1)
    path = tmp_path / "2vcpu.parquet"
    write(select_view(trace, "full"), path)
    assert_same(*analyzed_in_windows(path, 8))
    # the merged view: no releases, no quiet point after the first lock event
    trace, _ = simulate_trace(BIG_VM, seed=1)
    path = tmp_path / "merged.parquet"
    write(select_view(trace, "merged"), path)
    assert_same(*analyzed_in_windows(path, 8))
    # lock kinds to infer from the VM's whole order evidence
    path = tmp_path / "full.parquet"
    write(select_view(trace, "full"), path)
    n = pl.scan_parquet(path).select(pl.len()).collect().item()
    split, whole = (
        analyze_parquet(path, memory_budget=b, lock_kind="unknown") for b in (EVENT_BUDGET * (n // 8), WHOLE)
    )
    assert_same(split, whole)
    assert not cuts
