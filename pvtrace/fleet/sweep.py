"""`pvtrace sweep`, as a library call: the grid's cells not yet done, several per Dask task (each
cell written alone), and the results table of the whole grid.

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
from pvtrace.fleet import store
from pvtrace.fleet.atomic import sweep_partials
from pvtrace.fleet.batches import TASK_S
from pvtrace.fleet.cells import cells_task, row_path, write_failure_row
from pvtrace.fleet.grid import Cell, Grid
from pvtrace.fleet.resume import Tally, run_batched
from pvtrace.fleet.resume import plan as plan_items
from pvtrace.outputs import atomic_file

RESULTS = "results.parquet"


def prepare(root: Path, grid: Grid) -> None:
    store.check_root(root, "sweep.json", "sweep")
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
    """The cells to run: not done (same id), and not failed before unless retrying."""
    return plan_items(
        cells,
        lambda c: c.cell_id,
        store.ids_in(root / "cells", ".parquet"),
        store.ids_in(root / "failures", ".parquet"),
        retry_failed,
    )


def run_sweep(
    client: Any,
    grid: Grid,
    root: Path,
    *,
    retry_failed: bool = False,
    on_progress: Callable[[Tally], None] | None = None,
    task_s: float = TASK_S,
) -> Tally:
    """Run every cell of the grid not yet done into root, about task_s seconds of cells per Dask
    task; then write results.parquet."""
    cells = grid.cells()
    prepare(root, grid)
    todo, tally = plan(cells, root, retry_failed)
    run_batched(
        client,
        todo,
        cells_task,
        (str(root.resolve()), grid.analyze, grid.view),
        tally,
        key=lambda c: f"pvtrace-sweep-{c.cell_id}",
        is_done=lambda c: row_path(root, c).is_file(),
        name=lambda c: f"cell {c.index} {c.params} seed {c.seed}",
        write_failure=lambda c, stage, line: write_failure_row(root, c, stage, line),
        crash_stage="run",
        on_progress=on_progress,
        task_s=task_s,
    )
    for sub in ("cells", "failures"):  # a killed worker's attempt is stale once every task has finished
        sweep_partials(root / sub)
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
