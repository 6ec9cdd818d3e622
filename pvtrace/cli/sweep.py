"""`pvtrace sweep GRID.toml -o SWEEP_DIR` and `pvtrace sweep report SWEEP_DIR`: a grid of scenarios
x seeds, each cell simulated and analyzed on Dask (several cells per task), and its gain/waste
charts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from pvtrace.cli.common import err, handle_errors, out, progress
from pvtrace.cli.fleet import (
    DASHBOARD_HELP,
    SCHEDULER_HELP,
    WORKERS_HELP,
    check_results_folder,
    finish_tally,
    run_on_cluster,
)
from pvtrace.outputs import OutputSet


class _RunByDefault(TyperGroup):
    """`pvtrace sweep GRID.toml ...` means `pvtrace sweep run GRID.toml ...`."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    """Add `pvtrace sweep ...`."""
    sweep = typer.Typer(
        cls=_RunByDefault,
        help="Sweep a grid of scenarios x seeds on a Dask cluster (`pvtrace sweep GRID.toml -o DIR`), "
        "and chart it (`pvtrace sweep report DIR`).",
        no_args_is_help=True,
    )
    app.add_typer(sweep, name="sweep")

    @sweep.command("run")
    @handle_errors
    def run_cmd(
        grid_path: Annotated[
            Path, typer.Argument(help="GRID.toml: a scenario whose keys may hold lists or ranges.")
        ],
        out_dir: Annotated[Path, typer.Option("-o", "--out", help="The sweep folder (SWEEP_DIR).")],
        seeds: Annotated[
            int | None, typer.Option("--seeds", min=1, help="Seeds per cell (overrides [sweep] seeds).")
        ] = None,
        scheduler: Annotated[str | None, typer.Option("--scheduler", help=SCHEDULER_HELP)] = None,
        workers: Annotated[int | None, typer.Option("--workers", min=1, help=WORKERS_HELP)] = None,
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="Run again the cells that failed.")
        ] = False,
        quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar, no summary.")] = False,
        dashboard: Annotated[bool, typer.Option("--dashboard", help=DASHBOARD_HELP)] = False,
    ) -> None:
        """Simulate (and analyze) every cell of the grid; results.parquet holds one row per run."""
        from pvtrace.fleet.grid import load_grid
        from pvtrace.fleet.sweep import plan, run_sweep, write_results

        check_results_folder(out_dir, "sweep.json")
        grid = load_grid(grid_path)
        if seeds is not None:
            grid.seeds = [grid.base.run.seed + r for r in range(seeds)]
        cells = grid.cells()
        _, before = plan(cells, out_dir, retry_failed)
        todo = before.todo
        if not quiet:
            axes = " x ".join(f"{k} ({len(v)})" for k, v in grid.axes.items()) or "no axes"
            err.print(
                f"sweep: {axes} x {len(grid.seeds)} seeds = {before.total} cells; {before.skipped_done} done "
                f"before, {before.skipped_failed} failed before; {todo} to run",
                highlight=False,
                soft_wrap=True,  # one line in a log, not cut at 80 columns
            )
        if todo == 0 and (out_dir / "results.parquet").is_file():
            write_results(out_dir, cells)
            return

        tally = run_on_cluster(
            "cells",
            lambda: plan(cells, out_dir, retry_failed)[1],
            scheduler,
            workers,
            quiet,
            dashboard,
            lambda client, tick: run_sweep(
                client, grid, out_dir, retry_failed=retry_failed, on_progress=tick
            ),
        )
        finish_tally(tally, f"ran {tally.ran}", out_dir / "results.parquet", "SWEEP_DIR/failures", quiet)

    @sweep.command("report")
    @handle_errors
    def report_cmd(
        sweep_dir: Annotated[Path, typer.Argument(help="A folder written by `pvtrace sweep`.")],
        output: Annotated[Path, typer.Option("-o", "--out", help="The HTML page to write.")],
        x: Annotated[
            str | None, typer.Option("--x", help="Parameter on the x axis (default: the first axis).")
        ] = None,
        y: Annotated[
            str | None,
            typer.Option(
                "--y", help="Second parameter: heatmap rows, one line each (default: the next axis)."
            ),
        ] = None,
        baseline: Annotated[
            str | None,
            typer.Option(
                "--baseline",
                help="PARAM=VALUE the gain is measured against (default: the first lock.algorithm, if swept).",
            ),
        ] = None,
        force: Annotated[bool, typer.Option("--force", help="Overwrite the page.")] = False,
        quiet: Annotated[
            bool, typer.Option("-q", "--quiet", help="No progress bar, summary line or 'Wrote' line.")
        ] = False,
    ) -> None:
        """Gain and waste against any two parameters: heatmaps, and lines with error bars over seeds."""
        from pvtrace.fleet.sweep_report import write_sweep_report

        with OutputSet(force=force, inputs=[sweep_dir]) as outputs:
            outputs.plan(output, new=True)  # before the work: a page already there, an unwritable folder
            with progress("writing the page", total=None, quiet=quiet) as bar:
                summary = write_sweep_report(
                    sweep_dir, output, x=x, y=y, baseline=baseline, force=force, progress=bar.advance
                )
        if not quiet:
            out.print(summary, markup=False, highlight=False, soft_wrap=True)
            out.print(f"Wrote {output}", markup=False)
