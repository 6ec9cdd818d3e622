"""Lost host events injected into simulated runs, against the simulator's truth (issue 17's acceptance):
no incident where its holder's state is unknown, and every metric outside the excluded span equals the
truth there.

A run's full view is blinded the way a host tracer's full ring buffer blinds it: the host records of
one pCPU (vCPU scheduling, exits, kicks, yields) are removed for a stretch and a `lost_events` marker
stands at the next record of that pCPU, as ingest reads `CPU:p [LOST n EVENTS]`. The analyzer then
makes the vCPUs that could have run there unknown from the window start to their next state change;
the union of those stretches is the excluded span E. Outside E (before and after it) the analysis
must be the truth exactly: spin time per class and wait time per waiter state clipped to each side
(simulate/truth_window.cut_truth on both traces: the same clipping, so any difference is the
analysis's), PAUSE exits, kicks and finished waits, and the incidents that lie wholly on one side.
Not compared: the counts of incidents, convoys and LWP episodes that straddle E's edges (in the truth
they are one, in the blinded trace they are cut or unknown), which is the point of excluding E.
The text path (a `CPU:1 [LOST n EVENTS]` line in rendered ftrace) is covered by
tests/analyze/test_host_lost_windows.py and tests/ingest/test_lost_spellings.py; its timestamps are
microseconds, so it cannot equal the ns truth exactly.
"""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.analyze import analyze
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario
from pvtrace.simulate.truth_window import cut_truth
from pvtrace.simulate.views import HOST_KINDS
from pvtrace.trace import Trace

TIME_KEYS = (
    "spin_ns",
    "spin_useful_ns",
    "waste_lhp_ns",
    "waste_lwp_preempted_ns",
    "waste_lwp_halted_ns",
    "spin_unattributed_ns",
    "wait_halted_ns",
    "wait_preempted_ns",
    "n_contended",
    "n_pause_exits",
    "n_kicks",
)
INCIDENTS = {"lhp_incidents": "holder", "lwp_incidents": "next_owner"}  # table -> the vCPU not running


def _blind(trace: Trace, pcpu: int, start: int, end: int) -> Trace:
    """trace without pcpu's host records in [start, end), and the marker a tracer prints for them."""
    ev = trace.events.sort("ts", "seq")
    host = pl.col("kind").cast(pl.String).is_in(HOST_KINDS) & (pl.col("pcpu") == pcpu)
    lost = host & pl.col("ts").is_between(start, end, closed="left")
    n_lost = ev.filter(lost).height
    kept = ev.filter(~lost).with_row_index("_i")
    after = kept.filter(host & (pl.col("ts") >= end))
    at = int(after["_i"][0]) if after.height else kept.height
    marker = pl.DataFrame(
        {
            "ts": [int(after["ts"][0]) if after.height else end],
            "kind": ["lost_events"],
            "pcpu": [pcpu],
            "value": [n_lost],
            "origin": ["host"],
        }
    )
    rows = pl.concat([kept.slice(0, at), marker, kept.slice(at)], how="diagonal_relaxed").drop("_i")
    rows = rows.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))
    return Trace(events=rows.select(ev.columns).cast(dict(ev.schema)), meta=trace.meta)


def _excluded(a) -> tuple[int, int]:
    """E: the lost window and every stretch it makes unknown."""
    spans = pl.concat(
        [
            a.table("lost_windows").select("start", "end"),
            a.table("vcpu_states").filter(pl.col("state") == "unknown").select("start", "end"),
        ]
    )
    return int(spans["start"].min()), int(spans["end"].max())


def _sides(incidents: pl.DataFrame, e0: int, e1: int) -> pl.DataFrame:
    return incidents.filter((pl.col("end") <= e0) | (pl.col("start") >= e1)).sort("vm", "lock", "start")


def _busy(algorithm: str, vms: int) -> Scenario:
    """20 ms of two pCPUs with short host slices: every pCPU switches vCPUs every few hundred us,
    so a lost stretch hides runs, preemptions and exits (a preset's long slices hide a handful)."""
    return Scenario().replace(
        host={"pcpus": 2, "slice_ns": 200_000},
        vm={"count": vms, "vcpus": 3, "locks": 2, "compute_ns": 15_000, "hold_ns": 2_000},
        lock={"algorithm": algorithm, "spin_threshold_ns": 3_000},
        hypervisor={"ple": False},
        run={"duration_ns": 20_000_000},
    )


@pytest.mark.parametrize(
    ("algorithm", "vms", "seed"),
    [("ticket", 2, 1), ("ticket", 2, 2), ("pv-qspinlock", 2, 3), ("ticket", 1, 4)],
)
def test_outside_the_excluded_span_every_metric_is_the_truth(algorithm, vms, seed):
    full, truth = simulate_trace(_busy(algorithm, vms), seed=seed)
    t_end = truth.t_end
    blind = _blind(full, pcpu=1, start=t_end * 4 // 10, end=t_end * 5 // 10)
    a, whole = analyze(blind), analyze(full)
    assert a.table("lost_windows").height == 1
    e0, e1 = _excluded(a)
    assert 0 < e0 < e1 < t_end
    for lo, hi in ((0, e0), (e1, t_end)):
        mine, theirs = cut_truth(blind, lo, hi).totals, cut_truth(full, lo, hi).totals
        assert {k: mine[k] for k in TIME_KEYS} == {k: theirs[k] for k in TIME_KEYS}, (lo, hi)
    for name in INCIDENTS:
        got, want = _sides(a.table(name), e0, e1), _sides(whole.table(name), e0, e1)
        assert got.equals(want.select(got.columns)), f"{name} outside the excluded span:\n{got}\n{want}"
    # nothing is counted where it cannot be known: no incident starts while its holder's (LHP) or
    # next owner's (LWP) state is unknown (one that started before may run into the stretch: its
    # end is the guest's acquisition, its waste there is excluded)
    unknown = a.table("vcpu_states").filter(pl.col("state") == "unknown")
    for name, holder in INCIDENTS.items():
        inc = a.table(name)
        born_blind = inc.join(
            unknown.select(
                "vm", pl.col("vcpu").alias(holder), pl.col("start").alias("u0"), pl.col("end").alias("u1")
            ),
            on=["vm", holder],
        ).filter(pl.col("start").is_between(pl.col("u0"), pl.col("u1"), closed="left"))
        assert born_blind.height == 0, f"{name} inside an unknown stretch:\n{born_blind}"
    # and none is invented: every incident of the blinded trace is one of the truth's (it may end
    # earlier or waste less, cut by the unknown stretch)
    for name, holder in INCIDENTS.items():
        key = ["vm", "lock", holder, "start"]
        invented = a.table(name).join(whole.table(name), on=key, how="anti")
        assert invented.height == 0, f"{name} not in the truth:\n{invented}"
    # and the injection did blind something that mattered
    assert whole.summary.totals != a.summary.totals
