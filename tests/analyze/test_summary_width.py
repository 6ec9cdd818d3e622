"""The terminal summary on an 80-column terminal: every number whole, partial totals explained.

A new user's `pvtrace analyze` of the lhp-demo host+guest text at 80 columns showed the headline's
values cut (`57.2 ms (9.53…`), no level column, and a worst-incidents table whose kind, duration
and waste columns were blank; the fix for its partial LWP totals (`--lock-kind fifo`) was in the
JSON alone.
"""

from __future__ import annotations

import polars as pl
import pytest
from rich.console import Console

from pvtrace.analyze import Analysis, analyze
from pvtrace.cli.summary_view import headline_rows, render_summary
from pvtrace.fmt import fmt_ns
from pvtrace.report.tables import MAX_INCIDENT_ROWS, incident_table_figure
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset
from pvtrace.simulate.views import select_view


@pytest.fixture(scope="module")
def merged_analysis():
    # 0.1 s: vm0's locks, even together, see too little to decide their kind, so LWP is partial
    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 100_000_000}), seed=1)
    a = analyze(select_view(trace, "merged"), lock_kind="unknown")
    assert a.summary.extra["partial"]["waste_lwp_ns"]  # locks of undecided kind: LWP is partial
    return a


def _render(a, width: int) -> str:
    con = Console(record=True, width=width, emoji=False)
    render_summary(con, a, ["run.txt"])
    return con.export_text()


@pytest.mark.parametrize("width", [80, 100])
def test_every_headline_number_and_level_is_shown_whole(merged_analysis, width):
    text = _render(merged_analysis, width)
    rows = headline_rows(merged_analysis)
    for _, value, level in rows:
        assert f"{value} │ {level}" in text, (value, level)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines() if line[:1] in "┏┃┡│└")
    # the partial rows point at a note under the table: what is missing, and how to complete it
    assert any(label.endswith("(partial [1])") for label, _, _ in rows)
    (note,) = [line for line in text.splitlines() if line.startswith("[1] partial: LWP on ")]
    assert "of undecided kind (on them: " in note and "fix: pass --lock-kind fifo" in note
    # useful spin holds the LWP waste it could not separate: its note says so (it read as 14.8 ms
    # of useful spin against the truth's 1.2 ms, "partial: LWP on 2 lock(s)")
    useful = next(label for label, _, _ in rows if label.startswith("  useful spin"))
    ref = useful.split("partial ")[1].rstrip(")")
    assert any(line.startswith(f"{ref} partial: includes the LWP waste of ") for line in text.splitlines())


def test_incidents_keep_kind_and_waste_and_say_what_they_leave_out(merged_analysis):
    text = _render(merged_analysis, 80)
    worst = merged_analysis.table("incidents").head(8)
    for kind, waste in worst.select("kind", "waste_ns").iter_rows():
        assert any(
            line.startswith(f"│ {kind} ") and line.rstrip().endswith(f"{fmt_ns(waste)} │")
            for line in text.splitlines()
        )
    assert "(not shown at 80 columns: ran instead" in text and "--width " in text


def test_piped_output_keeps_every_column(merged_analysis):
    text = _render(merged_analysis, 1000)  # common.PIPED_WIDTH
    assert "not shown at" not in text
    assert "ran instead" in text and "p50 wait" in text


def test_too_narrow_for_a_table_gives_a_row_per_line(merged_analysis):
    # at 40 columns rich squeezed the headline's labels and the incidents' times to empty columns
    # ('││ 72 ms') and cut the locks' numbers to '2…'
    text = _render(merged_analysis, 40)
    lines = text.splitlines()
    assert "…" not in text and all(len(line) <= 40 for line in lines if line[:1] in "┏┃┡│└• ")
    assert not any(empty in text for empty in ("┏┳", "┳┳", "││", "┃┃"))  # a table that fits stays one
    flat = " ".join(text.split())  # a row wraps under its bullet
    for label, value, level in headline_rows(merged_analysis):
        assert " ".join(f"• {label} · value: {value} · level: {level}".split()) in flat, label
    worst = merged_analysis.table("incidents").row(0, named=True)
    assert f"• {worst['kind']} · start (trace time): " in flat
    assert f"· waste: {fmt_ns(worst['waste_ns'])}" in flat
    assert "not shown at" not in text  # nothing left out: every column is in its row's line


def test_incident_vcpus_name_their_vm_when_the_trace_has_several(merged_analysis):
    # all incidents in one VM of two: the vCPU column read '0 (next owner)' beside 'ran instead: vm1/3'
    one_vm = merged_analysis.table("incidents").filter(pl.col("vm") == "vm1")
    a = Analysis(tables={**merged_analysis.tables, "incidents": one_vm}, summary=merged_analysis.summary)
    rows = [line for line in _render(a, 1000).splitlines() if line.startswith(("│ LHP  │", "│ LWP  │"))]
    assert rows and all("│ vm1/" in line for line in rows)


def test_report_incident_list_names_the_vm_too(merged_analysis):
    one_vm = merged_analysis.table("incidents").filter(pl.col("vm") == "vm1")
    a = Analysis(tables={**merged_analysis.tables, "incidents": one_vm}, summary=merged_analysis.summary)
    html = incident_table_figure(a, 0, (0, 1)).html
    assert html.count(">vm1/") >= one_vm.head(MAX_INCIDENT_ROWS).height


def test_the_count_of_cut_items_says_what_was_cut(merged_analysis):
    (label,) = [label for label, _, _ in headline_rows(merged_analysis) if "trace end" in label]
    assert label == "waits, holds and incidents cut by the trace end"  # was "cut by the trace end"


def test_convoy_causes_are_words(merged_analysis):
    # 'convoy causes: lhp: 11, none: 23' read 'none' as no convoys
    by = merged_analysis.table("convoys").group_by("cause").len()
    counts = dict(by.iter_rows())
    (line,) = [x for x in _render(merged_analysis, 1000).splitlines() if x.startswith("convoys by what")]
    assert f"LHP incident {counts['lhp']:,}" in line and f"contention alone {counts['none']:,}" in line


def test_exits_without_a_length_say_why(merged_analysis):
    # 'HLT │ 8 │ 0.25 │ - │ - │ -' said nothing of the dashes
    ex = merged_analysis.table("exit_reasons")
    untimed = Analysis(
        tables={
            **merged_analysis.tables,
            "exit_reasons": ex.with_columns(pl.lit(None, pl.Int64).alias("avg_ns")),
        },
        summary=merged_analysis.summary,
    )
    note = "-: no VM entry directly follows these exits in the trace, so they have no length"
    assert note in _render(untimed, 1000) and note not in _render(merged_analysis, 1000)
