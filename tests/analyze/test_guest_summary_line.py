"""The guest-inferred level's summary line and partial lines (pvtrace/analyze/guest_summary.py)."""

from __future__ import annotations

from pathlib import Path

from pvtrace.analyze import analyze
from pvtrace.analyze.guest_steal import INCIDENT_KEYS, SPIN_KEYS
from pvtrace.analyze.guest_summary import partial_groups, preemption_line
from pvtrace.ingest.load import load
from pvtrace.report.facts import facts_figure

MS = 1_000_000


def _found(**kw) -> dict:
    """The Quick start sample before its re-capture: one 4.69 ms interval (one tick missed at HZ=250)
    against one 10 ms steal unit on one of two vCPUs."""
    g = {
        "hz": 250,
        "tick_ns": 4 * MS,
        "n_intervals": 1,
        "not_running_ns": 4_690_000,
        "not_running_lo_ns": 2_690_000,
        "not_running_hi_ns": 6_680_000,
        "placed_ns": 0,
        "preempted_ns": 4_690_000,
        "steal_ns": 10 * MS,
        "steal_unit_ns": 10 * MS,
        "steal_resolution_ns": 20 * MS,
        "steal_outside_ns": 5_310_000,
    }
    return g | kw


def test_one_steal_unit_and_a_placed_interval_agree():
    """Finding s10-user: the line said the 10 ms of steal were 100% 'not placeable' next to the
    4.69 ms interval it had placed; the steal is known to a unit per vCPU and the interval holds it."""
    line = preemption_line(_found())
    assert "100%" not in line and "not placeable" not in line
    assert "1 not-running interval, 4.69 ms (2.69 ms-6.68 ms)" in line
    assert "none in intervals of two ticks (8 ms) or more" in line
    assert "steal 10 ms (0-30 ms: counted in 10 ms units per vCPU), which the interval accounts for" in line


def test_steal_beyond_its_resolution_outside_every_interval_is_named():
    line = preemption_line(
        _found(n_intervals=3, placed_ns=3 * MS, steal_ns=120 * MS, steal_outside_ns=60 * MS)
    )
    assert "3 ms in intervals of two ticks (8 ms) or more" in line
    assert "steal 120 ms (100 ms-140 ms" in line
    assert line.endswith("60 ms of it (50%) in no interval: stops that missed no tick")


def test_no_interval_and_no_steal_samples():
    line = preemption_line(_found(n_intervals=0, steal_ns=None, preempted_ns=0))
    assert "no not-running interval" in line and line.endswith("; no steal samples")


def test_a_reason_shared_by_spin_and_incidents_is_printed_once():
    why, other = "too coarse", "pv unknown"
    x = {
        "partial": {k: [{"missing": why}] for k in (*SPIN_KEYS, *INCIDENT_KEYS)}
        | {"spin_ns": [{"missing": other}, {"missing": why}]},
        "guest_preemption": {"partial_reasons": sorted([why, other])},
    }
    assert partial_groups(x) == {other: "spin", why: "spin, incidents"}


def test_a_hand_built_trace_gives_the_fields_the_line_reads():
    from tests.analyze.test_guest_preemption import lhp_case

    g = analyze(lhp_case()).summary.extra["guest_preemption"]
    assert g["placed_ns"] == g["not_running_ns"] > 0  # one stop of 3.5 ms, ticks every 1 ms
    assert g["steal_resolution_ns"] == 2 * MS and g["steal_outside_ns"] == 0
    assert "which the interval accounts for" in preemption_line(g)


def test_the_report_page_gives_the_line_the_terminal_gives():
    """The guest-inferred level's main finding was only on the terminal (new-user audit: the page
    of the Quick start sample had no word of its not-running intervals or steal)."""
    sample = Path(__file__).resolve().parents[2] / "sample-traces" / "guest-ticks.txt.xz"
    trace = load([sample])
    a = analyze(trace)
    rows = dict(facts_figure(trace, a).table.iter_rows())
    # its event count is the trace's, as ingest and the page give it (the states it infers are not events read)
    assert a.summary.extra["n_events"] == trace.events.height
    assert rows["vCPU preemption"] == preemption_line(a.summary.extra["guest_preemption"])
    assert "not-running interval" in rows["vCPU preemption"]
