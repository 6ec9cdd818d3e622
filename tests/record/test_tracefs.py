"""tracefs access against the fake tree: finding it, instances, control files, counters."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fake_kernel import GUEST_EVENTS, FakeKernel, stats_text

from pvtrace.errors import RecordError
from pvtrace.record.tracefs import Tracefs, find_tracefs, parse_stats


def test_find_tracefs_prefers_tracefs_then_debugfs(tmp_path: Path) -> None:
    tfs = tmp_path / "t"
    dbg = tmp_path / "d"
    (tfs).mkdir()
    (tfs / "available_events").write_text("")
    (dbg / "tracing").mkdir(parents=True)
    (dbg / "tracing" / "available_events").write_text("")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"debugfs {dbg} debugfs rw 0 0\nnodev {tfs} tracefs rw 0 0\n")
    assert find_tracefs(mounts) == tfs
    mounts.write_text(f"debugfs {dbg} debugfs rw 0 0\n")
    assert find_tracefs(mounts) == dbg / "tracing"
    mounts.write_text("proc /proc proc rw 0 0\n")
    assert find_tracefs(mounts) is None
    assert find_tracefs(tmp_path / "no-such-file") is None


def test_parse_stats_reads_all_loss_counters() -> None:
    s = parse_stats(
        3, stats_text(entries=10, overrun=7, dropped=2).replace("commit overrun: 0", "commit overrun: 1")
    )
    assert (s.cpu, s.entries, s.overrun, s.commit_overrun, s.dropped) == (3, 10, 7, 1, 2)
    assert s.n_lost == 10


def test_instance_controls_write_only_inside_the_instance(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    before = kernel.top_level()
    tfs = kernel.tracefs()
    assert tfs.available_events() == frozenset(GUEST_EVENTS)
    assert tfs.cpus() == [0, 1]
    inst = tfs.create_instance("pvt")
    inst.set_tracing(False)
    inst.set_buffer_kb(2048)
    inst.enable_event("lock:contention_begin")
    inst.add_trigger("lock:contention_begin", "stacktrace if flags & 1")
    assert (inst.path / "tracing_on").read_text() == "0"
    assert inst.buffer_kb() == 2048
    assert (inst.path / "events/lock/contention_begin/enable").read_text() == "1"
    assert (inst.path / "events/lock/contention_begin/trigger").read_text() == "stacktrace if flags & 1"
    assert inst.trace_clock() == "local"
    assert [s.cpu for s in inst.cpu_stats()] == [0, 1]
    inst.remove()
    assert kernel.instances() == []
    assert kernel.top_level() == before


def test_create_instance_refuses_existing_and_bad_names(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    tfs = kernel.tracefs()
    tfs.create_instance("taken")
    with pytest.raises(RecordError, match="already exists"):
        tfs.create_instance("taken")
    assert kernel.instances() == ["taken"]  # the existing one is left alone
    for bad in ("../escape", "a/b", "", "x" * 65):
        with pytest.raises(RecordError, match="bad instance name"):
            tfs.create_instance(bad)


def test_kernel_refusal_names_the_file(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    inst = kernel.tracefs().create_instance("pvt")
    with pytest.raises(RecordError, match=r"no_such/event/enable"):
        inst.enable_event("no_such:event")


def test_remove_retries_while_busy(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    calls = []

    def busy_twice(path: Path) -> None:
        calls.append(path)
        if len(calls) <= 2:
            raise OSError(errno.EBUSY, "Device or resource busy")
        kernel.rmdir(path)

    inst = Tracefs(kernel.root, make_dir=kernel.mkdir, remove_dir=busy_twice).create_instance("pvt")
    inst.remove()
    assert len(calls) == 3
    assert kernel.instances() == []


def test_remove_gives_up_with_the_command_to_run(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)

    def always_busy(path: Path) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    inst = Tracefs(kernel.root, make_dir=kernel.mkdir, remove_dir=always_busy).create_instance("pvt")
    with pytest.raises(RecordError, match=r"rmdir .*instances/pvt"):
        inst.remove(attempts=2)
