"""Guest clock offsets found without the user: generate's side file, or estimated from the events;
host and guest metrics never joined from clocks that are not known to be aligned."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load
from pvtrace.ingest.offsets_file import OFFSETS_SUFFIX
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario, load_preset


def _run(seed: int, offsets: tuple[int, int] = (), drifts: tuple[float, float] = ()):
    s = Scenario().replace(
        lock={"algorithm": "ticket"},
        host={"pcpus": 4},
        vm={
            "count": 2,
            "vcpus": 4,
            "locks": 2,
            "lock_skew": 1.0,
            "compute_ns": 20_000,
            "hold_ns": 2_000,
            "clock_offsets_ns": offsets,
            "clock_drift_ppm": drifts,
        },
        run={"duration_ns": 60_000_000},
    )
    return simulate_trace(s, seed=seed)


def _texts(paths):
    return [p for p in paths if p.suffix == ".txt"]


@pytest.mark.parametrize(
    ("fmt", "offsets"), [("ftrace", (-7_123_456_789, -90_000_001_234)), ("perf", (-3_000_000_017, -5_500))]
)
def test_offset_estimated_from_the_events_within_a_microsecond(tmp_path, fmt, offsets):
    # Found within 1 us (issue 13); the estimate's own uncertainty (half the width of the shifts
    # that fit) stays within two printed microseconds: a guest event lies 300 ns or more after
    # its vCPU's kvm_entry, so the entries bound the shift to that much less than a microsecond.
    trace, _ = _run(5, offsets)
    paths = write_rendered(trace, fmt, "merged", tmp_path / "m.txt")
    for p in paths:
        if p.name.endswith(OFFSETS_SUFFIX):
            p.unlink()  # as a user without the side file
    clock = load(_texts(paths)).meta.clock
    assert clock["synchronized"] is True
    for vm, true in zip(("vm0", "vm1"), offsets, strict=True):
        est = clock["guests"][vm]["estimate"]
        error = abs(clock["guest_offset_ns"][vm] - true)
        assert error <= 1_000 and error <= est["uncertainty_ns"] <= 2_000, (error, est)
        assert clock["guests"][vm]["mode"].startswith("estimated from the events")
    # the line `ingest` prints: each VM's estimate under its name (their uncertainties differ)
    modes = {vm: g["mode"] for vm, g in clock["guests"].items()}
    if len(set(modes.values())) > 1:
        assert clock["mode"] == "; ".join(f"{vm}: {m}" for vm, m in sorted(modes.items()))
    else:
        assert clock["mode"] == modes["vm0"]


def test_generate_side_file_gives_the_exact_offsets(tmp_path):
    trace, _ = _run(6)
    paths = write_rendered(trace, "ftrace", "merged", tmp_path / "m.txt")
    clock = load(_texts(paths)).meta.clock
    assert clock["guest_offset_ns"] == {vm: int(v) for vm, v in trace.meta.clock["guest_offset_ns"].items()}
    assert "guest-offsets.csv" in clock["mode"]


def test_guest_events_that_fit_no_shift_make_cross_metrics_unavailable(tmp_path):
    # the host of one run with the guests of another: no offset aligns them
    host_run, _ = _run(7)
    guest_run, _ = _run(8)
    host = _texts(write_rendered(host_run, "ftrace", "host", tmp_path / "h.txt"))
    guests = _texts(write_rendered(guest_run, "ftrace", "guest", tmp_path / "g.txt"))
    trace = load(host + guests)
    assert trace.meta.clock["synchronized"] is False
    s = analyze(trace).summary
    for key in ("spin_ns", "waste_lhp_ns", "n_lhp_harmful", "n_convoys", "wait_preempted_ns"):
        assert key not in s.totals
        assert key not in s.fidelity
    why = {u.metric: u.how_to_capture for u in s.unavailable}
    assert "--guest-offset" in why["spin_ns"]
    assert s.totals["n_contended"] > 0 and s.totals["n_pause_exits"] >= 0  # one side's metrics stay
    assert analyze(trace).table("lhp_incidents").height == 0


def _no_side_file(paths):
    for p in paths:
        if p.name.endswith(OFFSETS_SUFFIX):
            p.unlink()  # as a user without the side file
    return _texts(paths)


def test_guests_of_another_run_on_clocks_far_off_keep_the_window_the_hosts(tmp_path):
    """No guest joins (their clocks seconds away, their events of another run): each side's own
    metrics, with the guests' waits as long as their own files print them, and the analysis window
    the host's: the unaligned guests' events are shown from the host trace's start, not seconds
    away, where the host's last vCPU states would have run on to them."""
    host = _no_side_file(write_rendered(_run(7)[0], "ftrace", "host", tmp_path / "h.txt"))
    guests = _no_side_file(
        write_rendered(_run(8, (-7_000_000_000, -9_000_000_000))[0], "ftrace", "guest", tmp_path / "g.txt")
    )
    trace = load(host + guests)
    clock = trace.meta.clock
    assert clock["synchronized"] is False
    a = analyze(trace)  # (a 60 ms run; the guests' own clocks read 7 and 9 s)
    assert a.summary.extra["level"] == "unjoined" and a.summary.extra["t_end"] < 61_000_000
    assert a.table("vcpu_states")["end"].max() < 61_000_000
    alone = analyze(load(guests))
    assert a.summary.totals["n_contended"] == alone.summary.totals["n_contended"] > 0
    assert sorted(a.table("waits")["dur"].to_list()) == sorted(alone.table("waits")["dur"].to_list())


def test_one_guest_that_cannot_be_joined_leaves_the_others_joined(tmp_path):
    """The host and vm0 of one run, vm1's file of another (no shift fits it): vm0's waits are joined
    as in the whole run, vm1's are left out (null figures, no incidents), and every joined total
    names vm1's part with the fix."""
    run, _ = _run(7, (-7_000_000_000, -9_000_000_000))
    paths = _no_side_file(write_rendered(run, "ftrace", "merged", tmp_path / "h.txt"))
    other = _no_side_file(
        write_rendered(_run(8, (-7_000_000_000, -9_000_000_000))[0], "ftrace", "guest", tmp_path / "g.txt")
    )
    whole = analyze(load(paths))
    (vm1,) = [p for p in paths if p.name == "h-vm1.txt"]
    vm1.write_text(next(p for p in other if p.name == "g-vm1.txt").read_text())
    trace = load(paths)
    guests = trace.meta.clock["guests"]
    assert guests["vm0"]["synchronized"] is True and guests["vm1"]["synchronized"] is False
    a = analyze(trace)
    s = a.summary
    assert s.extra["level"] == "inferred" and set(s.extra["unjoined_vms"]) == {"vm1"}
    for key in ("spin_ns", "waste_lhp_ns", "waste_lwp_ns", "n_convoys"):
        (part,) = s.extra["partial"][key]
        assert part["missing"].startswith("vm1's ") and "--guest-offset" in part["fix"]
    by_vm = {r["vm"]: r for r in a.table("waste_by_vm").iter_rows(named=True)}
    whole_vm = {r["vm"]: r for r in whole.table("waste_by_vm").iter_rows(named=True)}
    # (running differs: the window ends with vm1's events, placed from the host trace's start)
    spin = [k for k in by_vm["vm0"] if k.startswith(("spin", "waste"))]
    assert {k: by_vm["vm0"][k] for k in spin} == {k: whole_vm["vm0"][k] for k in spin}
    assert by_vm["vm0"]["spin_ns"] == s.totals["spin_ns"] > 0 and by_vm["vm1"]["spin_ns"] is None
    for name in ("lhp_incidents", "lwp_incidents", "convoys", "holds"):
        assert set(a.table(name)["vm"].to_list()) <= {"vm0"}


def test_a_given_offset_that_puts_the_guests_outside_the_host_trace_is_not_trusted(tmp_path):
    """--guest-offset 0 on guests that are seconds away on their own clocks: the guests are not
    synchronized (with the reason), and nothing joining host and guest is measured."""
    trace, _ = _run(9, (-7_000_000_000, -9_000_000_000))
    paths = write_rendered(trace, "ftrace", "merged", tmp_path / "m.txt")
    loaded = load(_texts(paths), guest_offset_ns=0)
    clock = loaded.meta.clock
    assert clock["synchronized"] is False
    assert "the given offset 0 ns" in clock["warning"]
    assert "spin_ns" not in analyze(loaded).summary.totals
    right = load(_texts(paths), guest_offset_ns={"vm0": -7_000_000_000, "vm1": -9_000_000_000})
    assert right.meta.clock["synchronized"] is True


def test_one_offset_for_two_guests_that_fits_one_analyzes_the_other_left_out(tmp_path):
    """lhp-demo (2-vCPU VMs) with --guest-offset N, vm0's offset, for both guests: vm1's events,
    5 s off, put the window past 2^31 ns, where the analysis once stacked Int32 and Int64 times (a
    traceback, from the new-user audit). vm1 is left out, vm0 joined."""
    trace, _ = simulate_trace(load_preset("lhp-demo"), seed=1)
    paths = write_rendered(trace, "ftrace", "merged", tmp_path / "m.txt")
    offset = int(load(_texts(paths)).meta.clock["guest_offset_ns"]["vm0"])  # from the side file
    loaded = load(_texts(paths), guest_offset_ns=offset)
    assert loaded.meta.clock["guests"]["vm0"]["synchronized"] is True
    assert loaded.meta.clock["guests"]["vm1"]["synchronized"] is False
    a = analyze(loaded)
    assert a.summary.extra["unjoined_vms"].keys() == {"vm1"}
    assert a.summary.totals["spin_ns"] > 0


@pytest.mark.parametrize("fmt", ["ftrace", "perf"])
def test_a_side_file_of_another_run_is_not_trusted_and_the_events_name_the_fix(tmp_path, fmt):
    """A side file left from another run of the VMs (its offset 50 us off the guests' clock): the
    time ranges still meet, but a third of the guest events fall outside their vCPU's runs. Not
    trusted (cross metrics unavailable), the reason says so, and the fix carries the offset the
    events give. The right offsets, given, are trusted (the check does not trip on good ones)."""
    trace, _ = _run(10, (-7_000_000_000, -9_000_000_000))
    paths = write_rendered(trace, fmt, "merged", tmp_path / "m.txt")
    side = next(p for p in paths if p.name.endswith(OFFSETS_SUFFIX))
    good = load(_texts(paths))
    right = good.meta.clock
    assert right["synchronized"] is True and right["offsets_file"] == str(side)
    side.write_text(side.read_text().replace("-7000000000", "-7000050000"))
    stale = load(_texts(paths))
    clock = stale.meta.clock
    assert clock["synchronized"] is False
    vm0 = clock["guests"]["vm0"]
    assert vm0["synchronized"] is False and clock["guests"]["vm1"]["synchronized"] is True
    assert f"the offset -7000050000 ns from {side.name} puts" in vm0["estimate_failed"]
    assert f"the offset -7000050000 ns from {side.name} puts" in clock["warning"]
    assert abs(vm0["estimate"]["offset_ns"] + 7_000_000_000) <= 1_000
    # vm1's clock is right: its figures are joined as with the right offsets; vm0 is left out of
    # them (null, not 0) and every joined total says so, with the fix the events give
    a = analyze(stale)
    s = a.summary
    assert "spin_ns" in s.totals and "n_lhp_harmful" in s.totals
    (part,) = s.extra["partial"]["spin_ns"]
    assert part["missing"].startswith("vm0's ") and s.extra["partial"]["n_lhp_harmful"] == [part]
    assert (
        f"the offset {side.name} gives for vm0 does not fit its events (a file of another run?)"
        in part["fix"]
    )
    assert f"the events put vm0's offset at {vm0['estimate']['offset_ns']} +- " in part["fix"]
    by_vm = {r["vm"]: r for r in a.table("waste_by_vm").iter_rows(named=True)}
    full = {r["vm"]: r for r in analyze(good).table("waste_by_vm").iter_rows(named=True)}
    assert by_vm["vm0"]["spin_ns"] is None and by_vm["vm0"]["running_ns"] == full["vm0"]["running_ns"]
    assert by_vm["vm1"] == full["vm1"] and s.totals["spin_ns"] == full["vm1"]["spin_ns"] > 0
    assert a.table("lhp_incidents").filter(pl.col("vm") == "vm0").height == 0
    # the same wrong offset given on the command line
    typed = load(_texts(paths), guest_offset_ns={"vm0": -7_000_050_000, "vm1": -9_000_000_000})
    assert typed.meta.clock["guests"]["vm0"]["synchronized"] is False


def test_guest_events_printed_just_before_their_vcpu_resumes_are_moved_inside(tmp_path):
    trace, _ = _run(9)
    paths = write_rendered(trace, "ftrace", "merged", tmp_path / "m.txt")
    got = load(_texts(paths))
    ev = got.events
    assert got.meta.clock.get("guest_events_moved_into_runs", 0) > 0
    # every guest lock event now falls while its vCPU runs (host state at the event)
    a = analyze(got)
    states = a.table("vcpu_states").filter(pl.col("state") == "running")
    guest = ev.filter(pl.col("origin") == "guest").select(pl.col("vm").cast(pl.String), "vcpu", "ts")
    inside = guest.join(states, on=["vm", "vcpu"]).filter(
        (pl.col("ts") >= pl.col("start")) & (pl.col("ts") <= pl.col("end"))
    )
    assert inside.select("vm", "vcpu", "ts").unique().height == guest.unique().height


def test_a_guest_event_snapped_to_a_run_printed_without_length_lands_between_its_entry_and_exit():
    """vCPU 0 resumes, takes a lock and exits to kick a waiter within one microsecond: the host
    prints run, entry and exit at 10 000; the guest's acquisition, cut to its own microsecond and
    shifted by a fractional offset, at 9344. It moves to 10 000, ordered after the entry and before
    the exit (as normalize orders equal timestamps: row * 2 + sub, host rows first)."""
    from pvtrace.ingest.clock_estimate import snap_to_runs

    host = pl.DataFrame(
        {
            "vm": ["vm0"] * 6,
            "vcpu": [0] * 6,
            "kind": ["vm_entry", "vcpu_preempt", "vcpu_run", "vm_entry", "vm_exit", "vm_entry"],
            "ts": [0, 3000, 10_000, 10_000, 10_000, 11_000],
            "row": [0, 1, 2, 2, 3, 4],
            "sub": [0, 0, 0, 1, 0, 0],
        }
    )
    guest = pl.DataFrame(
        {"vm": ["vm0"], "vcpu": [0], "kind": ["lock_acquire"], "ts": [9344], "row": [10], "sub": [0]}
    )
    moved, n = snap_to_runs(host, guest, tolerance=1001)
    assert n == 1
    assert moved.select("ts", "row", "sub").row(0) == (10_000, 2, 1)  # the entry's place
    merged = pl.concat([host, moved]).sort(pl.col("row") * 2 + pl.col("sub"), maintain_order=True)
    kinds = ["vm_entry", "vcpu_preempt", "vcpu_run", "vm_entry", "lock_acquire", "vm_exit", "vm_entry"]
    assert merged["kind"].to_list() == kinds


def _runs(starts, length):
    return pl.DataFrame({"vcpu": [0] * len(starts), "start": starts, "end": [s + length for s in starts]})


def test_estimate_from_synthetic_runs_and_refusal_when_periodic():
    from pvtrace.ingest.clock_estimate import Estimate, estimate_offset

    rng = __import__("numpy").random.default_rng(1)
    starts = sorted(int(x) for x in rng.choice(10_000_000, size=300, replace=False) * 100)
    runs = _runs(starts, 40_000)
    offset = -123_456_789  # host = guest + offset
    picks = rng.choice(len(starts), size=200)
    guest = pl.DataFrame(
        {"vcpu": [0] * 200, "ts": [starts[i] + int(rng.integers(0, 40_000)) - offset for i in picks]}
    )
    est = estimate_offset(runs, guest)
    assert isinstance(est, Estimate) and abs(est.offset_ns - offset) <= est.uncertainty_ns <= 40_000
    # strictly periodic runs and events: every period fits as well, so no estimate
    periodic = _runs([i * 100_000 for i in range(300)], 40_000)
    guest_periodic = pl.DataFrame(
        {"vcpu": [0] * 200, "ts": [i * 100_000 + 10_000 + 7 for i in range(50, 250)]}
    )
    assert isinstance(
        estimate_offset(periodic, guest_periodic.with_columns(pl.col("ts") + 5_000_000_000)), str
    )


def _true_line(offset: int, ppm: float, host0: int, at: int) -> tuple[float, float]:
    """The offset at guest time `at` and the drift (ppm) of a guest clock g = h - offset + ppm * 1e-6
    * (h - host0): host = (g + offset + p * host0) / (1 + p)."""
    p = ppm / 1e6
    return (at + offset + p * host0) / (1 + p) - at, p / (1 + p) * 1e6


def _covers(est, offset: int, ppm: float, host0: int, host_ts, guest_ts) -> None:
    """The estimate's three uncertainties each cover the truth: the offset at at_ns, the drift, and
    the host time of every guest event."""
    true_offset, true_ppm = _true_line(offset, ppm, host0, est.at_ns)
    assert abs(est.offset_ns - true_offset) <= est.uncertainty_ns, (est, true_offset)
    assert abs(est.drift_ppm - true_ppm) <= est.drift_uncertainty_ppm + 1e-9, (est, true_ppm)
    placed = guest_ts + est.offset_ns - est.drift_ppm / 1e6 * (guest_ts - est.at_ns)
    assert abs(placed - host_ts).max() <= est.span_uncertainty_ns, est


def test_a_known_offset_and_drift_recovered_from_a_hand_built_trace():
    """21 runs of 2 us, 10 ms and j x 10 us apart (not periodic: no other shift fits), with one
    guest event 10 ns after the start (even runs) or before the end (odd runs) of each, on a guest
    clock 1 ms ahead and 10 ppm fast. The events pin the offset to tens of ns and the drift to
    about 2 x 20 ns over the 204 ms between the first and the last run."""
    import numpy as np

    from pvtrace.ingest.clock_estimate import Estimate, estimate_offset

    starts = np.array([j * 10_000_000 + j * j * 10_000 for j in range(21)])
    host_ts = np.where(np.arange(21) % 2 == 0, starts + 10, starts + 1_990)
    guest_ts = host_ts + 1_000_000 + np.round(host_ts * 10 / 1e6).astype(np.int64)
    est = estimate_offset(_runs(starts.tolist(), 2_000), pl.DataFrame({"vcpu": [0] * 21, "ts": guest_ts}))
    assert isinstance(est, Estimate), est
    assert est.at_ns == (guest_ts[0] + guest_ts[-1]) // 2  # the middle of the guest's events
    assert est.n_fit == 21 and est.resolution_ns == 1
    _covers(est, -1_000_000, 10.0, 0, host_ts, guest_ts)
    assert est.uncertainty_ns <= 50 and est.drift_uncertainty_ppm <= 0.5 and est.span_uncertainty_ns <= 50
    assert est.to_dict()["drift_ppm"] == round(est.drift_ppm, 3) and 9.5 <= est.drift_ppm <= 10.5


def test_a_drift_the_events_do_not_show_is_not_assumed():
    """Random vCPU runs (start known to the ns), one guest event in each: with no drift the line
    has none (and a tight offset); at 0.2 ppm, 60 ns over the trace, the events show it."""
    import numpy as np

    from pvtrace.ingest.clock_estimate import Estimate, estimate_offset

    rng = np.random.default_rng(3)
    n = 30_000
    starts = np.cumsum(rng.integers(15_000, 25_000, size=n))
    runs = _runs(starts.tolist(), 10_000)
    host_ts = starts + rng.integers(0, 10_001, size=n)  # one guest event per run, anywhere in it
    offset = -987_654_321
    for ppm in (0.0, 0.2):
        drift = ((host_ts - host_ts[0]) * ppm / 1e6).astype(np.int64)
        guest_ts = host_ts - offset + drift
        est = estimate_offset(runs, pl.DataFrame({"vcpu": np.zeros(n, np.int64), "ts": guest_ts}))
        assert isinstance(est, Estimate), est
        _covers(est, offset, ppm, int(host_ts[0]), host_ts, guest_ts)
        if ppm:
            assert 0.1 < est.drift_ppm < 0.3
        else:
            assert est.drift_ppm == 0 and est.uncertainty_ns <= 50


def test_a_drift_is_found_on_a_long_trace_with_dense_runs():
    """20 s of runs every 100 us (1-50 us long) on 2 vCPUs, a guest event in every 20th, on a guest
    clock 3 ppm slow printed to the microsecond: 60 us of drift over the trace, more than the gaps
    between runs. Anchors spread over the trace disagree by that much, and a coarse slope cell
    widens the far events over every gap (every cell fits them all): the estimate failed. Anchors
    near the middle and the cells' events taken from near the middle outwards find the line."""
    import numpy as np

    from pvtrace.ingest.clock_estimate import Estimate, estimate_offset

    rng = np.random.default_rng(8)
    n, offset, ppm, res = 200_000, -5_000_000_000, -3.0, 1000
    starts = np.cumsum(rng.integers(50_000, 150_000, size=(2, n)), axis=1) + 10_000_000
    ends = starts + rng.integers(1_000, 50_000, size=(2, n))
    host_ts = (starts + rng.random((2, n)) * (ends - starts)).astype(np.int64)[:, ::20]
    guest_true = host_ts - offset + (host_ts - 10_000_000) * ppm / 1e6
    cut = lambda x: (np.floor(x / res) * res).astype(np.int64)  # noqa: E731
    runs = pl.DataFrame(
        {"vcpu": np.repeat([0, 1], n), "start": cut(starts).ravel(), "end": cut(ends).ravel()}
    )
    vcpu = np.repeat([0, 1], host_ts.shape[1])
    est = estimate_offset(runs, pl.DataFrame({"vcpu": vcpu, "ts": cut(guest_true).ravel()}))
    assert isinstance(est, Estimate), est
    _covers(est, offset, ppm, 10_000_000, host_ts.ravel(), guest_true.ravel())
    assert est.uncertainty_ns <= 1_000 and est.drift_uncertainty_ppm <= 0.1


def test_a_guest_trace_with_a_hole_in_the_middle_is_estimated():
    """Guest events only in the first and last tenth of 2 s (none near the middle, where the slope
    grid starts counting): the grid widens to reach them, and the line is found."""
    import numpy as np

    from pvtrace.ingest.clock_estimate import Estimate, estimate_offset

    rng = np.random.default_rng(4)
    n, offset, ppm = 20_000, -3_000_000_000, 2.0
    starts = np.cumsum(rng.integers(50_000, 150_000, size=(2, n)), axis=1) + 10_000_000
    ends = starts + rng.integers(1_000, 50_000, size=(2, n))
    host_ts = (starts + rng.random((2, n)) * (ends - starts)).astype(np.int64)
    t0, t1 = host_ts.min(), host_ts.max()
    keep = ((host_ts < t0 + (t1 - t0) // 10) | (host_ts > t1 - (t1 - t0) // 10)).ravel()
    guest_true = host_ts - offset + (host_ts - 10_000_000) * ppm / 1e6
    runs = pl.DataFrame({"vcpu": np.repeat([0, 1], n), "start": starts.ravel(), "end": ends.ravel()})
    guest = pl.DataFrame(
        {"vcpu": np.repeat([0, 1], n)[keep], "ts": np.floor(guest_true).astype(np.int64).ravel()[keep]}
    )
    est = estimate_offset(runs, guest)
    assert isinstance(est, Estimate), est
    _covers(est, offset, ppm, 10_000_000, host_ts.ravel()[keep], guest_true.ravel()[keep])


# derandomize: the same thirty draws every run (as the round-trip test's); hand-run sweeps of
# fresh draws search. The example is one a fresh draw in CI found: every event fits a line of
# slope 0 and also the true line (6 ppm), in another run for some events (one ends a few ns
# before the next starts), so the polygon of the first line's runs alone left out the truth.
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    offset=st.integers(1_000_000, 100_000_000_000).map(lambda x: -x),
    ppm=st.floats(-50, 50),
    resolution=st.sampled_from([1, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
@example(offset=-1_000_000, ppm=6.0, resolution=1, seed=21590)
@example(offset=-1_000_000, ppm=13.0, resolution=1, seed=21590)
def test_estimates_cover_random_offsets_and_drifts(offset, ppm, resolution, seed):
    """Synthetic vCPU runs (2 vCPUs, random lengths and gaps), one guest event inside each, on a guest
    clock with a random offset and drift, both sides printed to `resolution`: the estimate's
    offset, drift and span uncertainties cover the truth."""
    import numpy as np

    from pvtrace.ingest.clock_estimate import Estimate, estimate_offset

    rng = np.random.default_rng(seed)
    n = 300
    starts = np.cumsum(rng.integers(2_000, 200_000, size=(2, n)), axis=1) + 10_000_000
    ends = starts + rng.integers(1_000, 50_000, size=(2, n))
    host_ts = starts + (rng.random((2, n)) * (ends - starts)).astype(np.int64)
    guest_true = host_ts - offset + (host_ts - 10_000_000) * ppm / 1e6
    cut = lambda x: (np.floor(x / resolution) * resolution).astype(np.int64)  # noqa: E731
    runs = pl.DataFrame(
        {"vcpu": np.repeat([0, 1], n), "start": cut(starts).ravel(), "end": cut(ends).ravel()}
    )
    guest_ts = cut(guest_true).ravel()
    est = estimate_offset(runs, pl.DataFrame({"vcpu": np.repeat([0, 1], n), "ts": guest_ts}))
    assert isinstance(est, Estimate), est
    # the printed guest time lies up to one resolution before the true one: compare true host times
    # with the true guest times' line, then allow the print's cut
    _covers(est, offset, ppm, 10_000_000, host_ts.ravel(), guest_true.ravel())


def test_guest_files_of_several_vms_without_a_host_are_flagged(tmp_path):
    """Each guest is on its own clock: analyzed together, their window spans all of them, which the
    clock report says (one VM's file alone: no such warning)."""
    trace, _ = _run(10, (-7_000_000_000, -9_000_000_000))
    guests = _texts(write_rendered(trace, "ftrace", "guest", tmp_path / "g.txt"))
    assert len(guests) == 2
    both = load(guests).meta.clock
    assert "each on their own clock" in both["warning"]
    one = load(guests[:1], vm_name="vm0").meta.clock
    assert "warning" not in one


def test_a_drift_set_in_the_scenario_goes_through_the_side_file(tmp_path):
    """vm.clock_drift_ppm makes `generate` render drifting guest clocks and write the drift into
    the offsets side file (host = guest + offset_ns - drift_ppm * 1e-6 * guest), which ingest
    applies as given: perf text with nanoseconds, every guest lock event back on its true host time
    (the renderer floors the drift to the nanosecond; the line is rounded once more)."""
    import numpy as np

    from pvtrace.ingest.offsets_file import GivenClock, read_offsets
    from pvtrace.simulate.views import contended_acquire

    trace, _ = _run(3, drifts=(40.0, -25.5))
    paths = write_rendered(trace, "perf", "merged", tmp_path / "m.txt", ns=True)
    side = read_offsets(next(p for p in paths if p.name.endswith(OFFSETS_SUFFIX)))
    assert isinstance(side["vm0"], GivenClock) and abs(side["vm0"].drift_ppm - 40.0) < 0.01
    got = load(_texts(paths))
    clock = got.meta.clock
    assert clock["synchronized"] is True and "from m.txt.guest-offsets.csv" in clock["mode"]
    truth = trace.events.filter(pl.col("kind").is_in(["lock_contend", "lock_acquire"]))
    truth = truth.filter((pl.col("kind") == "lock_contend") | contended_acquire(truth))
    placed = got.events.filter((pl.col("origin") == "guest") & (pl.col("kind") != "other"))
    for vm, ppm in (("vm0", 40.0), ("vm1", -25.5)):
        assert clock["guest_drift"][vm] == {"drift_ppm": side[vm].drift_ppm, "at_guest_ns": 0}
        assert abs(side[vm].drift_ppm - ppm) < 0.01  # ppm of guest time: p / (1 + p)
        assert f"drifts {side[vm].drift_ppm:+.3f} ppm" in clock["guests"][vm]["mode"]
        true_ts = np.sort(truth.filter(pl.col("vm") == vm)["ts"].to_numpy())
        got_ts = np.sort(placed.filter(pl.col("vm").cast(pl.String) == vm)["ts"].to_numpy())
        assert true_ts.size == got_ts.size > 100
        assert np.abs(got_ts - true_ts).max() <= 2


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("vm,offset_ns\nvm0,12ab\n", 2, "offset_ns '12ab' is not an integer"),
        ("# note\nvm,offset_ns,drift_ppm\nvm0,5,1.5\nvm1,7,fast\n", 4, "drift_ppm 'fast' is not a number"),
        ("vm,drift_ppm\nvm0,1\n", 1, "needs the columns vm,offset_ns"),
        (None, None, "not a readable guest offsets CSV (is a directory)"),
    ],
)
def test_a_bad_offsets_side_file_names_its_line(tmp_path, text, line, why):
    from pvtrace.errors import FormatError
    from pvtrace.ingest.offsets_file import read_offsets

    side = tmp_path / "t.txt.guest-offsets.csv"
    side.mkdir() if text is None else side.write_text(text)
    with pytest.raises(FormatError) as err:
        read_offsets(side)
    assert why in str(err.value) and err.value.line == line, err.value


def test_a_drifting_guest_clock_is_estimated_and_applied_at_ingest(tmp_path):
    """Host and guest trace-cmd reports of a 60 ms run whose guest clocks run 60 ppm fast (vm0) and
    slow (vm1): 1.8 us off at the ends with one offset alone. The clock report gives each drift
    within its uncertainty, and ingest applies it: every guest lock event lands within the span
    uncertainty of its true host time (the sorted times differ by no more than the events moved),
    and none needs moving into a run."""
    import numpy as np

    from pvtrace.simulate.views import contended_acquire

    trace, _ = _run(11, (-7_000_000_000, -9_000_000_000))
    trace.meta.clock["guest_drift_ppm"] = {"vm0": 60.0, "vm1": -60.0}
    paths = write_rendered(trace, "trace-cmd", "host", tmp_path / "h.txt")
    paths += write_rendered(trace, "trace-cmd", "guest", tmp_path / "g.txt")
    got = load(_texts(paths))
    clock = got.meta.clock
    assert clock["synchronized"] is True and "guest_events_moved_into_runs" not in clock
    truth = trace.events.filter(pl.col("kind").is_in(["lock_contend", "lock_acquire"]))
    truth = truth.filter((pl.col("kind") == "lock_contend") | contended_acquire(truth))
    placed = got.events.filter((pl.col("origin") == "guest") & (pl.col("kind") != "other"))
    for vm, ppm in (("vm0", 60.0), ("vm1", -60.0)):
        est = clock["guests"][vm]["estimate"]
        assert abs(est["drift_ppm"] - ppm) <= est["drift_uncertainty_ppm"] < abs(ppm), est
        assert clock["guest_drift"][vm] == {"drift_ppm": est["drift_ppm"], "at_guest_ns": est["at_guest_ns"]}
        assert "drifts" in clock["guests"][vm]["mode"]
        true_ts = np.sort(truth.filter(pl.col("vm") == vm)["ts"].to_numpy())
        got_ts = np.sort(placed.filter(pl.col("vm").cast(pl.String) == vm)["ts"].to_numpy())
        assert true_ts.size == got_ts.size > 1000
        assert np.abs(got_ts - true_ts).max() <= est["span_uncertainty_ns"]


def test_an_offset_given_for_one_vm_keeps_the_side_file_for_the_others(tmp_path):
    """--guest-offset vm1=N beside generate's side file: vm1 takes N, vm0 the file's line (it was
    estimated, and said to be, as if no offset were given: new-user audit)."""
    trace, _ = _run(10, (-7_000_000_000, -9_000_000_000))
    paths = write_rendered(trace, "ftrace", "merged", tmp_path / "m.txt")
    side = next(p for p in paths if p.name.endswith(OFFSETS_SUFFIX))
    clock = load(_texts(paths), guest_offset_ns={"vm1": -9_000_000_000}).meta.clock
    assert clock["guest_offset_ns"] == {"vm0": -7_000_000_000, "vm1": -9_000_000_000}
    assert clock["guests"]["vm0"]["mode"] == f"from {side.name}"
    assert clock["guests"]["vm1"]["mode"] == "given by the user"
    assert clock["synchronized"] is True and clock["offsets_file"] == str(side)
    # one number for every guest leaves the file out
    every = load(_texts(paths), guest_offset_ns=-7_000_000_000).meta.clock
    assert "offsets_file" not in every and every["guests"]["vm1"]["synchronized"] is False
