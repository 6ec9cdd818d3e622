"""`-` as an output name is stdout: `--json -` and `--csv -` print there; every other output
(`--report -`, `--out-dir -`, `-o -` of report, compare, ingest, generate) is refused in one
line, never a file or folder named `-` (new-user finding)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app

runner = CliRunner()
TRACE = (
    " t-5 [000] 1.000000: contention_begin: 0xffff888100000000 (flags=SPIN)\n"
    " t-5 [000] 1.000002: contention_end: 0xffff888100000000 (ret=0)\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "T", "--report", "-"],
        ["analyze", "T", "--out-dir", "-"],
        ["report", "T", "-o", "-"],
        ["compare", "T", "T", "-o", "-"],
        ["ingest", "T", "-o", "-"],
        ["generate", "--preset", "lhp-demo", "-o", "-"],
        ["experiment", "-o", "-"],
    ],
)
def test_dash_is_never_a_file_or_folder(tmp_path, args):
    (tmp_path / "t.txt").write_text(TRACE)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = runner.invoke(app, ["t.txt" if a == "T" else a for a in args])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 2, res.output
    assert "`-` means stdout" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "-").exists()
