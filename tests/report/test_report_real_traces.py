"""Reports of real captured traces (../shared/real-traces; skipped when absent)."""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load
from pvtrace.report.trace_page import all_figures, report_sections


@pytest.fixture(scope="module")
def lossy_guest(real_traces):
    trace = load([real_traces / "local" / "guest-pvqspinlock-futex-lossy-tracepipe.txt.xz"])
    return trace, analyze(trace)


def test_lossy_guest_trace_report(lossy_guest):
    trace, analysis = lossy_guest
    figs = {f.name: f for f in all_figures(report_sections(trace, analysis))}
    waits = analysis.table("waits")
    assert figs["wait-times"].chart is not None
    zero = waits.filter(waits["dur"] == 0).height
    assert (
        f"{zero:,} zero-length waits (below the trace's clock resolution) are not" in figs["wait-times"].note
    )
    facts = dict(figs["facts"].table.iter_rows())
    n_lost = analysis.table("lost_windows")["n_lost"].sum()
    assert facts["lost events"].startswith(
        f"{analysis.table('lost_windows').height} windows, {n_lost:,} events lost"
    )
    assert "unavailable" not in " ".join(figs["key-numbers"].table["value"].to_list())
    assert "incident-durations" not in figs and "LHP and LWP incident durations" in figs["limits"].html


def test_host_snippet_report(real_traces):
    trace = load([real_traces / "public" / "ftrace-5flag_kvm-host-L1-nested-vmx_lkml-2023-03-30.txt"])
    analysis = analyze(trace)
    figs = {f.name: f for f in all_figures(report_sections(trace, analysis))}
    exits = trace.events.filter(pl.col("kind") == "vm_exit").group_by("reason").len()
    expected = {str(r): f"{n:,}" for r, n in exits.iter_rows()}
    shown = dict(figs["exit-reasons"].table.select("reason", "exits").iter_rows())
    assert shown == expected
    # The exit with no entry after it has no time in exit: shown as n/a, not 0.
    assert dict(figs["exit-reasons"].table.select("reason", "avg").iter_rows())["TRIPLE_FAULT"] == "n/a"
    assert "waste-by-lock" not in figs and "Spin waste per lock" in figs["limits"].html
