"""Before recording: what is missing on this machine, and exactly how to fix it.

The preflight finds tracefs (mounting it when root and it is not mounted),
checks permissions, picks the tracepoints this kernel has (with fallbacks),
checks that the ring buffer fits in memory, and, on a host, that vCPU
threads can be told apart. It collects every problem instead of stopping at
the first, so one run tells the user everything to fix.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pvtrace.record.events import (
    IRQ_EVENTS,
    SPIN_STACK_TRIGGER,
    STACK_EVENT,
    Mode,
    wanted_events,
)
from pvtrace.record.tracefs import DEFAULT_MOUNT, MOUNTS, Tracefs, find_tracefs, mount_tracefs
from pvtrace.record.vcpu_map import PROC, scan_vcpu_threads

MIN_BUFFER_KB = 64


@dataclass(frozen=True)
class Problem:
    """Something wrong or missing: an error stops the capture, a warning limits it."""

    severity: Literal["error", "warning"]
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.what} (fix: {self.fix})" if self.fix else self.what


@dataclass
class MissingEvent:
    """A wanted tracepoint this kernel lacks, and what that costs."""

    event: str
    feeds: str
    fix: str


@dataclass
class Plan:
    """What the capture will do, as decided by the preflight."""

    mode: Mode
    tracefs: Tracefs | None
    mounted_here: Path | None = None  # tracefs mounted by this run: unmount afterwards
    events: list[str] = field(default_factory=list)  # "system:event", in enable order
    missing: list[MissingEvent] = field(default_factory=list)
    stacktrace: bool = False
    problems: list[Problem] = field(default_factory=list)
    platform: dict[str, object] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def add(self, severity: Literal["error", "warning"], what: str, fix: str = "") -> None:
        self.problems.append(Problem(severity, what, fix))


def _mem_available_kb(proc_root: Path) -> int | None:
    try:
        for line in (proc_root / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _platform(proc_root: Path) -> dict[str, object]:
    """Facts that tell how to read the trace: is this a VM, are pv spinlocks off."""
    facts: dict[str, object] = {}
    try:
        cpuinfo = (proc_root / "cpuinfo").read_text()
        flags = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
        facts["hypervisor_flag"] = " hypervisor" in f" {flags.partition(':')[2]} "
    except OSError:
        facts["hypervisor_flag"] = None
    try:
        cmdline = (proc_root / "cmdline").read_text().split()
        facts["nopvspin"] = "nopvspin" in cmdline
    except OSError:
        facts["nopvspin"] = None
    facts["kernel"] = " ".join(os.uname()[2:4])
    return facts


def _locate_tracefs(plan: Plan, given: Tracefs | None, mounts: Path, euid: int) -> Tracefs | None:
    if given is not None:
        if not (given.root / "available_events").exists():
            plan.add("error", f"{given.root} is not a tracefs tree (no available_events)")
            return None
        return given
    found = find_tracefs(mounts)
    if found is not None:
        return Tracefs(found)
    if euid != 0:
        plan.add(
            "error",
            "tracefs is not mounted, and mounting it needs root",
            f"run pvtrace record as root, or as root: mount -t tracefs nodev {DEFAULT_MOUNT}",
        )
        return None
    mount_tracefs(DEFAULT_MOUNT)
    plan.mounted_here = DEFAULT_MOUNT
    return Tracefs(DEFAULT_MOUNT)


def _check_events(plan: Plan, tracefs: Tracefs, irq: bool) -> None:
    available = tracefs.available_events()
    for wanted in wanted_events(plan.mode):
        chosen = next((e for e in wanted.choices if e in available), None)
        if chosen is not None:
            plan.events.append(chosen)
            continue
        names = " or ".join(wanted.choices)
        if wanted.required:
            plan.add(
                "error", f"this kernel has no {names} tracepoint (needed for {wanted.feeds})", wanted.fix
            )
        else:
            plan.missing.append(MissingEvent(wanted.name, wanted.feeds, wanted.fix))
            plan.add("warning", f"this kernel has no {names} tracepoint: no {wanted.feeds}", wanted.fix)
    if irq:
        present = [e for e in IRQ_EVENTS if e in available and e not in plan.events]
        plan.events.extend(present)
        if not present:
            plan.add("warning", "this kernel has none of the irq/irq_vectors tracepoints: --irq ignored")


def _check_stacktrace(plan: Plan, tracefs: Tracefs, stacktrace: bool | None) -> None:
    if plan.mode != "guest" or stacktrace is False or STACK_EVENT not in plan.events:
        return
    system, _, name = STACK_EVENT.partition(":")
    trigger_file = tracefs.root / "events" / system / name / "trigger"
    try:
        listed = trigger_file.read_text()
    except OSError:
        listed = ""
    if "stacktrace" in listed:
        plan.stacktrace = True
    elif stacktrace:
        plan.add(
            "warning",
            f"this kernel offers no stacktrace trigger on {STACK_EVENT}: no stack traces of SPIN waits",
            f"needs CONFIG_STACKTRACE; the trigger pvtrace sets is '{SPIN_STACK_TRIGGER}'",
        )


def _check_buffer(plan: Plan, n_cpus: int, buffer_kb: int, proc_root: Path) -> None:
    if buffer_kb < MIN_BUFFER_KB:
        plan.add("error", f"--buffer-kb {buffer_kb} is too small", f"use at least {MIN_BUFFER_KB}")
        return
    total_kb = buffer_kb * max(n_cpus, 1)
    avail = _mem_available_kb(proc_root)
    if avail is None:
        return
    fit = f"use --buffer-kb {max(MIN_BUFFER_KB, avail // 4 // max(n_cpus, 1))} or less"
    if total_kb > avail // 2:
        plan.add(
            "error",
            f"the ring buffer ({buffer_kb} KiB x {n_cpus} CPUs = {total_kb // 1024} MiB) "
            f"exceeds half of the available memory ({avail // 1024} MiB)",
            fit,
        )
    elif total_kb > avail // 4:
        plan.add("warning", f"the ring buffer takes {total_kb // 1024} MiB of {avail // 1024} MiB available")


def _check_host(plan: Plan, proc_root: Path) -> None:
    _, processes = scan_vcpu_threads(proc_root)
    if not processes:
        plan.add(
            "warning",
            "no QEMU or Firecracker process is running now, so no vCPU thread can be mapped to a VM",
            "start the VMs before recording; the vCPU map is read at the start and at the end",
        )
    for p in processes:
        if p.n_vcpu_threads == 0:
            plan.add(
                "warning",
                f"VM process {p.pid} (vm {p.vm}) has no thread named 'CPU n/KVM' or 'fc_vcpu n': "
                "its vCPU threads cannot be told apart",
                "start QEMU with -name <vm>,debug-threads=on (libvirt does this)",
            )
    plan.platform["vm_processes"] = [
        {"pid": p.pid, "vm": p.vm, "n_vcpus": p.n_vcpu_threads} for p in processes
    ]


def _check_command(plan: Plan, command: list[str]) -> None:
    exe = command[0]
    found = shutil.which(exe) if "/" not in exe else (exe if os.access(exe, os.X_OK) else None)
    if found is None:
        plan.add("error", f"command not found or not executable: {exe}")


def preflight(
    mode: Mode,
    *,
    buffer_kb: int,
    irq: bool = False,
    stacktrace: bool | None = None,
    command: list[str] | None = None,
    duration: float | None = None,
    tracefs: Tracefs | None = None,
    mounts: Path = MOUNTS,
    proc_root: Path = PROC,
    euid: int | None = None,
) -> Plan:
    """Check everything a capture needs; mounts tracefs when root and it is missing.

    `tracefs` overrides the system's tracefs (tests pass a fake tree).

    Problems are collected in the plan (never raised), except a failed mount.
    When `plan.mounted_here` is set the caller must unmount it when done.
    """
    euid = os.geteuid() if euid is None else euid
    plan = Plan(mode=mode, tracefs=None, platform=_platform(proc_root))
    if duration is not None and duration <= 0:
        plan.add("error", f"--duration must be positive, not {duration}")
    if command:
        _check_command(plan, command)
    if mode == "guest" and plan.platform.get("hypervisor_flag") is False:
        plan.add(
            "warning",
            "this machine has no hypervisor CPU flag: it does not look like a VM guest",
            "run --guest inside the VM, --host on the KVM host",
        )
    if mode == "host" and stacktrace:
        plan.add("error", "--stacktrace is a guest option (stacks of SPIN lock waits)")
    tracefs = plan.tracefs = _locate_tracefs(plan, tracefs, mounts, euid)
    if tracefs is None:
        return plan
    root = tracefs.root
    if not tracefs.supports_instances():
        plan.add(
            "error", f"{root} has no instances/ directory", "needs a kernel with tracefs instances (3.10+)"
        )
        return plan
    if not os.access(root / "instances", os.W_OK) or not os.access(root / "available_events", os.R_OK):
        plan.add(
            "error", f"no permission to create tracing instances under {root}", "run pvtrace record as root"
        )
        return plan
    _check_events(plan, tracefs, irq)
    _check_stacktrace(plan, tracefs, stacktrace)
    _check_buffer(plan, len(tracefs.cpus()), buffer_kb, proc_root)
    if mode == "host":
        _check_host(plan, proc_root)
    return plan
