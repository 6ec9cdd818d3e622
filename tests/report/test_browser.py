"""Every kind of page opened in headless chromium with no network: all charts render, no console message.

Screenshots land in tests/.artifacts/ (gitignored) for a look by eye.
"""

from __future__ import annotations

import polars as pl
import pytest
from chromium import check_page, chromium_path, count_specs, screenshot
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


def assert_renders(page, artifacts, name):
    n = count_specs(page)
    assert n > 0
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
