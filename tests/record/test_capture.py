"""Whole captures against the fake host tracefs: outputs, events, losses, and cleanup on every path."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import signal
import sys
from pathlib import Path

import pytest
import zstandard
from fake_kernel import HOST_EVENTS, HOST_LINES, FakeKernel, ftrace_text, make_proc, stats_text

from pvtrace.errors import OutputExistsError, RecordError, UsageError
from pvtrace.ingest.offsets_file import read_offsets
from pvtrace.record.capture import CaptureRequest, CaptureSignalled, output_paths, record

INSTANCE = "pvt-test"


def _request(tmp_path: Path, **kw) -> CaptureRequest:
    defaults = dict(
        mode="host", output=tmp_path / "out" / "host.txt", buffer_kb=2048, instance=INSTANCE, trace_dat=False
    )
    defaults.update(kw)
    (tmp_path / "out").mkdir(exist_ok=True)
    return CaptureRequest(**defaults)


def _snapshot_command(kernel: FakeKernel, dest: Path) -> list[str]:
    """A command that copies the instance's control files while tracing is on."""
    inst = kernel.root / "instances" / INSTANCE
    script = (
        "import json, pathlib, sys\n"
        f"inst = pathlib.Path({str(inst)!r})\n"
        "state = {str(p.relative_to(inst)): p.read_text() for p in inst.rglob('*')"
        " if p.is_file() and p.name in ('enable', 'tracing_on', 'buffer_size_kb', 'trigger')}\n"
        f"pathlib.Path({str(dest)!r}).write_text(json.dumps(state))\n"
    )
    return [sys.executable, "-c", script]


def test_host_capture_writes_trace_map_and_provenance(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    before = host_kernel.top_level()
    state_file = tmp_path / "state.json"
    req = _request(tmp_path, command=_snapshot_command(host_kernel, state_file), irq=True)
    result = record(req, tracefs=host_kernel.tracefs(), proc_root=host_proc)

    # during the run: tracing on, the buffer size set, every planned event enabled, nothing else
    state = json.loads(state_file.read_text())
    assert state["tracing_on"] == "1" and state["buffer_size_kb"] == "2048"
    enabled = sorted(
        k.removeprefix("events/").removesuffix("/enable").replace("/", ":")
        for k, v in state.items()
        if k.endswith("/enable") and v == "1"
    )
    assert enabled == sorted([*HOST_EVENTS[:7], "irq:irq_handler_entry", "irq:irq_handler_exit"])
    assert all(v.startswith("# Available triggers") for k, v in state.items() if k.endswith("trigger"))

    # after: the instance is gone and the top level was never touched
    assert host_kernel.instances_made == [INSTANCE]
    assert host_kernel.instances() == []
    assert host_kernel.top_level() == before

    text = req.output
    assert text.read_text() == ftrace_text(HOST_LINES)
    assert (text.parent / "host.txt.vcpus.csv").read_text().splitlines() == [
        "tid,pid,vm,vcpu",
        "4243,4242,vmA,0",
        "4244,4242,vmA,1",
        "5003,5000,vmB,0",
    ]
    assert set(result.outputs) == {"text", "vcpus", "record"}
    assert result.ended_by == "command" and result.command_status == 0
    assert result.inventory.counts["kvm_exit"] == 2 and result.inventory.counts["sched_switch"] == 2
    assert result.n_lost == 0 and result.suggested_buffer_kb is None
    assert result.n_vcpu_threads == 3
    assert result.steal_ns is None  # steal is a guest measure
    status = {c.analysis: c.status for c in result.coverage}
    assert status["exit reasons and time in exits"] == "yes"
    assert status["pv kicks and kick latency"] == "yes"
    assert status["lock waits, LHP/LWP incidents, spin waste"] == "needs other side"

    doc = json.loads((text.parent / "host.record.json").read_text())
    assert doc["mode"] == "host" and doc["command"] == req.command
    assert doc["counts"]["kvm_hypercall"] == 1
    assert doc["per_cpu"][0]["entries"] == 5
    assert doc["files"] == {"text": "host.txt", "vcpus": "host.txt.vcpus.csv"}


def test_lost_events_are_reported_with_their_count_and_a_bigger_buffer(
    tmp_path: Path, host_proc: Path
) -> None:
    kernel = FakeKernel(
        tmp_path / "tracefs",
        HOST_EVENTS,
        trace=ftrace_text(HOST_LINES),
        stats={0: stats_text(entries=1000, overrun=3000), 1: stats_text(entries=500, dropped=20)},
    )
    result = record(_request(tmp_path, duration=0.01), tracefs=kernel.tracefs(), proc_root=host_proc)
    assert result.n_lost == 3020
    assert [s.n_lost for s in result.stats] == [3000, 20]
    assert result.suggested_buffer_kb == 16384  # 2048 KiB held 1000 of 4000 events: x4, +25%, next power of 2
    assert result.ended_by == "duration"
    assert kernel.instances() == []


def test_guest_capture_sets_the_spin_stack_trigger_and_counts_steal(tmp_path: Path) -> None:
    kernel = FakeKernel(
        tmp_path / "tracefs", ["lock:contention_begin", "lock:contention_end", "sched:sched_switch"]
    )
    proc = make_proc(tmp_path / "proc", hypervisor=True)
    state_file = tmp_path / "state.json"
    req = _request(
        tmp_path,
        mode="guest",
        output=tmp_path / "out" / "g.txt",
        command=_snapshot_command(kernel, state_file),
    )
    result = record(req, tracefs=kernel.tracefs(), proc_root=proc)
    state = json.loads(state_file.read_text())
    assert state["events/lock/contention_begin/trigger"] == "stacktrace if flags & 1"
    assert result.stacktrace is True
    assert result.steal_ns == 0  # the fake /proc/stat does not move
    assert "vcpus" not in result.outputs
    assert not (tmp_path / "out" / "g.txt.vcpus.csv").exists()
    assert any("sched:sched_wakeup" in str(w) for w in result.warnings)
    assert kernel.instances() == []


def test_trigger_refused_by_the_kernel_is_a_warning(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tracefs", ["lock:contention_begin", "lock:contention_end"])
    orig_mkdir = kernel.mkdir

    def mkdir_with_refusing_trigger(path: Path) -> None:
        orig_mkdir(path)
        trigger = path / "events/lock/contention_begin/trigger"
        trigger.unlink()
        trigger.mkdir()  # writing it now fails, as the kernel's EINVAL would

    kernel.mkdir = mkdir_with_refusing_trigger
    req = _request(tmp_path, mode="guest", output=tmp_path / "out" / "g.txt", duration=0.01)
    result = record(req, tracefs=kernel.tracefs(), proc_root=make_proc(tmp_path / "proc", hypervisor=True))
    assert result.stacktrace is False
    assert any("no stack traces of SPIN waits" in str(w) for w in result.warnings)
    assert kernel.instances() == []


def test_failure_while_setting_up_removes_the_instance_and_writes_nothing(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    orig_mkdir = host_kernel.mkdir

    def mkdir_refusing_buffer(path: Path) -> None:
        orig_mkdir(path)
        (path / "buffer_size_kb").unlink()
        (path / "buffer_size_kb").mkdir()

    host_kernel.mkdir = mkdir_refusing_buffer
    req = _request(tmp_path, duration=0.01)
    with pytest.raises(RecordError, match="buffer_size_kb"):
        record(req, tracefs=host_kernel.tracefs(), proc_root=host_proc)
    assert host_kernel.instances_made == [INSTANCE]
    assert host_kernel.instances() == []
    assert list((tmp_path / "out").iterdir()) == []


def test_preflight_errors_stop_before_any_instance(tmp_path: Path, host_proc: Path) -> None:
    kernel = FakeKernel(tmp_path / "tracefs", ["sched:sched_switch"])
    with pytest.raises(RecordError, match=r"cannot record: .*kvm:kvm_exit"):
        record(_request(tmp_path, duration=0.01), tracefs=kernel.tracefs(), proc_root=host_proc)
    assert kernel.instances_made == []


def test_existing_output_is_refused_without_force(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    req = _request(tmp_path, duration=0.01)
    req.output.write_text("precious")
    with pytest.raises(OutputExistsError):
        record(req, tracefs=host_kernel.tracefs(), proc_root=host_proc)
    assert req.output.read_text() == "precious"
    assert host_kernel.instances_made == []
    req.force = True
    record(req, tracefs=host_kernel.tracefs(), proc_root=host_proc)
    assert req.output.read_text() == ftrace_text(HOST_LINES)


def test_existing_instance_is_never_reused_or_removed(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    host_kernel.mkdir(host_kernel.root / "instances" / INSTANCE)
    with pytest.raises(RecordError, match="already exists"):
        record(_request(tmp_path, duration=0.01), tracefs=host_kernel.tracefs(), proc_root=host_proc)
    assert host_kernel.instances() == [INSTANCE]


def test_ctrl_c_stops_the_command_and_saves(tmp_path: Path, host_kernel: FakeKernel, host_proc: Path) -> None:
    # the command interrupts pvtrace (as Ctrl-C would) and then keeps running
    command = ["sh", "-c", f"kill -INT {os.getpid()}; exec sleep 30"]
    said: list[str] = []
    result = record(
        _request(tmp_path, command=command),
        tracefs=host_kernel.tracefs(),
        proc_root=host_proc,
        notify=said.append,
    )
    assert result.ended_by == "ctrl-c"
    # a second Ctrl-C while it saves abandons the capture: it says so first (new-user audit)
    assert any("Ctrl-C again abandons it" in m for m in said), said
    assert result.command_status is not None and result.command_status != 0  # stopped by SIGINT
    assert result.wall_ns < 20e9
    assert (tmp_path / "out" / "host.txt").exists()
    assert host_kernel.instances() == []


def test_sigint_stops_even_when_started_with_it_ignored(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    """A background job starts with SIGINT ignored; `kill -INT` must still stop and save."""
    command = ["sh", "-c", f"kill -INT {os.getpid()}; exec sleep 30"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = record(
            _request(tmp_path, command=command), tracefs=host_kernel.tracefs(), proc_root=host_proc
        )
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored afterwards
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.ended_by == "ctrl-c"
    assert result.wall_ns < 4e9  # the command got SIGINT too, not SIGTERM after the grace period
    assert host_kernel.instances() == []


def test_sigterm_aborts_cleans_up_and_writes_nothing(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    command = ["sh", "-c", f"kill -TERM {os.getpid()}; exec sleep 30"]
    with pytest.raises(CaptureSignalled) as info:
        record(_request(tmp_path, command=command), tracefs=host_kernel.tracefs(), proc_root=host_proc)
    assert info.value.exit_code == 143
    assert host_kernel.instances() == []
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("suffix", "opener"), [(".xz", lzma.open), (".gz", gzip.open), (".zst", None)])
def test_compressed_output(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path, suffix: str, opener
) -> None:
    req = _request(tmp_path, output=tmp_path / "out" / f"host.txt{suffix}", duration=0.01)
    result = record(req, tracefs=host_kernel.tracefs(), proc_root=host_proc)
    if opener is None:
        data = zstandard.ZstdDecompressor().stream_reader(req.output.open("rb")).read()
    else:
        with opener(req.output, "rb") as f:
            data = f.read()
    assert data.decode() == ftrace_text(HOST_LINES)
    assert result.inventory.counts["kvm_exit"] == 2
    assert (tmp_path / "out" / f"host.txt{suffix}.vcpus.csv").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"host.txt{suffix}", f"host.txt{suffix}.vcpus.csv", "host.record.json"]
    )


def test_trace_dat_is_not_attempted_on_a_tracefs_trace_cmd_cannot_read(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    result = record(
        _request(tmp_path, duration=0.01, trace_dat=True), tracefs=host_kernel.tracefs(), proc_root=host_proc
    )
    assert "dat" not in result.outputs
    assert any(n.startswith("no trace.dat") for n in result.notes)
    assert host_kernel.instances() == []


def test_output_paths() -> None:
    p = output_paths(Path("d/guest-futex.txt.xz"))
    assert (p.text, p.dat, p.record, p.compression) == (
        Path("d/guest-futex.txt.xz"),
        Path("d/guest-futex.dat"),
        Path("d/guest-futex.record.json"),
        ".xz",
    )
    assert p.vcpus == Path("d/guest-futex.txt.xz.vcpus.csv")
    assert p.dat_vcpus == Path("d/guest-futex.dat.vcpus.csv")
    bare = output_paths(Path("capture"))
    assert (bare.dat, bare.record) == (Path("capture.dat"), Path("capture.record.json"))
    with pytest.raises(UsageError):
        output_paths(Path("x.dat"))
    with pytest.raises(UsageError):
        output_paths(Path("x.parquet"))


def _kvm_debugfs(root: Path, vms: dict[str, dict[int, dict[str, int]]]) -> Path:
    """A fake /sys/kernel/debug/kvm: `<pid>-<fd>/vcpuN/` with tsc-offset and scaling files."""
    for vm_dir, vcpus in vms.items():
        for vcpu, files in vcpus.items():
            d = root / vm_dir / f"vcpu{vcpu}"
            d.mkdir(parents=True)
            for name, value in files.items():
                (d / name).write_text(f"{value}\n")
    return root


UNSCALED = {"tsc-scaling-ratio": 1 << 48, "tsc-scaling-ratio-frac-bits": 48}


def test_host_capture_on_the_tsc_clock_saves_each_guests_offset_from_kvm(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    """KVM's per-vCPU TSC offset aligns a guest's x86-tsc trace with the host's: host = guest - offset."""
    debugfs = _kvm_debugfs(
        tmp_path / "kvm",
        {
            "4242-11": {0: {"tsc-offset": -123456789, **UNSCALED}, 1: {"tsc-offset": -123456789, **UNSCALED}},
            "5000-9": {
                0: {"tsc-offset": 42, "tsc-scaling-ratio": 3 << 47, "tsc-scaling-ratio-frac-bits": 48}
            },
            "777-3": {0: {"tsc-offset": 5}},  # a VM whose VMM is not in the vCPU map: ignored
        },
    )
    req = _request(tmp_path, clock="x86-tsc", duration=0.01)
    result = record(req, tracefs=host_kernel.tracefs(), proc_root=host_proc, kvm_debugfs=debugfs)
    assert result.clock == "x86-tsc"
    side = req.output.parent / "host.txt.guest-offsets.csv"
    assert result.outputs["offsets"] == side
    assert read_offsets(side) == {"vmA": 123456789}
    doc = json.loads((req.output.parent / "host.record.json").read_text())
    assert doc["guest_clock_offsets"]["offsets"] == {"vmA": 123456789}
    assert "scaled" in doc["guest_clock_offsets"]["not_saved"]["vmB"]


def test_host_capture_on_the_default_clock_saves_no_offsets_and_says_why(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    debugfs = _kvm_debugfs(tmp_path / "kvm", {"4242-11": {0: {"tsc-offset": -7, **UNSCALED}}})
    req = _request(tmp_path, duration=0.01)
    result = record(req, tracefs=host_kernel.tracefs(), proc_root=host_proc, kvm_debugfs=debugfs)
    assert "offsets" not in result.outputs
    assert not (req.output.parent / "host.txt.guest-offsets.csv").exists()
    why = result.guest_clock.reasons["vmA"]
    assert "local clock" in why and "--clock x86-tsc" in why


def test_a_trace_clock_the_kernel_does_not_offer_is_refused(
    tmp_path: Path, host_kernel: FakeKernel, host_proc: Path
) -> None:
    with pytest.raises(RecordError, match="--clock tsc2: this kernel's trace clocks are local, global"):
        record(
            _request(tmp_path, clock="tsc2", duration=0.01),
            tracefs=host_kernel.tracefs(),
            proc_root=host_proc,
        )
    assert host_kernel.instances() == []


def test_guest_steal_samples_say_whether_pv_spinlocks_are_on(tmp_path: Path) -> None:
    """The boot log's "PV spinlocks enabled|disabled" (arch/x86/kernel/kvm.c) goes into every
    steal marker, so the guest-inferred level knows halting hides spin; no such line: no field."""
    from pvtrace.record.steal import pv_spinlocks

    log = tmp_path / "kmsg"
    log.write_bytes(b"6,301,61857,-;kvm-guest: PV spinlocks enabled\n6,302,61860,-;PV qspinlock hash table\n")
    assert pv_spinlocks(log) is True
    log.write_bytes(b"6,301,61857,-;kvm-guest: PV spinlocks disabled, no host support\n")
    assert pv_spinlocks(log) is False
    log.write_bytes(b"6,1,0,-;Linux version 6.1\n")
    assert pv_spinlocks(log) is None
    assert pv_spinlocks(tmp_path / "missing") is None

    log.write_bytes(b"6,301,61857,-;kvm-guest: PV spinlocks enabled\n")
    kernel = FakeKernel(
        tmp_path / "tracefs", ["lock:contention_begin", "lock:contention_end", "sched:sched_switch"]
    )
    proc = make_proc(tmp_path / "proc", hypervisor=True)
    marker = kernel.root / "instances" / INSTANCE / "trace_marker"
    seen = tmp_path / "marker.txt"
    # the fake trace_marker is a plain file each sample rewrites (truncate, then write): a copy
    # taken between the two reads it empty (it failed so under load), so read until it holds a sample
    copy = (
        "import pathlib, time\n"
        f"m, out = pathlib.Path({str(marker)!r}), pathlib.Path({str(seen)!r})\n"
        "for _ in range(500):\n"
        "    text = m.read_text()\n"
        "    if text:\n"
        "        break\n"
        "    time.sleep(0.01)\n"
        "out.write_text(text)\n"
    )
    req = _request(
        tmp_path, mode="guest", output=tmp_path / "out" / "g.txt", command=[sys.executable, "-c", copy]
    )
    result = record(req, tracefs=kernel.tracefs(), proc_root=proc, kmsg=log)
    assert " pv_spinlocks=1 " in seen.read_text()
    assert result.platform["pv_spinlocks"] is True  # also in record.json, for the reader
