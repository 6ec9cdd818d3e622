"""`pvtrace sweep`: grid expansion, each cell equal to a direct run of its scenario, resume."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.errors import ScenarioError, UsageError
from pvtrace.fleet.grid import grid_from_dict, load_grid
from pvtrace.simulate.run import discard, simulate
from pvtrace.simulate.scenario import load_preset

runner = CliRunner()

GRID = """
[sweep]
preset = "seed-table"
seeds = 2

[vm]
count = [1, 2]
ops = 150

[lock]
algorithm = ["ticket", "pv-ticket"]
spin_threshold_ns = { from = 20_000, to = 40_000, step = 20_000 }
"""


def test_grid_is_the_cross_product_in_file_order_with_seeds_innermost(tmp_path):
    (tmp_path / "g.toml").write_text(GRID)
    grid = load_grid(tmp_path / "g.toml")
    cells = grid.cells()
    assert grid.axes == {
        "vm.count": [1, 2],
        "lock.algorithm": ["ticket", "pv-ticket"],
        "lock.spin_threshold_ns": [20_000, 40_000],
    }
    assert len(cells) == grid.n_cells == 16
    assert [c.seed for c in cells[:3]] == [1, 2, 1]
    assert cells[2].params == {"vm.count": 1, "lock.algorithm": "ticket", "lock.spin_threshold_ns": 40_000}
    assert cells[-1].scenario.vm.count == 2 and cells[-1].scenario.lock.algorithm == "pv-ticket"
    assert all(c.scenario.vm.ops == 150 for c in cells)  # a plain value is fixed, not an axis
    assert len({c.cell_id for c in cells}) == 16


def test_a_list_valued_parameter_is_an_axis_only_as_a_list_of_lists():
    base = load_preset("seed-table")
    fixed = grid_from_dict({"vm": {"count": 2, "clock_offsets_ns": [0, 5]}}, "g", None, base)
    assert fixed.axes == {} and tuple(fixed.base.vm.clock_offsets_ns) == (0, 5)
    swept = grid_from_dict({"vm": {"count": 2, "clock_offsets_ns": [[0, 5], [0, 9]]}}, "g", None, base)
    assert swept.axes == {"vm.clock_offsets_ns": [[0, 5], [0, 9]]}


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        ({"vm": {"count": []}}, UsageError, "empty list"),
        ({"vm": {"count": {"from": 3, "to": 1}}}, UsageError, "is empty"),
        ({"vm": {"count": [1, 0]}}, ScenarioError, r"^g\.toml: grid cell .*vm\.count"),  # the file named
        ({"vm": {"nope": [1, 2]}}, ScenarioError, "vm.nope"),
        ({"sweep": {"seeds": 0}}, UsageError, "seeds"),
        ({"sweep": {"bogus": 1}}, UsageError, "bogus"),
        ({"kvm": {"ple": [True, False]}}, UsageError, r"unknown scenario section \[kvm\] \(known: \[host\]"),
    ],
)
def test_bad_grids_are_one_line_errors(raw, error, message):
    with pytest.raises(error, match=message):
        grid_from_dict(raw, "g.toml", None, load_preset("seed-table")).cells()


def test_sweep_cells_equal_direct_runs_and_a_rerun_does_no_work(tmp_path):
    grid_file = tmp_path / "g.toml"
    grid_file.write_text(GRID)
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["sweep", str(grid_file), "-o", str(out), "--workers", "2", "-q"])
    assert res.exit_code == 0, res.output
    results = pl.read_parquet(out / "results.parquet")
    assert results.height == 16 and results["cell"].to_list() == list(range(16))
    for cell in load_grid(grid_file).cells()[::5]:
        row = results.filter(pl.col("cell_id") == cell.cell_id).row(0, named=True)
        truth = simulate(cell.scenario, discard, seed=cell.seed).truth
        assert row["completion_ns"] == list(truth.completion_ns.values())
        for key, value in truth.summary.totals.items():
            assert row[f"truth_{key}"] == value, key
        # the full view is the simulator's own: the analyzer gives the truth's waste back
        assert row["analyzed_level"] == "exact"
        assert row["analyzed_waste_lhp_ns"] == truth.summary.totals["waste_lhp_ns"]
        assert row["analyzed_waste_lwp_ns"] == truth.summary.totals["waste_lwp_ns"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    res = runner.invoke(app, ["sweep", str(grid_file), "-o", str(out)])
    assert res.exit_code == 0 and "16 done before" in res.output and "0 to run" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps
    # more seeds: only the new cells run
    res = runner.invoke(app, ["sweep", str(grid_file), "-o", str(out), "--seeds", "3", "--workers", "1"])
    assert res.exit_code == 0 and "16 done before" in res.output and "ran 8: 8 done" in res.output
    assert pl.read_parquet(out / "results.parquet").height == 24


def test_a_cell_that_fails_is_a_failure_row_and_is_retried_only_on_request(tmp_path):
    from pvtrace.fleet.cells import cell_task
    from pvtrace.fleet.grid import Cell
    from pvtrace.fleet.sweep import plan

    (tmp_path / "cells").mkdir()
    (tmp_path / "failures").mkdir()
    broken = Cell(0, {"vm.count": 1}, 1, scenario=None, cell_id="feedfacefeedface")  # no scenario: raises
    status = cell_task(broken, str(tmp_path), analyze=True, view="full")
    assert status["status"] == "failed" and status["stage"] == "run"
    row = pl.read_parquet(tmp_path / "failures" / "feedfacefeedface.parquet").row(0, named=True)
    assert row["stage"] == "run" and "AttributeError" in row["error"] and "\n" not in row["error"]
    assert not list((tmp_path / "cells").iterdir())
    assert plan([broken], tmp_path, retry_failed=False)[0] == []
    assert plan([broken], tmp_path, retry_failed=True)[0] == [broken]


def test_the_plan_line_is_one_line_in_a_log(tmp_path):
    """Piped to a log, `pvtrace sweep` cut its plan line at 80 columns ('0 \\nfailed before'), unlike
    every other command's messages."""
    from pvtrace.fleet.cells import cell_task
    from pvtrace.fleet.sweep import prepare, write_results

    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace("seeds = 2", "seeds = 1\nanalyze = false"))
    grid, root = load_grid(path), tmp_path / "sweep"
    prepare(root, grid)
    for c in grid.cells():
        assert cell_task(c, str(root), grid.analyze, grid.view)["status"] == "done"
    write_results(root, grid.cells())
    res = runner.invoke(app, ["sweep", str(path), "-o", str(root)])  # all done: no cluster starts
    assert res.exit_code == 0, res.output
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("sweep: ")]
    assert len(line) > 80 and line.endswith("; 0 to run")
