"""`pvtrace sweep`, as a library call: the grid's cells not yet done, one Dask task each, and
the results table of the whole grid.

    SWEEP_DIR/sweep.json            the grid (base scenario, axes, seeds) and version
    SWEEP_DIR/cells/<id>.parquet    one row per finished cell (id: hash of scenario, seed, version)
    SWEEP_DIR/failures/<id>.parquet one row per failed cell: stage and one-line error
    SWEEP_DIR/results.parquet       every finished cell of this grid in grid order (rewritten per run)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pvtrace import __version__
from pvtrace.errors import UsageError
from pvtrace.fleet.atomic import sweep_partials
from pvtrace.fleet.cells import cell_task, write_failure_row
from pvtrace.fleet.cluster import Job, run_jobs
from pvtrace.fleet.grid import Cell, Grid
from pvtrace.fleet.run import Tally
from pvtrace.fleet.tasks import one_line_error
from pvtrace.outputs import atomic_file

RESULTS = "results.parquet"


def _ids(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.stem for p in folder.glob("*.parquet") if not p.name.startswith(".")}


def prepare(root: Path, grid: Grid) -> None:
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / "sweep.json").is_file():
        raise UsageError(f"{root}: not empty and not a sweep folder (no sweep.json); choose another -o")
    for sub in ("cells", "failures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        sweep_partials(root / sub)
    doc = {
        "pvtrace_version": __version__,
        "base": grid.base.to_dict(),
        "axes": grid.axes,
        "seeds": grid.seeds,
        "analyze": grid.analyze,
        "view": grid.view,
    }
    with atomic_file(root / "sweep.json", force=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")


def plan(cells: list[Cell], root: Path, retry_failed: bool) -> tuple[list[Cell], Tally]:
    done, failed = _ids(root / "cells"), _ids(root / "failures")
    tally = Tally(total=len(cells))
    todo = []
    for c in cells:
        if c.cell_id in done:
            tally.skipped_done += 1
        elif c.cell_id in failed and not retry_failed:
            tally.skipped_failed += 1
        else:
            todo.append(c)
    return todo, tally


def run_sweep(
    client: Any,
    grid: Grid,
    root: Path,
    *,
    retry_failed: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Tally:
    """Run every cell of the grid not yet done into root; then write results.parquet."""
    cells = grid.cells()
    prepare(root, grid)
    todo, tally = plan(cells, root, retry_failed)
    if on_progress is not None:
        on_progress(0, len(todo))

    def finished(job: Job, result: Any, error: BaseException | None) -> None:
        cell = job.args[0]
        if error is not None:
            stage = "worker" if type(error).__name__ == "KilledWorker" else "run"
            line = one_line_error(error)
            write_failure_row(root, cell, stage, line)
            tally.failed.append(
                {"trace": f"cell {cell.index} seed {cell.seed}", "stage": stage, "error": line}
            )
        elif result["status"] == "done":
            tally.done += 1
        else:
            tally.failed.append(
                {
                    "trace": f"cell {cell.index} {cell.params} seed {cell.seed}",
                    "stage": result["stage"],
                    "error": result["error"],
                }
            )
        if on_progress is not None:
            on_progress(tally.ran, len(todo))

    if todo:
        jobs = (
            Job(f"pvtrace-sweep-{c.cell_id}", cell_task, (c, str(root.resolve()), grid.analyze, grid.view))
            for c in todo
        )
        run_jobs(client, jobs, finished)
    write_results(root, cells)
    return tally


def write_results(root: Path, cells: list[Cell]) -> pl.DataFrame:
    """results.parquet: the finished cells of this grid, in grid order."""
    wanted = {c.cell_id for c in cells}
    files = sorted(p for p in (root / "cells").glob("*.parquet") if p.stem in wanted)
    df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()
    if df.height:
        df = df.sort("cell", "seed")
    with atomic_file(root / RESULTS, force=True) as tmp:
        df.write_parquet(tmp)
    return df


def read_results(root: Path) -> pl.DataFrame:
    path = root / RESULTS
    if not path.is_file():
        raise UsageError(f"{root}: no {RESULTS}: not a sweep folder, or the sweep has not run")
    return pl.read_parquet(path)


def params_of(root: Path) -> list[str]:
    """The grid's axes, from sweep.json."""
    doc = json.loads((root / "sweep.json").read_text(encoding="utf-8"))
    return list(doc.get("axes", {}))
