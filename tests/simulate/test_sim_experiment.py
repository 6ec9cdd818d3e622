"""`pvtrace experiment`: the founding table's shape, and the command's outputs."""

from __future__ import annotations

import itertools
import json

import polars as pl
import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.simulate.experiment import experiment_table, run_experiment
from pvtrace.simulate.scenario import load_preset

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize("ple", [True, False], ids=["ple-on", "ple-off"])
def test_seed_table_reproduces_the_founding_table_shape(ple):
    # science.md: time grows with the guests; the pv lock cuts it at every level (level 1 too,
    # on this loaded host) and its gain grows with the guests, with PLE on (KVM's default) and
    # off. The spread shrinks under the pv lock where ticket collapses into convoys (PLE off);
    # with PLE on there are no convoys to collapse into and runs are regular either way.
    exp = run_experiment(load_preset("seed-table").replace(hypervisor={"ple": ple}), repeats=5)
    t = exp.table
    assert t["level"].to_list() == [1, 2, 3, 4]
    assert t["n"].to_list() == [5, 10, 15, 20]
    for col in ("without_mean_s", "with_mean_s"):
        means = t[col].to_list()
        assert all(b > a for a, b in itertools.pairwise(means)), (col, means)
    gains = t["gain_pct"].to_list()
    assert all(g > 0 for g in gains), gains
    assert all(b > a for a, b in itertools.pairwise(gains)), gains
    if ple:
        for col in ("without", "with"):
            assert (t[f"{col}_std_s"] / t[f"{col}_mean_s"]).max() < 0.05, t
    else:
        wider = (t["without_std_s"] > t["with_std_s"]).sum()
        assert wider >= 3, t


def test_table_math_on_known_runs():
    runs = pl.DataFrame(
        {
            "level": [1, 1, 1, 1],
            "lock": ["ticket", "ticket", "pv-ticket", "pv-ticket"],
            "repeat": [0, 1, 0, 1],
            "seed": [1, 2, 1, 2],
            "vm": ["vm0"] * 4,
            "completion_ns": [1_000_000_000, 3_000_000_000, 1_000_000_000, 2_000_000_000],
        }
    )
    row = experiment_table(runs).row(0, named=True)
    assert row["without_mean_s"] == 2.0 and row["with_mean_s"] == 1.5
    assert row["gain_pct"] == 25.0
    assert row["without_std_s"] == pytest.approx(2**0.5)


def test_experiment_command_prints_and_writes(tmp_path):
    sc = tmp_path / "tiny.toml"
    sc.write_text("[host]\npcpus = 2\n[vm]\nvcpus = 2\nops = 30\ncompute_ns = 20_000\n")
    out = tmp_path / "exp"
    r = runner.invoke(app, ["experiment", str(sc), "--repeats", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "without (ticket)" in r.output and "with (pv-ticket)" in r.output and "gain" in r.output
    # the std-dev is over every guest of every seed (it read as over seeds: '1 seed' with a std-dev)
    assert "mean (std-dev) of guests x 2 seeds" in r.output
    table = pl.read_csv(out / "experiment.csv")
    assert table["level"].to_list() == [1, 2, 3, 4]
    runs = pl.read_csv(out / "experiment-runs.csv")
    assert runs.height == 2 * 2 * (1 + 2 + 3 + 4)
    doc = json.loads((out / "experiment.json").read_text())
    assert doc["repeats"] == 2 and len(doc["table"]) == 4
    again = runner.invoke(app, ["experiment", str(sc), "--repeats", "1", "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    forced = runner.invoke(app, ["experiment", str(sc), "--repeats", "1", "-o", str(out), "--force", "-q"])
    assert forced.exit_code == 0
    assert pl.read_csv(out / "experiment-runs.csv").height == 2 * 10


def test_experiment_report_page_carries_the_table(tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text("[vm]\nops = 200\n")
    page = tmp_path / "exp.html"
    result = runner.invoke(app, ["experiment", str(scenario), "-r", "2", "-q", "--report", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "pv-ticket" in html and "ticket" in html
    assert "cdn." not in html  # self-contained
    again = runner.invoke(app, ["experiment", str(scenario), "-r", "2", "-q", "--report", str(page)])
    assert again.exit_code != 0 and "already exists" in again.output
