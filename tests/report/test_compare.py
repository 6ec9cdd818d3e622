"""pvtrace compare: headline metrics with deltas, and the overlaid page."""

from __future__ import annotations

import json

import polars as pl
import pytest
from report_fakes import fake_analysis, fake_trace
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.report.compare import compare_metrics, format_comparison, write_compare
from pvtrace.summary import Summary


@pytest.fixture(scope="module")
def runs():
    a, b = fake_analysis(seed=1), fake_analysis(seed=2, n_waits=300, n_incidents=5)
    return a, b, fake_trace(a), fake_trace(b, span_ns=40_000_000)


def test_deltas_are_b_minus_a(runs):
    a, b, ta, tb = runs
    df = compare_metrics(a, b, (ta, tb))
    row = df.filter(pl.col("key") == "waste_lhp_ns").row(0, named=True)
    va, vb = a.summary.totals["waste_lhp_ns"], b.summary.totals["waste_lhp_ns"]
    assert (row["a"], row["b"], row["delta"]) == (va, vb, vb - va)
    assert row["delta_pct"] == pytest.approx(100 * (vb - va) / va)
    span = df.filter(pl.col("key") == "span_ns").row(0, named=True)
    assert (span["a"], span["b"]) == (50_000_000, 40_000_000)
    waste_pct = df.filter(pl.col("key") == "spin_waste_pct").row(0, named=True)
    running = a.table("waste_by_vm")["running_ns"].sum()
    assert waste_pct["a"] == pytest.approx(100 * (va + a.summary.totals["waste_lwp_ns"]) / running)


def test_unavailable_metrics_are_not_zero(runs):
    a, _, ta, _ = runs
    guest = fake_analysis(with_states=False)
    df = compare_metrics(a, guest, (ta, None))
    row = df.filter(pl.col("key") == "n_lhp").row(0, named=True)
    assert row["a"] == a.summary.totals["n_lhp"] and row["b"] is None and row["delta"] is None
    table = format_comparison(df, ("full", "guest"))
    shown = table.filter(pl.col("metric") == "LHP incidents").row(0, named=True)
    assert shown["guest"] == "unavailable" and shown["Δ (B − A)"] == "n/a"


def test_zero_base_has_no_percentage():
    from pvtrace.analyze.result import Analysis

    a = Analysis(summary=Summary(totals={"n_lhp": 0}))
    b = Analysis(summary=Summary(totals={"n_lhp": 3}))
    row = compare_metrics(a, b).row(0, named=True)
    assert row["delta"] == 3 and row["delta_pct"] is None
    # without the traces the runs' lengths are unknown: no rate, the delta is of the totals
    assert format_comparison(compare_metrics(a, b), ("x", "y")).row(0) == (
        "LHP incidents",
        "0",
        "3",
        "unavailable",
        "unavailable",
        "+3",
        "n/a",
    )


def test_compare_page_overlays_both_runs(tmp_path, runs):
    a, b, ta, tb = runs
    path = write_compare(a, b, ("ticket", "pv-ticket"), tmp_path / "c.html", traces=(ta, tb))
    text = path.read_text(encoding="utf-8")
    assert "pvtrace compare: ticket vs pv-ticket" in text
    for name in (
        "compare-waste",
        "compare-wait-times",
        "compare-incidents",
        "compare-kick-latency",
        "compare-convoys",
    ):
        assert f'data-target="chart-{name}"' in text
    assert text.count('"run":"ticket"') > 0 and text.count('"run":"pv-ticket"') > 0
    assert "Trace ticket" in text and "Trace pv-ticket" in text


def test_same_labels_are_told_apart(tmp_path, runs):
    a, b, _, _ = runs
    text = write_compare(a, b, ("run", "run"), tmp_path / "c.html").read_text(encoding="utf-8")
    assert "A: run vs B: run" in text


def test_the_kind_legend_draws_dash_strokes_not_identical_dots(runs, tmp_path):
    import json
    import re

    a, b, ta, tb = runs
    text = write_compare(a, b, ("A", "B"), tmp_path / "c.html", traces=(ta, tb)).read_text(encoding="utf-8")
    specs = [
        json.loads(m)
        for m in re.findall(r'<script type="application/json" class="pvtrace-spec"[^>]*>(.*?)</script>', text)
    ]
    dashed = [s["encoding"]["strokeDash"] for s in specs if "strokeDash" in s.get("encoding", {})]
    assert dashed and all(d["legend"]["symbolType"] == "stroke" for d in dashed)


def test_a_partial_value_is_flagged_and_has_no_delta(runs, tmp_path):
    """A part compared with a whole gives no delta (finding s8-5: `useful spin … -95.5%`); the
    table, the page and its spin chart say which run's value is partial and why."""
    import copy

    a, b, ta, tb = runs
    part = copy.deepcopy(a)
    why = "includes the LWP waste it cannot separate"
    part.summary.extra["partial"] = {"spin_useful_ns": [{"missing": why}]}
    table = format_comparison(compare_metrics(part, b, (ta, tb)), ("A", "B"))
    row = table.filter(pl.col("metric").str.starts_with("useful spin")).row(0)
    assert row[0] == f"useful spin (partial in A: {why})"
    assert row[1].endswith(" (partial)") and not row[2].endswith("(partial)")
    assert row[-2:] == ("n/a (partial)", "n/a (partial)")
    page = write_compare(part, b, ("A", "B"), tmp_path / "c.html", traces=(ta, tb)).read_text()
    assert f"useful (partial: {why})" in page  # the spin chart's legend
    assert "What A cannot tell" in page and "What B cannot tell" in page


def test_runs_of_different_length_compare_as_rates():
    """A 0.1 s and a 1 s run of the same workload differ by nothing but their length (finding of
    session 10's new user: -99.9 % contended between such runs). Counts compare per second,
    times per vCPU-second; the totals stay as they are."""
    from types import SimpleNamespace

    from pvtrace.analyze.result import Analysis

    def run(seconds: float) -> tuple[Analysis, SimpleNamespace]:
        k = round(seconds * 10)
        totals = {"n_contended": 100 * k, "waste_lhp_ns": 10_000_000 * k, "convoy_len_max": 4}
        summary = Summary(totals=totals, extra={"n_vcpus": 2})
        return Analysis(summary=summary), SimpleNamespace(t_start=5, t_end=5 + int(seconds * 1e9))

    (a, ta), (b, tb) = run(0.1), run(1.0)
    df = compare_metrics(a, b, (ta, tb))
    rows = {r["key"]: r for r in df.iter_rows(named=True)}
    contended, waste = rows["n_contended"], rows["waste_lhp_ns"]
    assert (contended["a"], contended["b"]) == (100, 1000)  # the totals stay visible
    assert contended["a_rate"] == pytest.approx(1000.0) == contended["b_rate"]  # per second
    assert waste["a_rate"] == pytest.approx(5.0) == waste["b_rate"]  # % of 0.1 s x 2 vCPUs
    for row in (contended, waste):
        assert row["delta_of"] == "rate" and row["delta"] == pytest.approx(0.0, abs=1e-9)
        assert row["delta_pct"] == pytest.approx(0.0, abs=1e-9)
    longest = rows["convoy_len_max"]  # a maximum is no rate: compared as it is
    assert longest["basis"] is None and longest["delta_of"] == "total" and longest["delta"] == 0
    shown = format_comparison(df, ("short", "long")).filter(pl.col("metric") == "contended acquisitions")
    assert shown.row(0) == ("contended acquisitions", "100", "1,000", "1,000/s", "1,000/s", "0", "+0.0%")


@pytest.mark.parametrize("width", [80, 100])
def test_the_terminal_comparison_keeps_metric_names_and_values_whole(runs, width):
    """At 100 columns `pvtrace compare` printed no metric names at all (the column was squeezed to
    nothing behind `(partial in …)` labels) and cut the values to '…'."""
    import copy

    from rich.console import Console

    from pvtrace.cli.report import print_comparison
    from pvtrace.report.compare_rates import run_extent

    a, b, ta, tb = runs
    part = copy.deepcopy(a)
    why = "includes the LWP waste it cannot separate"
    part.summary.extra["partial"] = {"spin_useful_ns": [{"missing": why}]}
    metrics = compare_metrics(part, b, (ta, tb))
    con = Console(record=True, width=width)
    print_comparison(con, metrics, ("A", "B"), (run_extent(part, ta), run_extent(b, tb)))
    text = con.export_text()
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines() if line[:1] in "┏┃┡│└")
    table = format_comparison(metrics, ("A", "B"))
    lines = text.splitlines()
    for metric, va, vb, *_, pct in table.iter_rows():
        first = metric.split(" (partial")[0].split()[0]  # a wrapped name keeps its first word
        row = [ln for ln in lines if ln.startswith(f"│ {first}") and f" {va} │ " in ln and f" {vb} │ " in ln]
        assert any(ln.endswith(f" {pct} │") for ln in row), metric
    assert "useful spin (partial [1])" in text and f"[1] partial in A: {why}" in text
    assert "(not shown at " in text and "A, rate; B, rate; Δ (B − A)" in text
    # Δ % is still of the rates: said, or equal totals at +1.4% read as a wrong number
    assert "Δ % compares the rates left out" in text
    wide = Console(record=True, width=1000)
    print_comparison(wide, metrics, ("A", "B"), (run_extent(part, ta), run_extent(b, tb)))
    assert "rates left out" not in wide.export_text()


def test_a_comparison_too_narrow_for_a_table_keeps_its_title_and_caption(runs):
    # a row per line (cli.fit) printed neither: which run is A, how long each is, what a rate is
    from rich.console import Console

    from pvtrace.cli.report import print_comparison
    from pvtrace.report.compare_rates import RATE_CAPTION, run_extent

    a, b, ta, tb = runs
    con = Console(record=True, width=40)
    print_comparison(con, compare_metrics(a, b, (ta, tb)), ("A", "B"), (run_extent(a, ta), run_extent(b, tb)))
    flat = " ".join(con.export_text().split())
    assert flat.startswith("A = A: 50 ms of trace, ") and " ".join(RATE_CAPTION.split()) in flat
    assert "• spin (waiting while running) · A: " in flat


def test_a_run_without_kicks_has_no_kick_latency_rather_than_an_unavailable_one():
    from pvtrace.analyze import Analysis
    from pvtrace.report.compare import summary_run

    ticket = summary_run({"totals": {"n_kicks": 0}}, "ticket.json")  # it read 'unavailable'
    pv = Analysis(
        tables={"kicks": pl.DataFrame({"latency_ns": [3000]})}, summary=Summary(totals={"n_kicks": 1})
    )
    unknown = summary_run({"totals": {}}, "other.json")  # kicks not counted: unavailable it is
    for a, shown in ((ticket, "no kicks"), (unknown, "unavailable")):
        table = format_comparison(compare_metrics(a, pv), ("A", "B"))
        assert table.filter(pl.col("metric") == "kick latency, median").row(0)[1:3] == (shown, "3 µs")


def test_guest_only_runs_compare_their_total_lock_wait():
    """Two guest-only real traces (futex, pgfault) compared by their count and p99 alone: the total
    wait `pvtrace analyze` headlines ('3,081, 1.98 ms total wait') was missing. It compares as a
    share of vCPU time; a run that cannot time its waits has it unavailable, not 0."""
    from types import SimpleNamespace

    from pvtrace.analyze.result import Analysis

    def run(wait_ns: int | None, seconds: float) -> tuple[Analysis, SimpleNamespace]:
        extra = {"n_vcpus": 2, "wait_ns": wait_ns}
        summary = Summary(totals={"n_contended": 10}, extra=extra)
        return Analysis(summary=summary), SimpleNamespace(t_start=0, t_end=int(seconds * 1e9))

    (a, ta), (b, tb), (c, tc) = run(20_000_000, 1.0), run(10_000_000, 0.25), run(None, 1.0)
    row = compare_metrics(a, b, (ta, tb)).filter(pl.col("key") == "wait_ns").row(0, named=True)
    assert (row["a"], row["b"], row["basis"]) == (20_000_000, 10_000_000, "vcpu_s")
    assert (row["a_rate"], row["b_rate"]) == (pytest.approx(1.0), pytest.approx(2.0))  # % of span x 2
    assert row["delta_of"] == "rate" and row["delta"] == pytest.approx(1.0)
    shown = format_comparison(compare_metrics(a, c, (ta, tc)), ("A", "C"))
    assert shown.filter(pl.col("metric") == "lock wait, total").row(0)[1:3] == ("20 ms", "unavailable")


def test_a_summary_run_is_not_charted_as_having_no_data(runs):
    """`compare truth.json analysis.json -o page` of lhp-demo (72 ms of spin, 42 convoys in both)
    read 'neither run has lock spin' and 'no convoys'; beside a trace, a caption counted the summary
    run's convoys as 0."""
    from pvtrace.report.compare import compare_sections, summary_run

    totals = {"spin_ns": 72_002_762, "waste_lhp_ns": 24_307_782, "n_convoys": 42, "n_contended": 514}
    truth = summary_run({"totals": totals, "t_end": 300_000_000, "vcpus": [{"running_ns": 1}] * 4}, "t.json")
    analyzed = summary_run({"totals": totals, "n_vcpus": 4, "t_end": 300_000_000}, "a.json")

    def charts(sections):
        return [
            f for s in sections[:-1] for f in s.figures if f.table is None and not f.name.startswith("facts")
        ]

    both = charts(compare_sections(truth, analyzed, ("truth", "analyzed")))
    assert both and all(
        f.chart is None and f.note.startswith("Not charted: truth and analyzed") for f in both
    )
    a, _, ta, _ = runs
    mixed = charts(compare_sections(truth, a, ("truth", "A"), (None, ta)))
    drawn = [f for f in mixed if f.chart is not None]
    assert drawn and all(
        f.note == "Only A is drawn: truth is a summary JSON (totals only, no tables to chart)." for f in drawn
    )
    assert all("truth: 0" not in f.caption and "in truth" not in f.caption for f in mixed)


def test_runs_that_print_time_differently_are_said_so():
    """The same run as trace-cmd report text (whole µs) and as its .dat (ns) gave p99 waits of 1 µs
    and 571 ns: -42.9% from the print alone. The comparison says when the runs' resolutions
    differ (terminal line and page caption), and nothing when they print alike."""
    from dataclasses import replace

    from pvtrace.report.compare import compare_sections, resolution_note

    ns = fake_analysis(seed=3)
    cut = {
        name: t.with_columns(pl.col(c) // 1000 * 1000 for c in ("start", "end"))
        for name, t in ns.tables.items()
        if name in ("waits", "vcpu_states")
    }
    us = replace(ns, tables={**ns.tables, **cut})
    assert us.clock_tick() == 1000 and ns.clock_tick() == 1
    note = resolution_note(us, ns, ("text", "dat"))
    assert note.startswith("text prints whole microseconds, dat nanoseconds")
    assert resolution_note(ns, ns, ("a", "b")) == "" and resolution_note(us, us, ("a", "b")) == ""
    caption = compare_sections(us, ns, ("text", "dat"))[0].figures[0].caption
    assert note in caption


def test_a_truth_written_beside_text_compares_as_the_truth_of_the_texts_window():
    """`generate --truth` beside text keeps the truth of the text's window (text_window), which
    analyzing the text gives: compare read the whole run's, so the lhp-demo trace-cmd text against
    its own truth showed rate deltas on equal counts and -50% for a count the window leaves out."""
    from types import SimpleNamespace

    from pvtrace.analyze.result import Analysis
    from pvtrace.report.compare import summary_run

    whole = {"totals": {"n_contended": 520, "spin_ns": 80_000_000, "n_truncated": 2}, "t_end": 300_000_000}
    whole["vcpus"] = [{"running_ns": 1}] * 4
    window = {
        "t_start": 1_000_000,
        "t_end": 295_000_001,
        "totals": {"n_contended": 514, "spin_ns": 79_000_000},
    }
    truth = summary_run({**whole, "text_window": window}, "lhp.truth.json")
    assert truth.summary.totals == window["totals"]
    assert (truth.summary.extra["t_start"], truth.summary.extra["t_end"]) == (1_000_000, 295_000_000)
    analyzed = Analysis(
        summary=Summary(
            totals={"n_contended": 514, "spin_ns": 79_000_000, "n_truncated": 1}, extra={"n_vcpus": 4}
        )
    )
    rows = compare_metrics(analyzed, truth, (SimpleNamespace(t_start=1_000_000, t_end=295_000_000), None))
    row = rows.filter(pl.col("key") == "n_contended").row(0, named=True)
    assert row["delta"] == 0
    assert rows.filter(pl.col("key") == "n_truncated")["b"].null_count() == 1  # not in the window's truth
    assert summary_run(whole, "run.truth.json").summary.totals == whole["totals"]  # no window: the run's
    # the whole run's lock wait, from its locks, as analyze totals it
    locks = [{"wait_ns": 5}, {"wait_ns": 7}]
    assert summary_run({**whole, "locks": locks}, "run.truth.json").summary.extra["wait_ns"] == 12


def test_a_truth_beside_text_gives_the_windows_running_and_wait_time(tmp_path):
    """compare of the analysis of generated text against its truth file: vCPU running time, lock
    wait and the waste share are the window's on both sides (the truth showed them unavailable)."""
    run = CliRunner().invoke
    x, t, a = tmp_path / "x.txt", tmp_path / "t.json", tmp_path / "a.json"
    assert (
        run(
            app,
            ["generate", "--preset", "lhp-demo", "--format", "ftrace", "-o", str(x), "--truth", str(t), "-q"],
        ).exit_code
        == 0
    )
    texts = [str(p) for p in sorted(tmp_path.glob("x*.txt"))]
    assert run(app, ["analyze", *texts, "--json", str(a), "-q"]).exit_code == 0
    res = run(app, ["compare", str(a), str(t), "--json", "-", "-q"])
    rows = {r["key"]: r for r in json.loads(res.stdout)["metrics"]}
    for key in ("running_ns", "wait_ns", "spin_waste_pct"):
        assert rows[key]["a"] is not None and rows[key]["b"] is not None, key
        assert rows[key]["a"] == pytest.approx(rows[key]["b"], rel=1e-3), key


def test_the_metrics_neither_run_gives_are_named_under_the_table(tmp_path):
    """Rows unavailable in both runs are left out of the table; a line names them (they were
    dropped in silence; new-user audit)."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"totals": {"n_contended": 10}, "t_start": 0, "t_end": 10**9}))
    b.write_text(json.dumps({"totals": {"n_contended": 12}, "t_start": 0, "t_end": 10**9}))
    res = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("In neither run:"))
    assert "spin wasted on LHP" in line and "contended acquisitions" not in line
