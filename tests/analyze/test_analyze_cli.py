"""`pvtrace analyze` on a small Parquet trace: summary, JSON, tables, refusing to overwrite."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
from test_exact import LWP_ROWS
from trace_rows import trace_of
from typer.testing import CliRunner

from pvtrace.analyze import analyze
from pvtrace.analyze import prepare as prepare_mod
from pvtrace.analyze.run import analyze_parquet
from pvtrace.cli import analyze as cli_analyze
from pvtrace.cli import summary_view
from pvtrace.cli.app import app
from pvtrace.errors import FormatError
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario
from pvtrace.summary import Summary
from pvtrace.trace import META_KEY, write_trace

runner = CliRunner()


def _trace_file(tmp_path):
    path = tmp_path / "lwp.parquet"
    write_trace(trace_of(LWP_ROWS, t_end=40), path)
    return path


def test_cli_writes_json_and_tables(tmp_path):
    src = _trace_file(tmp_path)
    js = tmp_path / "out.json"
    res = runner.invoke(app, ["analyze", str(src), "--json", str(js), "--out-dir", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert "Headline" in res.stdout and "Locks by total wait" in res.stdout and "Convoy lengths" in res.stdout
    summary = Summary.from_dict(json.loads(js.read_text()))
    assert summary.totals["waste_lwp_preempted_ns"] == 10 and summary.fidelity["n_lwp"] == "exact"
    assert {u.metric for u in summary.unavailable} == {"n_pause_exits", "n_kicks"}
    assert all("sudo pvtrace record --host" in u.how_to_capture for u in summary.unavailable)
    lwp = pl.read_parquet(tmp_path / "t" / "lwp_incidents.parquet")
    assert lwp["waste_ns"].to_list() == [10]
    assert (tmp_path / "t" / "summary.json").exists()


def test_cli_also_writes_the_report_page(tmp_path):
    src = _trace_file(tmp_path)
    page = tmp_path / "r.html"
    res = runner.invoke(app, ["analyze", str(src), "-q", "--report", str(page)])
    assert res.exit_code == 0, res.output
    assert page.read_text().lstrip().lower().startswith("<!doctype html")


def test_cli_csv_and_refusal_to_overwrite(tmp_path):
    src = _trace_file(tmp_path)
    out = tmp_path / "t"
    res = runner.invoke(app, ["analyze", str(src), "--out-dir", str(out), "--csv", "-q"])
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    waits = pl.read_csv(out / "waits.csv")
    assert waits["spin_ns"].to_list() == [5, 22]
    before = (out / "waits.csv").read_text()
    res = runner.invoke(app, ["analyze", str(src), "--out-dir", str(out), "--csv", "-q"])
    assert res.exit_code != 0 and "already exists" in res.output and "--force" in res.output
    assert (out / "waits.csv").read_text() == before
    res = runner.invoke(app, ["analyze", str(src), "--out-dir", str(out), "--csv", "-q", "--force"])
    assert res.exit_code == 0


def test_cli_analyzes_one_parquet_file_from_the_file(tmp_path, monkeypatch):
    """One Parquet input, found by its magic bytes whatever its name, is analyzed concept by
    concept (analyze_parquet: never loaded whole), with the totals analyze() gives in memory."""
    src = _trace_file(tmp_path).rename(tmp_path / "trace.bin")
    monkeypatch.setattr(cli_analyze, "load", lambda *a, **k: pytest.fail("the trace was loaded whole"))
    js = tmp_path / "out.json"
    res = runner.invoke(app, ["analyze", str(src), "-q", "--json", str(js)])
    assert res.exit_code == 0, res.output
    in_memory = analyze(trace_of(LWP_ROWS, t_end=40)).summary
    assert Summary.from_dict(json.loads(js.read_text())).totals == in_memory.totals


def test_cli_bad_option_and_bad_file(tmp_path):
    src = _trace_file(tmp_path)
    res = runner.invoke(app, ["analyze", str(src), "--lock-kind", "fair"])
    assert res.exit_code == 2 and "--lock-kind" in res.output
    # a Parquet trace is read as it is: options for reading text are refused, not silently dropped
    res = runner.invoke(app, ["analyze", str(src), "--side", "host", "--vcpu-map", "g.csv"])
    assert res.exit_code == 2 and "--side, --vcpu-map: for text traces" in res.output
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    res = runner.invoke(app, ["analyze", str(junk)])
    assert res.exit_code != 0 and "Traceback" not in res.output and "junk.parquet" in res.output


def test_a_bad_side_is_refused_before_the_trace_is_read(tmp_path, monkeypatch):
    """`analyze TRACE --side sideways` read the whole trace, then said 'side must be one of ...'
    (the reader's words, without the option's dashes); ingest checked it first."""
    read = []
    monkeypatch.setattr(cli_analyze, "load", lambda *a, **k: read.append(a))
    text = tmp_path / "t.txt"
    text.write_text("# tracer: nop\n")
    res = runner.invoke(app, ["analyze", str(text), "--side", "sideways"])
    assert res.exit_code == 2 and "--side must be one of auto, host, guest, not 'sideways'" in res.stderr
    assert read == []


def test_a_memory_budget_the_analysis_cannot_keep_is_refused(tmp_path):
    """`--memory-budget` holds for one Parquet trace analyzed as it streams; with a text trace,
    --report or a filter the trace was loaded whole and the budget dropped without a word."""
    src = _trace_file(tmp_path)
    text = tmp_path / "t.txt"
    text.write_text("# tracer: nop\n")
    for args in (
        [str(text)],
        [str(src), "--window", "0:10"],
        [str(src), "--report", str(tmp_path / "r.html")],
    ):
        res = runner.invoke(app, ["analyze", *args, "--memory-budget", "1G", "-q"])
        assert res.exit_code == 2 and "--memory-budget: for one pvtrace Parquet trace" in res.stderr, (
            res.output
        )
    assert not (tmp_path / "r.html").exists()
    assert runner.invoke(app, ["analyze", str(src), "--memory-budget", "1G", "-q"]).exit_code == 0


def test_a_csv_table_the_trace_cannot_fill_says_so(tmp_path):
    """`--csv - --table waits` of a host trace printed a bare header, which a pipe reads as 'no
    waits'; the trace has no lock events at all."""
    from pathlib import Path

    guest = Path(__file__).parents[2] / "sample-traces" / "guest-futex.txt.xz"  # guest-only: no kicks
    res = runner.invoke(app, ["analyze", str(guest), "--csv", "-", "--table", "kicks"])
    assert res.exit_code == 0 and res.stdout.strip() == "ts,vm,vcpu,target,latency_ns", res.output
    assert "kicks: no rows, as pv kicks unavailable: the trace lacks kvm:kvm_hypercall" in res.stderr
    waits = runner.invoke(app, ["analyze", str(guest), "--csv", "-", "--table", "waits"])
    assert waits.exit_code == 0 and "no rows" not in waits.stderr and len(waits.stdout.splitlines()) > 1


def test_analyze_parquet_reads_a_file_like_analyze_in_memory(tmp_path, monkeypatch):
    # The file path of big inputs (concept by concept, never the whole file) gives the same analysis.
    trace, _ = simulate_trace(
        Scenario().replace(
            host={"pcpus": 2, "slice_ns": 200_000},
            vm={"count": 2, "vcpus": 3, "compute_ns": 15_000, "hold_ns": 2_000, "ops": 100},
            lock={"algorithm": "pv-ticket", "spin_threshold_ns": 3_000},
        ),
        seed=3,
    )
    path = tmp_path / "run.parquet"
    write_trace(trace, path)
    from_file, in_memory = analyze_parquet(path), analyze(trace)
    assert from_file.summary.to_dict() == in_memory.summary.to_dict()
    assert all(from_file.tables[k].equals(in_memory.tables[k]) for k in in_memory.tables)
    # read in many slices (of a prime number of rows, so they cut pairs apart): same answer
    monkeypatch.setattr(prepare_mod, "SLICE_ROWS", 97)
    assert trace.events.height > 15 * 97
    sliced = analyze_parquet(path)
    assert sliced.summary.to_dict() == in_memory.summary.to_dict()
    assert all(sliced.tables[k].equals(in_memory.tables[k]) for k in in_memory.tables)
    # out of canonical order on disk: it falls back to sorting in memory, same answer
    write_trace(type(trace)(events=trace.events.reverse(), meta=trace.meta), tmp_path / "rev.parquet")
    assert analyze_parquet(tmp_path / "rev.parquet").summary.totals == in_memory.summary.totals
    # each slice in order but not the slices (the halves swapped): found at the slice edge
    half = trace.events.height // 2
    swapped = pl.concat([trace.events.slice(half), trace.events.slice(0, half)])
    write_trace(type(trace)(events=swapped, meta=trace.meta), tmp_path / "swapped.parquet")
    monkeypatch.setattr(prepare_mod, "SLICE_ROWS", half)
    assert analyze_parquet(tmp_path / "swapped.parquet").summary.totals == in_memory.summary.totals
    # a footer without statistics: the first and last ts are read from the rows instead
    table = pq.read_table(path)
    with pq.ParquetWriter(tmp_path / "bare.parquet", table.schema, write_statistics=False) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({META_KEY: trace.meta.to_json()})
    assert pq.ParquetFile(tmp_path / "bare.parquet").metadata.row_group(0).column(0).statistics is None
    bare = analyze_parquet(tmp_path / "bare.parquet")
    assert bare.summary.to_dict() == in_memory.summary.to_dict()
    # a Parquet file of something else: one error naming the file
    pl.DataFrame({"a": [1, 2]}).write_parquet(tmp_path / "other.parquet")
    with pytest.raises(
        FormatError, match=r"other\.parquet: Parquet file is not pvtrace events: no column ts"
    ):
        analyze_parquet(tmp_path / "other.parquet")


def test_parquet_without_pvtrace_metadata_is_no_exact_view(tmp_path):
    """A simulated merged view saved without pvtrace's metadata: its lock events come from the
    simulator but show no releases, so holders are inferred (the view is unknown, not "full")."""
    from pvtrace.simulate.scenario import load_preset
    from pvtrace.simulate.views import select_view

    s = load_preset("lhp-demo").replace(vm={"count": 1}, run={"duration_ns": 10_000_000})
    merged = select_view(simulate_trace(s, seed=3)[0], "merged")
    kinds = merged.events["kind"].value_counts()
    assert kinds.filter(pl.col("kind") == "lock_contend")["count"].sum() > 0
    assert kinds.filter(pl.col("kind") == "lock_release").height == 0
    bare = tmp_path / "bare.parquet"
    merged.events.write_parquet(bare)
    assert analyze_parquet(bare).summary.extra["level"] == "inferred"


def test_cli_finds_guest_clock_offsets_without_options(tmp_path):
    """The issue's example: generated host + guest text analyzed with no options. With generate's
    side file the offsets are known and spin matches the truth with no warning; without it each
    guest's offset is either estimated from the events (within 1 us of the one the run used) or
    that guest is declared not aligned, with the fix, and left out of every joined total (named as
    what they lack)."""
    from pvtrace.ingest.offsets_file import OFFSETS_SUFFIX
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.render.files import guest_offsets
    from pvtrace.simulate.scenario import load_preset
    from pvtrace.simulate.truth_window import cut_truth

    s = load_preset("overcommit-2x").replace(run={"duration_ns": 100_000_000})
    trace, _ = simulate_trace(s, seed=3)
    used = guest_offsets(trace)
    files = write_rendered(trace, "ftrace", "merged", tmp_path / "oc.txt", False)
    texts = [str(f) for f in files if f.suffix == ".txt"]
    res = runner.invoke(app, ["analyze", *texts, "-q", "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    assert "not known to be aligned" not in res.stderr
    got = json.loads((tmp_path / "a.json").read_text())
    assert got["clock"]["synchronized"] is True and "warnings" not in got
    truth = cut_truth(trace, got["t_start"], got["t_end"] + 1).totals
    assert got["fidelity"]["spin_ns"] == "exact"
    # ftrace prints microseconds: spin is a few percent off (docs/accuracy.md, On rendered text)
    assert abs(got["totals"]["spin_ns"] - truth["spin_ns"]) <= 0.05 * truth["spin_ns"]

    next(f for f in files if f.name.endswith(OFFSETS_SUFFIX)).unlink()
    res = runner.invoke(app, ["analyze", *texts, "-q", "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "b.json").read_text())
    guests = got["clock"]["guests"]
    estimated = [vm for vm, g in guests.items() if g.get("synchronized")]
    assert estimated, guests  # at least one guest's offset comes out of the events
    for vm, g in guests.items():
        if g.get("synchronized"):
            assert "estimated from the events" in g["mode"]
            assert abs(got["clock"]["guest_offset_ns"][vm] - used[vm]) <= 1_000
        else:
            assert "--guest-offset" in res.stderr and "not known to be aligned" in res.stderr
    if len(estimated) < len(guests):  # a guest left unaligned: left out of what joins
        assert got["clock"]["synchronized"] is False
        left = sorted(vm for vm in guests if vm not in estimated)
        assert sorted(got["unjoined_vms"]) == left
        assert [p["missing"].split("'")[0] for p in got["partial"]["spin_ns"]] == left
    # the terminal says the clocks it joined on are an estimate, with how far off they may be
    res = runner.invoke(app, ["analyze", *texts, "--width", "400"])
    line = next(x for x in res.stdout.splitlines() if x.startswith("guest clocks estimated from the events"))
    for vm in estimated:
        est = guests[vm]["estimate"]
        assert f"{vm} host = guest - {-est['offset_ns'] / 1e9:.9f} s" in line, line


def test_headline_says_what_spin_waste_lacks():
    """The spin waste line names a missing or partial LWP part instead of a silent LHP-only sum; a
    partial one is numbered, its reason and fix under the table."""
    from pvtrace.analyze.result import Analysis

    whole = Summary(totals={"waste_lhp_ns": 5, "waste_lwp_ns": 7})
    assert summary_view.waste_label(whole) == "spin waste (LHP + LWP)"
    lhp_only = Summary(totals={"waste_lhp_ns": 5})
    assert summary_view.waste_label(lhp_only) == "spin waste (LHP only: LWP needs the lock kind)"
    part = {"missing": "LWP on 3 lock(s) of undecided kind", "fix": "pass --lock-kind"}
    partial = Summary(
        totals={"waste_lhp_ns": 5, "waste_lwp_ns": 7}, extra={"partial": {"spin_waste": [part]}}
    )
    rows, notes = summary_view.headline(Analysis(summary=partial))
    assert ("spin waste (LHP + LWP) (partial [1])", "12 ns", "") in rows
    assert notes == ["[1] partial: LWP on 3 lock(s) of undecided kind; fix: pass --lock-kind"]


def test_convoy_lengths_are_shown_in_power_of_two_buckets():
    lengths = pl.Series([2, 2, 3, 4, 5, 8, 9, 16, 17, 6969])
    assert summary_view.convoy_length_buckets(lengths) == [
        ("2", 2),
        ("3-4", 2),
        ("5-8", 2),
        ("9-16", 2),
        ("17-32", 1),
        ("4097-8192", 1),
    ]


@pytest.mark.parametrize(
    ("column", "value"),
    [("ts", "abc"), ("vcpu", "0x"), ("kind", "nonsense")],
)
def test_cli_parquet_values_that_do_not_cast_are_a_one_line_error(tmp_path, column, value):
    events = pl.read_parquet(_trace_file(tmp_path))
    bad = tmp_path / "bad.parquet"
    events.with_columns(pl.lit(value).alias(column)).write_parquet(bad)
    res = runner.invoke(app, ["analyze", str(bad), "-q"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "bad.parquet" in lines[0] and f"column {column}:" in lines[0], res.output


def test_cli_parquet_with_other_column_types_is_cast(tmp_path):
    """A Parquet file whose columns hold the right values in other types (ts as text, ids as Int64)
    analyzes like pvtrace's own."""
    events = pl.read_parquet(_trace_file(tmp_path))
    same, other = tmp_path / "same.parquet", tmp_path / "other.parquet"
    events.write_parquet(same)  # (neither carries pvtrace's metadata)
    events.with_columns(pl.col("ts").cast(pl.String), pl.col("vcpu").cast(pl.Int64)).write_parquet(other)
    expected = analyze_parquet(same).summary
    assert expected.totals["n_contended"] > 0
    assert analyze_parquet(other).summary.totals == expected.totals


def test_contention_begins_without_ends_are_counted_not_0():
    """A trace of contention_begin only (finding s8-3): each begin is one contention; the wait
    lengths are what is missing, and the summary says so instead of a lock table of zeros."""
    from trace_rows import contend

    rows = [contend(v, ts, lock) for ts, (v, lock) in enumerate([(0, 1), (1, 1), (0, 2), (0, 1), (1, 2)])]
    a = analyze(trace_of(rows, t_end=10, view="guest"))
    assert a.summary.totals["n_contended"] == 5 and not a.summary.extra["wait_ns"]
    assert any("each begin is counted as one contention" in w for w in a.summary.extra["warnings"])
    con = summary_view.Console(record=True, width=300)
    summary_view.render_summary(con, a, ["begins.txt"])
    text = con.export_text()
    assert "waits per lock and their lengths are unavailable" in text and "Locks by total wait" not in text
    assert "Not measured: lock wait lengths" in text


def test_guest_inferred_limits_name_only_what_is_missing_and_explain_it():
    """Finding s8-11: wait while preempted is given, so only halted is missing; an explanation is
    not printed as if it were a capture command; the ticks' partial reason is not repeated per row."""
    from pvtrace.analyze.result import Analysis
    from pvtrace.summary import Unavailable

    why = "a halted vCPU looks like a preempted one from inside the guest"
    s = Summary(
        totals={"spin_ns": 5, "wait_preempted_ns": 0},
        fidelity={"spin_ns": "guest-inferred", "wait_preempted_ns": "guest-inferred"},
        unavailable=[Unavailable("wait_halted_ns", ["sched:sched_switch"], why)],
        extra={
            "partial": {"spin_ns": [{"missing": "ticks"}]},
            "guest_preemption": {"partial_reasons": ["ticks"]},
        },
    )
    a = Analysis(summary=s)
    line = summary_view.limits_line(a)
    assert "Not measured:[/] wait while halted (pv slow path)." in line
    assert "Capture with" not in line and f"Wait while halted (pv slow path): {why}." in line
    assert summary_view.headline_rows(a)[0][0] == "spin (waiting while running) (partial: see above)"


def test_vm_name_on_a_host_trace_says_it_is_not_used(tmp_path):
    """--vm-name names a guest text trace's VM; on a host trace (whose VMs the host names) it was
    taken and dropped in silence."""
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 20_000_000}))
    host = next(f for f in write_rendered(trace, "ftrace", "host", tmp_path / "h.txt") if f.suffix == ".txt")
    res = runner.invoke(app, ["analyze", str(host), "--vm-name", "web", "-q"])
    assert res.exit_code == 0, res.output
    assert "--vm-name web: this trace has no guest side" in res.stderr


def test_vm_name_with_several_guest_files_says_it_is_not_used(tmp_path):
    """With several guest files each VM is named by its file; --vm-name (one guest file's VM) was
    dropped in silence, and a user who had renamed a guest file took it for the fix (new-user
    audit, session 19)."""
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 20_000_000}))
    files = [
        str(f) for f in write_rendered(trace, "ftrace", "merged", tmp_path / "h.txt") if f.suffix == ".txt"
    ]
    res = runner.invoke(app, ["analyze", *files, "--vm-name", "web", "-q"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.stderr.split())
    assert "--vm-name web: not used with several guest inputs" in flat
    assert "h-vm0.txt -> vm0, h-vm1.txt -> vm1" in flat


def test_an_input_with_no_records_beside_others_gets_a_warning(tmp_path):
    """A guest file holding only ftrace's header, given with the host's and another guest's, was
    read as nothing in silence (new-user audit, session 19): the run then lacks that guest."""
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 20_000_000}))
    files = sorted(
        f for f in write_rendered(trace, "ftrace", "merged", tmp_path / "h.txt") if f.suffix == ".txt"
    )
    header = [line for line in files[1].read_text().splitlines(keepends=True) if line.startswith("#")]
    files[1].write_text("".join(header))
    host, vm0, vm1 = (str(f) for f in files)
    res = runner.invoke(app, ["analyze", host, vm0, vm1, "-q"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.stderr.split())
    assert f"{vm0}: no trace records in it (a header only?)" in flat
    assert "no trace records" not in " ".join(runner.invoke(app, ["analyze", host, vm1, "-q"]).stderr.split())
    # the host file with the empty guest file alone: the hint names the guest file not given, and
    # not the one given (new-user audit, session 19, saw a given file listed twice)
    # (sorted, the files are h-vm0.txt, h-vm1.txt (emptied), h.txt)
    flat = " ".join(runner.invoke(app, ["analyze", vm1, vm0, "-q"]).stderr.split())
    (hint,) = [w for w in flat.split("warning: ") if "named like guest traces" in w]
    assert "(h-vm0.txt)" in hint and hint.count("h-vm1.txt") == 1 and hint.count("h-vm0.txt") == 2
