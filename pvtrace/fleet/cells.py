"""The work of one sweep cell, run on a Dask worker: simulate, optionally analyze, write one row.

`run_cell` is also what `pvtrace experiment` runs in process: a sweep and the experiment share
one definition of a run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl

from pvtrace.fleet.grid import Cell
from pvtrace.fleet.tasks import one_line_error
from pvtrace.outputs import atomic_file
from pvtrace.summary import TOTAL_KEYS


def run_cell(cell: Cell, analyze: bool, view: str) -> dict[str, Any]:
    """Simulate the cell (and analyze what `view` shows of it); one row of plain values."""
    from pvtrace.simulate.run import discard, simulate, simulate_trace

    t0 = time.perf_counter()
    result = None
    if analyze:
        from pvtrace.analyze import analyze as analyze_trace
        from pvtrace.simulate.views import select_view

        trace, truth = simulate_trace(cell.scenario, seed=cell.seed)
        n_events = trace.events.height
        result = analyze_trace(trace if view == "full" else select_view(trace, view))
        del trace
    else:
        truth = simulate(cell.scenario, discard, seed=cell.seed).truth
        n_events = int(truth.extra.get("n_events", 0))
    done = [ns for ns in truth.completion_ns.values() if ns is not None]
    t = truth.summary.totals
    row: dict[str, Any] = {
        "cell_id": cell.cell_id,
        "cell": cell.index,
        **cell.params,
        "seed": cell.seed,
        "vms": list(truth.completion_ns),
        "completion_ns": list(truth.completion_ns.values()),
        "completion_mean_ns": sum(done) / len(done)
        if len(done) == len(truth.completion_ns) and done
        else None,
        "completion_max_ns": max(done) if len(done) == len(truth.completion_ns) and done else None,
        "sim_t_end": truth.t_end,
        "sim_events": n_events,
        "truth_waste_ns": t["waste_lhp_ns"] + t["waste_lwp_ns"],
        **{f"truth_{k}": t.get(k) for k in TOTAL_KEYS},
    }
    if result is not None:
        a = result.summary.totals
        lhp, lwp = a.get("waste_lhp_ns"), a.get("waste_lwp_ns")
        row["analyzed_level"] = result.summary.extra.get("level")
        row["analyzed_waste_ns"] = lhp + lwp if lhp is not None and lwp is not None else None
        row.update({f"analyzed_{k}": a.get(k) for k in TOTAL_KEYS})
    row["elapsed_s"] = time.perf_counter() - t0
    return row


def row_frame(row: dict[str, Any]) -> pl.DataFrame:
    ints = [k for k in row if k.startswith(("truth_", "analyzed_")) and k != "analyzed_level"]
    return pl.DataFrame(
        [row],
        schema_overrides={
            **{k: pl.Int64() for k in ints},
            "completion_ns": pl.List(pl.Int64()),
            "completion_mean_ns": pl.Float64(),
            "completion_max_ns": pl.Int64(),
            "analyzed_level": pl.String(),
        },
        strict=False,
    )


def cell_task(cell: Cell, sweep_dir: str, analyze: bool, view: str) -> dict[str, Any]:
    """The sweep task: one cell's row into SWEEP_DIR/cells/<id>.parquet, or a failure row."""
    root = Path(sweep_dir)
    stage = "run"  # simulate, then analyze
    try:
        row = run_cell(cell, analyze, view)
        stage = "write"
        with atomic_file(row_path(root, cell), force=True) as tmp:
            row_frame(row).write_parquet(tmp)
        (root / "failures" / f"{cell.cell_id}.parquet").unlink(missing_ok=True)
        return {"status": "done"}
    except Exception as exc:
        error = one_line_error(exc)
        write_failure_row(root, cell, stage, error)
        return {"status": "failed", "stage": stage, "error": error}


def cells_task(cells: list[Cell], sweep_dir: str, analyze: bool, view: str) -> list[dict[str, Any]]:
    """The sweep task: a batch of cells (pvtrace.fleet.batches), each written or failed alone as by
    cell_task, with the seconds it took. A cell whose row is there already is not run again: an
    earlier attempt at this batch wrote it before its worker died."""
    statuses = []
    for cell in cells:
        t0 = time.perf_counter()
        if row_path(Path(sweep_dir), cell).is_file():
            status: dict[str, Any] = {"status": "done"}
        else:
            status = cell_task(cell, sweep_dir, analyze, view)
        statuses.append({**status, "seconds": time.perf_counter() - t0})
    return statuses


def row_path(root: Path, cell: Cell) -> Path:
    return root / "cells" / f"{cell.cell_id}.parquet"


def write_failure_row(root: Path, cell: Cell, stage: str, error: str) -> None:
    df = pl.DataFrame(
        [
            {
                "cell_id": cell.cell_id,
                "cell": cell.index,
                "params": repr(cell.params),
                "seed": cell.seed,
                "stage": stage,
                "error": error,
            }
        ]
    )
    with atomic_file(root / "failures" / f"{cell.cell_id}.parquet", force=True) as tmp:
        df.write_parquet(tmp)
