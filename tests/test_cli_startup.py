"""The CLI imports a command's module only when that command runs (start-up in one import)."""

from __future__ import annotations

import subprocess
import sys

import typer.main
from typer.testing import CliRunner

from pvtrace.cli.app import COMMANDS, _module_commands, app

HEAVY = ("polars", "altair", "vl_convert", "pvtrace.simulate", "pvtrace.analyze", "pvtrace.report")


def _modules_after(argv: list[str]) -> set[str]:
    """The modules a fresh `pvtrace ARGV` process has imported when it exits."""
    code = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('\\n'.join(sys.modules), file=sys.stderr))\n"
        "from pvtrace.cli.app import app\n"
        f"sys.argv = ['pvtrace', *{argv!r}]\n"
        "app()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return set(done.stderr.split())


def test_version_imports_no_library():
    loaded = _modules_after(["--version"])
    assert "pvtrace.cli.app" in loaded
    assert not [m for m in loaded if m.startswith(HEAVY)]


def test_a_command_imports_only_its_own_stage():
    loaded = _modules_after(["ingest", "--help"])
    assert "pvtrace.cli.ingest" in loaded
    assert not [
        m for m in loaded if m.startswith(("altair", "vl_convert", "pvtrace.simulate", "pvtrace.report"))
    ]


def test_analyze_imports_no_page_cluster_or_bar():
    """A piped `pvtrace analyze` loads neither the page nor the cluster, nor the big-trace
    partitioning, the progress bar or the click package (typer runs on its own copy)."""
    loaded = _modules_after(["analyze", "--help"])
    assert "pvtrace.cli.analyze" in loaded
    unneeded = ("altair", "vl_convert", "dask", "distributed", "click", "pvtrace.simulate", "pvtrace.report")
    unneeded += ("pvtrace.analyze.partitioned", "rich.progress")
    assert not [m for m in loaded if any(m == u or m.startswith(u + ".") for u in unneeded)]


def test_every_listed_module_registers_its_command():
    for name, module in COMMANDS.items():
        assert name in _module_commands(module), (name, module)


def test_every_registered_command_is_listed():
    for module in set(COMMANDS.values()):
        missing = set(_module_commands(module)) - set(COMMANDS)
        assert not missing, f"{module} registers {sorted(missing)}, not in cli.app.COMMANDS"


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in COMMANDS)
    assert list(typer.main.get_command(app).list_commands(None)) == list(COMMANDS)


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2
    assert "no-such-command" in result.output


def test_usage_errors_are_one_line_with_exit_code_2():
    # click's boxed usage block for a bad option or value, as the program prints them
    for argv, says in [
        (["calibrate", "--repeats", "0"], "0 is not in the range x>=1"),
        (["analyze", "--no-such-option", "x"], "No such option: --no-such-option"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "pvtrace", *argv], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and says in done.stderr
        assert "--help" in done.stderr and not done.stdout


def test_bare_program_prints_its_help():
    done = subprocess.run([sys.executable, "-m", "pvtrace"], capture_output=True, text=True, timeout=120)
    assert "Usage: pvtrace" in done.stdout + done.stderr and "analyze" in done.stdout + done.stderr
