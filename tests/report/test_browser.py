"""Every kind of page opened in headless chromium with no network: all charts render, no console message.

Screenshots land in tests/.artifacts/ (gitignored) for a look by eye.
"""

from __future__ import annotations

import polars as pl
import pytest
from chromium import check_page, chromium_path, count_specs, interact, screenshot
from report_fakes import fake_analysis, fake_trace

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load
from pvtrace.report import write_report
from pvtrace.report.compare import write_compare
from pvtrace.report.experiment import write_experiment_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="chromium is not installed (apt-get install chromium; .ci/run does it)",
    ),
]


def assert_renders(page, artifacts, name, charts=True):
    n = count_specs(page)
    assert n > 0 if charts else n == 0
    result = check_page(page)
    assert result.problems(n) == [], f"{page.name}: {result.problems(n)}"
    shot = screenshot(page, artifacts / f"{name}.png")
    assert shot.stat().st_size > 10_000  # a blank page is a few KB
    return result


def test_report_page_renders(tmp_path, artifacts, full_trace, full_analysis):
    page = write_report(full_trace, full_analysis, tmp_path / "report.html")
    assert_renders(page, artifacts, "report-full")


def test_report_of_a_simulator_run_renders(tmp_path, artifacts, sim_run):
    trace, analysis = sim_run
    page = write_report(trace, analysis, tmp_path / "sim.html")
    assert_renders(page, artifacts, "report-sim")


def test_guest_only_report_renders(tmp_path, artifacts, sim_views):
    trace, analysis = sim_views["guest"]
    page = write_report(trace, analysis, tmp_path / "guest.html")
    assert_renders(page, artifacts, "report-guest-only")


def test_report_of_a_real_guest_trace_renders(tmp_path, artifacts, real_traces):
    trace = load([real_traces / "local" / "guest-pvqspinlock-futex-lossy-tracepipe.txt.xz"])
    page = write_report(trace, analyze(trace), tmp_path / "real-guest.html")
    assert_renders(page, artifacts, "report-real-guest")


def test_host_only_report_renders(tmp_path, artifacts, real_traces):
    trace = load([real_traces / "public" / "ftrace-5flag_kvm-host-L1-nested-vmx_lkml-2023-03-30.txt"])
    page = write_report(trace, analyze(trace), tmp_path / "host.html")
    result = assert_renders(page, artifacts, "report-host-only")
    # kvm_entry/kvm_exit only: the lanes show guest mode and exits, not an all-unknown grey
    text = page.read_text(encoding="utf-8")
    assert '"what":"in VM exit"' in text and '"what":"running"' in text
    assert result.status.get("data-rendered") == "1"


@pytest.mark.parametrize(
    "name",
    [
        "perf-kvm-stat-live_x86-vmx-two-tables_kvm-list-2019-10-15.txt",
        "perf-lock-contention_bpf_type-caller_x86_lkml-2022-07-29.txt",
    ],
)
def test_perf_table_report_renders(tmp_path, artifacts, real_traces, name):
    trace = load([real_traces / "public" / name])
    page = write_report(trace, analyze(trace), tmp_path / "perf.html")
    assert_renders(page, artifacts, f"report-{name[:20]}", charts=False)
    text = page.read_text(encoding="utf-8")
    assert ("perf kvm stat, table 0" in text) if "kvm" in name else ("queue_work_on+0x20" in text)
    assert text.count('class="limits"') == 1


def test_timeline_zooms_and_an_incident_row_moves_it(tmp_path, sim_run):
    trace, analysis = sim_run
    page = write_report(trace, analysis, tmp_path / "interact.html")
    got = interact(page)
    assert got.get("data-state") == "done", got

    def span(key):
        lo, hi = (float(v) for v in got[key].split(","))
        return lo, hi

    before, zoomed, after = span("data-before"), span("data-zoomed"), span("data-after")
    # a wheel over the plot zooms in: a narrower x domain inside the first one
    assert zoomed[1] - zoomed[0] < 0.9 * (before[1] - before[0])
    assert before[0] <= zoomed[0] and zoomed[1] <= before[1]
    # the picked incident row moved the timeline onto that incident
    start, end = span("data-row")
    assert after[0] < start and end < after[1] and after != zoomed
    assert got["data-picked"] == "picked"


def test_compare_page_renders(tmp_path, artifacts):
    a, b = fake_analysis(seed=1), fake_analysis(seed=2, n_incidents=5)
    page = write_compare(
        a, b, ("ticket", "pv-ticket"), tmp_path / "compare.html", traces=(fake_trace(a), fake_trace(b))
    )
    assert_renders(page, artifacts, "compare")


def test_experiment_page_renders(tmp_path, artifacts):
    rows = [
        {"algorithm": alg, "n_guests": g, "seed": seed, "completion_ns": int(g * f * (270e6 + seed * 3e6))}
        for alg, f in (("ticket", 1.0), ("pv-ticket", 0.85))
        for g in (1, 2, 3, 4)
        for seed in range(3)
    ]
    page = write_experiment_report(pl.DataFrame(rows), tmp_path / "experiment.html")
    assert_renders(page, artifacts, "experiment")


def test_the_check_catches_a_page_that_needs_the_network(tmp_path, full_trace, full_analysis):
    page = write_report(full_trace, full_analysis, tmp_path / "cdn.html")
    text = page.read_text(encoding="utf-8")
    cdn = '<script src="https://cdn.jsdelivr.net/npm/vega@6"></script></head><body><main>'
    assert text.count("</head><body><main>") == 1
    page.write_text(text.replace("</head><body><main>", cdn))
    problems = check_page(page).problems(count_specs(page))
    assert any("failed to load https://cdn.jsdelivr.net" in p for p in problems), problems


def test_the_check_catches_a_chart_that_does_not_render(tmp_path, full_trace, full_analysis):
    page = write_report(full_trace, full_analysis, tmp_path / "broken.html")
    text = page.read_text(encoding="utf-8")
    # Break one spec: a mark type Vega-Lite does not know.
    broken = text.replace('"mark":{"type":"bar"', '"mark":{"type":"no-such-mark"', 1)
    assert broken != text
    page.write_text(broken)
    problems = check_page(page).problems(count_specs(page))
    assert any("charts rendered" in p for p in problems), problems
    assert any("not drawn" in p for p in problems), problems
