"""The analyze header: one clock's span, and CPUs called vCPUs only when something says they are."""

from __future__ import annotations

from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.ingest.offsets_file import OFFSETS_SUFFIX
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario

runner = CliRunner()


def test_unaligned_guest_clocks_leave_the_host_span_alone(tmp_path):
    s = Scenario().replace(
        vm={"count": 2, "vcpus": 2, "locks": 1, "clock_offsets_ns": (-9_000_000_000, -12_000_000_000)},
        run={"duration_ns": 20_000_000},
    )
    paths = write_rendered(simulate_trace(s, seed=2)[0], "ftrace", "merged", tmp_path / "m.txt")
    for p in paths:
        if p.name.endswith(OFFSETS_SUFFIX):
            p.unlink()
    texts = [str(p) for p in paths if p.suffix == ".txt"]
    # a given offset that puts the guests seconds away from the host: the clocks stay unaligned
    res = runner.invoke(app, ["analyze", *texts, "--guest-offset", "0"])
    assert res.exit_code == 0, res.output
    header = next(ln for ln in res.stdout.splitlines() if ln.startswith("pvtrace analyze"))
    assert ", host 0.0" in header and "guests on their own clocks" in header and " s)" not in header
    # nothing joined is shown, so the level is not the inferred one the events would allow
    # (session 10's new user: "level inferred" above a headline of one side's metrics)
    assert "level unjoined (host and guest events not joined: each side's own metrics only)" in header


def test_a_bare_metal_trace_has_cpus_not_vcpus(real_traces):
    path = real_traces / "public" / "tracecmd3.1.6-report_default-plugins_arm-sched_trappy-dat.txt"
    res = runner.invoke(app, ["analyze", str(path)])
    assert res.exit_code == 0, res.output
    assert (
        "level none" in res.stdout and " 6 CPUs, " in res.stdout and "vCPU" not in res.stdout.split("\n")[0]
    )


def test_an_untimed_excerpt_has_no_span(tmp_path):
    (tmp_path / "k.txt").write_text(" t-1: kvm_hypercall: nr 0x5 a0 0x0 a1 0x1 a2 0x0 a3 0x0\n" * 3)
    res = runner.invoke(app, ["analyze", str(tmp_path / "k.txt")])
    assert res.exit_code == 0, res.output
    assert "no timestamps, 3 events" in res.stdout and "0.000000 to" not in res.stdout
