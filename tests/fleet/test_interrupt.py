"""Ctrl-C during `pvtrace fleet analyze` and `pvtrace sweep` on their own LocalCluster: one line,
exit 130, no worker or nanny traceback, nothing half-written under a final name, and a rerun
finishes the rest (and only the rest)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pvtrace.fleet import store

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def ctrl_c_when(cmd: list[str], ready, timeout: float = 120) -> tuple[int, str]:
    """Run cmd in its own process group; once ready() holds, send SIGINT to the whole group as a
    terminal's Ctrl-C does. Returns (exit status, stderr) once every process of the group is gone."""
    run = subprocess.Popen(
        [sys.executable, "-m", "pvtrace", *cmd],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not ready() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, f"ended before it could be interrupted: {run.stderr.read()}"
    os.killpg(run.pid, signal.SIGINT)
    _, errs = run.communicate(timeout=60)
    while time.monotonic() < deadline:  # the workers go with their cluster
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("worker processes outlived the interrupted client")
    return run.returncode, errs


def assert_one_line(errs: str, what: str, total: int) -> int:
    assert "Traceback" not in errs and "KeyboardInterrupt" not in errs, errs
    last = errs.strip().splitlines()[-1]
    m = re.fullmatch(rf"interrupted; (\d+) of {total} {what} done, rerun to resume", last)
    assert m, errs
    return int(m.group(1))


def test_ctrl_c_stops_a_fleet_in_one_line_and_a_rerun_resumes(slow_traces, tmp_path):
    fleet = tmp_path / "fleet"
    parts = store.parts_dir(fleet)
    cmd = ["fleet", "analyze", str(slow_traces), "-o", str(fleet), "--workers", "2"]
    code, errs = ctrl_c_when(cmd, lambda: parts.is_dir() and any(parts.iterdir()))
    assert code == 130, errs
    done = assert_one_line(errs, "traces", 8)
    finished = [p for p in parts.iterdir() if not p.name.startswith(".")]
    assert len(finished) == done and 1 <= done < 8
    for p in finished:  # a folder under its final name is whole
        assert sorted(f.name for f in p.iterdir()) == sorted(f"{t}.parquet" for t in store.TABLES)
        assert pl.read_parquet(p / "trace.parquet").height == 1
    rerun = subprocess.run(
        [sys.executable, "-m", "pvtrace", *cmd], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0 and f"{done} done before" in rerun.stderr, rerun.stderr
    assert len(store.done_ids(fleet)) == 8 and not any(parts.glob(".*"))


def test_ctrl_c_stops_a_sweep_in_one_line_and_a_rerun_runs_only_the_missing_cells(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        '[sweep]\npreset = "seed-table"\nseeds = 6\n[vm]\ncount = [1, 2]\nops = 300\n'
        '[lock]\nalgorithm = ["ticket", "pv-ticket"]\n'
    )
    out = tmp_path / "sweep"
    code, errs = ctrl_c_when(
        ["sweep", str(grid), "-o", str(out), "--workers", "2"],
        lambda: (out / "cells").is_dir() and any((out / "cells").glob("*.parquet")),
    )
    assert code == 130, errs
    done = assert_one_line(errs, "cells", 24)
    cells = list((out / "cells").glob("*.parquet"))
    assert len(cells) == done and all(pl.read_parquet(c).height == 1 for c in cells)
    # cells go several to a task: the rerun runs the cells of the stopped tasks left unwritten
    stamps = {c.name: c.stat().st_mtime_ns for c in cells}
    rerun = subprocess.run(
        [sys.executable, "-m", "pvtrace", "sweep", str(grid), "-o", str(out), "--workers", "2"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0 and f"{done} done before" in rerun.stderr, rerun.stderr
    assert f"ran {24 - done}: {24 - done} done" in rerun.stderr, rerun.stderr
    assert {c.name: c.stat().st_mtime_ns for c in cells} == stamps
    assert pl.read_parquet(out / "results.parquet").height == 24


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_that_comes_with_the_last_result_still_interrupts_the_run(signum):
    # the user's Ctrl-C arrived while the last task's result was handled (a fleet of three traces,
    # 7-8 s in): the run used to end "3 done", exit 0, as if nobody had asked it to stop
    from distributed import Client

    from pvtrace.fleet.cluster import Job, run_jobs
    from pvtrace.outputs import Terminated

    jobs = [Job(f"sq-{i}", _square, (i,)) for i in range(3)]
    seen: list[int] = []

    def on_done(job, result, error):
        seen.append(result)
        if len(seen) == 3:
            os.kill(os.getpid(), signum)

    expected = KeyboardInterrupt if signum == signal.SIGINT else Terminated
    with (
        Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client,
        pytest.raises(expected),
    ):
        run_jobs(client, lambda: jobs.pop() if jobs else None, on_done)
    assert sorted(seen) == [0, 1, 4]
