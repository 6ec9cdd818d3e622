"""Every filter names something the trace has, or is a one-line error (new-user finding: --vm
and --lock were checked, --vcpu 9, --guest-offset vm9=5 and --table without `--csv -` were
silently accepted)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app

runner = CliRunner()
TRACE = (
    " t-5 [000] 1.000000: contention_begin: 0xffff888100000000 (flags=SPIN)\n"
    " t-5 [000] 1.000002: contention_end: 0xffff888100000000 (ret=0)\n"
    " t-6 [001] 1.000003: contention_begin: 0xffff888100000000 (flags=SPIN)\n"
    " t-6 [001] 1.000005: contention_end: 0xffff888100000000 (ret=0)\n"
)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--vcpu", "9"], "--vcpu: no vCPU 9 in the trace (it has 0, 1)"),
        (
            ["--vm-name", "g", "--guest-offset", "vm9=5"],
            "--guest-offset: no VM 'vm9' in the trace (it has g)",
        ),
        (["--table", "waits"], "without `--csv -` it does nothing"),
    ],
)
def test_a_filter_naming_nothing_is_an_error(tmp_path, args, needle):
    (tmp_path / "g.txt").write_text(TRACE)
    res = runner.invoke(app, ["analyze", str(tmp_path / "g.txt"), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1


def test_filters_naming_what_the_trace_has_run(tmp_path):
    (tmp_path / "g.txt").write_text(TRACE)
    for args in (
        ["--vcpu", "1"],
        ["--vm-name", "g", "--guest-offset", "g=5"],
        ["--table", "waits", "--csv", "-"],
    ):
        res = runner.invoke(app, ["analyze", str(tmp_path / "g.txt"), "-q", *args])
        assert res.exit_code == 0, (args, res.output)
