"""Shared fixtures: where the real traces live, and skipping when they are absent."""

from __future__ import annotations

import shutil
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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test of a trace-cmd .dat input skips, with the reason, where trace-cmd is not installed."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    dats = [p for p in params.values() if isinstance(p, (str, Path)) and ".dat" in Path(p).name]
    if dats and shutil.which("trace-cmd") is None:
        pytest.skip(f"trace-cmd is not installed: {Path(dats[0]).name} is read through `trace-cmd report`")
