"""Who prints what: host threads, guest tasks and lock addresses of a rendered run.

The names follow what real hosts and guests show (INTERFACES.md): each VM is
a QEMU process with pid 1000 * (vm index + 1) whose vCPU
threads are named `CPU n/KVM` with tid = qemu pid + 1 + n. Everything is a
pure function of the run, so the same run always renders to the same bytes.
"""

from __future__ import annotations

import re

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.trace import Trace

QEMU_PID_STEP = 1000

# Who a rendered line or a sched_switch side is about.
TASK_IDLE = 0  # the idle task: `<idle>-0` in ftrace, `swapper` in perf, `swapper/N` in sched_switch
TASK_VCPU = 1  # a vCPU thread `CPU n/KVM`
TASK_NOISE = 2  # a host background task that took a pCPU from a vCPU (not in the events)

# The host background task that preempts a vCPU when no other vCPU takes the pCPU:
# one per pCPU, like the per-CPU workers of a host load generator.
NOISE_COMM = "stress-ng-cpu"
NOISE_PID_BASE = 30_000

# The guest task that runs the lock workload on each vCPU.
GUEST_COMM = "spinbench"
GUEST_PID_BASE = 4_100

PRIO = 120


def vm_names(trace: Trace) -> list[str]:
    """VM names in index order: the metadata's order, else natural order of the names in the events."""
    if trace.meta.vms:
        return list(trace.meta.vms)
    names = trace.events["vm"].drop_nulls().cast(pl.String).unique().to_list()
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def pick_vm(trace: Trace, vm: str | None) -> str:
    """The VM a guest-side rendering is about: `vm`, or the only VM of the run."""
    names = vm_names(trace)
    if vm is None:
        if len(names) != 1:
            raise UsageError(f"the run has {len(names)} VMs ({', '.join(names)}); say which guest to render")
        return names[0]
    if vm not in names:
        raise UsageError(f"no VM {vm!r} in the run (it has {', '.join(names) or 'none'})")
    return vm


def qemu_pid(vm_index: int) -> int:
    """The QEMU process id of the VM with this index."""
    return QEMU_PID_STEP * (vm_index + 1)


def vcpu_tid(vm_index: int, vcpu: int) -> int:
    """The host thread id of a vCPU."""
    return qemu_pid(vm_index) + 1 + vcpu


def n_vcpus(trace: Trace, vm: str) -> int:
    """The VM's vCPU count: the metadata's, else one more than the highest vCPU seen."""
    info = trace.meta.vms.get(vm)
    if info is not None and info.n_vcpus:
        return int(info.n_vcpus)
    seen = trace.events.filter(pl.col("vm").cast(pl.String) == vm)["vcpu"].max()
    return int(seen) + 1 if seen is not None else 0


def n_pcpus(trace: Trace) -> int:
    """The host CPU count: the metadata's, else one more than the highest pCPU seen."""
    if trace.meta.n_pcpus:
        return int(trace.meta.n_pcpus)
    seen = trace.events["pcpu"].max()
    return int(seen) + 1 if seen is not None else 1


def vcpu_map(trace: Trace) -> pl.DataFrame:
    """The host thread of every vCPU: tid, pid (the QEMU process), vm, vcpu."""
    rows = [
        (vcpu_tid(i, v), qemu_pid(i), vm, v)
        for i, vm in enumerate(vm_names(trace))
        for v in range(n_vcpus(trace, vm))
    ]
    return pl.DataFrame(
        rows,
        schema={"tid": pl.Int32, "pid": pl.Int32, "vm": pl.String, "vcpu": pl.Int32},
        orient="row",
    )


def task_pid(kind: pl.Expr, vmi: pl.Expr, vcpu: pl.Expr, cpu: pl.Expr) -> pl.Expr:
    """The pid (thread id) of a host task."""
    return (
        pl.when(kind == TASK_VCPU)
        .then(pl.lit(QEMU_PID_STEP) * (vmi + 1) + 1 + vcpu)
        .when(kind == TASK_NOISE)
        .then(pl.lit(NOISE_PID_BASE) + cpu)
        .otherwise(pl.lit(0))
        .cast(pl.Int32)
    )


def task_comm(kind: pl.Expr, vcpu: pl.Expr, cpu: pl.Expr, idle: str) -> pl.Expr:
    """The comm of a host task; `idle` is how the idle task is named where this comm is printed:
    "<idle>" (ftrace/trace-cmd line prefix), "swapper" (perf), or "swapper/" (sched_switch fields,
    completed with the CPU number)."""
    idle_name = (
        pl.concat_str([pl.lit("swapper/"), cpu.cast(pl.String)]) if idle == "swapper/" else pl.lit(idle)
    )
    return (
        pl.when(kind == TASK_VCPU)
        .then(pl.concat_str([pl.lit("CPU "), vcpu.cast(pl.String), pl.lit("/KVM")]))
        .when(kind == TASK_NOISE)
        .then(pl.lit(NOISE_COMM))
        .otherwise(idle_name)
    )


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a fixed bijection of 64-bit integers."""
    mask = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def hashed_lock_addresses(locks: pl.DataFrame) -> pl.DataFrame:
    """(vm, lock) -> hashed: what a guest with `options/hash-ptr` prints for `%p`.

    The kernel hashes pointers with a per-boot secret key into 32 bits and
    prints them zero-padded to 16 hex digits; here each VM's key derives from
    its name so the output is deterministic. Distinct locks of a VM always get
    distinct hashes (a rare collision is re-salted).
    """
    pairs = (
        locks.select(pl.col("vm").cast(pl.String), pl.col("lock").cast(pl.UInt64)).unique().sort("vm", "lock")
    )
    hashed: list[str] = []
    for vm, group in pairs.group_by("vm", maintain_order=True):
        key = _mix64(int.from_bytes(str(vm[0]).encode(), "little") & ((1 << 64) - 1))
        for salt in range(1 << 16):
            values = [_mix64(lock ^ key ^ (salt << 48)) & 0xFFFFFFFF for lock in group["lock"].to_list()]
            if len(set(values)) == len(values):
                break
        hashed.extend(f"{v:016x}" for v in values)
    return pairs.with_columns(pl.Series("hashed", hashed, dtype=pl.String))
