"""Inputs read once, front to back: stdin (`-`), FIFOs (the format sniffed from a buffered head, never
seeked), a FIFO nobody writes to (a one-line error after PVTRACE_FIFO_WAIT, not a hang), and .dat
files trace-cmd cannot read (one line naming the file)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
from faults import SMALL_SCENARIO, assert_one_line_error, finish, run, start

DAT_MAGIC = b"\x17\x08\x44tracing6\x00"


@pytest.fixture(scope="module")
def host_trace(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stream")
    (d / "s.toml").write_text(SMALL_SCENARIO.format(seed=4))
    done = run(["generate", "s.toml", "-o", "t.txt", "--format", "ftrace", "--view", "host", "-q"], d)
    assert done.rc == 0, str(done)
    return d / "t.txt"


def _feed(fifo: Path, data: bytes) -> threading.Thread:
    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def test_stdin_and_fifos_read_like_the_file(host_trace, tmp_path):
    vmap = str(host_trace) + ".vcpus.csv"
    fifo, gz_fifo = tmp_path / "in.fifo", tmp_path / "gz.fifo"
    os.mkfifo(fifo)
    os.mkfifo(gz_fifo)
    data = host_trace.read_bytes()
    plain = start(["ingest", str(host_trace), "-o", "file.parquet", "-q"], tmp_path)
    with open(host_trace, "rb") as stdin:
        piped = start(["ingest", "-", "--vcpu-map", vmap, "-o", "stdin.parquet", "-q"], tmp_path, stdin=stdin)
    from_fifo = start(["ingest", str(fifo), "--vcpu-map", vmap, "-o", "fifo.parquet", "-q"], tmp_path)
    from_gz = start(["ingest", str(gz_fifo), "--vcpu-map", vmap, "-o", "gz.parquet", "-q"], tmp_path)
    writers = [_feed(fifo, data), _feed(gz_fifo, gzip.compress(data))]
    for p in (plain, piped, from_fifo, from_gz):
        done = finish(p)
        assert done.rc == 0, str(done)
    for w in writers:
        w.join(timeout=10)
    want = pl.read_parquet(tmp_path / "file.parquet").drop("source", strict=False)
    for name in ("stdin", "fifo", "gz"):
        got = pl.read_parquet(tmp_path / f"{name}.parquet").drop("source", strict=False)
        assert got.equals(want), name


def test_analyze_reads_stdin(host_trace, tmp_path):
    vmap = str(host_trace) + ".vcpus.csv"
    with open(host_trace, "rb") as stdin:
        piped = start(
            ["analyze", "-", "--vcpu-map", vmap, "--json", "pipe.json", "-q"], tmp_path, stdin=stdin
        )
        done = finish(piped)
    ref = run(["analyze", str(host_trace), "--json", "file.json", "-q"], tmp_path)
    assert done.rc == 0 and ref.rc == 0, (str(done), str(ref))
    got, want = (json.loads((tmp_path / f).read_text()) for f in ("pipe.json", "file.json"))
    assert got["totals"] == want["totals"] and got["totals"]


def test_report_and_compare_read_stdin(host_trace, tmp_path):
    """`-` reads stdin for every command (README); report and compare said '-: no such file'."""
    shutil.copy(host_trace, tmp_path / "t.txt")
    procs = []
    for args in (["report", "-", "-o", "r.html", "-q"], ["compare", "-", "t.txt", "--json", "c.json", "-q"]):
        with open(host_trace, "rb") as stdin:
            procs.append(start(args, tmp_path, stdin=stdin))
    for p in procs:
        done = finish(p)
        assert done.rc == 0, str(done)
    assert (tmp_path / "r.html").read_text().rstrip().endswith("</html>")
    assert json.loads((tmp_path / "c.json").read_text())["runs"]["a"]["label"] == "stdin"
    both = run(["compare", "-", "-"], tmp_path)
    assert_one_line_error(both, 2, "stdin can be read once")


def test_fifo_without_a_writer_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "nobody.fifo"
    os.mkfifo(fifo)
    done = finish(
        start(["analyze", str(fifo), "-q"], tmp_path, extra_env={"PVTRACE_FIFO_WAIT": "1"}), timeout=60
    )
    assert_one_line_error(done, 1, str(fifo), "no program wrote to this FIFO within 1 s")


@pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="trace-cmd is not installed")
def test_damaged_dat_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "cut.dat").write_bytes(DAT_MAGIC + bytes(range(256)) * 12)
    done = run(["analyze", "cut.dat", "-q"], tmp_path)
    assert_one_line_error(done, 1, "cut.dat:", "truncated or damaged")


def test_dat_without_trace_cmd_names_the_file(tmp_path):
    (tmp_path / "x.dat").write_bytes(DAT_MAGIC + bytes(4000))
    bare = tmp_path / "bin"
    bare.mkdir()
    done = finish(start(["analyze", "x.dat", "-q"], tmp_path, extra_env={"PATH": str(bare)}))
    assert_one_line_error(done, 1, "x.dat:", "needs trace-cmd")
