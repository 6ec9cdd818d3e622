"""`ingest`'s printout, the report's facts and `analyze` count the same vCPUs: those the events
name, never the metadata's highest index + 1 (session 10's new user saw 4 beside analyze's 3)."""

from __future__ import annotations

from typer.testing import CliRunner

from pvtrace.analyze import analyze
from pvtrace.cli.app import app
from pvtrace.ingest.load import load
from pvtrace.report.facts import vms_figure
from pvtrace.report.trace_page import _subtitle
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario
from pvtrace.trace import vcpu_counts

SVM = "ftrace-4flag_kvm-host-svm-unknown-comm_vcpu-in-kvm_exit_stable-list-2020-04.txt"


def test_a_host_excerpt_with_vcpus_1_to_3_has_3(real_traces, tmp_path):
    path = real_traces / "public" / SVM
    trace = load([path])
    (vm,) = trace.meta.vms
    assert trace.meta.vms[vm].n_vcpus == 4  # the metadata's highest index + 1
    analysis = analyze(trace)
    assert analysis.summary.extra["n_vcpus"] == 3 == vcpu_counts(trace.events, trace.meta)[vm]
    res = CliRunner().invoke(
        app, ["ingest", str(path), "-o", str(tmp_path / "t.parquet")], env={"COLUMNS": "250"}
    )
    assert res.exit_code == 0, res.output
    assert f"VMs: {vm} (3 vCPUs)" in res.output
    assert vms_figure(trace).table["vCPUs"].to_list() == ["3"]
    assert "1 VM, 3 vCPUs" in _subtitle(trace, analysis)


def test_a_simulated_trace_counts_its_idle_vcpus_as_analyze_does():
    s = Scenario().replace(vm={"count": 2, "vcpus": 3, "locks": 1}, run={"duration_ns": 2_000_000})
    trace = simulate_trace(s, seed=1)[0]
    counts = vcpu_counts(trace.events, trace.meta)
    assert counts == {vm: 3 for vm in trace.meta.vms}
    assert sum(counts.values()) == analyze(trace).summary.extra["n_vcpus"]
