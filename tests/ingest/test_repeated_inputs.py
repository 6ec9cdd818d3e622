"""One file given twice (same name, or a link to it) is refused in one line naming it: its events
would be counted twice (new-user finding: `analyze F F` doubled the contention count)."""

from __future__ import annotations

from typer.testing import CliRunner

from pvtrace.cli.app import app

runner = CliRunner()
TRACE = " t-5 [000] 1.000000: contention_begin: 0xffff888100000000 (flags=SPIN)\n"


def test_the_same_file_twice_is_refused(tmp_path):
    f = tmp_path / "g.txt"
    f.write_text(TRACE)
    (tmp_path / "link.txt").symlink_to(f)
    for cmd in (
        ["analyze", str(f), str(f)],
        ["ingest", str(f), str(tmp_path / "link.txt"), "-o", "x.parquet"],
    ):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert "the same file is given twice" in res.output and str(f) in res.output
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    other = tmp_path / "h.txt"
    other.write_text(TRACE)  # an equal copy is another capture: read
    assert runner.invoke(app, ["analyze", str(f), str(other)]).exit_code == 0
