"""Each chart function: a chart from aggregated data, or a clear reason when there is nothing to draw."""

from __future__ import annotations

import polars as pl
import pytest
from report_fakes import fake_analysis, fake_trace

from pvtrace.analyze.result import Analysis
from pvtrace.report.aggregate import MAX_LAYER_ROWS
from pvtrace.report.exits import chart_kick_latency, chart_pause_exits, exit_reasons_figure
from pvtrace.report.facts import clock_text, facts_figure, headline_figure, problems_figure
from pvtrace.report.incidents import chart_convoy_lengths, chart_incident_durations
from pvtrace.report.tables import limits_figure
from pvtrace.report.timeline import chart_timeline
from pvtrace.report.trace_page import all_figures, report_sections
from pvtrace.report.waits import chart_wait_times
from pvtrace.report.waste import chart_waste_by_lock, chart_waste_by_vm, top_locks
from pvtrace.report.window import Window, default_window


def datasets(fig) -> dict[str, list]:
    return fig.spec().get("datasets", {})


def test_every_report_figure_has_a_chart_or_a_table_on_a_full_analysis(full_trace, full_analysis):
    figs = all_figures(report_sections(full_trace, full_analysis))
    names = [f.name for f in figs]
    assert len(names) == len(set(names))
    empty = [f.name for f in figs if f.is_empty]
    assert empty == []  # every metric is available from a full view: no limits box either
    assert "limits" not in names
    for f in figs:
        if f.chart is not None:
            assert datasets(f), f.name


def test_guest_only_analysis_says_why_incidents_are_missing(guest_trace, guest_analysis):
    fig = chart_incident_durations(guest_analysis)
    assert fig.chart is None
    assert "no LHP incidents: LHP incidents unavailable" in fig.note
    assert "no LWP incidents: LWP incidents unavailable" in fig.note
    assert "sched:sched_switch" in fig.note
    limits = limits_figure(guest_analysis, [fig])
    assert (
        "LWP incidents" in limits.html
        and "LHP and LWP incident durations" in limits.html
        and "record" in limits.html
    )
    headline = headline_figure(guest_analysis).table
    assert "n_lhp" not in headline["key"].to_list()  # only what the trace gives; the rest is in the box
    assert "unavailable" not in headline["value"].to_list()


def test_empty_analysis_gives_reasons_not_empty_plots():
    a = Analysis()
    for fig in (
        chart_waste_by_lock(a),
        chart_waste_by_vm(a),
        chart_wait_times(a),
        chart_incident_durations(a),
        chart_convoy_lengths(a),
        chart_pause_exits(a, 0, 1000),
        chart_kick_latency(a),
        exit_reasons_figure(a),
        chart_timeline(a, Window(0, 1000, "test"), 0),
    ):
        assert fig.is_empty and fig.note, fig.name
    assert "no pause exits" in chart_pause_exits(a, 0, 1000).note
    assert "no pv kicks" in chart_kick_latency(a).note


def test_timeline_default_window_shows_the_worst_incident(full_analysis):
    w = default_window(full_analysis, 0, 50_000_000)
    fig = chart_timeline(full_analysis, w, 0)
    incidents = [rows for rows in datasets(fig).values() if rows and "LHP" in str(rows[0].get("what", ""))]
    worst = pl.concat(
        [full_analysis.table("lhp_incidents"), full_analysis.table("lwp_incidents")], how="diagonal"
    )
    worst = worst.sort("waste_ns", descending=True).row(0, named=True)
    assert w.start <= worst["start"] and worst["end"] <= w.end
    assert fig.caption.startswith("Window: around the worst incident")
    assert incidents or any("LWP" in str(r[0].get("what")) for r in datasets(fig).values() if r)


def test_timeline_of_a_big_analysis_is_coarsened_under_the_row_cap():
    a = fake_analysis(n_vms=2, n_vcpus=4, span_ns=2_000_000_000, n_waits=60_000, n_states_per_lane=8_000)
    fig = chart_timeline(a, Window(0, 2_000_000_000, "whole"), 0)
    sizes = [len(rows) for rows in datasets(fig).values()]
    assert max(sizes) <= MAX_LAYER_ROWS
    assert "coarsened" in fig.note
    # Coarsened states still tile each lane over the window.
    states = next(
        rows
        for rows in datasets(fig).values()
        if rows and rows[0].get("what") in ("running", "preempted", "halted")
    )
    df = pl.DataFrame(states)
    for lane in df.partition_by("lane"):
        lane = lane.sort("start_ms")
        assert lane["start_ms"][0] == 0 and lane["end_ms"][-1] == 2000


def test_timeline_caps_lanes():
    a = fake_analysis(n_vms=3, n_vcpus=20, n_waits=200, n_states_per_lane=3)
    fig = chart_timeline(a, Window(0, 50_000_000, "whole"), 0)
    lanes = {r["lane"] for rows in datasets(fig).values() for r in rows}
    assert len(lanes) == 40
    assert "showing 40 of 60 vCPUs" in fig.note


def test_top_locks_keeps_the_biggest_and_sums_the_rest(full_analysis):
    table = full_analysis.table("waste_by_lock")
    top = top_locks(table, n=2)
    assert top.height == 3
    assert top["lock_label"][-1] == f"other {table.height - 2} locks"
    assert top["spin_ns"].sum() == table["spin_ns"].sum()
    assert top["spin_ns"][0] == table["spin_ns"].max()


def test_waste_by_vm_reports_share_of_running_time(full_analysis):
    fig = chart_waste_by_vm(full_analysis)
    by_vm = full_analysis.table("waste_by_vm")
    share = 100 * (by_vm["waste_lhp_ns"].sum() + by_vm["waste_lwp_ns"].sum()) / by_vm["running_ns"].sum()
    assert f"{share:.2f}% of all vCPU running time" in fig.caption
    parts = {r["part"] for rows in datasets(fig).values() for r in rows}
    assert parts == {"useful", "LHP", "LWP, next owner preempted", "LWP, next owner halted", "unattributed"}
    ms = sum(r["ms"] for rows in datasets(fig).values() for r in rows)
    assert ms == pytest.approx(by_vm["spin_ns"].sum() / 1e6)


def test_waste_parts_skip_unavailable_columns():
    a = fake_analysis()
    by_vm = a.table("waste_by_vm").with_columns(
        pl.lit(None, pl.Int64).alias(c)
        for c in ("waste_lwp_ns", "waste_lwp_preempted_ns", "waste_lwp_halted_ns")
    )
    fig = chart_waste_by_vm(Analysis(tables={"waste_by_vm": by_vm}, summary=a.summary))
    parts = {r["part"] for rows in datasets(fig).values() for r in rows}
    assert not any(p.startswith("LWP") for p in parts)
    assert "Not shown: LWP spin" in fig.note


def test_histograms_count_every_item(full_analysis):
    waits = full_analysis.table("waits")
    fig = chart_wait_times(full_analysis)
    # shares per lock sum to 100
    rows = pl.DataFrame(next(iter(datasets(fig).values())))
    sums = rows.group_by("lock_label").agg(pl.col("share_pct").sum())
    assert (sums["share_pct"] - 100).abs().max() < 1e-6
    assert rows["count"].sum() == waits.filter(pl.col("dur") > 0).height
    kicks = chart_kick_latency(full_analysis)
    krows = next(iter(datasets(kicks).values()))
    assert sum(r["count"] for r in krows) == full_analysis.table("kicks")["latency_ns"].drop_nulls().len()
    assert "did not run again" in kicks.note


def test_pause_exits_counts_match(full_analysis):
    fig = chart_pause_exits(full_analysis, 0, 50_000_000)
    sets = list(datasets(fig).values())
    exits = next(rows for rows in sets if rows and "n_exits" in rows[0])
    assert sum(r["n_exits"] for r in exits) == full_analysis.table("pause_exits").height
    pre = next(rows for rows in sets if rows and "n_preempted" in rows[0])
    assert max(r["n_preempted"] for r in pre) <= 4  # never more than a VM's vCPUs
    n_sib = full_analysis.table("pause_exits").filter(pl.col("n_siblings_preempted") > 0).height
    assert f"{n_sib:,} (" in fig.caption


def test_convoy_lengths_bin_when_spread():
    a = fake_analysis(n_incidents=50)
    convoys = a.table("convoys").with_columns((pl.int_range(pl.len()) * 7 + 2).alias("length"))
    fig = chart_convoy_lengths(Analysis(tables={"convoys": convoys}))
    rows = next(iter(datasets(fig).values()))
    assert sum(r["count"] for r in rows) == convoys.height
    assert any("–" in r["length_bin"] for r in rows)


def test_facts_and_problems(full_trace, full_analysis):
    facts = dict(facts_figure(full_trace, full_analysis).table.iter_rows())
    assert facts["format"] == "sim"
    assert facts["span"].startswith("50 ms")
    assert facts["events"] == "1,000"
    assert facts["VMs"] == "vm0, vm1"
    problems = problems_figure(full_trace).table
    assert problems["where / what"].to_list() == ["malformed_lines", "samples"]
    trace = fake_trace(full_analysis)
    trace.meta.problems = {}
    assert problems_figure(trace).note == "none reported"


def test_exit_reason_table_is_sorted_and_formatted(full_analysis):
    fig = exit_reasons_figure(full_analysis)
    assert fig.table["reason"][0] in ("PAUSE", "EXTERNAL_INTERRUPT")
    assert fig.table["avg"][0] == "1.5 µs"


def test_counts_in_captions_are_plural_only_when_more_than_one():
    one = pl.DataFrame(
        {
            "reason": ["HLT"],
            "count": [1],
            "share_pct": [100.0],
            "total_ns": [5],
            "min_ns": [5],
            "avg_ns": [5],
            "max_ns": [5],
        }
    )
    fig = exit_reasons_figure(Analysis(tables={"exit_reasons": one}))
    assert fig.caption.startswith("1 exit of 1 reason;")


def test_wait_distribution_weights_locks_by_their_waits(full_analysis):
    fig = chart_wait_times(full_analysis)
    assert fig.spec()["encoding"]["y"]["field"] == "count"  # not a per-lock share: one wait stays small


def test_host_only_spin_estimate_is_not_contradicted():
    from pvtrace.summary import Summary

    a = Analysis(summary=Summary(totals={"spin_ns": 593_000_000}, fidelity={"spin_ns": "host-only"}))
    for fig in (chart_waste_by_lock(a), chart_waste_by_vm(a)):
        assert "no lock spin" not in fig.note and "estimated from PAUSE exits" in fig.note


def test_a_partial_total_is_flagged_in_the_tables_and_charts():
    """A total that leaves part out says so wherever the page shows it (finding s8-4: useful spin
    drawn green and listed plain while it still holds the LWP waste)."""
    a = fake_analysis()
    why = "includes the LWP waste it cannot separate"
    a.summary.extra["partial"] = {
        "spin_useful_ns": [{"missing": why}],
        "n_convoys": [{"missing": "convoys on 2 lock(s) of undecided kind (5 not counted)"}],
    }
    rows = dict(headline_figure(a).table.select("key", "value").iter_rows())
    assert rows["spin_useful_ns"].endswith(f"(partial: {why})")
    assert rows["n_convoys"].endswith("(5 not counted))")
    for fig in (chart_waste_by_vm(a), chart_waste_by_lock(a)):
        parts = {r["part"] for rows in datasets(fig).values() for r in rows if "part" in r}
        assert f"useful (partial: {why})" in parts and "useful" not in parts
    assert "Partial: convoys on 2 lock(s)" in chart_convoy_lengths(a).note


def test_the_limits_box_gives_each_partial_reason_with_its_fix():
    """The page named a partial total's reason but its fix (`--lock-kind fifo`) was in the JSON
    alone: the box of what the trace cannot tell lists both, with the metrics it touches."""
    from pvtrace.report.tables import limits_figure
    from pvtrace.summary import Summary

    part = {"missing": "LWP on 2 lock(s) of undecided kind", "fix": "pass --lock-kind fifo"}
    s = Summary(totals={"waste_lwp_ns": 5}, extra={"partial": {"waste_lwp_ns": [part], "spin_waste": [part]}})
    box = limits_figure(Analysis(summary=s), []).html
    assert "Metrics given in part" in box
    assert (
        "spin wasted on LWP; spin waste (LHP + LWP)</b>: LWP on 2 lock(s) of undecided kind; fix: pass --lock-kind fifo"
        in box
    )


def test_the_clock_fact_is_words_not_a_dict():
    clock = {
        "mode": "one timeline with the host",
        "guest_offset_ns": {"vm0": 0},
        "guests": {
            "vm0": {"estimate": {"offset_ns": 10_635, "uncertainty_ns": 28_311, "n_guest_events": 526}}
        },
    }
    assert clock_text(clock) == (
        "one timeline with the host; vm0: guest offset 0 ns (estimated 10.6 µs ± 28.3 µs from 526 guest events)"
    )


def test_convoy_lengths_come_in_one_order():
    """Two report pages of one trace differed: the convoy chart's rows of one length came in hash
    order (a cause's row first on one run, another's on the next)."""
    from pvtrace.report.incidents import convoy_lengths

    convoys = pl.DataFrame(
        {"length": [2, 2, 2, 3, 3, 2] * 50, "cause": ["lhp", None, "lwp", "lwp", "lhp", None] * 50}
    )
    for seed in range(20):
        counts, _ = convoy_lengths(convoys.sample(fraction=1.0, shuffle=True, seed=seed))
        assert counts.select("length_bin", "cause").rows() == [
            ("2", "lhp"),
            ("2", "lwp"),
            ("2", "none"),
            ("3", "lhp"),
            ("3", "lwp"),
        ]


def test_spin_part_legend_shows_whole_partial_labels(full_analysis):
    # a partial part's label is a sentence; in a row of the legend it was cut to 'useful (partial: ...'
    legend = chart_waste_by_vm(full_analysis).chart.to_dict()["encoding"]["color"]["legend"]
    assert legend["labelLimit"] == 0 and legend["direction"] == "vertical"


def test_wait_quantiles_below_the_clock_resolution_are_not_zero():
    """A real guest trace (1 µs clock, most waits within one microsecond) was captioned 'All waits:
    median 0 ns', a precision the trace does not have; its lock table says `< 1 µs`."""
    from pvtrace.analyze.result import Analysis

    durs = [0] * 7 + [1000, 2000, 171_000]
    waits = pl.DataFrame(
        {
            "vm": ["guest"] * 10,
            "lock": [0xDC1B123A] * 10,
            "start": [i * 10_000 for i in range(10)],
            "end": [i * 10_000 + d for i, d in enumerate(durs)],
            "dur": durs,
        },
        schema_overrides={"lock": pl.UInt64},
    )
    fig = chart_wait_times(Analysis(tables={"waits": waits}))
    assert "All waits: median < 1 µs, p90 2 µs, p99 171 µs, max 171 µs." in fig.caption


def test_the_metrics_table_explains_every_fidelity_level(guest_analysis):
    """Its caption named exact, inferred, host-only and guest-only, while a guest trace with ticks
    fills the table with `guest-inferred`."""
    from pvtrace.summary import FIDELITY_LEVELS

    caption = headline_figure(guest_analysis).caption
    assert all(
        f"{level} (" in caption or f"{level}," in caption or f"{level}." in caption
        for level in FIDELITY_LEVELS
    )


def test_the_page_says_what_the_terminal_says_of_kinds_parts_and_limits(tmp_path):
    """Host + guest text with vm1's guest file left out (new-user audit, session 20): the VMs table
    gives the lock kinds the analysis found (it said 'unknown' beside the terminal's '11 fifo'),
    every key number that leaves vm1 out is flagged, the waste share is of the measured VMs' running,
    and the limits box calls the harmless LHP incidents what they are (it listed 'LHP incidents'
    as missing beside a count of harmful ones)."""
    from pvtrace.analyze import analyze
    from pvtrace.ingest.load import load
    from pvtrace.report.facts import key_numbers_figure, vms_figure
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 30_000_000}), seed=3)
    write_rendered(trace, "ftrace", "merged", tmp_path / "h.txt")
    loaded = load([tmp_path / "h.txt", tmp_path / "h-vm0.txt"])
    a = analyze(loaded)
    kinds = dict(vms_figure(loaded, a).table.select("VM", "lock kind").iter_rows())
    found = a.table("lock_kinds").filter(pl.col("vm") == "vm0")["kind"].value_counts(sort=True)
    assert kinds["vm0"] == ", ".join(f"{n} {k}" for k, n in found.iter_rows()) + " (from the trace)"
    rows = dict(key_numbers_figure(a).table.iter_rows())
    waste = next(k for k in rows if k.startswith("spin waste"))  # (LHP only while the kinds are undecided)
    for label in (
        "LHP incidents",
        "LWP incidents",
        "contended acquisitions",
        "spin (waiting while running)",
        waste,
    ):
        if label in rows or label != "LWP incidents":
            assert "vm1's waits: no guest trace of vm1 is given" in rows[label], (label, rows[label])
    assert "of the measured VMs' vCPU running time" in (chart_waste_by_vm(a).note or "") + str(
        chart_waste_by_vm(a).caption
    )
    box = limits_figure(a, []).html
    assert "harmless LHP incidents (no waiter)" in box and "<b>LHP incidents</b>" not in box
