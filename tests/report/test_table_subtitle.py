"""A perf summary table is not a trace: the report's subtitle gives no view or time span for it."""

from __future__ import annotations

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load
from pvtrace.report.trace_page import _subtitle


def test_a_perf_kvm_stat_table_has_no_view_or_span(real_traces):
    path = real_traces / "public" / "perf-kvm-stat-report_hist-style-ns-columns_riscv_kvm-list-2024-04-22.txt"
    trace = load([path])
    text = _subtitle(trace, analyze(trace))
    assert text.startswith("perf-kvm-stat summary table: no events")
    assert "view" not in text and "1 ns" not in text
