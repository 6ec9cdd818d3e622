"""CLI for the generate stage (placeholder until the stage lands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
