"""Tie each vCPU thread on a KVM host to its (VM, vCPU), from /proc.

QEMU names a vCPU thread `CPU n/KVM` (with `-name ...,debug-threads=on`,
which libvirt always sets); Firecracker names it `fc_vcpu n`. A host trace
only shows thread ids, so `record --host` writes this map as the side file
`<trace>.vcpus.csv` (`tid,pid,vm,vcpu`) that `pvtrace ingest` picks up
next to the trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pvtrace.outputs import atomic_file

PROC = Path("/proc")
_VCPU_COMM = re.compile(r"^(?:CPU (\d+)/KVM|fc_vcpu (\d+))$")

VCPU_MAP_SCHEMA = pl.Schema({"tid": pl.Int32(), "pid": pl.Int32(), "vm": pl.String(), "vcpu": pl.Int32()})


def vcpu_map_path(trace_path: Path) -> Path:
    """Where the side file of a trace goes: `<trace>.vcpus.csv`."""
    return trace_path.with_name(trace_path.name + ".vcpus.csv")


@dataclass(frozen=True)
class VmmProcess:
    """A QEMU or Firecracker process seen in /proc: its pid, VM name, and how many vCPU threads it names."""

    pid: int
    vm: str
    n_vcpu_threads: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process or thread exited while we looked
        return None


def vm_name(pid: int, cmdline: str | None) -> str:
    """The VM's name: QEMU `-name NAME` / `-name guest=NAME,...`, Firecracker `--id ID`; else the pid as text."""
    args = (cmdline or "").split("\0")
    for i, arg in enumerate(args[:-1]):
        if arg == "--id" and args[i + 1]:
            return args[i + 1]
        if arg == "-name":
            for part in args[i + 1].split(","):
                key, eq, value = part.partition("=")
                if not eq and key:
                    return key
                if key == "guest" and value:
                    return value
    return str(pid)


def vmm_pids(proc_root: Path = PROC) -> list[int]:
    """Processes that run VMs: command name `qemu*` (qemu-system-*, qemu-kvm) or `firecracker`."""
    pids = []
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            comm = (_read(entry / "comm") or "").strip()
            if comm.startswith("qemu") or comm == "firecracker":
                pids.append(int(entry.name))
    return sorted(pids)


def scan_vcpu_threads(proc_root: Path = PROC) -> tuple[pl.DataFrame, list[VmmProcess]]:
    """The vCPU threads of every VM process now: a `tid,pid,vm,vcpu` table, and the processes."""
    rows: list[tuple[int, int, str, int]] = []
    processes = []
    for pid in vmm_pids(proc_root):
        name = vm_name(pid, _read(proc_root / str(pid) / "cmdline"))
        n = 0
        task_dir = proc_root / str(pid) / "task"
        tasks = sorted(task_dir.iterdir()) if task_dir.is_dir() else []
        for task in tasks:
            m = _VCPU_COMM.match((_read(task / "comm") or "").strip())
            if m and task.name.isdigit():
                rows.append((int(task.name), pid, name, int(m.group(1) or m.group(2))))
                n += 1
        processes.append(VmmProcess(pid, name, n))
    table = pl.DataFrame(rows, schema=VCPU_MAP_SCHEMA, orient="row")
    return table, processes


def merge_maps(*maps: pl.DataFrame) -> pl.DataFrame:
    """Union of maps taken at different times (threads may come and go during a run)."""
    return pl.concat(maps).unique(subset=["tid", "pid"], keep="first").sort("pid", "vcpu", "tid")


def write_vcpu_map(table: pl.DataFrame, path: Path, force: bool) -> None:
    """Write the side file (CSV with header tid,pid,vm,vcpu)."""
    with atomic_file(path, force) as tmp:
        table.select(list(VCPU_MAP_SCHEMA)).write_csv(tmp)
