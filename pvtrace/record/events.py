"""Which tracepoints a guest or host capture enables, and what each analysis needs.

A wanted event names the analyses it feeds and how to get it when this kernel
lacks it, so the preflight and the end-of-run summary can say exactly what is
missing and what that costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["guest", "host"]

SPIN_STACK_TRIGGER = "stacktrace if flags & 1"  # flags bit 0 = LCB_F_SPIN
STACK_EVENT = "lock:contention_begin"
TICK_EVENT = "irq_vectors:local_timer_entry"


@dataclass(frozen=True)
class Wanted:
    """One tracepoint to enable (the first of `choices` the kernel has)."""

    choices: tuple[str, ...]
    required: bool
    feeds: str  # what it is for
    fix: str  # how to get it when the kernel lacks it

    @property
    def name(self) -> str:
        return self.choices[0]


_LOCK_FIX = "lock:contention_begin/end exist from Linux 5.19 on; run a newer guest kernel"
_KVM_FIX = "load KVM (modprobe kvm_intel or modprobe kvm_amd) and record on the KVM host"
_SCHED_FIX = "the kernel lacks scheduler tracepoints (CONFIG_TRACING); use a kernel built with tracing"

GUEST_EVENTS: tuple[Wanted, ...] = (
    Wanted(("lock:contention_begin",), True, "lock waits (start of each wait, lock flags)", _LOCK_FIX),
    Wanted(("lock:contention_end",), True, "lock waits (end of each wait)", _LOCK_FIX),
    Wanted(("sched:sched_switch",), False, "which task ran on each guest CPU", _SCHED_FIX),
    Wanted(("sched:sched_wakeup",), False, "guest task wake-ups", _SCHED_FIX),
    Wanted(("sched:sched_waking",), False, "guest task wake-up requests", _SCHED_FIX),
    # One event per timer interrupt: HZ per busy CPU (plus other hrtimers), none while idle or
    # preempted; cheap, and no filter needed (bench_record.py measures it).
    Wanted(
        (TICK_EVENT,),
        False,
        "scheduler ticks: when each vCPU ran (guest-inferred level: preemption from inside the guest)",
        "irq_vectors tracepoints exist on x86 kernels with CONFIG_X86_LOCAL_APIC; elsewhere this level is unavailable",
    ),
)

HOST_EVENTS: tuple[Wanted, ...] = (
    Wanted(("kvm:kvm_exit",), True, "VM exits and their reasons (PAUSE, HLT, ...)", _KVM_FIX),
    Wanted(("kvm:kvm_entry",), True, "VM entries (time spent in each exit)", _KVM_FIX),
    Wanted(("sched:sched_switch",), True, "vCPU thread states (running, preempted, halted)", _SCHED_FIX),
    Wanted(("sched:sched_wakeup",), False, "vCPU wake-ups (halted -> runnable)", _SCHED_FIX),
    Wanted(("kvm:kvm_hypercall",), False, "pv kicks (KVM_HC_KICK_CPU hypercalls)", _KVM_FIX),
    Wanted(("kvm:kvm_vcpu_wakeup",), False, "vCPU wake-ups from halt (halt polling)", _KVM_FIX),
    Wanted(
        ("kvm:kvm_ple_window_update", "kvm:kvm_ple_window"),
        False,
        "pause-loop-exiting window changes",
        "PLE window tracepoints exist on hosts whose CPUs have pause-loop exiting (Intel VMX, AMD SVM)",
    ),
)

IRQ_EVENTS: tuple[str, ...] = (
    "irq:irq_handler_entry",
    "irq:irq_handler_exit",
    "irq:softirq_entry",
    "irq:softirq_exit",
    "irq_vectors:local_timer_entry",
    "irq_vectors:local_timer_exit",
    "irq_vectors:reschedule_entry",
    "irq_vectors:reschedule_exit",
    "irq_vectors:call_function_entry",
    "irq_vectors:call_function_exit",
    "irq_vectors:call_function_single_entry",
    "irq_vectors:call_function_single_exit",
)


def wanted_events(mode: Mode) -> tuple[Wanted, ...]:
    return GUEST_EVENTS if mode == "guest" else HOST_EVENTS


@dataclass(frozen=True)
class Need:
    """An analysis and what it reads from a capture of one side.

    `events` are all needed, named as ftrace prints them (no system);
    "a|b" accepts either. `vcpu_map`: it needs host threads tied to vCPUs.
    `other_side`: it also needs a trace from the other side of the same run.
    """

    analysis: str
    events: tuple[str, ...]
    vcpu_map: bool = False
    other_side: str = ""
    without_pv: str = ""  # what of it a guest with paravirt spinlocks cannot give, and the fix


GUEST_NEEDS: tuple[Need, ...] = (
    Need("lock waits per lock and per CPU (guest-only level)", ("contention_begin", "contention_end")),
    Need("guest task on each CPU during waits", ("sched_switch",)),
    Need(
        "vCPU preemption, LHP incidents, spin waste from inside the guest (guest-inferred level)",
        ("contention_begin", "contention_end", "local_timer_entry"),
        without_pv="the preemption only: this guest uses paravirt spinlocks (its boot log says so), whose "
        "waiters halt, so spin, LHP and LWP need a host trace of the same run (pvtrace record --host)",
    ),
    Need(
        "vCPU states, LHP/LWP incidents, spin waste",
        ("contention_begin", "contention_end"),
        other_side="a host trace of the same run (pvtrace record --host on the KVM host)",
    ),
)

HOST_NEEDS: tuple[Need, ...] = (
    Need("vCPU states (running, preempted, halted)", ("sched_switch",), vcpu_map=True),
    Need("exit reasons and time in exits", ("kvm_exit", "kvm_entry"), vcpu_map=True),
    Need("pause exits while a sibling is preempted", ("kvm_exit", "sched_switch"), vcpu_map=True),
    Need("pv kicks and kick latency", ("kvm_hypercall", "sched_switch"), vcpu_map=True),
    Need("PLE window changes", ("kvm_ple_window_update|kvm_ple_window",), vcpu_map=True),
    Need(
        "lock waits, LHP/LWP incidents, spin waste",
        ("kvm_exit", "sched_switch"),
        vcpu_map=True,
        other_side="guest traces of the same run (pvtrace record --guest in each VM)",
    ),
)


def analysis_needs(mode: Mode) -> tuple[Need, ...]:
    return GUEST_NEEDS if mode == "guest" else HOST_NEEDS
