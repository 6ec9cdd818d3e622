"""`pvtrace report` and `pvtrace compare` from the command line, on traces the real analyzer reads."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from report_fakes import lhp_trace
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.trace import write_trace

runner = CliRunner()


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "lhp.parquet"
    write_trace(lhp_trace(), path)
    return path


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_report_writes_a_page(tmp_path, trace_file):
    out = tmp_path / "r.html"
    res = run("report", str(trace_file), "-o", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    # The real analyzer found the one LHP incident of the hand-made trace, and the page centres on it.
    assert (
        "Window: around the worst incident: LHP on vm0 lock 0xffff888000001000, vCPU 0 preempted for 7 µs"
        in text
    )
    assert "spin wasted on LHP" in text


def test_report_refuses_to_overwrite(tmp_path, trace_file):
    out = tmp_path / "r.html"
    out.write_text("keep me")
    res = run("report", str(trace_file), "-o", str(out))
    assert res.exit_code != 0
    assert "already exists; pass --force" in res.output
    assert "Traceback" not in res.output
    assert out.read_text() == "keep me"
    assert run("report", str(trace_file), "-o", str(out), "--force").exit_code == 0


def test_report_window_and_bad_window(tmp_path, trace_file):
    out = tmp_path / "r.html"
    assert run("report", str(trace_file), "-o", str(out), "--window", "2us:8us").exit_code == 0
    assert "chosen window 0.000002 to 0.000008 s (trace time)" in out.read_text(encoding="utf-8")
    # the same window as trace timestamps, as the trace prints them
    same = tmp_path / "same.html"
    assert run("report", str(trace_file), "-o", str(same), "--window", "0.000002:0.000008").exit_code == 0
    assert "chosen window 0.000002 to 0.000008 s (trace time)" in same.read_text(encoding="utf-8")
    res = run("report", str(trace_file), "-o", str(tmp_path / "x.html"), "--window", "soon")
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "--window" in res.output
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_report_figures(tmp_path, trace_file, fmt, magic):
    figs = tmp_path / "figs"
    res = run("report", str(trace_file), "--figures", str(figs), "--figure-format", fmt)
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in figs.iterdir())
    assert f"timeline.{fmt}" in files and f"waste-by-lock.{fmt}" in files
    assert all(p.read_bytes().lstrip()[:4] == magic for p in figs.iterdir())
    again = run("report", str(trace_file), "--figures", str(figs), "--figure-format", fmt)
    assert again.exit_code != 0 and "--force" in again.output


def test_report_needs_an_output(trace_file):
    res = run("report", str(trace_file))
    assert res.exit_code == 2 and "nothing to write" in res.output


def test_report_missing_input_is_one_line(tmp_path):
    res = run("report", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "r.html"))
    assert res.exit_code != 0
    assert res.output.strip().count("\n") == 0 and "nope.parquet" in res.output


def test_compare_prints_deltas_and_writes_a_page(tmp_path, trace_file):
    other = lhp_trace()
    # Run B: the holder is preempted 2 µs less (its second run comes earlier).
    ev = other.events.with_columns(
        pl.when(pl.col("ts") == 9000).then(7000).otherwise(pl.col("ts")).alias("ts")
    ).sort("ts", "seq")
    other.events = ev
    b = tmp_path / "b.parquet"
    write_trace(other, b)
    out = tmp_path / "c.html"
    res = runner.invoke(
        app,
        ["compare", str(trace_file), str(b), "--label-a", "slow", "--label-b", "fast", "-o", str(out)],
        catch_exceptions=False,
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if "spin wasted on LHP" in ln)
    assert "6 µs" in line and "4 µs" in line and "-8.33 pts" in line and "-33.3%" in line
    assert "slow" in res.output and "fast" in res.output
    assert "pvtrace compare: slow vs fast" in out.read_text(encoding="utf-8")


def test_report_filters_by_vm_and_lock(tmp_path, trace_file):
    out = tmp_path / "r.html"
    assert run("report", str(trace_file), "-o", str(out), "--lock", "0xffff888000001000").exit_code == 0
    assert "0xffff888000001000" in out.read_text(encoding="utf-8")
    res = run("report", str(trace_file), "-o", str(tmp_path / "n.html"), "--lock", "0x1")
    assert res.exit_code != 0 and "--lock" in res.output and res.output.count("\n") == 1
    res = run("report", str(trace_file), "-o", str(tmp_path / "v.html"), "--vm", "nope")
    assert res.exit_code != 0 and "--vm" in res.output


def test_compare_and_report_take_the_lock_kind(tmp_path, trace_file):
    # the partial notes of a text trace tell the user to pass --lock-kind, which compare and
    # report did not take (a new user's PLE off/on comparison)
    b = tmp_path / "b.parquet"
    b.write_bytes(trace_file.read_bytes())
    args = ["compare", str(trace_file), str(b)]
    given = runner.invoke(app, args, catch_exceptions=False, env={"COLUMNS": "250"})
    inferred = runner.invoke(
        app, [*args, "--lock-kind", "unknown"], catch_exceptions=False, env={"COLUMNS": "250"}
    )
    assert given.exit_code == inferred.exit_code == 0, inferred.output
    assert "cannot separate" in inferred.output and "cannot separate" not in given.output
    for cmd in (args, ["report", str(trace_file), "-o", str(tmp_path / "r.html")]):
        bad = runner.invoke(app, [*cmd, "--lock-kind", "fair"])
        assert bad.exit_code == 2 and "--lock-kind must be one of" in bad.output, bad.output


def test_compare_says_each_runs_length_and_writes_json(tmp_path, trace_file):
    b = tmp_path / "b.parquet"
    b.write_bytes(trace_file.read_bytes())
    args = ["compare", str(trace_file), str(b), "--label-a", "A", "--label-b", "B"]
    res = runner.invoke(app, args, catch_exceptions=False, env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "A = A: 12 µs of trace, 2 vCPUs; B = B: 12 µs of trace, 2 vCPUs" in res.output
    assert "Rates: counts per second of trace" in res.output
    res = runner.invoke(app, [*args, "--json", "-"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["runs"]["a"] == {"label": "A", "span_ns": 12_000, "n_vcpus": 2}
    rows = {r["key"]: r for r in doc["metrics"]}
    waste = rows["waste_lhp_ns"]
    assert waste["basis"] == "vcpu_s" and waste["delta_of"] == "rate" and waste["delta"] == 0
    assert waste["a_rate"] == pytest.approx(100 * waste["a"] / (12_000 * 2))


def test_compare_checks_both_runs_before_reading_either(tmp_path, trace_file, monkeypatch):
    """`compare A.txt.xz B` read and analyzed A (3 s on a 1.2 MB real trace) before it said that B
    was missing, a folder or no trace at all."""
    from pvtrace.cli import report as cli_report

    read = []
    monkeypatch.setattr(cli_report, "load_trace", lambda paths, what: read.append(paths))
    (tmp_path / "folder").mkdir()
    (tmp_path / "junk.txt").write_text("hello\nworld\n")
    for b, said in (("gone.txt", "no such file"), ("folder", "is a directory"), ("junk.txt", "not a trace")):
        res = runner.invoke(app, ["compare", str(trace_file), str(tmp_path / b)])
        assert res.exit_code == 1 and f"{b}: {said}" in res.stderr, res.output
    assert read == []


def _host_text_with_a_cut_line(path):
    """A small host ftrace text (vCPU runs) whose line 30 is cut short."""
    lines = ["# tracer: nop"]
    for i in range(60):
        t = 5021.0 + i * 1e-4
        lines.append(
            f"       CPU 0/KVM-24501   [003] d..1.  {t:.6f}: kvm_entry: vcpu 0, rip 0xffffffff81b3c9a2"
        )
    lines[30] = lines[30][:30]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_and_report_say_what_analyze_says_about_their_input(tmp_path, trace_file):
    """A new user compared a host text whose guest files sat next to it (every metric unavailable)
    and one with garbled lines, and neither command said a word: analyze says both."""
    host = _host_text_with_a_cut_line(tmp_path / "host.txt")
    (tmp_path / "host-vm0.txt").write_text("guest half, left out\n")
    res = runner.invoke(app, ["compare", str(host), str(trace_file)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if line.startswith("host: ")]
    assert any("skipped 1 input lines" in n and "host.txt:31" in n for n in notes), res.stderr
    assert any("warning: files named like guest traces of this host sit next to it" in n for n in notes)
    assert any(f"pvtrace ingest {host} {tmp_path / 'host-vm0.txt'} -o host.parquet" in n for n in notes)
    assert "--strict" not in res.stderr  # compare has no --strict to suggest
    assert not any(line.startswith("lhp: ") for line in res.stderr.splitlines())  # a clean run is quiet
    res = runner.invoke(app, ["report", str(host), "-o", str(tmp_path / "r.html")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "skipped 1 input lines" in res.stderr and "sit next to it" in res.stderr


def test_page_writing_shows_progress_on_a_terminal(tmp_path, trace_file, monkeypatch):
    """Building a page (its charts' specs) took seconds after the analysis bar had gone, with
    nothing on the terminal: report, analyze --report and compare draw a bar for it."""
    import io

    from rich.console import Console

    from pvtrace.cli import common

    screen = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=screen, force_terminal=True, width=100))
    for args in (
        ["report", str(trace_file), "-o", str(tmp_path / "r.html")],
        ["analyze", str(trace_file), "--report", str(tmp_path / "a.html")],
        ["compare", str(trace_file), str(trace_file), "-o", str(tmp_path / "c.html")],
    ):
        screen.seek(0)
        screen.truncate()
        res = run(*args)
        assert res.exit_code == 0, res.output
        assert "writing the page" in screen.getvalue(), args


def test_compare_checks_an_analysis_against_the_simulators_truth(tmp_path):
    """`generate --truth` wrote the ground truth and nothing read it back: compare takes it (and any
    `analyze --json` summary) as a run, so the analysis of the simulated trace is checked against it."""
    run_file, truth = tmp_path / "run.parquet", tmp_path / "truth.json"
    res = run("generate", "--preset", "lhp-demo", "-o", str(run_file), "--truth", str(truth), "-q")
    assert res.exit_code == 0, res.output
    res = run("compare", str(truth), str(run_file), "--json", "-")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["runs"]["a"] == {"label": "truth", "span_ns": 300_000_000, "n_vcpus": 4}
    rows = {m["key"]: m for m in got["metrics"]}
    # the full simulated view is exact: every total the analysis gives is the truth's
    for key in ("spin_ns", "waste_lhp_ns", "waste_lwp_ns", "n_lhp_harmful", "n_lwp", "n_convoys"):
        assert rows[key]["a"] == rows[key]["b"] > 0 and rows[key]["delta"] == 0, key
    assert rows["spin_waste_pct"]["delta"] == 0 and rows["running_ns"]["a"] == rows["running_ns"]["b"]
    table = run("compare", str(truth), str(run_file), "--label-b", "analyzed")
    assert table.exit_code == 0 and "A = truth: 300 ms of trace, 4 vCPUs" in table.stdout
    (tmp_path / "other.json").write_text('{"runs": []}')
    bad = runner.invoke(app, ["compare", str(tmp_path / "other.json"), str(run_file)])
    assert bad.exit_code == 1 and "not a summary compare reads (no totals)" in bad.stderr


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("guest-futex-ftrace.txt.xz", "guest-futex-ftrace"),  # was 'guest-futex-ftrace.txt'
        ("run.parquet", "run"),
        ("truth.json", "truth"),
        ("trace.dat.zst", "trace"),
        ("v1.2-host", "v1.2-host"),  # a dot that is no suffix stays
        (".txt", ".txt"),
    ],
)
def test_a_runs_default_label_is_its_file_name_without_trace_suffixes(name, label):
    from pvtrace.cli.report import run_label

    assert run_label(Path(name)) == label


def test_report_and_compare_are_quiet_with_q(tmp_path, trace_file, monkeypatch):
    """Every other command that writes files takes -q; report and compare drew their bars on a
    terminal (a script's `pvtrace report`, as `fleet report` suggests for each trace) with no way out."""
    import io

    from rich.console import Console

    from pvtrace.cli import common

    screen = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=screen, force_terminal=True, width=100))
    for args in (
        ["report", str(trace_file), "-o", str(tmp_path / "r.html"), "-q"],
        ["compare", str(trace_file), str(trace_file), "-o", str(tmp_path / "c.html"), "-q"],
    ):
        res = run(*args)
        assert res.exit_code == 0, res.output
        assert (screen.getvalue(), res.stdout, res.stderr) == ("", "", ""), args
    assert (tmp_path / "r.html").is_file() and (tmp_path / "c.html").is_file()


def test_a_figure_format_without_figures_is_refused(tmp_path, trace_file):
    """`report T -o r.html --figure-format svg` wrote the page and no image, without a word."""
    res = runner.invoke(
        app, ["report", str(trace_file), "-o", str(tmp_path / "r.html"), "--figure-format", "svg"]
    )
    assert res.exit_code == 2 and "without --figures it does nothing" in res.stderr, res.output
    assert not (tmp_path / "r.html").exists()


def test_compare_refuses_a_lock_kind_that_applies_to_neither_summary(tmp_path):
    """`compare a.json b.json --lock-kind fifo` took the option and used it for nothing (both runs
    are summaries, analyzed already)."""
    trace = tmp_path / "t.parquet"
    write_trace(lhp_trace(), trace)
    summary = tmp_path / "s.json"
    assert runner.invoke(app, ["analyze", str(trace), "--json", str(summary), "-q"]).exit_code == 0
    res = runner.invoke(app, ["compare", str(summary), str(summary), "--lock-kind", "fifo"])
    assert res.exit_code == 2 and "both runs are summaries" in res.output, res.output
    res = runner.invoke(app, ["compare", str(trace), str(summary), "--lock-kind", "fifo", "-q"])
    assert res.exit_code == 0, res.output  # a trace run takes it
