"""Shared fixtures: where the real traces live, and skipping when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's ../shared folder (real traces, design notes); skips when absent."""
    if not (SHARED / "real-traces").is_dir():
        pytest.skip(
            f"real traces not available: {SHARED / 'real-traces'} is absent (a fresh clone has no ../shared)"
        )
    return SHARED


@pytest.fixture(scope="session")
def real_traces(shared_dir: Path) -> Path:
    """../shared/real-traces."""
    return shared_dir / "real-traces"
