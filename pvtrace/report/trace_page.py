"""The report page of one analyzed trace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pvtrace.analyze.result import Analysis
from pvtrace.report.exits import chart_kick_latency, chart_pause_exits, exit_reasons_figure
from pvtrace.report.facts import (
    facts_figure,
    headline_figure,
    key_numbers_figure,
    problems_figure,
    vms_figure,
)
from pvtrace.report.figure import Figure
from pvtrace.report.incidents import chart_convoy_lengths, chart_incident_durations
from pvtrace.report.labels import fmt_ns
from pvtrace.report.page import Section, render_page, write_page
from pvtrace.report.tables import incident_table_figure, limits_figure, locks_figure, perf_figures
from pvtrace.report.timeline import chart_timeline, drawn_span
from pvtrace.report.waits import chart_wait_times
from pvtrace.report.waste import chart_waste_by_lock, chart_waste_by_vm
from pvtrace.report.window import Window, default_window, parse_window, user_window
from pvtrace.trace import Trace, vcpu_counts

WindowSpec = str | tuple[int | None, int | None] | Window | None


def trace_span(trace: Trace, analysis: Analysis) -> tuple[int, int]:
    """[t_start, t_end) of the trace, falling back to the analysis' intervals when the trace has no events."""
    t0, t1 = trace.t_start, trace.t_end
    if t0 is None or t1 is None:
        states = analysis.table("vcpu_states")
        waits = analysis.table("waits")
        starts = [x for x in (states["start"].min(), waits["start"].min()) if x is not None]
        ends = [x for x in (states["end"].max(), waits["end"].max()) if x is not None]
        t0 = t0 if t0 is not None else min(starts, default=0)
        t1 = t1 if t1 is not None else max(ends, default=t0 + 1)
    return t0, max(t1, t0 + 1)


def resolve_window(window: WindowSpec, analysis: Analysis, t0: int, t1: int) -> Window:
    """The timeline window: given, parsed from 'START:END' (relative to the trace start), or the default."""
    if isinstance(window, Window):
        return window
    if isinstance(window, str):
        window = parse_window(window)
    if window is None:
        return default_window(analysis, t0, t1)
    return user_window(window, t0, t1)


def report_sections(trace: Trace, analysis: Analysis, window: WindowSpec = None) -> list[Section]:
    """Every figure of a trace's report, grouped as the page shows them; figures the trace cannot
    give are left out and named in the one limits box at the end."""
    t0, t1 = trace_span(trace, analysis)
    win = resolve_window(window, analysis, t0, t1)
    span = drawn_span(analysis, win, t0, t1)
    sections = [
        Section("Summary", [key_numbers_figure(analysis), chart_waste_by_vm(analysis)]),
        Section(
            "Timeline", [chart_timeline(analysis, win, t0, t1), incident_table_figure(analysis, t0, span)]
        ),
        Section(
            "Locks",
            [
                locks_figure(analysis),
                chart_waste_by_lock(analysis),
                chart_wait_times(analysis),
                chart_convoy_lengths(analysis),
            ],
        ),
        Section("Incidents", [chart_incident_durations(analysis)]),
        Section(
            "Hypervisor",
            [
                chart_pause_exits(analysis, t0, t1),
                exit_reasons_figure(analysis),
                chart_kick_latency(analysis),
            ],
        ),
        Section("perf summary tables", perf_figures(analysis)),
        Section(
            "Trace facts",
            [
                facts_figure(trace, analysis),
                vms_figure(trace, analysis),
                headline_figure(analysis),
                problems_figure(trace),
            ],
        ),
    ]
    left_out: list[Figure] = []
    for sec in sections:
        kept = []
        for fig in sec.figures:
            if fig.is_empty and (fig.limit or "unavailable" in fig.note):
                left_out.append(fig)
            else:
                kept.append(fig)
        sec.figures = kept
    sections = [sec for sec in sections if sec.figures]
    if analysis.summary.unavailable or left_out:
        sections.append(Section("What this trace cannot tell", [limits_figure(analysis, left_out)]))
    return sections


def all_figures(sections: list[Section]) -> list[Figure]:
    """The figures of a page, in page order."""
    return [f for s in sections for f in s.figures]


def render_report(
    trace: Trace,
    analysis: Analysis,
    window: WindowSpec = None,
    sections: list[Section] | None = None,
    title: str | None = None,
    progress: Callable[[], None] | None = None,
) -> str:
    """The report page of one trace as HTML text (from `sections` when already built); `progress`
    is called after each figure."""
    if sections is None:
        sections = report_sections(trace, analysis, window)
    return render_page(title or _title(trace), _subtitle(trace, analysis), sections, progress)


def write_report(
    trace: Trace, analysis: Analysis, path: Path | str, window: WindowSpec = None, force: bool = False
) -> Path:
    """Write the self-contained report page of one trace (refuses to overwrite unless forced).

    `window` picks the timeline's stretch: 'START:END' relative to the trace start
    ('2ms:5ms', either side may be empty), a (start_ns, end_ns) pair, or None for
    the window around the worst incident.
    """
    return write_page(render_report(trace, analysis, window), path, force)


def _title(trace: Trace) -> str:
    names = [Path(s).name for s in trace.meta.source]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"pvtrace report: {shown}" if shown else "pvtrace report"


def _subtitle(trace: Trace, analysis: Analysis) -> str:
    t0, t1 = trace_span(trace, analysis)
    vms = trace.meta.vms
    vcpus = sum(vcpu_counts(trace.events, trace.meta).values())
    who = f"{_n(len(vms), 'VM')}, {_n(vcpus, 'vCPU')}" if vms else "VMs unknown"
    cpus = f", {trace.meta.n_pcpus} host CPUs" if trace.meta.n_pcpus else ""
    if trace.events.height == 0 and trace.meta.extra.get("summary_tables"):  # a table, not a trace
        return f"{trace.meta.format} summary table: no events, no time span, {who}."
    return f"{trace.meta.format} trace ({trace.meta.view} view), {fmt_ns(t1 - t0)}, {who}{cpus}."


def _n(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"
