"""The one alias table: tracepoint name -> canonical kind and payload parser.

Also the exit-reason vocabulary: VMX names (upper case), SVM kernel names (lower
case, some with spaces), the libtraceevent plugin's `EXIT_*` names, raw numeric
codes, arm64 exception classes, all brought to one normalized reason so that a
PAUSE exit reads PAUSE whichever kernel, CPU vendor and tool printed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from pvtrace.ingest import payloads

# x86 KVM hypercall numbers that matter for pv spinlocks (formats.md 5.3).
KVM_HC_KICK_CPU = 5  # a1 = APIC id of the vCPU to wake
KVM_HC_SCHED_YIELD = 11  # a0 = APIC id of the preempted vCPU yielded to


@dataclass(frozen=True)
class Alias:
    """How one tracepoint becomes canonical events.

    family: the normalizer rule that applies (events of one family share a parser).
    kind: the canonical kind, or None when the rule decides (sched_switch of a
    vCPU thread, hypercall numbers, ...). side: where the event means what the
    kind says ("host": KVM/host scheduler, "guest": guest lock events, "both");
    on the other side it is kept as `other`.
    """

    family: str
    kind: str | None
    parser: Callable[[pl.DataFrame], pl.DataFrame] | None  # adds typed fields to a frame with `payload`
    side: str = "both"


ALIASES: dict[str, Alias] = {
    "sched_switch": Alias("switch", None, payloads.sched_switch),
    "sched_wakeup": Alias("wake", None, payloads.sched_wakeup),
    "sched_wakeup_new": Alias("wake", None, payloads.sched_wakeup),
    "sched_waking": Alias("wake", None, payloads.sched_wakeup),
    "kvm_exit": Alias("exit", "vm_exit", payloads.kvm_exit, "host"),
    "kvm_entry": Alias("entry", "vm_entry", payloads.kvm_entry, "host"),
    "kvm_hypercall": Alias("hypercall", None, payloads.kvm_hypercall, "host"),
    "kvm_vcpu_wakeup": Alias("vcpu_wakeup", "other", payloads.kvm_vcpu_wakeup, "host"),
    "kvm_ple_window_update": Alias("ple", "ple_window", payloads.kvm_ple_window, "host"),
    "kvm_ple_window": Alias("ple", "ple_window", payloads.kvm_ple_window, "host"),
    "kvm_write_tsc_offset": Alias("tsc", "other", payloads.kvm_write_tsc_offset, "host"),
    "contention_begin": Alias("contention", "lock_contend", payloads.lock_contention, "guest"),
    "contention_end": Alias("contention", "lock_acquire", payloads.lock_contention, "guest"),
    "lock_acquire": Alias("lockdep", "lock_acquire", payloads.lockdep, "guest"),
    "lock_acquired": Alias("lockdep", "lock_acquire", payloads.lockdep, "guest"),
    "lock_contended": Alias("lockdep", "lock_contend", payloads.lockdep, "guest"),
    "lock_release": Alias("lockdep", "lock_release", payloads.lockdep, "guest"),
    "lost_events": Alias("lost", "lost_events", None),
    "buffer_started": Alias("lost", "lost_events", None),
}


def families(side: str) -> dict[str, tuple[str, ...]]:
    """Parsed families that mean something on side ("host" or "guest"): family -> tracepoint names."""
    out: dict[str, tuple[str, ...]] = {}
    for name, alias in ALIASES.items():
        if alias.parser is not None and alias.side in (side, "both"):
            out[alias.family] = (*out.get(alias.family, ()), name)
    return out


# Normalized names of the reasons pv-spinlock analysis looks at, and the
# spellings that mean the same exit elsewhere (after upper-casing and
# stripping the plugin's EXIT_ prefix).
REASON_SYNONYMS: dict[str, str] = {
    "PAUSE_INSTRUCTION": "PAUSE",  # VMX
    "VMCALL": "HYPERCALL",  # VMX
    "VMMCALL": "HYPERCALL",  # SVM plugin EXIT_VMMCALL
    "INTR": "EXTERNAL_INTERRUPT",  # SVM plugin EXIT_INTR
    "INTERRUPT": "EXTERNAL_INTERRUPT",  # SVM kernel `interrupt`
    "PENDING_INTERRUPT": "INTERRUPT_WINDOW",  # VMX name before ~4.x
    "IOIO": "IO",  # SVM plugin EXIT_IOIO vs kernel `io`
}

# arm64 kvm_exit: the first word (exception type) and the trap's exception class.
ARM_TYPE_REASONS: dict[str, str] = {"IRQ": "EXTERNAL_INTERRUPT"}
ARM_CLASS_REASONS: dict[str, str] = {"HVC64": "HYPERCALL", "HVC32": "HYPERCALL"}

# Raw numeric exit codes (trace-cmd -R): VMX basic exit reasons (SDM appendix C).
VMX_EXIT_CODES: dict[int, str] = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL",
    4: "SIPI_SIGNAL", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH", 10: "CPUID",
    12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL", 19: "VMCLEAR",
    20: "VMLAUNCH", 21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD", 24: "VMRESUME", 25: "VMWRITE",
    26: "VMOFF", 27: "VMON", 28: "CR_ACCESS", 29: "DR_ACCESS", 30: "IO_INSTRUCTION",
    31: "MSR_READ", 32: "MSR_WRITE", 33: "INVALID_STATE", 34: "MSR_LOAD_FAIL",
    36: "MWAIT_INSTRUCTION", 37: "MONITOR_TRAP_FLAG", 39: "MONITOR_INSTRUCTION",
    40: "PAUSE_INSTRUCTION", 41: "MCE_DURING_VMENTRY", 43: "TPR_BELOW_THRESHOLD",
    44: "APIC_ACCESS", 45: "EOI_INDUCED", 46: "GDTR_IDTR", 47: "LDTR_TR", 48: "EPT_VIOLATION",
    49: "EPT_MISCONFIG", 50: "INVEPT", 51: "RDTSCP", 52: "PREEMPTION_TIMER", 53: "INVVPID",
    54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE", 57: "RDRAND", 58: "INVPCID", 59: "VMFUNC",
    60: "ENCLS", 61: "RDSEED", 62: "PML_FULL", 63: "XSAVES", 64: "XRSTORS", 67: "UMWAIT",
    68: "TPAUSE", 74: "BUS_LOCK", 75: "NOTIFY",
}  # fmt: skip
# SVM exit codes (uapi svm.h) for the reasons that matter here.
SVM_EXIT_CODES: dict[int, str] = {
    0x060: "interrupt", 0x061: "nmi", 0x062: "smi", 0x063: "init", 0x064: "vintr",
    0x072: "cpuid", 0x077: "pause", 0x078: "hlt", 0x079: "invlpg", 0x07B: "io", 0x07C: "msr",
    0x07D: "task_switch", 0x07F: "shutdown", 0x080: "vmrun", 0x081: "hypercall",
    0x400: "npf", 0x401: "avic_incomplete_ipi", 0x402: "avic_unaccelerated_access", 0x403: "vmgexit",
}  # fmt: skip
KVM_ISA_VMX = 1
KVM_ISA_SVM = 2
VMX_EXIT_FAILED_VMENTRY = 1 << 31

# Flag words the kernel appends to a VMX reason (`reason X FAILED_VMENTRY`).
_FLAG_WORDS = r"FAILED_VMENTRY|SGX_ENCLAVE_MODE|0x[0-9a-fA-F]+"


def _normalize_name(base: pl.Expr) -> pl.Expr:
    """Upper case, EXIT_ stripped, spaces to _, synonyms applied; hex or UNKNOWN (n) -> UNKNOWN_n."""
    unknown = base.str.extract(r"^UNKNOWN\s*\((\d+)\)$", 1)
    hex_code = base.str.extract(r"^0x([0-9a-fA-F]+)$", 1).str.to_integer(base=16, strict=False)
    name = (
        base.str.strip_chars()
        .str.to_uppercase()
        .str.strip_prefix("EXIT_")
        .str.replace_all(r"\s+", "_")
        .replace(REASON_SYNONYMS)
    )
    return (
        pl.when(unknown.is_not_null())
        .then(pl.lit("UNKNOWN_") + unknown)
        .when(hex_code.is_not_null())
        .then(pl.lit("UNKNOWN_") + hex_code.cast(pl.String))
        .otherwise(name)
    )


def exit_reason(reason: pl.Expr) -> pl.Expr:
    """Normalize printed exit-reason text (x86 kernel or plugin form).

    `PAUSE_INSTRUCTION`/`pause`/`EXIT_PAUSE` -> PAUSE, `HLT`/`hlt` -> HLT,
    `VMCALL`/`hypercall`/`EXIT_VMMCALL` -> HYPERCALL, `EXTERNAL_INTERRUPT`/
    `interrupt`/`EXIT_INTR` -> EXTERNAL_INTERRUPT; any other reason upper-cased
    with EXIT_ stripped and spaces as `_` (`UD excp` -> UD_EXCP). Trailing VMX flag
    words are kept after a `|` (`INVALID_STATE|FAILED_VMENTRY`).
    """
    g = reason.str.extract_groups(rf"^\s*(?P<base>.+?)(?P<flags>(?:\s+(?:{_FLAG_WORDS}))*)\s*$")
    flags = g.struct.field("flags").str.strip_chars().str.replace_all(r"\s+", "|")
    base = _normalize_name(g.struct.field("base"))
    return pl.when(flags.is_null() | (flags == "")).then(base).otherwise(base + "|" + flags)


def exit_reason_arm64(kind: pl.Expr, cls: pl.Expr) -> pl.Expr:
    """arm64: IRQ -> EXTERNAL_INTERRUPT; TRAP -> its class (WFx -> WFX, HVC64 -> HYPERCALL)."""
    cls_name = cls.str.to_uppercase().replace({k.upper(): v for k, v in ARM_CLASS_REASONS.items()})
    return (
        pl.when(kind.is_in(list(ARM_TYPE_REASONS)))
        .then(kind.replace(ARM_TYPE_REASONS))
        .when(kind == "TRAP")
        .then(cls_name)
        .otherwise(kind)
    )


def exit_reason_code(code: pl.Expr, isa: pl.Expr) -> pl.Expr:
    """Raw numeric exit reason (trace-cmd -R) by ISA; unknown codes -> UNKNOWN_<n>."""
    basic = code & 0xFFFF
    vmx = basic.replace_strict(VMX_EXIT_CODES, default=None, return_dtype=pl.String)
    svm = code.replace_strict(SVM_EXIT_CODES, default=None, return_dtype=pl.String)
    name = pl.when(isa == KVM_ISA_SVM).then(svm).otherwise(vmx)
    failed = (isa != KVM_ISA_SVM) & ((code & VMX_EXIT_FAILED_VMENTRY) != 0)
    normalized = pl.coalesce(_normalize_name(name), pl.lit("UNKNOWN_") + code.cast(pl.String))
    return pl.when(failed).then(normalized + "|FAILED_VMENTRY").otherwise(normalized)
