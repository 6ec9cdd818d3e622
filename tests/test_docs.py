"""The docs are executed: every command is in the README, the Quick start is two commands,
and the table reference is generated from the schemas."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from pvtrace.cli.app import COMMANDS, app

REPO = Path(__file__).resolve().parents[1]

README = (REPO / "README.md").read_text()


def test_every_command_is_documented_in_the_readme():
    names = list(COMMANDS)
    assert names, "no commands registered"
    missing = [n for n in names if f"pvtrace {n}" not in README]
    assert not missing, f"README lacks: {missing}"


def test_quick_start_is_install_and_run_then_install_and_test():
    block = re.search(r"## Quick start\s+```\n(.*?)```", README, re.S)
    assert block, "README has no Quick start code block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    run, test = lines
    assert run.startswith("pip install -e . && pvtrace analyze sample-traces/")
    sample = run.split("pvtrace analyze ", 1)[1].strip()
    assert (REPO / sample).is_file(), f"Quick start names a missing sample: {sample}"
    assert "pip install -e '.[test]'" in test and test.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install -q -e '.[test]'" in ci and "pytest" in ci


def test_schema_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_schema_md", REPO / "docs" / "gen_schema_md.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (REPO / "docs" / "schema.md").read_text() == gen.render(), "run python docs/gen_schema_md.py"


def test_readme_shows_the_summary_analyze_prints_today():
    """The README's guest-trace example is the real output of the Quick start command, piped."""
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["analyze", str(REPO / "sample-traces" / "guest-futex.txt.xz")])
    assert res.exit_code == 0, res.output
    shown = res.stdout.rstrip("\n").replace(str(REPO / "sample-traces"), "sample-traces")
    assert shown in README, "update the README's analyze example"
    assert "Locks by total wait" in shown and "unavailable" not in shown


def test_every_output_table_is_explained():
    from pvtrace.analyze.result import TABLES

    text = (REPO / "docs" / "output.md").read_text()
    for name in ("waste_by_lock", "lock_callers", "incidents", "perf_kvm_stat", "perf_lock_contention"):
        assert f"`{name}`" in text, name
    assert set(TABLES) <= set(re.findall(r"^### `(\w+)`", (REPO / "docs" / "schema.md").read_text(), re.M))


def test_readme_lhp_demo_excerpt_is_what_analyze_prints(tmp_path):
    """The README's worst-incidents excerpt of the lhp-demo simulation is today's output (it said
    `top 8 of 60` long after the analysis found 40)."""
    from typer.testing import CliRunner

    block = re.search(r"```\n(Worst incidents by waste \(top 8 of \d+\)\n.*?)\n```", README, re.S)
    assert block, "README has no lhp-demo incidents excerpt"
    run = tmp_path / "run.parquet"
    assert CliRunner().invoke(app, ["generate", "--preset", "lhp-demo", "-o", str(run)]).exit_code == 0
    res = CliRunner().invoke(app, ["analyze", str(run)])
    assert res.exit_code == 0, res.output
    assert block.group(1) in res.stdout, "update the README's lhp-demo excerpt"
