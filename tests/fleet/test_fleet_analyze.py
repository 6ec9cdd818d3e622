"""`pvtrace fleet analyze` on real Dask clusters: results equal `pvtrace analyze --json` of each
trace alone, a corrupt trace is one failure row, a killed worker loses and duplicates nothing,
a rerun does no work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.cli.fleet import EXIT_SOME_FAILED
from pvtrace.fleet import store

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def analyze_alone(files: list[Path], tmp: Path) -> tuple[dict, pl.DataFrame]:
    """`pvtrace analyze --json --out-dir` of one trace: its summary and its waste_by_lock."""
    js, tables = tmp / "alone.json", tmp / "alone-tables"
    res = runner.invoke(
        app, ["analyze", *map(str, files), "--json", str(js), "--out-dir", str(tables), "-q", "--force"]
    )
    assert res.exit_code == 0, res.output
    return json.loads(js.read_text()), pl.read_parquet(tables / "waste_by_lock.parquet")


def part_stamps(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in store.parts_dir(root).iterdir()}


def test_local_cluster_equals_analyze_alone(trace_dir, capture, tmp_path):
    manifest, capture_files = capture
    fleet = tmp_path / "fleet"
    res = runner.invoke(
        app, ["fleet", "analyze", str(trace_dir), str(manifest), "-o", str(fleet), "--workers", "2", "-q"]
    )
    assert res.exit_code == EXIT_SOME_FAILED, res.output  # the corrupt file

    traces = store.read(fleet, "trace")
    assert sorted(traces["trace"]) == ["cap1", "host.perf", "lhp.parquet", "seed.parquet"]
    locks = store.read(fleet, "locks")
    for row in traces.iter_rows(named=True):
        files = capture_files if row["trace"] == "cap1" else [trace_dir / row["trace"]]
        summary, by_lock = analyze_alone(files, tmp_path)
        assert json.loads(row["summary_json"]) == summary
        for key, value in summary["totals"].items():
            assert row[key] == value, key
        assert row["level"] == summary["level"] and row["n_events"] == summary["n_events"]
        mine = locks.filter(pl.col("trace_id") == row["trace_id"]).drop("trace_id", "trace")
        assert mine.sort("vm", "lock").equals(by_lock.sort("vm", "lock"))
    cap = traces.filter(pl.col("trace") == "cap1").row(0, named=True)
    assert (cap["label_host"], cap["label_kernel"]) == ("hostA", "6.8")
    assert len(cap["files"]) == len(capture_files)

    failures = store.read(fleet, "failures")
    assert failures.height == 1
    bad = failures.row(0, named=True)
    assert bad["trace"] == "corrupt.txt" and bad["stage"] == "ingest"
    assert "corrupt.txt" in bad["error"] and "\n" not in bad["error"]

    # a rerun does no work: nothing analyzed, no part rewritten; --retry-failed redoes only the failure
    stamps = part_stamps(fleet)
    res = runner.invoke(app, ["fleet", "analyze", str(trace_dir), str(manifest), "-o", str(fleet)])
    assert res.exit_code == 0, res.output
    assert "4 done before, 1 failed before" in res.output and "; 0 to analyze" in res.output
    assert part_stamps(fleet) == stamps
    res = runner.invoke(
        app,
        [
            "fleet",
            "analyze",
            str(trace_dir),
            str(manifest),
            "-o",
            str(fleet),
            "--retry-failed",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == EXIT_SOME_FAILED and "analyzed 1: 0 done, 1 failed" in res.output
    assert part_stamps(fleet) == stamps and store.read(fleet, "failures").height == 1


def kill_a_busy_worker(address: str, workers, fleet: Path, run: subprocess.Popen) -> bool:
    """SIGKILL one of our `dask worker` processes while it runs a fleet task (after a first part)."""
    from distributed import Client

    with Client(address, timeout="10s") as watcher:
        pids = watcher.run(os.getpid)  # worker address -> pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:
            done = len(list(store.parts_dir(fleet).glob("*"))) if store.parts_dir(fleet).is_dir() else 0
            for addr, tasks in watcher.processing().items():
                fleet_tasks = [k for k in tasks if str(k).startswith("pvtrace-fleet-")]
                pid = pids.get(addr)
                if done >= 1 and fleet_tasks and pid in {w.pid for w in workers}:
                    os.kill(pid, signal.SIGKILL)
                    return True
            time.sleep(0.05)
    return False


def start_fleet(slow_traces: Path, fleet: Path, address: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pvtrace", "fleet", "analyze", str(slow_traces), "-o", str(fleet)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [*cmd, "--scheduler", address, "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_scheduler_by_address_survives_a_killed_worker(slow_traces, scheduler_address, tmp_path):
    address, workers = scheduler_address
    fleet = tmp_path / "fleet"
    run = start_fleet(slow_traces, fleet, address)
    killed_mid_task = kill_a_busy_worker(address, workers, fleet, run)
    _, errs = run.communicate(timeout=120)
    assert killed_mid_task, "the fleet ended before a worker could be killed in mid-task"
    assert run.returncode == 0, errs.decode()

    ids = sorted(p.name for p in store.parts_dir(fleet).iterdir())
    traces = store.read(fleet, "trace")
    assert len(ids) == 8 and traces.height == 8 and traces["trace_id"].n_unique() == 8
    assert sorted(traces["trace"]) == [f"t{i}.parquet" for i in range(8)]
    assert not list(store.failures_dir(fleet).iterdir())
    assert store.read(fleet, "locks")["trace_id"].n_unique() == 8
    # every copy gives the numbers of `pvtrace analyze --json` of the trace alone
    alone, _ = analyze_alone([slow_traces / "t0.parquet"], tmp_path)
    assert [json.loads(s) for s in traces["summary_json"].unique()] == [alone]

    # a rerun against the surviving worker does no work
    stamps = part_stamps(fleet)
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "pvtrace",
            "fleet",
            "analyze",
            str(slow_traces),
            "-o",
            str(fleet),
            "--scheduler",
            address,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "8 done before" in rerun.stderr and "; 0 to analyze" in rerun.stderr
    assert part_stamps(fleet) == stamps


@pytest.mark.parametrize("scheduler_address", [0], indirect=True)
def test_a_task_whose_worker_dies_is_a_failure_row_not_a_stopped_fleet(
    slow_traces, scheduler_address, tmp_path
):
    """With no failure allowed (as for a trace that kills every worker it lands on), a task whose
    worker dies is a failure row of stage `worker`, the other traces finish, and --retry-failed
    redoes it."""
    address, workers = scheduler_address
    fleet = tmp_path / "fleet"
    run = start_fleet(slow_traces, fleet, address)
    assert kill_a_busy_worker(address, workers, fleet, run)
    _, errs = run.communicate(timeout=120)
    assert run.returncode == EXIT_SOME_FAILED, errs.decode()
    # the tasks the dead worker held (the running one, and one queued behind it) failed; none twice
    failures = store.read(fleet, "failures")
    assert 1 <= failures.height <= 2 and set(failures["stage"]) == {"worker"}
    assert all("KilledWorker" in e for e in failures["error"])
    done = store.done_ids(fleet)
    assert len(done) + failures.height == 8 and not done & set(failures["trace_id"])
    res = runner.invoke(
        app,
        ["fleet", "analyze", str(slow_traces), "-o", str(fleet), "--retry-failed", "--scheduler", address],
    )
    assert res.exit_code == 0, res.output
    assert len(store.done_ids(fleet)) == 8 and store.read(fleet, "failures").height == 0


def test_inputs_that_are_not_there_are_one_line_errors(tmp_path):
    res = runner.invoke(app, ["fleet", "analyze", str(tmp_path / "nope*.txt"), "-o", str(tmp_path / "f")])
    assert res.exit_code != 0 and "matches no file" in res.output
    bad = tmp_path / "m.csv"
    bad.write_text("file,host\nx,h\n")
    res = runner.invoke(app, ["fleet", "analyze", str(bad), "-o", str(tmp_path / "f")])
    assert res.exit_code == 2 and "needs a 'path' column" in res.output


@pytest.mark.parametrize("command", [["fleet", "analyze", "{trace}"], ["sweep", "run", "{grid}"]])
def test_an_unusable_results_folder_or_worker_count_fails_before_the_plan(tmp_path, trace_dir, command):
    """`-o a-file` and `--workers 0` were refused only after the plan line ('2 traces; ... 2 to
    analyze'), and a read-only -o folder said 'Permission denied' seconds later."""
    grid = tmp_path / "grid.toml"
    grid.write_text('[sweep]\nseeds = 1\nanalyze = false\n[lock]\nalgorithm = ["ticket", "pv-ticket"]\n')
    args = [a.format(trace=trace_dir / "seed.parquet", grid=grid) for a in command]
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("not ours")
    for extra, code, said in (
        (["-o", str(tmp_path / "a-file")], 1, "a-file is not a folder"),
        (["-o", str(tmp_path / "out"), "--workers", "0"], 2, "0 is not in the range x>=1"),
        # a folder of other things: refused before the plan (it was, after the cluster's start)
        (["-o", str(tmp_path / "theirs")], 2, "not empty and not a"),
    ):
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == code and said in res.stderr, res.output
        assert "to analyze" not in res.stderr and "to run" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "grid.toml", "theirs"]
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("name", ["notes.json"])
def test_a_foreign_folder_is_never_written_into(tmp_path, trace_dir, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("{}")
    res = runner.invoke(app, ["fleet", "analyze", str(trace_dir / "seed.parquet"), "-o", str(out)])
    assert res.exit_code == 2 and "not a fleet folder" in res.output
    assert [p.name for p in out.iterdir()] == [name]


@pytest.mark.parametrize("scheduler_address", [0], indirect=True)
def test_a_task_whose_worker_dies_after_publishing_its_result_is_done_not_also_failed(
    scheduler_address, tmp_path
):
    """The race a killed worker can leave: its task's part is published, then the worker dies before
    the scheduler hears of it (KilledWorker). The item is done, and gets no failure row as well:
    a trace counted both ways made 7 done + 2 failed of 8 under load."""
    from distributed import Client

    from pvtrace.fleet.cluster import Job
    from pvtrace.fleet.resume import Tally, run_tallied

    address, _ = scheduler_address

    def publish_then_die(item: str) -> None:  # defined here: pickled by value for the workers
        import os
        from pathlib import Path as P

        P(item).mkdir()
        os._exit(1)

    failures: list[str] = []
    with Client(address, timeout="20s") as client:
        for is_done, target in ((lambda item: Path(item).is_dir(), "a"), (None, "b")):
            item = str(tmp_path / target)
            tally = run_tallied(
                client,
                [Job(f"publish-{target}", publish_then_die, (item,))],
                Tally(total=1),
                name=str,
                write_failure=lambda item, stage, line: failures.append(item),
                crash_stage="analyze",
                is_done=is_done,
            )
            assert Path(item).is_dir()
            if is_done is None:  # without the check, the published item is counted failed
                assert (tally.done, len(tally.failed)) == (0, 1) and failures == [item]
            else:
                assert (tally.done, len(tally.failed)) == (1, 0) and failures == []


def test_help_states_the_exit_status_of_a_run_with_failed_traces():
    res = runner.invoke(app, ["fleet", "analyze", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert f"Exit status {EXIT_SOME_FAILED} when some traces failed" in res.output


def test_a_rerun_with_other_options_is_refused_before_the_plan(tmp_path, trace_dir):
    """A fleet folder with results of `fleet analyze` run without --lock-kind, run again with it:
    the new results would sit beside the old (a trace's id includes its options) and every trace
    count twice in the report (new-user audit: "4 traces analyzed" of 2, h01 and h02 listed twice)."""
    out = tmp_path / "fleet"
    store.prepare(out, {"options": {"format": "auto", "lock_kind": None, "strict": False}})
    (store.parts_dir(out) / "0123456789abcdef").mkdir()  # one trace done
    res = runner.invoke(
        app, ["fleet", "analyze", str(trace_dir / "seed.parquet"), "-o", str(out), "--lock-kind", "fifo"]
    )
    assert res.exit_code == 2 and "other options (lock_kind None -> 'fifo')" in res.stderr, res.output
    assert "to analyze" not in res.stderr
    assert [p.name for p in store.parts_dir(out).iterdir()] == ["0123456789abcdef"]
    store.check_options(out, {"format": "auto", "lock_kind": None, "strict": False})  # the same: resumes
