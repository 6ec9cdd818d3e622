"""Fixtures for the record tests: a fake host tracefs and /proc (see fake_kernel.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_kernel import (
    HOST_EVENTS,
    HOST_LINES,
    QEMU_A,
    QEMU_B,
    FakeKernel,
    ftrace_text,
    make_proc,
    stats_text,
)


@pytest.fixture
def host_kernel(tmp_path: Path) -> FakeKernel:
    """A host whose instance trace holds a few kvm and sched lines, with no loss."""
    return FakeKernel(
        tmp_path / "tracefs",
        HOST_EVENTS,
        trace=ftrace_text(HOST_LINES),
        stats={0: stats_text(entries=5), 1: stats_text(entries=3)},
    )


@pytest.fixture
def host_proc(tmp_path: Path) -> Path:
    return make_proc(tmp_path / "proc", qemus=[QEMU_A, QEMU_B])


@pytest.fixture
def mounts_with_tracefs(tmp_path: Path) -> Path:
    """A /proc/mounts naming the fake tree (so pvtrace never mounts anything)."""
    path = tmp_path / "mounts"
    path.write_text(f"proc /proc proc rw 0 0\nnodev {tmp_path / 'tracefs'} tracefs rw,relatime 0 0\n")
    return path
