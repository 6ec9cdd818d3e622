"""Event bodies as the kernel's TP_printk prints them, and as libtraceevent plugins do.

The kernel forms are those of a 6.18 x86-64 host (formats.md appendix); the
plugin forms are what `trace-cmd report` prints with libtraceevent's
sched_switch and kvm plugins (the sched_switch plugin drops the `+` of R+).
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pvtrace.simulate.render.host import FLAGS, VMX_REASON
from pvtrace.simulate.render.identities import PRIO, task_comm, task_pid
from pvtrace.simulate.render.text import hex_digits, hex_lx, zpad

Builder = Callable[[], pl.Expr]

_cpu = pl.col("cpu")


def _prev_comm() -> pl.Expr:
    return task_comm(pl.col("task_kind"), pl.col("task_vcpu"), _cpu, idle="swapper/")


def _prev_pid() -> pl.Expr:
    return task_pid(pl.col("task_kind"), pl.col("task_vmi"), pl.col("task_vcpu"), _cpu)


def _other_comm() -> pl.Expr:
    # The woken vCPU or the next task; a next idle/noise task is on this line's CPU.
    return task_comm(pl.col("o_kind"), pl.col("o_vcpu"), _cpu, idle="swapper/")


def _other_pid() -> pl.Expr:
    return task_pid(pl.col("o_kind"), pl.col("o_vmi"), pl.col("o_vcpu"), _cpu)


def _s(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String)


def _vmx_reason() -> pl.Expr:
    reason = pl.col("reason")
    expr = pl.when(pl.lit(False)).then(pl.lit(None, dtype=pl.String))
    for normalized, vmx in VMX_REASON.items():
        expr = expr.when(reason == normalized).then(pl.lit(vmx))
    return expr.otherwise(reason)


def _sched_switch() -> pl.Expr:
    return pl.concat_str(
        [
            pl.lit("prev_comm="),
            _prev_comm(),
            pl.lit(" prev_pid="),
            _s(_prev_pid()),
            pl.lit(f" prev_prio={PRIO} prev_state="),
            pl.col("state"),
            pl.lit(" ==> next_comm="),
            _other_comm(),
            pl.lit(" next_pid="),
            _s(_other_pid()),
            pl.lit(f" next_prio={PRIO}"),
        ]
    )


def _sched_switch_plugin() -> pl.Expr:
    state = pl.when(pl.col("state") == "R+").then(pl.lit("R")).otherwise(pl.col("state"))
    return pl.concat_str(
        [
            _prev_comm(),
            pl.lit(":"),
            _s(_prev_pid()),
            pl.lit(f" [{PRIO}] "),
            state,
            pl.lit(" ==> "),
            _other_comm(),
            pl.lit(":"),
            _s(_other_pid()),
            pl.lit(f" [{PRIO}]"),
        ]
    )


def _sched_wakeup() -> pl.Expr:
    return pl.concat_str(
        [
            pl.lit("comm="),
            _other_comm(),
            pl.lit(" pid="),
            _s(_other_pid()),
            pl.lit(f" prio={PRIO} target_cpu="),
            zpad(pl.col("target_cpu"), 3),
        ]
    )


def _sched_wakeup_plugin() -> pl.Expr:
    return pl.concat_str(
        [
            _other_comm(),
            pl.lit(":"),
            _s(_other_pid()),
            pl.lit(f" [{PRIO}] CPU:"),
            zpad(pl.col("target_cpu"), 3),
        ]
    )


def _kvm_exit() -> pl.Expr:
    return pl.concat_str(
        [
            pl.lit("vcpu "),
            _s(pl.col("task_vcpu")),
            pl.lit(" reason "),
            _vmx_reason(),
            pl.lit(" rip 0x"),
            hex_lx(pl.col("rip")),
            pl.lit(" info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x"),
            hex_digits(pl.col("intr_info"), 8),
            pl.lit(" error_code 0x00000000 requests 0x0000000000000000"),
        ]
    )


def _kvm_exit_plugin() -> pl.Expr:
    return pl.concat_str(
        [pl.lit("reason "), _vmx_reason(), pl.lit(" rip 0x"), hex_lx(pl.col("rip")), pl.lit(" info 0 0")]
    )


def _kvm_entry() -> pl.Expr:
    return pl.concat_str(
        [
            pl.lit("vcpu "),
            _s(pl.col("task_vcpu")),
            pl.lit(", rip 0x"),
            hex_lx(pl.col("rip")),
            pl.lit(" intr_info 0x00000000 error_code 0x00000000"),
        ]
    )


def _kvm_entry_plugin() -> pl.Expr:
    return pl.concat_str(
        [pl.lit(" vcpu "), _s(pl.col("task_vcpu")), pl.lit(" rip 0x"), hex_lx(pl.col("rip"))]
    )


def _kvm_hypercall() -> pl.Expr:
    kick = pl.col("nr") == 5
    a0 = pl.when(kick).then(pl.lit(0)).otherwise(pl.col("apic"))
    a1 = pl.when(kick).then(pl.col("apic")).otherwise(pl.lit(0))
    return pl.concat_str(
        [
            pl.lit("nr 0x"),
            hex_lx(pl.col("nr")),
            pl.lit(" a0 0x"),
            hex_lx(a0),
            pl.lit(" a1 0x"),
            hex_lx(a1),
            pl.lit(" a2 0x0 a3 0x0"),
        ]
    )


def _kvm_vcpu_wakeup() -> pl.Expr:
    return pl.concat_str([pl.lit("wait time "), _s(pl.col("wait_ns")), pl.lit(" ns, polling valid")])


def _kvm_ple_window_update() -> pl.Expr:
    grew = pl.when(pl.col("new") > pl.col("old")).then(pl.lit("growed")).otherwise(pl.lit("shrinked"))
    return pl.concat_str(
        [
            pl.lit("vcpu "),
            _s(pl.col("task_vcpu")),
            pl.lit(" old "),
            _s(pl.col("old")),
            pl.lit(" new "),
            _s(pl.col("new")),
            pl.lit(" ("),
            grew,
            pl.lit(")"),
        ]
    )


KERNEL: dict[str, Builder] = {
    "sched_switch": _sched_switch,
    "sched_waking": _sched_wakeup,
    "sched_wakeup": _sched_wakeup,
    "kvm_exit": _kvm_exit,
    "kvm_entry": _kvm_entry,
    "kvm_hypercall": _kvm_hypercall,
    "kvm_vcpu_wakeup": _kvm_vcpu_wakeup,
    "kvm_ple_window_update": _kvm_ple_window_update,
}
PLUGIN: dict[str, Builder] = {
    **KERNEL,
    "sched_switch": _sched_switch_plugin,
    "sched_wakeup": _sched_wakeup_plugin,
    "kvm_exit": _kvm_exit_plugin,
    "kvm_entry": _kvm_entry_plugin,
}


def host_flags() -> pl.Expr:
    """The ftrace flag column of a host record (by event and context)."""
    keys = [f"{event}/{ctx}" for event, ctx in FLAGS]
    return pl.concat_str([pl.col("event"), pl.lit("/"), pl.col("ctx")]).replace_strict(
        keys, list(FLAGS.values()), return_dtype=pl.String
    )


def with_payload(records: pl.DataFrame, plugins: bool) -> pl.DataFrame:
    """records plus a `payload` column, computed per event so each row runs one formatter."""
    builders = PLUGIN if plugins else KERNEL
    indexed = records.with_row_index("_payload_row")
    parts = [
        part.select("_payload_row", builders[str(event)]().alias("payload"))
        for (event,), part in indexed.group_by("event", maintain_order=True)
    ]
    if not parts:
        return records.with_columns(pl.lit(None, dtype=pl.String).alias("payload"))
    payload = pl.concat(parts).sort("_payload_row")["payload"]
    return records.with_columns(payload)


def line_comm(idle: str) -> pl.Expr:
    """The comm printed in a host line's prefix (`<idle>` in ftrace/trace-cmd, `swapper` in perf)."""
    return task_comm(pl.col("task_kind"), pl.col("task_vcpu"), _cpu, idle=idle)


def line_pid() -> pl.Expr:
    """The thread id printed in a host line's prefix."""
    return _prev_pid()
