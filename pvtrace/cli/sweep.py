"""`pvtrace sweep`: a grid of scenarios x seeds, each cell simulated and analyzed as one Dask task."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `pvtrace sweep ...` (filled in below)."""
