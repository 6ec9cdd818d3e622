"""The preflight: every missing piece is named with its fix, against fake trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_kernel import GUEST_EVENTS, HOST_EVENTS, QEMU_A, QEMU_NO_NAMES, FakeKernel, make_proc

from pvtrace.record import preflight as preflight_module
from pvtrace.record.preflight import preflight


def _messages(plan, severity: str) -> str:
    return " | ".join(str(p) for p in plan.problems if p.severity == severity)


def test_guest_plan_on_a_complete_kernel(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    plan = preflight(
        "guest",
        buffer_kb=1024,
        tracefs=kernel.tracefs(),
        proc_root=make_proc(tmp_path / "proc", hypervisor=True),
    )
    assert plan.problems == []
    assert plan.events == GUEST_EVENTS
    assert plan.stacktrace is True  # the kernel lists a stacktrace trigger
    assert plan.platform["hypervisor_flag"] is True
    assert plan.mounted_here is None


def test_guest_kernel_without_lock_tracepoints_is_an_error_with_the_fix(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", ["sched:sched_switch"])
    plan = preflight(
        "guest",
        buffer_kb=1024,
        tracefs=kernel.tracefs(),
        proc_root=make_proc(tmp_path / "proc", hypervisor=True),
    )
    errors = _messages(plan, "error")
    assert "lock:contention_begin" in errors and "lock:contention_end" in errors
    assert "Linux 5.19" in errors
    warnings = _messages(plan, "warning")
    assert "sched:sched_wakeup" in warnings and "sched:sched_waking" in warnings


def test_guest_on_bare_metal_warns(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    plan = preflight(
        "guest", buffer_kb=1024, tracefs=kernel.tracefs(), proc_root=make_proc(tmp_path / "proc")
    )
    assert "does not look like a VM guest" in _messages(plan, "warning")


def test_stacktrace_unavailable_is_a_warning_only_when_asked_for(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS, triggers=False)
    proc = make_proc(tmp_path / "proc", hypervisor=True)
    default = preflight("guest", buffer_kb=1024, tracefs=kernel.tracefs(), proc_root=proc)
    assert default.stacktrace is False and default.problems == []
    asked = preflight("guest", buffer_kb=1024, stacktrace=True, tracefs=kernel.tracefs(), proc_root=proc)
    assert asked.stacktrace is False
    assert "no stacktrace trigger" in _messages(asked, "warning")
    off = preflight(
        "guest",
        buffer_kb=1024,
        stacktrace=False,
        tracefs=FakeKernel(tmp_path / "t2", GUEST_EVENTS).tracefs(),
        proc_root=proc,
    )
    assert off.stacktrace is False


def test_host_plan_falls_back_to_kvm_ple_window(tmp_path: Path) -> None:
    events = [e for e in HOST_EVENTS if e != "kvm:kvm_ple_window_update"] + ["kvm:kvm_ple_window"]
    kernel = FakeKernel(tmp_path / "tfs", events)
    plan = preflight(
        "host",
        buffer_kb=1024,
        irq=True,
        tracefs=kernel.tracefs(),
        proc_root=make_proc(tmp_path / "proc", qemus=[QEMU_A]),
    )
    assert plan.problems == []
    assert "kvm:kvm_ple_window" in plan.events
    assert "irq:irq_handler_entry" in plan.events
    assert plan.stacktrace is False
    assert plan.platform["vm_processes"] == [{"pid": 4242, "vm": "vmA", "n_vcpus": 2}]


def test_host_without_kvm_and_without_ple(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", ["sched:sched_switch", "sched:sched_wakeup"])
    plan = preflight("host", buffer_kb=1024, tracefs=kernel.tracefs(), proc_root=make_proc(tmp_path / "proc"))
    errors = _messages(plan, "error")
    assert "kvm:kvm_exit" in errors and "modprobe kvm_intel" in errors
    warnings = _messages(plan, "warning")
    assert "kvm:kvm_ple_window_update or kvm:kvm_ple_window" in warnings
    assert "no QEMU or Firecracker process is running" in warnings
    assert [m.event for m in plan.missing] == [
        "kvm:kvm_hypercall",
        "kvm:kvm_vcpu_wakeup",
        "kvm:kvm_ple_window_update",
    ]


def test_host_qemu_without_thread_names_warns_with_debug_threads(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", HOST_EVENTS)
    plan = preflight(
        "host",
        buffer_kb=1024,
        tracefs=kernel.tracefs(),
        proc_root=make_proc(tmp_path / "proc", qemus=[QEMU_NO_NAMES]),
    )
    assert "debug-threads=on" in _messages(plan, "warning")


def test_host_stacktrace_is_a_usage_error(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", HOST_EVENTS)
    plan = preflight(
        "host",
        buffer_kb=1024,
        stacktrace=True,
        tracefs=kernel.tracefs(),
        proc_root=make_proc(tmp_path / "proc"),
    )
    assert "--stacktrace is a guest option" in _messages(plan, "error")


def test_buffer_too_big_for_memory_and_too_small(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    proc = make_proc(tmp_path / "proc", hypervisor=True)  # 16000000 kB available, 2 CPUs
    big = preflight("guest", buffer_kb=5_000_000, tracefs=kernel.tracefs(), proc_root=proc)
    assert "exceeds half of the available memory" in _messages(big, "error")
    assert "--buffer-kb 2000000 or less" in _messages(big, "error")
    large = preflight("guest", buffer_kb=3_000_000, tracefs=kernel.tracefs(), proc_root=proc)
    assert large.errors == [] and "ring buffer takes" in _messages(large, "warning")
    tiny = preflight("guest", buffer_kb=8, tracefs=kernel.tracefs(), proc_root=proc)
    assert "too small" in _messages(tiny, "error")


def test_unknown_command_and_bad_duration(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    plan = preflight(
        "guest",
        buffer_kb=1024,
        command=["no-such-program-pvtrace"],
        duration=0,
        tracefs=kernel.tracefs(),
        proc_root=make_proc(tmp_path / "proc", hypervisor=True),
    )
    errors = _messages(plan, "error")
    assert "command not found or not executable: no-such-program-pvtrace" in errors
    assert "--duration must be positive" in errors


def test_not_mounted_and_not_root_says_how_to_mount(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    plan = preflight(
        "guest", buffer_kb=1024, mounts=mounts, euid=1000, proc_root=make_proc(tmp_path / "proc")
    )
    assert "mount -t tracefs nodev /sys/kernel/tracing" in _messages(plan, "error")
    assert plan.mounted_here is None


def test_not_mounted_as_root_mounts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    mounted = []
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    monkeypatch.setattr(preflight_module, "mount_tracefs", mounted.append)
    monkeypatch.setattr(preflight_module, "DEFAULT_MOUNT", kernel.root)
    plan = preflight(
        "guest",
        buffer_kb=1024,
        mounts=mounts,
        euid=0,
        proc_root=make_proc(tmp_path / "proc", hypervisor=True),
    )
    assert mounted == [kernel.root]
    assert plan.mounted_here == kernel.root
    assert plan.errors == []


def test_not_a_tracefs_tree(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    kernel = FakeKernel(tmp_path / "tfs", GUEST_EVENTS)
    fake = kernel.tracefs()
    fake.root = tmp_path / "empty"
    plan = preflight("guest", buffer_kb=1024, tracefs=fake, proc_root=make_proc(tmp_path / "proc"))
    assert "is not a tracefs tree" in _messages(plan, "error")
