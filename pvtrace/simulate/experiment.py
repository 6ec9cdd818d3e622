"""The founding experiment: completion time by number of guests, without and with the pv cure.

Levels 1..4 put that many guests on the host; each (level, lock) cell runs R
seeds, the same seeds for both locks (paired runs). A cell's samples are the
completion times of every guest in every repeat, so the spread shows both run
to run variation and guests finishing unevenly. Gain = (without - with) /
without, in percent, as in science.md's table.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pvtrace.outputs import OutputSet, atomic_file, current
from pvtrace.simulate.scenario import Scenario
from pvtrace.trace import check_writable

LEVELS: tuple[int, ...] = (1, 2, 3, 4)
LOCKS: tuple[str, str] = ("ticket", "pv-ticket")


@dataclass
class Experiment:
    """Per-guest completion times of every run, and the table of the founding experiment."""

    scenario: Scenario
    repeats: int
    runs: pl.DataFrame
    table: pl.DataFrame

    def report_rows(self) -> pl.DataFrame:
        """The runs in the layout of pvtrace.report's experiment page (one row per guest and seed)."""
        return self.runs.select(
            pl.col("lock").alias("algorithm"),
            pl.col("level").alias("n_guests"),
            "seed",
            "completion_ns",
        )

    def write(self, folder: Path | str, force: bool = False) -> list[Path]:
        """experiment.csv (the table), experiment-runs.csv and experiment.json into folder."""
        d = Path(folder)
        paths = [d / "experiment.csv", d / "experiment-runs.csv", d / "experiment.json"]
        doc = {
            "scenario": self.scenario.to_dict(),
            "repeats": self.repeats,
            "locks": {"without": LOCKS[0], "with": LOCKS[1]},
            "table": self.table.to_dicts(),
            "runs": self.runs.to_dicts(),
        }
        # all three or none: inside the command's OutputSet, or a set of their own
        with OutputSet(force=force) if current() is None else contextlib.nullcontext():
            for p in paths:
                check_writable(p, force)
            with atomic_file(paths[0], force) as tmp:
                self.table.write_csv(tmp)
            with atomic_file(paths[1], force) as tmp:
                self.runs.write_csv(tmp)
            with atomic_file(paths[2], force) as tmp:
                tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return paths


def experiment_runs(
    scenario: Scenario,
    *,
    repeats: int,
    levels: tuple[int, ...] = LEVELS,
    locks: tuple[str, ...] = LOCKS,
    progress: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """Run every (level, lock, repeat); one row per guest: level, lock, repeat, seed, vm, completion_ns."""
    if scenario.run.duration_ns:
        scenario = scenario.replace(run={"duration_ns": 0})  # completion times need a fixed amount of work
    # a sweep of the grid guests x locks x seeds, each cell run as `pvtrace sweep` runs it (here in process)
    from pvtrace.fleet.cells import run_cell
    from pvtrace.fleet.grid import Grid

    base = scenario.replace(vm={"clock_offsets_ns": []})
    seeds = [scenario.run.seed + r for r in range(repeats)]
    grid = Grid(base, {"vm.count": list(levels), "lock.algorithm": list(locks)}, seeds, analyze=False)
    rows = []
    cells = grid.cells()
    for done, cell in enumerate(cells, 1):
        run = run_cell(cell, analyze=False, view="full")
        level, lock = cell.params["vm.count"], cell.params["lock.algorithm"]
        for vm, ns in zip(run["vms"], run["completion_ns"], strict=True):
            rows.append((level, lock, cell.seed - scenario.run.seed, cell.seed, vm, ns))
        if progress is not None:
            progress(done, len(cells))
    return pl.DataFrame(
        rows,
        schema={
            "level": pl.Int64(),
            "lock": pl.String(),
            "repeat": pl.Int64(),
            "seed": pl.Int64(),
            "vm": pl.String(),
            "completion_ns": pl.Int64(),
        },
        orient="row",
    )


def experiment_table(runs: pl.DataFrame, without: str = LOCKS[0], with_cure: str = LOCKS[1]) -> pl.DataFrame:
    """Mean and sample std-dev of completion (s) per level and lock, and the cure's gain in percent."""
    secs = pl.col("completion_ns") / 1e9
    cells = runs.group_by("level", "lock").agg(
        secs.mean().alias("mean_s"), secs.std().alias("std_s"), pl.len().alias("n")
    )
    a = cells.filter(pl.col("lock") == without).select(
        "level", pl.col("mean_s").alias("without_mean_s"), pl.col("std_s").alias("without_std_s"), "n"
    )
    b = cells.filter(pl.col("lock") == with_cure).select(
        "level", pl.col("mean_s").alias("with_mean_s"), pl.col("std_s").alias("with_std_s")
    )
    return (
        a.join(b, on="level")
        .with_columns(
            ((pl.col("without_mean_s") - pl.col("with_mean_s")) / pl.col("without_mean_s") * 100).alias(
                "gain_pct"
            )
        )
        .select("level", "without_mean_s", "without_std_s", "with_mean_s", "with_std_s", "gain_pct", "n")
        .sort("level")
    )


def run_experiment(
    scenario: Scenario,
    *,
    repeats: int = 5,
    levels: tuple[int, ...] = LEVELS,
    progress: Callable[[int, int], None] | None = None,
) -> Experiment:
    """The sweep and its table (the library entry behind `pvtrace experiment`)."""
    runs = experiment_runs(scenario, repeats=repeats, levels=levels, progress=progress)
    return Experiment(scenario=scenario, repeats=repeats, runs=runs, table=experiment_table(runs))
