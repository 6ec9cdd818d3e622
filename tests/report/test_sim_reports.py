"""Reports of real analyses: a simulator run seen whole, and as host, guest and merged tracers see it."""

from __future__ import annotations

import pytest

from pvtrace.report import write_report
from pvtrace.report.trace_page import all_figures, report_sections


def figures(trace, analysis) -> dict:
    return {f.name: f for f in all_figures(report_sections(trace, analysis))}


def test_full_view_has_every_chart(sim_run):
    trace, analysis = sim_run
    figs = figures(trace, analysis)
    for name in (
        "timeline",
        "waste-by-vm",
        "waste-by-lock",
        "wait-times",
        "incident-durations",
        "convoy-lengths",
    ):
        assert figs[name].chart is not None, (name, figs[name].note)
    assert figs["timeline"].caption.startswith("Window: around the worst incident")
    # lhp-demo has PLE off and plain ticket locks: those figures say so instead of plotting nothing.
    assert "no pause exits" in figs["pause-exits"].note
    assert "no pv kicks" in figs["kick-latency"].note


def test_guest_view_says_what_it_cannot_know(sim_views):
    trace, analysis = sim_views["guest"]
    figs = figures(trace, analysis)
    assert figs["wait-times"].chart is not None  # waits are what a guest sees
    # what the trace cannot give is one box at the end, not a grey box per figure
    assert "waste-by-vm" not in figs and "incident-durations" not in figs and "incident-table" not in figs
    box = figs["limits"].html
    assert "Spin waste per VM" in box and "LHP and LWP incident durations" in box and "LHP incidents" in box
    assert box.count("sudo pvtrace record --host") == 1
    assert list(figs)[-1] == "limits"
    assert not [f.name for f in figs.values() if f.is_empty and "unavailable" in f.note]


def test_host_view_has_states_but_no_locks(sim_views):
    trace, analysis = sim_views["host"]
    figs = figures(trace, analysis)
    assert figs["timeline"].chart is not None
    assert "waste-by-lock" not in figs and "wait-times" not in figs
    assert "Spin waste per lock" in figs["limits"].html


@pytest.mark.parametrize("view", ["host", "guest", "merged"])
def test_every_view_writes_a_page(tmp_path, sim_views, view):
    trace, analysis = sim_views[view]
    text = write_report(trace, analysis, tmp_path / f"{view}.html").read_text(encoding="utf-8")
    assert f"({view} view)" in text


def test_key_numbers_match_the_summary(sim_run):
    trace, analysis = sim_run
    rows = dict(figures(trace, analysis)["key-numbers"].table.iter_rows())
    t = analysis.summary.totals
    states = analysis.table("vcpu_states")
    running = states.filter(states["state"] == "running")["dur"].sum()
    share = 100 * (t["waste_lhp_ns"] + t["waste_lwp_ns"]) / running
    assert f"{share:.2f}% of vCPU running time" in rows["spin waste (LHP + LWP)"]
    assert rows["LHP incidents"].startswith(f"{t['n_lhp']} ({t['n_lhp_harmful']} harmful")
    assert rows["convoys"] == f"{t['n_convoys']} (longest {t['convoy_len_max']} hand-offs)"


def test_key_numbers_of_a_guest_view_show_only_what_it_has(sim_views):
    trace, analysis = sim_views["guest"]
    rows = dict(figures(trace, analysis)["key-numbers"].table.iter_rows())
    assert "spin waste (LHP + LWP)" not in rows and "LHP incidents" not in rows
    assert not any("unavailable" in v for v in rows.values())
    assert rows["contended acquisitions"].startswith(str(analysis.summary.totals["n_contended"]))


def test_key_numbers_say_what_a_partial_figure_leaves_out(sim_run):
    """The page says what the terminal says when LWP or convoys miss locks of undecided kind."""
    import copy

    trace, analysis = sim_run
    partial = copy.deepcopy(analysis)
    missing = {"missing": "LWP on 2 lock(s) of undecided kind"}
    partial.summary.extra["partial"] = {"spin_waste": [missing], "n_convoys": [missing]}
    rows = dict(figures(trace, partial)["key-numbers"].table.iter_rows())
    assert rows["spin waste (LHP + LWP)"].endswith("(partial: LWP on 2 lock(s) of undecided kind)")
    assert "partial: LWP on 2 lock(s)" in rows["convoys"]
