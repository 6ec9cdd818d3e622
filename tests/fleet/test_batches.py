"""Sweep cells run several per Dask task: batch sizes follow the measured cost and shrink at the end,
yet each cell is still written, failed, counted and resumed alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from pvtrace.fleet.batches import TAIL_TASKS, Batches
from pvtrace.fleet.cells import cells_task, row_path, write_failure_row
from pvtrace.fleet.grid import Cell, grid_from_dict
from pvtrace.fleet.resume import Tally, run_batched
from pvtrace.fleet.sweep import prepare
from pvtrace.simulate.scenario import load_preset

REPO = Path(__file__).resolve().parents[2]
BROKEN = Cell(0, {"vm.count": 1}, 1, scenario=None, cell_id="feedfacefeedface")  # no scenario: raises


def drain(batches: Batches, cost_s: float) -> list[list[int]]:
    """Every batch handed out, each measured at cost_s per item once it is taken."""
    out = []
    while (batch := batches.next()) is not None:
        out.append(batch)
        batches.measured([cost_s] * len(batch))
    return out


@pytest.mark.parametrize(
    ("n", "threads", "cost_s"), [(500, 2, 0.13), (500, 1, 0.13), (40, 2, 0.01), (3, 2, 1.0)]
)
def test_batches_cover_every_item_once_sized_by_cost_and_shrinking_at_the_end(n, threads, cost_s):
    got = drain(Batches(range(n), lambda: threads, task_s=1.0), cost_s)
    assert [i for b in got for i in b] == list(range(n))
    sizes = [len(b) for b in got]
    assert sizes[0] == 1  # nothing measured yet
    assert max(sizes) <= max(1, int(1.0 / cost_s))  # about task_s of work per task
    assert len(got) >= min(n, TAIL_TASKS * threads)  # every worker busy to the end
    assert sizes[-1] == 1
    if n == 500:  # 0.13 s items: 7 a task until the end nears, not 500 tasks
        assert max(sizes) == 7 and len(got) < n / 4


def test_a_median_cost_ignores_the_first_item_paying_its_imports():
    batches = Batches(range(100), lambda: 1, task_s=1.0)
    batches.measured([2.0, 0.1, 0.1])
    assert batches.size() == 10


def test_items_given_back_run_alone_before_the_rest():
    batches = Batches(range(10), lambda: 1)
    first = batches.next()
    batches.alone([7, 8])
    assert first == [0] and batches.next() == [7] and batches.next() == [8] and batches.next()[0] == 1


@pytest.fixture(scope="module")
def grid():
    raw = {
        "sweep": {"seeds": 3, "analyze": False},
        "vm": {"count": [1, 2], "ops": 100},
        "lock": {"algorithm": ["ticket", "pv-ticket"]},
    }
    return grid_from_dict(raw, "g", None, load_preset("seed-table"))


def test_a_failing_cell_in_a_batch_fails_alone_and_a_written_cell_is_not_run_again(grid, tmp_path):
    prepare(tmp_path, grid)
    good = grid.cells()[:3]
    assert cells_task([good[0]], str(tmp_path), grid.analyze, grid.view)[0]["status"] == "done"
    stamp = row_path(tmp_path, good[0]).stat().st_mtime_ns
    time.sleep(0.01)
    statuses = cells_task([good[0], good[1], BROKEN, good[2]], str(tmp_path), grid.analyze, grid.view)
    assert [s["status"] for s in statuses] == ["done", "done", "failed", "done"]
    assert all(s["seconds"] >= 0 for s in statuses)
    assert row_path(tmp_path, good[0]).stat().st_mtime_ns == stamp  # written before: kept, not re-run
    assert all(row_path(tmp_path, c).is_file() for c in good) and not row_path(tmp_path, BROKEN).is_file()
    failures = list((tmp_path / "failures").glob("*.parquet"))
    assert [f.stem for f in failures] == [BROKEN.cell_id]
    assert pl.read_parquet(failures[0])["stage"].to_list() == ["run"]


def test_batched_on_a_cluster_progress_counts_cells_and_a_bad_cell_is_reported_alone(grid, tmp_path):
    from distributed import Client

    prepare(tmp_path, grid)
    cells = [*grid.cells(), BROKEN, *replace(grid, seeds=[9, 10]).cells()]
    seen: list[tuple[int, int]] = []
    tally = Tally(total=len(cells))
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        run_batched(
            client,
            cells,
            cells_task,
            (str(tmp_path), grid.analyze, grid.view),
            tally,
            key=lambda c: f"test-{c.cell_id}",
            is_done=lambda c: row_path(tmp_path, c).is_file(),
            name=lambda c: f"cell {c.cell_id}",
            write_failure=lambda c, stage, line: write_failure_row(tmp_path, c, stage, line),
            crash_stage="run",
            on_progress=lambda t: seen.append((t.ran, t.todo)),
            task_s=10.0,
        )
    assert tally.done == len(cells) - 1 and [f["trace"] for f in tally.failed] == [f"cell {BROKEN.cell_id}"]
    ran = [r for r, _ in seen]
    assert ran[0] == 0 and ran[-1] == len(cells) and ran == sorted(ran)
    assert {todo for _, todo in seen} == {len(cells)}
    assert len(seen) - 1 < len(cells)  # fewer tasks than cells: they were batched
    assert len(list((tmp_path / "cells").glob("*.parquet"))) == len(cells) - 1


CALLS: list[list[int]] = []  # shared with the in-process worker (its arguments are copies)
DONE: set[int] = set()


def poisoned(batch: list[int]) -> list[dict]:
    """A task that dies whenever item 13 is in it (as a cell that kills its worker would), after
    doing the items before it."""
    CALLS.append(batch)
    for i in batch:
        if i == 13:
            raise RuntimeError("item 13 brings its task down")
        DONE.add(i)
    return [{"status": "done", "seconds": 0.01} for _ in batch]


def test_a_batch_whose_task_dies_gives_back_its_missing_items_to_run_alone():
    from distributed import Client

    failures: list[tuple[int, str]] = []
    tally = Tally(total=40)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        run_batched(
            client,
            list(range(40)),
            poisoned,
            (),
            tally,
            key=lambda i: f"poison-{i}",
            is_done=lambda i: i in DONE,
            name=str,
            write_failure=lambda i, stage, line: failures.append((i, stage)),
            crash_stage="run",
        )
    assert any(13 in b and len(b) > 1 for b in CALLS), CALLS  # it was batched with others
    assert [b for b in CALLS if b == [13]]  # then alone
    assert failures == [(13, "run")] and [f["trace"] for f in tally.failed] == ["13"]
    assert tally.done == 39 and set(range(40)) - {13} == DONE
    # of the batch that died, the items done before 13 were not run again, the others ran alone
    died = next(b for b in CALLS if 13 in b and len(b) > 1)
    before, after = died[: died.index(13)], died[died.index(13) + 1 :]
    assert not [b for b in CALLS if len(b) == 1 and b[0] in before]
    assert all([i] in CALLS for i in after)


def sweep_tasks_mid_batch(address: str, out: Path) -> dict[str, list[str]]:
    """Worker address -> the sweep batches it is running whose first cell's row is written."""
    from distributed import Client

    with Client(address, timeout="10s") as watcher:
        return {
            addr: [
                k
                for k in tasks
                if str(k).startswith("pvtrace-sweep-")
                and not str(k).endswith("+0")
                and (
                    out / "cells" / f"{str(k).removeprefix('pvtrace-sweep-').split('+')[0]}.parquet"
                ).is_file()
            ]
            for addr, tasks in watcher.processing().items()
        }


def test_a_worker_killed_mid_batch_reruns_only_its_missing_cells(scheduler_address, tmp_path):
    from distributed import Client

    address, workers = scheduler_address
    grid_file = tmp_path / "g.toml"
    grid_file.write_text(
        '[sweep]\npreset = "seed-table"\nseeds = 12\nanalyze = false\n'
        "[vm]\ncount = [1, 2]\nops = 300\n"
        '[lock]\nalgorithm = ["ticket", "pv-ticket"]\n'
    )
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "pvtrace",
        "sweep",
        str(grid_file),
        "-o",
        str(out),
        "--scheduler",
        address,
        "-q",
    ]
    run = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)
    with Client(address, timeout="10s") as watcher:
        pids = watcher.run(os.getpid)
    stamps: dict[str, int] = {}
    deadline = time.monotonic() + 90
    while not stamps and run.poll() is None and time.monotonic() < deadline:
        for addr, keys in sweep_tasks_mid_batch(address, out).items():
            if keys and pids.get(addr) in {w.pid for w in workers}:
                stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")}
                os.kill(pids[addr], signal.SIGKILL)
                break
        time.sleep(0.02)
    _, errs = run.communicate(timeout=120)
    assert stamps, "the sweep ended before a worker could be killed in mid-batch"
    assert run.returncode == 0, errs.decode()
    rows = pl.read_parquet(out / "results.parquet")
    assert rows.height == 48 and rows["cell_id"].n_unique() == 48
    assert not list((out / "failures").iterdir())
    # the rows written before the kill (the killed batch's first ones among them) were not rewritten
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")}
    assert {k: after[k] for k in stamps} == stamps
