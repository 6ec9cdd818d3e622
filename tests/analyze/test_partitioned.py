"""A trace analyzed a group of VMs at a time gives the tables and summary of the whole analysis.

Simulator runs are written to Parquet and analyzed twice: whole (a budget far above the trace),
and split into groups of VMs by a tiny memory budget. The cut between VMs falls inside holds,
waits, convoys and guest lost-event windows of every VM (they run concurrently).
"""

from __future__ import annotations

import json
from dataclasses import replace

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from pvtrace.analyze import partitioned
from pvtrace.analyze.run import analyze_parquet
from pvtrace.cli.app import app
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario, load_preset, preset_names
from pvtrace.simulate.views import select_view
from pvtrace.trace import Trace, read_meta, write_trace

WHOLE = 1 << 50  # a budget no test trace reaches
EVENT_BUDGET = partitioned.BYTES_PER_EVENT * partitioned.WORKERS  # the budget of one event per group


def write(trace: Trace, path, *, guest_loss: bool = False) -> None:
    """The trace as a Parquet file; guest_loss: lock events come from the guest (as in a real merged
    trace) and one guest CPU loses events half-way (a guest lost-event window)."""
    events = trace.events
    if guest_loss:
        events = events.with_columns(
            pl.when(pl.col("kind").cast(pl.String).str.starts_with("lock_"))
            .then(pl.lit("guest"))
            .otherwise(pl.col("origin"))
            .cast(events.schema["origin"])
            .alias("origin")
        )
        contends = events.filter(pl.col("kind") == "lock_contend")
        mid = contends.row(contends.height // 2, named=True)  # inside a wait of that vCPU
        marker = {**{c: None for c in events.columns}, "ts": mid["ts"], "seq": mid["seq"], "vm": mid["vm"]}
        marker |= {"vcpu": mid["vcpu"], "kind": "lost_events", "origin": "guest", "value": 7}
        events = pl.concat([events, pl.DataFrame([marker], schema=events.schema)]).sort("ts", "seq")
        events = events.with_columns(pl.int_range(pl.len(), dtype=events.schema["seq"]).alias("seq"))
    write_trace(Trace(events=events, meta=trace.meta), path, force=True)


def assert_same(split, whole) -> None:
    assert split.summary == whole.summary
    assert list(split.tables) == list(whole.tables)
    for name, table in whole.tables.items():
        # rows of different VMs at the same time may come in another order (TIME_ORDER)
        ordered = name not in partitioned.TIME_ORDER
        try:
            assert_frame_equal(split.tables[name], table, check_row_order=ordered)
        except AssertionError as exc:
            raise AssertionError(f"table {name}: {exc}") from None


def groups_of(path, budget: int) -> list[list[str]] | None:
    return partitioned.plan(path, read_meta(path), budget)


@pytest.mark.parametrize("preset", [p for p in preset_names() if load_preset(p).vm.count > 1])
@pytest.mark.parametrize("view", ["full", "merged"])
def test_each_vm_alone_gives_the_whole_analysis(tmp_path, preset, view):
    trace, _ = simulate_trace(load_preset(preset).replace(run={"duration_ns": 20_000_000}), seed=11)
    path = tmp_path / "t.parquet"
    write(select_view(trace, view), path, guest_loss=view == "merged")
    assert groups_of(path, EVENT_BUDGET) == [[vm] for vm in sorted(trace.meta.vms)]
    assert_same(analyze_parquet(path, memory_budget=EVENT_BUDGET), analyze_parquet(path, memory_budget=WHOLE))


FOUR_VMS = Scenario().replace(
    host={"pcpus": 3},
    vm={"count": 4, "vcpus": 2, "locks": 2, "compute_ns": 20_000, "hold_ns": 3_000, "hold_dist": "lognormal"},
    lock={"algorithm": "ticket"},
    run={"duration_ns": 10_000_000},
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), share=st.floats(0.05, 0.45), view=st.sampled_from(["full", "merged"]))
def test_any_grouping_of_vms_gives_the_whole_analysis(tmp_path, seed, share, view):
    trace, _ = simulate_trace(FOUR_VMS, seed=seed)
    path = tmp_path / f"{seed}-{view}.parquet"
    seen = select_view(trace, view)
    write(seen, path, guest_loss=view == "merged")
    budget = int(EVENT_BUDGET * seen.events.height * share)  # groups of `share` of the events
    groups = groups_of(path, budget)
    assert groups is not None and [vm for g in groups for vm in g] == sorted(trace.meta.vms)
    assert_same(analyze_parquet(path, memory_budget=budget), analyze_parquet(path, memory_budget=WHOLE))


# Calm tas locks: each VM has a few clean hand-offs (0 to 20), all VMs together more than 20.
CALM_TAS = Scenario().replace(
    host={"pcpus": 4},
    vm={"count": 3, "vcpus": 4, "locks": 1, "compute_ns": 50_000, "hold_ns": 5_000, "hold_dist": "exp"},
    hypervisor={"ple": False},
    lock={"algorithm": "tas"},
    run={"duration_ns": 200_000_000},
)


def test_a_vm_with_few_hand_offs_keeps_its_own_hold_statistics(tmp_path):
    """Inferred holds of a VM with few clean hand-offs do not borrow other VMs' (pooled) figures,
    which a group of VMs would not see."""
    trace, _ = simulate_trace(CALM_TAS, seed=1)
    path = tmp_path / "t.parquet"
    write(select_view(trace, "merged"), path)
    assert groups_of(path, EVENT_BUDGET) == [[vm] for vm in sorted(trace.meta.vms)]
    assert_same(analyze_parquet(path, memory_budget=EVENT_BUDGET), analyze_parquet(path, memory_budget=WHOLE))


def test_columns_blanked_by_fidelity_are_blanked_on_disk_too(tmp_path):
    # unaligned clocks: the spin split of every wait is unavailable, and waits stay on disk when split
    trace, _ = simulate_trace(FOUR_VMS, seed=5)
    seen = select_view(trace, "merged")
    path = tmp_path / "t.parquet"
    write(Trace(events=seen.events, meta=replace(seen.meta, clock={"synchronized": False})), path)
    split = analyze_parquet(path, memory_budget=EVENT_BUDGET)
    assert isinstance(split.tables, partitioned.SpilledTables)
    whole = analyze_parquet(path, memory_budget=WHOLE)
    waits = whole.tables["waits"]
    assert waits.height and waits["spin_ns"].null_count() == waits.height
    assert_same(split, whole)


def test_a_guest_left_out_of_the_join_is_left_out_in_every_group(tmp_path):
    """vm1's clock not aligned, the other guests' aligned: split by VM, the same analysis as whole
    (vm1's joined columns null, its part named in the partial totals)."""
    trace, _ = simulate_trace(FOUR_VMS, seed=5)
    seen = select_view(trace, "merged")
    guests = {vm: {"synchronized": vm != "vm1"} for vm in trace.meta.vms}
    path = tmp_path / "t.parquet"
    write(
        Trace(events=seen.events, meta=replace(seen.meta, clock={"synchronized": False, "guests": guests})),
        path,
    )
    split = analyze_parquet(path, memory_budget=EVENT_BUDGET)
    assert isinstance(split.tables, partitioned.SpilledTables)
    whole = analyze_parquet(path, memory_budget=WHOLE)
    assert set(whole.summary.extra["unjoined_vms"]) == {"vm1"}
    assert whole.summary.extra["partial"]["spin_ns"][0]["missing"].startswith("vm1's ")
    by_vm = {r["vm"]: r["spin_ns"] for r in whole.table("waste_by_vm").iter_rows(named=True)}
    assert (
        by_vm["vm1"] is None
        and sum(v for vm, v in by_vm.items() if vm != "vm1") == whole.summary.totals["spin_ns"]
    )
    assert_same(split, whole)


def test_host_lost_events_keep_the_trace_whole(tmp_path):
    trace, _ = simulate_trace(FOUR_VMS, seed=1)
    ev = trace.events
    marker = {**{c: None for c in ev.columns}, "ts": ev["ts"][ev.height // 2], "seq": ev.height}
    marker |= {"pcpu": 1, "kind": "lost_events", "origin": "host", "value": 3}
    events = pl.concat([ev, pl.DataFrame([marker], schema=ev.schema)]).sort("ts", "seq")
    path = tmp_path / "t.parquet"
    write_trace(Trace(events=events, meta=trace.meta), path)
    assert groups_of(path, EVENT_BUDGET) is None  # a host window blinds vCPUs of every VM


def test_a_trace_within_the_budget_is_not_split(tmp_path):
    trace, _ = simulate_trace(FOUR_VMS, seed=2)
    path = tmp_path / "t.parquet"
    write_trace(trace, path)
    assert groups_of(path, partitioned.BYTES_PER_EVENT * trace.events.height) is None
    assert groups_of(path, EVENT_BUDGET) is not None


def test_cli_memory_budget(tmp_path):
    trace, _ = simulate_trace(FOUR_VMS, seed=3)
    path = tmp_path / "t.parquet"
    write_trace(trace, path)
    runner = CliRunner()
    out = {
        budget: runner.invoke(
            app,
            [
                "analyze",
                str(path),
                "--json",
                "-",
                "-q",
                "--memory-budget",
                budget,
                "--out-dir",
                str(tmp_path / budget),
            ],
        )
        for budget in ("1K", "1T")
    }
    assert all(r.exit_code == 0 for r in out.values()), out
    assert json.loads(out["1K"].stdout) == json.loads(out["1T"].stdout)
    written = sorted(p.name for p in (tmp_path / "1T").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "1K").iterdir()) and len(written) > 10
    for name in written:
        if name.endswith(".parquet"):
            split, whole = (pl.read_parquet(tmp_path / b / name) for b in ("1K", "1T"))
            assert_frame_equal(
                split, whole, check_row_order=name.removesuffix(".parquet") not in partitioned.TIME_ORDER
            )
    bad = runner.invoke(app, ["analyze", str(path), "--memory-budget", "lots"])
    assert bad.exit_code != 0 and "--memory-budget" in bad.output and "Traceback" not in bad.output


def test_waits_with_stacks_warn_alike_whole_and_partitioned(tmp_path):
    """The partitioned path built lock_callers per group but never said that the waits include the
    stack trace their contention_begin triggered; its median is over every group's waits."""
    from test_analyze_outputs import _stacked_waits
    from trace_rows import trace_of

    from pvtrace.trace import VmInfo

    rows = [
        (*r[:3], {**(r[3] if len(r) > 3 else {}), "vm": vm})
        for vm, cost in (("vm0", 4_000), ("vm1", 2_000))
        for r in _stacked_waits(cost)
    ]
    trace = trace_of(sorted(rows, key=lambda r: r[0]), t_end=100_000, view="guest")
    vms = {vm: VmInfo(n_vcpus=3, lock_kind="fifo", lock_algorithm=None) for vm in ("vm0", "vm1")}
    trace = Trace(events=trace.events, meta=replace(trace.meta, vms=vms))
    path = tmp_path / "stacks.parquet"
    write(trace, path)
    assert len(groups_of(path, EVENT_BUDGET)) == 2
    split, whole = (
        analyze_parquet(path, memory_budget=EVENT_BUDGET),
        analyze_parquet(path, memory_budget=WHOLE),
    )
    assert_same(split, whole)
    # five waits at 4 us and five at 2 us: the median of all ten, not of either VM
    assert split.summary.extra["stack_cost"] == {"median_ns": 3_000, "n_waits": 10}
    assert any("includes the stack trace" in w for w in split.summary.extra["warnings"])
