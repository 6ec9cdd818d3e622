"""One trace given twice (same name, a link, a copy, the archive beside its text) is refused in one
line naming it: its events would be counted twice (new-user findings: `analyze F F` doubled the
contention count; `analyze oc.txt oc.txt.gz ...` doubled the pause exits in silence)."""

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
    other.write_text(TRACE)  # a capture of one record may well be alike another: read
    assert runner.invoke(app, ["analyze", str(f), str(other)]).exit_code == 0


def test_a_copy_of_a_trace_is_refused_naming_both(tmp_path):
    import gzip

    text = "# tracer: nop\n#\n" + "".join(
        f" t-5 [000] 1.{i:06d}: contention_begin: 0xffff888100000000 (flags=SPIN)\n" for i in range(20)
    )
    f = tmp_path / "g.txt"
    f.write_text(text)
    copy = tmp_path / "copy" / "g.txt"
    copy.parent.mkdir()
    copy.write_text(text)
    packed = tmp_path / "g.txt.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for other in (copy, packed):
        res = runner.invoke(app, ["analyze", str(f), str(other)])
        assert res.exit_code == 2, res.output
        assert f"{other}: the same trace as {f}" in " ".join(res.output.split())
    # two header-only captures (guests that never contended) are alike and both read
    (tmp_path / "e0.txt").write_text("# tracer: nop\n#\n")
    (tmp_path / "e1.txt").write_text("# tracer: nop\n#\n")
    assert (
        runner.invoke(app, ["analyze", str(f), str(tmp_path / "e0.txt"), str(tmp_path / "e1.txt")]).exit_code
        == 0
    )
