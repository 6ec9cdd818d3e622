"""`pvtrace generate`: outputs, determinism, refusal to overwrite, errors; the streamed Parquet."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.schema import EVENT_SCHEMA
from pvtrace.simulate.run import simulate, simulate_to_parquet, simulate_trace
from pvtrace.simulate.scenario import load_preset
from pvtrace.summary import TOTAL_KEYS
from pvtrace.trace import read_trace

runner = CliRunner()


def generate(*args: str):
    return runner.invoke(app, ["generate", *args])


def test_generate_writes_events_and_truth(tmp_path):
    out, truth = tmp_path / "x.parquet", tmp_path / "t.json"
    r = generate("--preset", "lhp-demo", "-o", str(out), "--truth", str(truth))
    assert r.exit_code == 0, r.output
    assert "Simulated 0.300 s" in r.output
    # the run stops at 0.3 s with the work unfinished: its "-" completion is explained
    assert "completion -: the VM had not finished its work when the run stopped" in r.output
    trace = read_trace(out)
    assert trace.events.schema == EVENT_SCHEMA
    m = trace.meta
    assert (m.format, m.view, m.t_start, m.t_end, m.n_pcpus) == ("sim", "full", 0, 300_000_000, 2)
    assert set(m.vms) == {"vm0", "vm1"} and m.vms["vm0"].lock_kind == "fifo"
    assert m.vms["vm0"].lock_algorithm == "ticket" and m.vms["vm0"].n_vcpus == 2
    assert set(m.clock["guest_offset_ns"]) == {"vm0", "vm1"}
    assert m.extra["seed"] == 1 and m.extra["scenario"]["vm"]["count"] == 2
    ev = trace.events
    assert ev["seq"].to_list() == list(range(ev.height))
    assert ev["ts"].is_sorted()
    assert set(ev["origin"].cast(pl.String).unique()) == {"sim"}
    assert ev.filter(pl.col("ts") == 0, pl.col("kind").is_in(["vcpu_run", "vcpu_preempt"]))["vcpu"].len() == 4
    t = json.loads(truth.read_text())
    assert list(t["totals"]) == list(TOTAL_KEYS)
    assert t["totals"]["n_lhp"] > 0 and t["totals"]["n_lwp"] > 0 and t["totals"]["n_convoys"] > 0
    assert t["totals"]["n_acquisitions"] == ev.filter(pl.col("kind") == "lock_acquire").height
    assert {r["vm"] for r in t["lhp_incidents"]} <= {"vm0", "vm1"}
    assert sum(r["running_ns"] + r["preempted_ns"] + r["halted_ns"] for r in t["vcpus"]) == 4 * 300_000_000


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = (tmp_path / f"{n}.parquet" for n in "abc")
    ta, tb = tmp_path / "a.json", tmp_path / "b.json"
    for path, truth, seed in ((a, ta, "7"), (b, tb, "7"), (c, None, "8")):
        args = ["--preset", "lhp-demo", "--seed", seed, "-o", str(path), "-q"]
        if truth is not None:
            args += ["--truth", str(truth)]
        assert generate(*args).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    assert ta.read_bytes() == tb.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert not read_trace(a).events.equals(read_trace(c).events)


def test_streamed_batches_equal_one_batch(tmp_path):
    s = load_preset("lhp-demo").replace(run={"duration_ns": 50_000_000})
    whole, truth = simulate_trace(s)
    batches: list[pl.DataFrame] = []
    run = simulate(s, batches.append, batch_size=500)
    assert len(batches) > 5
    assert pl.concat(batches).equals(whole.events)
    assert run.truth.summary.totals == truth.summary.totals
    simulate_to_parquet(s, tmp_path / "s.parquet")
    assert read_trace(tmp_path / "s.parquet").events.equals(whole.events)


def test_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "x.parquet"
    out.write_text("precious")
    r = generate("--preset", "lhp-demo", "-o", str(out), "-q")
    assert r.exit_code == 1
    assert "already exists; pass --force" in r.output
    assert out.read_text() == "precious"
    truth = tmp_path / "t.json"
    truth.write_text("precious too")
    r = generate("--preset", "lhp-demo", "-o", str(tmp_path / "y.parquet"), "--truth", str(truth), "-q")
    assert r.exit_code == 1 and truth.read_text() == "precious too"
    assert not (tmp_path / "y.parquet").exists()  # checked before simulating
    r = generate("--preset", "lhp-demo", "-o", str(out), "--truth", str(truth), "--force", "-q")
    assert r.exit_code == 0 and read_trace(out).events.height > 0


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["--preset", "nope"], "unknown preset 'nope'", 2),
        (["--format", "xml"], "unknown --format 'xml'", 2),
        (["--view", "side"], "unknown --view 'side'", 2),
        (["--preset", "lhp-demo", "--seed", "-1"], "--seed must be >= 0, got -1", 2),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, needle, code):
    r = generate(*args, "-o", str(tmp_path / "x.parquet"))
    assert r.exit_code == code
    assert needle in r.output
    assert "Traceback" not in r.output


def test_scenario_file_errors_name_file_and_parameter(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[lock]\nalgorithm = 'mcs'\n")
    r = generate(str(bad), "-o", str(tmp_path / "x.parquet"))
    assert r.exit_code == 2
    assert "bad.toml: lock.algorithm must be one of" in r.output
    both = generate(str(bad), "--preset", "lhp-demo", "-o", str(tmp_path / "x.parquet"))
    assert both.exit_code == 2 and "not both" in both.output


def test_scenario_file_runs(tmp_path):
    sc = tmp_path / "s.toml"
    sc.write_text(
        "[host]\npcpus = 1\n[vm]\nvcpus = 2\nops = 50\ncompute_ns = 10_000\n[lock]\nalgorithm = 'pv-ticket'\n"
    )
    r = generate(str(sc), "-o", str(tmp_path / "x.parquet"), "--truth", str(tmp_path / "t.json"), "-q")
    assert r.exit_code == 0, r.output
    assert r.output == ""
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["ops_done"] == {"vm0": 100}
    assert t["completion_ns"]["vm0"] == t["t_end"]


def test_views_and_text_formats_go_through_the_renderer(tmp_path):
    base = ["--preset", "lhp-demo", "--seed", "3", "-q"]
    host = tmp_path / "host.parquet"
    assert generate(*base, "--view", "host", "-o", str(host)).exit_code == 0
    seen = read_trace(host)
    assert seen.meta.view == "host"
    assert seen.events.filter(pl.col("kind").cast(pl.String).str.starts_with("lock_")).height == 0
    text = tmp_path / "report.txt"
    r = generate(
        *base,
        "--format",
        "trace-cmd",
        "--view",
        "merged",
        "-o",
        str(text),
        "--truth",
        str(tmp_path / "t.json"),
    )
    assert r.exit_code == 0, r.output
    assert text.stat().st_size > 0 and (tmp_path / "t.json").exists()
    again = generate(*base, "--format", "trace-cmd", "--view", "merged", "-o", str(text))
    assert again.exit_code == 1 and "already exists" in again.output


def test_lock_and_set_choose_traits_without_toml(tmp_path):
    out = tmp_path / "x.parquet"
    r = generate(
        "--preset",
        "lhp-demo",
        "--lock",
        "unfair-queued",
        "--set",
        "run.duration_ns=20_000_000",
        "--set",
        "hypervisor.ple=true",
        "--set",
        "lock.early_halt=pred-preempted",
        "-o",
        str(out),
        "-q",
    )
    assert r.exit_code == 0, r.output
    m = read_trace(out).meta
    sc = m.extra["scenario"]
    assert (sc["lock"]["algorithm"], sc["lock"]["early_halt"], sc["hypervisor"]["ple"]) == (
        "unfair-queued",
        "pred-preempted",
        True,
    )
    assert m.t_end == 20_000_000 and m.vms["vm0"].lock_kind == "unfair"


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("lock.stealing=sometimes", "lock.stealing must be empty or one of none, once, unfair"),
        ("ple=true", "expected section.key=value"),
        ("vm.nope=1", "unknown parameter vm.nope"),
        ("kvm.ple=false", "unknown scenario section [kvm] (known: [host], [vm], [lock], [hypervisor]"),
    ],
)
def test_bad_set_is_a_one_line_error(tmp_path, arg, message):
    r = generate("--preset", "lhp-demo", "--set", arg, "-o", str(tmp_path / "x.parquet"), "-q")
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.parquet").exists()


def test_calibrate_is_a_command():
    r = runner.invoke(app, ["calibrate", "--help"])
    assert r.exit_code == 0 and "docs/simulator.md" in r.output  # not science.md, which is not shipped


def test_calibrate_shows_progress_on_a_terminal(monkeypatch):
    """`pvtrace calibrate` ran a minute and more with nothing on the terminal: both of its phases
    draw a bar (the simulations are stood in for; the scaling curve's own count is checked below)."""
    import io

    from rich.console import Console

    from pvtrace.cli import common
    from pvtrace.simulate import calibrate

    fake = calibrate.Check("t", "f", "p", 0.0, 2.0, 1.0)
    monkeypatch.setattr(calibrate, "check_groups", lambda repeats: [lambda: [fake]] * 4)
    runs = len(calibrate.ALGORITHMS) * len(calibrate.SCALING_VCPUS)

    def curve(progress=None):
        for _ in range(runs):
            progress()
        return pl.DataFrame({"lock": ["tas"] * 3, "vcpus": [8, 12, 16], "slowdown": [1.0, 1.0, 1.0]})

    monkeypatch.setattr(calibrate, "scaling_curve", curve)
    screen = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=screen, force_terminal=True, width=100))
    r = runner.invoke(app, ["calibrate"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "calibration targets" in screen.getvalue() and "scaling curve" in screen.getvalue()
    assert "100%" in screen.getvalue()
    # each table's title on a line of its own, whole (the scaling title wrapped over two lines)
    lines = [line.rstrip() for line in r.output.splitlines()]
    assert "One VM grown past an 8-pCPU host, same total work: slowdown vs 8 vCPUs" in lines
    assert "Calibration targets (KVM defaults, PLE on)" in lines
    assert "MISS:" not in r.output  # every fake check is inside its band


def test_calibrate_points_its_misses_at_the_docs(monkeypatch):
    # three bare MISS rows read as a broken model; docs/simulator.md says what each lacks
    from pvtrace.simulate import calibrate

    hit, miss = calibrate.Check("t", "f", "p", 0.0, 2.0, 1.0), calibrate.Check("t", "g", "p", 5.0, 17.0, 0.8)
    monkeypatch.setattr(calibrate, "check_groups", lambda repeats: [lambda: [hit, miss, miss]])
    r = runner.invoke(app, ["calibrate", "--no-scaling"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert '2 MISS: simulated outside the published band; docs/simulator.md (Calibration, "The misses")' in (
        " ".join(r.output.split())
    )


def test_scaling_curve_reports_each_run():
    from pvtrace.simulate.calibrate import SCALING_VCPUS, scaling_curve

    calls = []
    curve = scaling_curve(algorithms=("tas",), total_ops=480, progress=lambda: calls.append(1))
    assert len(calls) == len(SCALING_VCPUS) == curve.height


def test_the_truth_window_note_comes_only_with_a_truth(tmp_path):
    # it named the truth's window and a Python helper on every text run, --truth or not
    base = ["--preset", "lhp-demo", "--seed", "3", "--format", "ftrace", "--view", "host"]
    alone = generate(*base, "-o", str(tmp_path / "a.txt"))
    assert alone.exit_code == 0, alone.output
    assert "the truth [" not in alone.output and "cut_truth" not in alone.output
    both = generate(*base, "-o", str(tmp_path / "b.txt"), "--truth", str(tmp_path / "t.json"))
    assert both.exit_code == 0, both.output
    assert "the text covers host time [" in both.output and "the truth [0, " in both.output
    # the truth of the text's window is written: the window analyzing the text measures (printed to
    # the microsecond here), its spin no more than the whole run's
    import json

    from pvtrace.analyze import analyze
    from pvtrace.ingest.load import load

    written = json.loads((tmp_path / "t.json").read_text())
    window = written["text_window"]
    a = analyze(load([tmp_path / "b.txt"])).summary
    assert window["t_start"] - 1_000 < a.extra["t_start"] <= window["t_start"]
    assert window["t_end"] - 1_000 <= a.extra["t_end"] + 1 <= window["t_end"]
    assert 0 < window["totals"]["spin_ns"] <= written["totals"]["spin_ns"]


def test_a_view_says_how_many_of_the_events_it_keeps(tmp_path):
    # analyze of the text counted a third of the events generate announced, and nothing said why
    from pvtrace.simulate.views import select_view

    trace, _ = simulate_trace(load_preset("lhp-demo"), seed=3)
    kept = select_view(trace, "merged").events.height
    res = generate(
        "--preset", "lhp-demo", "--seed", "3", "--format", "trace-cmd", "-o", str(tmp_path / "m.txt")
    )
    assert res.exit_code == 0, res.output
    assert (
        f": {trace.events.height:,} events, {kept:,} of them in the merged view a tracer sees -> "
        in res.output
    )
    full = generate("--preset", "lhp-demo", "--seed", "3", "-o", str(tmp_path / "f.parquet"))
    assert "a tracer sees" not in full.output


def test_an_output_named_as_the_other_kind_of_file_is_refused(tmp_path):
    """`generate -o run.txt` wrote Parquet into run.txt without a word (--format defaults to parquet)."""
    for name, fmt, said in (
        ("run.txt", [], "names a text file, but --format is parquet (the default)"),
        ("run.txt.xz", [], "names a text file"),
        ("run.parquet", ["--format", "ftrace"], "names a Parquet file, but --format ftrace writes text"),
    ):
        res = generate("--preset", "lhp-demo", "-q", "-o", str(tmp_path / name), *fmt)
        assert res.exit_code == 2 and said in res.stderr, res.output
    assert list(tmp_path.iterdir()) == []
    ok = generate("--preset", "lhp-demo", "-q", "-o", str(tmp_path / "run.txt"), "--format", "parquet")
    assert ok.exit_code == 0 and (tmp_path / "run.txt").read_bytes()[:4] == b"PAR1"  # asked for: so be it
