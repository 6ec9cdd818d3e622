"""`pvtrace ingest`: output, summary, bad input as one line + non-zero exit, never a traceback."""

from __future__ import annotations

import gzip
import lzma
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.trace import read_trace

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "ingest" / "golden"
runner = CliRunner()


def _good_text() -> bytes:
    return (GOLDEN / "ftrace_5flag_header.txt").read_bytes()


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from pvtrace.cli.app import app; sys.argv[0] = 'pvtrace'; app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_ingest_writes_events_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "events.parquet"
    res = runner.invoke(app, ["ingest", str(GOLDEN / "ftrace_5flag_header.txt"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    trace = read_trace(out)
    assert trace.meta.format == "ftrace"
    assert trace.events.height == trace.meta.extra["n_events"] > 0
    for part in (
        "Records by tracepoint",
        "sched_switch",
        "kvm_entry",
        "Events by kind",
        "Time span",
        "CPUs:",
    ):
        assert part in res.output
    assert "stack-trace frame lines attached" in res.output
    assert "Problems: none" in res.output


def test_summary_shows_problems_with_line_numbers(tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    res = runner.invoke(app, ["ingest", str(GOLDEN / "ftrace_nonascii_and_garbage.txt"), "-o", str(out)])
    assert res.exit_code == 0
    assert "ftrace_nonascii_and_garbage.txt:2" in res.output
    assert "this line is not a trace record" in res.output


def test_strict_makes_problems_fatal_with_file_and_line(tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    src = GOLDEN / "ftrace_nonascii_and_garbage.txt"
    res = runner.invoke(app, ["ingest", str(src), "-o", str(out), "--strict"])
    assert res.exit_code == 1
    assert f"{src}:2:" in res.output
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_existing_output_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    out.write_bytes(b"precious")
    res = runner.invoke(app, ["ingest", str(GOLDEN / "ftrace_7flag.txt"), "-o", str(out)])
    assert res.exit_code == 1 and "--force" in res.output
    assert out.read_bytes() == b"precious"
    res = runner.invoke(app, ["ingest", str(GOLDEN / "ftrace_7flag.txt"), "-o", str(out), "--force", "-q"])
    assert res.exit_code == 0 and res.output == ""
    assert read_trace(out).events.height == 2


@pytest.mark.parametrize("kind", ["junk", "truncated-xz", "truncated-gz", "text", "empty"])
def test_bad_inputs_give_one_line_and_exit_1(tmp_path: Path, kind: str) -> None:
    # (a truncated archive is read up to the cut and counted as a problem: fatal only with --strict,
    # tests/outputs/test_truncated_inputs.py)
    src = tmp_path / f"in-{kind}"
    strict = ["--strict"] if kind.startswith("truncated") else []
    if kind == "junk":
        src.write_bytes(bytes(range(256)) * 40)
    elif kind == "truncated-xz":
        src.write_bytes(lzma.compress(_good_text() * 50)[:300])
    elif kind == "truncated-gz":
        src.write_bytes(gzip.compress(_good_text() * 50)[:300])
    elif kind == "text":
        src.write_text("just some notes\nnothing to see\n")
    else:
        src.write_bytes(b"")
    res = _cli("ingest", str(src), "-o", str(tmp_path / "out.parquet"), *strict)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = [s for s in res.stderr.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(src) in lines[0]
    assert not (tmp_path / "out.parquet").exists()
    if kind.startswith("truncated"):
        assert "archive is truncated" in lines[0]


def test_missing_trace_cmd_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pvtrace.ingest.dat as dat

    src = tmp_path / "t.dat"
    src.write_bytes(b"\x17\x08\x44tracing7\x00" + b"\x00" * 100)
    monkeypatch.setattr(dat.shutil, "which", lambda name: None)
    res = runner.invoke(app, ["ingest", str(src), "-o", str(tmp_path / "o.parquet")])
    assert res.exit_code == 1
    assert "apt-get install trace-cmd" in res.output


def test_corrupt_dat_is_one_line(tmp_path: Path) -> None:
    import shutil

    if shutil.which("trace-cmd") is None:
        pytest.skip("trace-cmd is not installed (apt-get install trace-cmd)")
    src = tmp_path / "t.dat"
    src.write_bytes(b"\x17\x08\x44tracing7\x00" + b"\x01" * 300)
    res = _cli("ingest", str(src), "-o", str(tmp_path / "o.parquet"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "trace-cmd report failed" in res.stderr


def test_parquet_input_passes_through(tmp_path: Path) -> None:
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert (
        runner.invoke(app, ["ingest", str(GOLDEN / "ftrace_tgid.txt"), "-o", str(first), "-q"]).exit_code == 0
    )
    assert runner.invoke(app, ["ingest", str(first), "-o", str(second), "-q"]).exit_code == 0
    assert read_trace(first).events.equals(read_trace(second).events)
    # options that say how to read text would be dropped for a Parquet input: refused, not ignored
    res = runner.invoke(app, ["ingest", str(first), "-o", str(tmp_path / "c.parquet"), "--guest-offset", "5"])
    assert res.exit_code == 2 and "--guest-offset: for text traces" in res.output
    assert not (tmp_path / "c.parquet").exists()


def test_several_inputs_are_labelled_by_file(tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    files = [GOLDEN / "ftrace_0flag.txt", GOLDEN / "ftrace_7flag.txt"]
    res = runner.invoke(app, ["ingest", *map(str, files), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    meta = read_trace(out).meta
    assert [Path(i["path"]).name for i in meta.extra["inputs"]] == ["ftrace_0flag.txt", "ftrace_7flag.txt"]
    assert set(meta.extra["sides"]) == {"ftrace_0flag.txt", "ftrace_7flag.txt"}


def test_summary_tables_travel_in_the_metadata(real_traces: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    src = real_traces / "public" / "perf-lock-contention_bpf_type-caller_x86_lkml-2022-07-29.txt"
    res = runner.invoke(app, ["ingest", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "perf-lock-contention: 10 rows" in res.output.replace("Summary table ", "")
    rows = read_trace(out).meta.extra["summary_tables"]["perf-lock-contention"]
    assert len(rows) == 10 and pl.DataFrame(rows).height == 10


def test_bad_option_values(tmp_path: Path) -> None:
    src = str(GOLDEN / "ftrace_7flag.txt")
    for extra in (["--format", "csv"], ["--side", "both"]):
        res = runner.invoke(app, ["ingest", src, "-o", str(tmp_path / "o.parquet"), *extra])
        assert res.exit_code == 2, res.output


def test_guest_offset_option_forms() -> None:
    from pvtrace.cli.ingest import parse_guest_offset
    from pvtrace.errors import UsageError

    assert parse_guest_offset(None) is None
    assert parse_guest_offset(["-1500"]) == -1500
    assert parse_guest_offset(["vm0=10", "vm1=-20"]) == {"vm0": 10, "vm1": -20}
    for bad in (["x"], ["vm0=1.5"], ["5", "vm1=3"]):
        with pytest.raises(UsageError):
            parse_guest_offset(bad)


def test_a_long_file_name_is_folded_not_cut(tmp_path: Path, monkeypatch) -> None:
    """At 80 columns the Inputs table showed `guest-pvqspinlo…` for a real trace's name."""
    from rich.console import Console

    from pvtrace.cli import ingest as cli_ingest

    name = "guest-pvqspinlock-futex-lossy-tracepipe-captured-on-a-loaded-host.txt"
    (tmp_path / name).write_bytes(_good_text())
    con = Console(record=True, width=80)
    monkeypatch.setattr(cli_ingest, "out", con)
    res = runner.invoke(app, ["ingest", str(tmp_path / name), "-o", str(tmp_path / "e.parquet")])
    assert res.exit_code == 0, res.output
    text = con.export_text()
    assert "…" not in text
    rows = [line.split("│")[0].strip() for line in text.split("Inputs")[1].splitlines()[3:] if "│" in line]
    assert "".join(rows).startswith(name)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("ftrace_5flag_header.txt", "│ ftrace │"),  # was 'ftrace: ftrace': the ordinary record line
        ("perf_script_padded.txt", "│ perf-script │"),
        ("tracecmd_multi_input.txt", "│ trace-cmd: prefixed │"),  # was 'trace-cmd: trace-cmd-prefixed'
        ("ftrace_console_dump_latency.txt", "│ ftrace: latency │"),
    ],
)
def test_inputs_table_names_a_layout_only_when_it_is_not_the_ordinary_one(tmp_path, name, shown):
    res = runner.invoke(app, ["ingest", str(GOLDEN / name), "-o", str(tmp_path / "e.parquet")])
    assert res.exit_code == 0, res.output
    assert shown in res.output


def test_table_titles_stay_on_one_line(tmp_path):
    # rich wrapped a title to its table's width: 'Records by' over 'tracepoint'
    res = runner.invoke(
        app, ["ingest", str(GOLDEN / "ftrace_5flag_header.txt"), "-o", str(tmp_path / "e.parquet")]
    )
    lines = res.output.splitlines()
    for title in ("Inputs", "Events by kind", "Records by tracepoint"):
        assert title in lines


def test_a_dat_input_names_no_layout():
    from pvtrace.cli.ingest import layouts

    # the prefixed lines are those of the `trace-cmd report` pvtrace runs on the .dat itself
    assert layouts("dat", {"trace-cmd-prefixed": 9}) == ""
    assert layouts("trace-cmd", {"trace-cmd-prefixed": 9}) == "prefixed"


def test_time_span_reads_as_analyze_writes_it(tmp_path):
    # it read '0.000000 .. 0.299279 s (0.299279 s)': nanosecond stamps cut, the length in seconds
    src = GOLDEN / "tracecmd_latency_ns.txt"
    res = runner.invoke(app, ["ingest", str(src), "-o", str(tmp_path / "e.parquet")])
    assert res.exit_code == 0, res.output
    (span,) = [line for line in res.output.splitlines() if line.startswith("Time span: ")]
    header = runner.invoke(app, ["analyze", str(tmp_path / "e.parquet")]).stdout.splitlines()[0]
    stamps = span.removeprefix("Time span: ")
    assert f" {stamps}, " in header and ".000" not in stamps.split(" (")[1]
