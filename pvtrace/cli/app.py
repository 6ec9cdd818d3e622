"""The typer app: registers one command module per stage."""

from __future__ import annotations

import typer

from pvtrace import __version__
from pvtrace.cli import analyze, calibrate, generate, ingest, record, report

app = typer.Typer(
    name="pvtrace",
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


for module in (generate, ingest, analyze, report, record, calibrate):
    module.register(app)
