"""The typer app: one command module per stage, imported only when its command runs.

Importing every command module at start-up pulled in polars, the analysis, altair and the simulator
before any command ran (about 1 s for `pvtrace --version`). Here the app knows each command only by
name and module; `LazyCommands` imports a module when its command is looked up, which click does
for the command being run (or for every command when the help lists them).

A new command joins with one line in `COMMANDS`: its name and the module whose `register(app)` adds
it to a typer app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

from pvtrace import __version__
from pvtrace.cli import imports_done

if TYPE_CHECKING:  # typer runs on its own copy of click: importing the package costs 10-15 ms
    import click

# Command name -> module whose register(app) adds that command, in the order the help lists them.
COMMANDS: dict[str, str] = {
    "generate": "pvtrace.cli.generate",
    "ingest": "pvtrace.cli.ingest",
    "analyze": "pvtrace.cli.analyze",
    "report": "pvtrace.cli.report",
    "compare": "pvtrace.cli.report",
    "experiment": "pvtrace.cli.generate",
    "record": "pvtrace.cli.record",
    "fleet": "pvtrace.cli.fleet",
    "sweep": "pvtrace.cli.sweep",
    "calibrate": "pvtrace.cli.calibrate",
}


def _module_commands(module_name: str) -> dict[str, click.Command]:
    """The click commands one stage module registers, built on a typer app of their own."""
    stage = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    importlib.import_module(module_name).register(stage)
    group = typer.main.get_group(stage)
    return dict(group.commands)


class LazyCommands(TyperGroup):
    """A typer group whose commands are imported from their module on first lookup."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands.update(_module_commands(COMMANDS[cmd_name]))
            imports_done()
        return self.commands.get(cmd_name)


app = typer.Typer(
    name="pvtrace",
    cls=LazyCommands,
    help="Find where virtual machines lose time to spinlocks (LHP, LWP, convoys, pv cures).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pvtrace {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """pvtrace: measure spinlock preemption in virtual machines from traces."""
