"""`pvtrace fleet report` and `pvtrace sweep report`: terminal summary, offline pages that render,
and numbers that follow from the parts (tasks run in process here: the clusters are tested
in test_fleet_analyze.py and test_sweep.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.fleet import store
from pvtrace.fleet.cells import cell_task
from pvtrace.fleet.grid import grid_from_dict
from pvtrace.fleet.inputs import TraceInput
from pvtrace.fleet.report import load_fleet, render_terminal
from pvtrace.fleet.sweep import prepare as prepare_sweep
from pvtrace.fleet.sweep import write_results
from pvtrace.fleet.sweep_report import gains
from pvtrace.fleet.tasks import analyze_trace
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from chromium import check_page, chromium_path, count_specs

runner = CliRunner()
OPTIONS = {"format": "auto", "lock_kind": None, "strict": False}


@pytest.fixture(scope="module")
def fleet_dir(trace_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fleet-report") / "fleet"
    store.prepare(root, {})
    labels = {
        "seed.parquet": {"host": "h1", "overcommit": "1"},
        "lhp.parquet": {"host": "h2", "overcommit": "2"},
        "host.perf": {"host": "h2", "overcommit": "2"},
        "corrupt.txt": {"host": "h3", "overcommit": "3"},
    }
    for name, lab in labels.items():
        t = TraceInput(name, (str(trace_dir / name),), lab).with_id(OPTIONS)
        analyze_trace(t, str(root), OPTIONS, 5)
    return root


def test_fleet_terminal_summary_names_offenders_and_failures(fleet_dir):
    data = load_fleet(fleet_dir)
    console = Console(record=True, width=250)
    render_terminal(data, console, top=5)
    text = console.export_text()
    traces = data.traces
    worst = traces.sort("waste_ns", descending=True, nulls_last=True).row(0, named=True)
    assert "3 traces analyzed" in text and "1 failed" in text
    assert "waste unavailable for 1 trace(s)" in text  # the host-only perf trace: not drawn as 0
    assert "host.perf (host-only)" in text  # and named, as docs/fleet.md says (new-user audit)
    first_row = next(line for line in text.splitlines() if ".parquet" in line and "pvtrace report" in line)
    assert worst["trace"] in first_row and f"pvtrace report {worst['files'][0]}" in first_row
    assert "failed corrupt.txt (ingest)" in text
    assert "[cpu]" in text or "not a trace" in text  # the error's own text, not eaten as markup
    total = int(traces["waste_ns"].drop_nulls().sum())
    from pvtrace.report.labels import fmt_ns

    assert f"over 2 traces: {fmt_ns(total)}" in text


def test_fleet_report_page(fleet_dir, tmp_path):
    page = tmp_path / "fleet.html"
    res = runner.invoke(app, ["fleet", "report", str(fleet_dir), "-o", str(page)])
    assert res.exit_code == 0, res.output
    html = page.read_text()
    assert "Waste against labels" in html and "overcommit" in html and "corrupt.txt" in html
    assert "Traces without waste" in html and "host.perf" in html
    assert "waste_ns" not in html and "pct_of_running" not in html.split("<script")[0]  # the page's words
    assert (
        "http://" not in html.split("<footer>")[0].split("</script>")[-1]
    )  # no remote resources after scripts
    res = runner.invoke(app, ["fleet", "report", str(fleet_dir), "-o", str(page)])
    assert res.exit_code != 0 and "exists" in res.output  # never overwritten without --force
    if chromium_path() is None:
        pytest.skip("chromium is not installed")
    n = count_specs(page)
    assert n >= 4 and check_page(page).problems(n) == []


def test_not_a_fleet_folder(tmp_path):
    res = runner.invoke(app, ["fleet", "report", str(tmp_path)])
    assert res.exit_code == 2 and "not a fleet folder" in res.output


def test_fleet_and_sweep_reports_refuse_a_page_already_there_before_the_work(
    fleet_dir, sweep_dir, tmp_path, monkeypatch
):
    """`fleet report -o old.html` printed the whole terminal report, then refused the page;
    `sweep report` built its page (7 s on a two-cell sweep) before it refused to write it."""
    from pvtrace.fleet import sweep_report

    def no_work(*args, **kwargs):
        raise AssertionError("the report was built before its output was checked")

    monkeypatch.setattr(sweep_report, "write_sweep_report", no_work)
    page = tmp_path / "old.html"
    page.write_text("mine")
    for args in (["fleet", "report", str(fleet_dir)], ["sweep", "report", str(sweep_dir)]):
        res = runner.invoke(app, [*args, "-o", str(page)])
        assert res.exit_code == 1 and "already exists; pass --force" in res.stderr, res.output
        assert res.stdout == ""  # no terminal report before the error
    assert page.read_text() == "mine"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep-report") / "sweep"
    raw = {
        "sweep": {"seeds": 2, "analyze": False},
        "vm": {"count": [1, 2], "ops": 150},
        "lock": {"algorithm": ["ticket", "pv-ticket"]},
        "hypervisor": {"kick_latency_ns": [1_000, 5_000]},
    }
    return _run_sweep(root, raw)


def _run_sweep(root: Path, raw: dict) -> Path:
    """A seed-table sweep of grid `raw` run in-process into `root`, with its results table."""
    grid = grid_from_dict(raw, "g", None, load_preset("seed-table"))
    prepare_sweep(root, grid)
    cells = grid.cells()
    for c in cells:
        assert cell_task(c, str(root), grid.analyze, grid.view)["status"] == "done"
    write_results(root, cells)
    return root


def test_gain_pairs_each_run_with_its_baseline_seed(sweep_dir):
    results = pl.read_parquet(sweep_dir / "results.parquet")
    params = ["vm.count", "lock.algorithm", "hypervisor.kick_latency_ns"]
    g = gains(results, params, ("lock.algorithm", "ticket"))
    assert g.height == 8 and set(g["lock.algorithm"]) == {"pv-ticket"}
    r = g.row(0, named=True)
    base = results.filter(
        (pl.col("lock.algorithm") == "ticket")
        & (pl.col("vm.count") == r["vm.count"])
        & (pl.col("hypervisor.kick_latency_ns") == r["hypervisor.kick_latency_ns"])
        & (pl.col("seed") == r["seed"])
    )["completion_mean_ns"].item()
    assert r["gain_pct"] == pytest.approx((base - r["completion_mean_ns"]) / base * 100)


def test_sweep_report_page(sweep_dir, tmp_path):
    page = tmp_path / "sweep.html"
    res = runner.invoke(
        app, ["sweep", "report", str(sweep_dir), "-o", str(page), "--x", "hypervisor.kick_latency_ns"]
    )
    assert res.exit_code == 0, res.output
    assert "x = hypervisor.kick_latency_ns, y = vm.count, baseline = lock.algorithm=ticket" in res.output
    res = runner.invoke(app, ["sweep", "report", str(sweep_dir), "-o", str(page), "--force", "--x", "nope"])
    assert res.exit_code == 2 and "--x nope" in res.output
    # a swept parameter refused because it is the baseline: the error says so (it said only
    # "choose one of" the others)
    res = runner.invoke(
        app, ["sweep", "report", str(sweep_dir), "-o", str(page), "--force", "--y", "lock.algorithm"]
    )
    assert res.exit_code == 2 and "lock.algorithm is the baseline the gain is measured against" in res.output
    if chromium_path() is None:
        pytest.skip("chromium is not installed")
    n = count_specs(page)
    assert n == 4 and check_page(page).problems(n) == []


def test_sweep_axes_show_the_values_swept_and_waste_bars_stop_at_zero(sweep_dir, tmp_path):
    from pvtrace.fleet.sweep_report import MAX_CATEGORIES, _field, _summary

    results = pl.read_parquet(sweep_dir / "results.parquet")
    # 2 VM counts: ticks at 1 and 2 only, never 1.5 VMs; a long numeric range is an axis
    assert _field(results, "vm.count").endswith(":O")
    many = pl.DataFrame({"p": list(range(MAX_CATEGORIES + 1))})
    assert _field(many, "p").endswith(":Q")
    spread = pl.DataFrame({"k": [1, 1, 1], "w": [0.0, 0.0, 9.0]})  # mean 3, std 5.2
    assert _summary(spread, "w", ["k"], floor=0.0)["lo"].to_list() == [0.0]
    assert _summary(spread, "w", ["k"])["lo"].item() < 0  # a gain may go below 0
    page = tmp_path / "s.html"
    res = runner.invoke(app, ["sweep", "report", str(sweep_dir), "-o", str(page)])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert "time saved by pv-ticket over ticket (%)" in text and "Above 0 the run finished sooner" in text


def test_a_one_axis_sweep_cure_against_no_cure_is_reported(tmp_path):
    """`lock.algorithm = [ticket, pv-ticket]` alone, the basic cure vs no-cure sweep, was refused
    ("no parameter besides the baseline"): its gain and waste are drawn against the algorithm."""
    root = tmp_path / "sweep"
    raw = {
        "sweep": {"seeds": 2, "analyze": False},
        "vm": {"ops": 100},
        "lock": {"algorithm": ["ticket", "pv-ticket"]},
    }
    _run_sweep(root, raw)
    page = tmp_path / "s.html"
    res = runner.invoke(app, ["sweep", "report", str(root), "-o", str(page)])
    assert res.exit_code == 0, res.output
    assert "x = lock.algorithm, y = -, baseline = lock.algorithm=ticket" in res.output
    text = page.read_text()
    assert "time saved over ticket (%), by lock.algorithm" in text and '"lock.algorithm":"pv-ticket"' in text
    assert "no run gives" not in text
    # the only swept parameter is the x axis: asked for by name it is the same page; a wrong name
    # lists it (it said "choose one of (no swept parameter)")
    res = runner.invoke(
        app, ["sweep", "report", str(root), "-o", str(page), "--force", "--x", "lock.algorithm"]
    )
    assert res.exit_code == 0, res.output
    assert "time saved over ticket (%), by lock.algorithm" in page.read_text()
    res = runner.invoke(app, ["sweep", "report", str(root), "-o", str(page), "--force", "--x", "nope"])
    assert res.exit_code == 2 and "choose one of lock.algorithm" in res.output, res.output


def test_a_sweep_whose_guests_never_finish_says_why_it_has_no_gain(tmp_path):
    """Runs too short for their work: no completion time, so no gain. The page said "no run gives
    gain_pct" and the terminal nothing (new-user audit, an lhp-demo grid)."""
    cure = {"lock": {"algorithm": ["ticket", "pv-ticket"]}}
    raw = {"sweep": {"seeds": 1, "analyze": False}, "vm": {"ops": 100_000}, "run": {"duration_ns": 2_000_000}}
    _run_sweep(tmp_path / "sweep", raw | cure)
    page = tmp_path / "s.html"
    res = runner.invoke(app, ["sweep", "report", str(tmp_path / "sweep"), "-o", str(page)])
    assert res.exit_code == 0, res.output
    assert "no gain on the page: the guests of no run" in res.output and "run.duration_ns" in res.output
    text = page.read_text()
    assert "no gain: a gain compares completion times" in text and "gain_pct" not in text.split("<script")[0]


def test_report_pages_show_progress_on_a_terminal(fleet_dir, sweep_dir, tmp_path, monkeypatch):
    """`fleet report -o` and `sweep report` built their pages in silence (seconds under load)."""
    import io

    from pvtrace.cli import common

    screen = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=screen, force_terminal=True, width=100))
    for args in (
        ["fleet", "report", str(fleet_dir), "-o", str(tmp_path / "f.html")],
        ["sweep", "report", str(sweep_dir), "-o", str(tmp_path / "s.html")],
    ):
        screen.seek(0)
        screen.truncate()
        res = runner.invoke(app, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert "writing the page" in screen.getvalue(), args


def test_fleet_waste_says_where_it_is_partial(tmp_path):
    # lhp-demo's merged text of 0.1 s: vm0's two locks, even together, see too little for their
    # kind, so the trace's waste lacks their LWP. The fleet total says so, and so do the trace's and
    # those locks' rows.
    trace, _ = simulate_trace(load_preset("lhp-demo").replace(run={"duration_ns": 100_000_000}), seed=1)
    files = [f for f in write_rendered(trace, "ftrace", "merged", tmp_path / "lhp.txt") if f.suffix == ".txt"]
    root = tmp_path / "fleet"
    store.prepare(root, {})
    t = TraceInput("lhp-text", tuple(str(f) for f in files), {"host": "h1"}).with_id(OPTIONS)
    analyze_trace(t, str(root), OPTIONS, 5)
    data = load_fleet(root)
    console = Console(record=True, width=250)
    render_terminal(data, console, top=5)
    text = console.export_text()
    assert "partial in 1 of them: LWP is left out on locks of undecided kind" in text
    assert "--lock-kind" in text
    assert (
        next(line for line in text.splitlines() if line.startswith("│ lhp-text │ inferred")).count(
            "(partial)"
        )
        == 1
    )
    lock_rows = [line for line in text.splitlines() if line.startswith("│ lhp-text │ vm")]
    assert sum("(LHP only)" in r and "unknown (kind undecided)" in r for r in lock_rows) == 2
    # no LWP of 0 for an undecided one (a decided lock's 0 is a measured 0)
    assert all("0 ns" not in r.split("│")[-2] for r in lock_rows if "(LHP only)" in r)


def test_fleet_partial_note_names_what_completes_each_part(tmp_path):
    """The note under the fleet's waste total: the undecided locks' note when that is all the traces
    lack; else every distinct fix their summaries name (a guest trace also lacks what its pv
    spinlocks were), never the lock kind alone."""
    import json

    from pvtrace.analyze.partial import KIND_FIX
    from pvtrace.fleet.report import FleetData, partial_mark

    def data(*fixes_per_trace):
        summaries = [
            json.dumps(
                {"partial": {"spin_waste": [{"missing": f"part {i}", "fix": f} for i, f in enumerate(fixes)]}}
            )
            for fixes in fixes_per_trace
        ] + [json.dumps({"partial": {}})]
        traces = pl.DataFrame({"waste_ns": [1] * len(summaries), "summary_json": summaries})
        empty = pl.DataFrame()
        return FleetData(tmp_path, traces, empty, empty, empty)

    only_kind = partial_mark(data([KIND_FIX], [KIND_FIX]))
    assert only_kind.startswith("; partial in 2 of them: LWP is left out on locks of undecided kind")
    mixed = partial_mark(data([KIND_FIX], ["pass --pv-spinlocks yes or no", KIND_FIX]))
    assert "partial in 2 of them" in mixed and "undecided kind;" not in mixed
    assert mixed.endswith(f"what completes them: {KIND_FIX}; pass --pv-spinlocks yes or no")
    assert partial_mark(data()) == ""
