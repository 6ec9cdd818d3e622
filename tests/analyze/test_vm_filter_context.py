"""--vm keeps the other VMs out of the counts but not out of the pCPU context, and vCPUs are
the ones seen (new-user finding: `--vm vm1` of a 2 x 2 run said 4 vCPUs with vm0's as unknown
time, and called vm0's vCPUs that took a pCPU `host task`; a host trace with kvm_exit for
vCPUs 1-3 invented a vCPU 0)."""

from __future__ import annotations

import io
import json

import polars as pl
from typer.testing import CliRunner

from pvtrace.cli.app import app

runner = CliRunner()


def _run(*args: str):
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def test_vm_filter_counts_its_vcpus_and_shows_other_vms_running(tmp_path):
    run = str(tmp_path / "run.parquet")
    _run("generate", "--preset", "lhp-demo", "-o", run, "-q")
    got = json.loads(_run("analyze", run, "--vm", "vm1", "--json", "-"))
    assert got["n_vcpus"] == 2 and got["unknown_state_ns"] == 0
    table = ("--csv", "-", "--table", "incidents")
    every = pl.read_csv(io.StringIO(_run("analyze", run, *table)))
    vm1 = pl.read_csv(io.StringIO(_run("analyze", run, "--vm", "vm1", *table)))
    cols = ["kind", "start", "ran_instead"]
    assert vm1.height > 0
    assert (
        vm1.select(cols)
        .sort("start", "kind")
        .equals(every.filter(pl.col("vm") == "vm1").select(cols).sort("start", "kind"))
    )
    assert vm1["ran_instead"].drop_nulls().str.contains("vm0/").any()  # shown, not `host task`


def test_vcpus_are_those_seen_not_highest_index_plus_one(tmp_path):
    lines = "".join(
        f"<...>-{100 + v} [00{v}] ....  10.00000{v}: kvm_exit: vcpu {v} reason npf rip 0x1 info 1 0\n"
        for v in (1, 2, 3)
    )
    (tmp_path / "h.txt").write_text(lines)
    got = json.loads(_run("analyze", str(tmp_path / "h.txt"), "--json", "-"))
    assert got["n_vcpus"] == 3
