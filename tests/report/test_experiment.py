"""The experiment page: completion time per lock algorithm and number of guests, with error bars."""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.errors import UsageError
from pvtrace.report.experiment import (
    EXPERIMENT_COLUMNS,
    chart_completion,
    experiment_table,
    summarize_runs,
    write_experiment_report,
)


def runs() -> pl.DataFrame:
    """Two algorithms, 1-2 guests, 3 seeds each: ticket takes 100/110/120 ms per guest, pv-ticket 90 ms flat."""
    rows = []
    for g in (1, 2):
        for seed, extra in enumerate((0, 10, 20)):
            rows.append(("ticket", g, seed, g * (100 + extra) * 1_000_000, 5 * g))
            rows.append(("pv-ticket", g, seed, g * 90 * 1_000_000, g))
    return pl.DataFrame(
        rows, schema=["algorithm", "n_guests", "seed", "completion_ns", "n_lhp"], orient="row"
    )


def test_summary_is_mean_and_std_over_seeds():
    s = (
        summarize_runs(runs())
        .filter((pl.col("algorithm") == "ticket") & (pl.col("n_guests") == 2))
        .row(0, named=True)
    )
    assert s["mean"] == pytest.approx(220e6)
    assert s["std"] == pytest.approx(20e6)  # sample std of 200, 220, 240 ms
    assert s["n_runs"] == 3


def test_table_has_mean_std_and_gain_over_ticket():
    table = experiment_table(runs())
    assert table.columns == ["guests", "ticket", "pv-ticket", "gain pv-ticket", "seeds"]
    one = table.row(0, named=True)
    assert one["ticket"] == "110.000 (10.000) ms"
    assert one["pv-ticket"] == "90.000 (0.000) ms"
    assert one["gain pv-ticket"] == f"{round(100 * 20 / 110, 1)}%"
    assert one["seeds"] == "3"


def test_seeds_column_counts_seeds_not_rows_per_guest():
    # the experiment writes one row per guest and seed: 4 guests x 5 seeds are 5 seeds, not 20 runs
    rows = [("ticket", 4, seed, vm, 100_000_000 + seed) for seed in range(5) for vm in range(4)]
    results = pl.DataFrame(
        rows, schema=["algorithm", "n_guests", "seed", "vm", "completion_ns"], orient="row"
    )
    assert experiment_table(results)["seeds"].to_list() == ["5"]


def test_single_runs_have_no_std():
    table = experiment_table(runs().filter(pl.col("seed") == 0))
    assert table.row(0, named=True)["ticket"] == "100.000 (n/a) ms"


def test_scenarios_get_their_own_rows_and_panels():
    df = pl.concat([runs().with_columns(pl.lit(s).alias("scenario")) for s in ("A", "B")])
    table = experiment_table(df)
    assert table["scenario"].to_list() == ["A", "A", "B", "B"]
    spec = chart_completion(df).to_dict()
    assert spec["facet"]["column"]["field"] == "scenario"


def test_chart_error_bars_span_one_std():
    spec = chart_completion(runs()).to_dict()
    rows = next(iter(spec["datasets"].values()))
    t2 = next(r for r in rows if r["algorithm"] == "ticket" and r["n_guests"] == 2)
    assert (t2["low"], t2["value"], t2["high"]) == pytest.approx((0.2, 0.22, 0.24))


def test_missing_columns_are_named():
    with pytest.raises(UsageError) as err:
        write_experiment_report(runs().drop("seed"), "unused.html")
    assert "seed" in str(err.value)
    assert all(c in str(err.value) for c in EXPERIMENT_COLUMNS)


def test_page_has_the_table_plot_and_extra_metrics(tmp_path):
    text = write_experiment_report(runs(), tmp_path / "e.html").read_text(encoding="utf-8")
    assert 'data-target="chart-experiment-completion"' in text
    assert 'data-target="chart-experiment-n-lhp"' in text  # the extra per-run metric
    assert "110.000 (10.000) ms" in text


def test_the_error_bars_say_over_what_they_are_taken(tmp_path):
    """One seed: the standard deviation is over that seed's guests, and the page says so (it said
    "over seeds" beside "1 seed"; new-user audit)."""
    one = runs().filter(pl.col("seed") == 0)
    text = write_experiment_report(one, tmp_path / "e.html").read_text(encoding="utf-8")
    assert "over the guests of the seed" in text and "over seeds" not in text
    text = write_experiment_report(runs(), tmp_path / "e3.html").read_text(encoding="utf-8")
    assert "over the guests of every seed" in text
