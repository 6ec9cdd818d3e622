"""The self-contained page: no network references, every chart inlined, no silent overwrite."""

from __future__ import annotations

import json
import re

import pytest

from pvtrace.errors import OutputExistsError, PvtraceError
from pvtrace.report import write_report
from pvtrace.report.page import js_bundle
from pvtrace.report.trace_page import all_figures, report_sections


def specs(text: str) -> dict[str, dict]:
    return {
        m.group(1): json.loads(m.group(2))
        for m in re.finditer(r'class="pvtrace-spec" data-target="([^"]+)">(.*?)</script>', text, re.S)
    }


def test_page_is_self_contained(tmp_path, full_trace, full_analysis):
    path = write_report(full_trace, full_analysis, tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    assert js_bundle() in text  # vega, vega-lite and vega-embed inline
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=", text)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "cdn.jsdelivr" not in text


def test_every_chart_figure_is_embedded_once(tmp_path, full_trace, full_analysis):
    text = write_report(full_trace, full_analysis, tmp_path / "r.html").read_text(encoding="utf-8")
    embedded = specs(text)
    charts = [f for f in all_figures(report_sections(full_trace, full_analysis)) if f.chart is not None]
    assert sorted(embedded) == sorted(f"chart-{f.name}" for f in charts)
    for spec in embedded.values():
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v6")
    assert text.count('id="pvtrace-status"') == 1


def test_no_data_reasons_are_on_the_page(tmp_path, guest_trace, guest_analysis):
    text = write_report(guest_trace, guest_analysis, tmp_path / "g.html").read_text(encoding="utf-8")
    # what the trace cannot give: one box at the end, naming the figures left out and the metrics
    assert text.count('class="limits"') == 1 and "LHP and LWP incident durations" in text
    assert "no vCPU states in the analysis" in text  # timeline note
    assert text.count('class="nodata"') <= 1  # no repeated grey boxes


def test_window_option_moves_the_timeline(tmp_path, full_trace, full_analysis):
    text = write_report(full_trace, full_analysis, tmp_path / "w.html", window="10ms:12ms").read_text(
        encoding="utf-8"
    )
    assert "Window: chosen window 0.010000 to 0.012000 s (trace time)" in text
    spec = specs(text)["chart-timeline"]
    # the view opens on the window; the data around it stays, for zooming out and panning
    domains = [layer["encoding"]["x"]["scale"]["domain"] for layer in spec["layer"]]
    assert all(d == [10.0, 12.0] for d in domains)
    params = spec.get("params") or spec["layer"][0]["params"]
    assert params[0]["select"]["type"] == "interval" and params[0]["bind"] == "scales"


def test_refuses_to_overwrite_without_force(tmp_path, full_trace, full_analysis):
    path = tmp_path / "r.html"
    path.write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        write_report(full_trace, full_analysis, path)
    assert path.read_text() == "mine"
    write_report(full_trace, full_analysis, path, force=True)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob("*.partial"))


def test_unwritable_target_is_a_clear_error(tmp_path, full_trace, full_analysis):
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(PvtraceError, match=r"cannot write.*not a folder"):
        write_report(full_trace, full_analysis, tmp_path / "a-file" / "r.html")
    assert (tmp_path / "a-file").read_text() == "mine"


def test_missing_folders_are_created(tmp_path, full_trace, full_analysis):
    """One rule for every command's outputs (pvtrace.outputs): missing folders are created."""
    write_report(full_trace, full_analysis, tmp_path / "missing-dir" / "r.html")
    assert (tmp_path / "missing-dir" / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_text_is_escaped(tmp_path, full_trace, full_analysis):
    full_trace.meta.problems = {"<script>alert(1)</script>": 1}
    try:
        text = write_report(full_trace, full_analysis, tmp_path / "x.html").read_text(encoding="utf-8")
    finally:
        full_trace.meta.problems = {"malformed_lines": 2, "samples": ["host.txt:17: cannot parse"]}
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


@pytest.mark.slow
def test_page_of_a_10m_event_scale_analysis_stays_small(tmp_path):
    from report_fakes import ten_million_event_scale

    from pvtrace.report.aggregate import MAX_LAYER_ROWS

    trace, big = ten_million_event_scale()
    for window in (None, ":"):  # around the worst incident, and the whole trace
        path = write_report(trace, big, tmp_path / "big.html", window=window, force=True)
        assert path.stat().st_size < 5_000_000
        for spec in specs(path.read_text(encoding="utf-8")).values():
            for rows in spec.get("datasets", {}).values():
                assert len(rows) <= MAX_LAYER_ROWS


def test_an_empty_trace_gives_a_page_of_reasons(tmp_path):
    from pvtrace.analyze import analyze
    from pvtrace.schema import empty_events
    from pvtrace.trace import Trace, TraceMeta

    trace = Trace(empty_events(), TraceMeta())
    text = write_report(trace, analyze(trace), tmp_path / "empty.html").read_text(encoding="utf-8")
    assert specs(text) == {}
    assert (
        text.count('class="limits"') == 1
        and "spin (waiting while running)" in text
        and "sudo pvtrace record --guest" in text
    )
    assert "the analysis has no vCPU states and no lock waits to draw" in text
