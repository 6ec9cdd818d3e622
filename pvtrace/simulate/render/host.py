"""The host tracepoint records of a run, as numbers (text comes later, per format).

One simulator event can print as several lines and some lines come from pairs
of events, exactly as a host kernel would emit them:
- vCPU leaves a pCPU and another vCPU runs on it at the same instant: one
  `sched_switch` (prev = the leaver, prev_state R+ preempted / R yield / S halt).
  A leaver with no successor hands the pCPU to the idle task (halt) or to a
  host background task (preemption); a vCPU starting on a pCPU nobody left
  takes it from the idle task or that background task.
- vcpu_wake: `sched_waking` + `sched_wakeup`, printed in the waker's context:
  the kicking vCPU's thread for a pv kick at the same instant, else an
  interrupt on the target pCPU. A vCPU that is runnable at the start without
  ever having run shows as such a wake-up too.
- vcpu_run after a halt: the vCPU thread also prints `kvm_vcpu_wakeup`
  (wait time = halt to run), as kvm_vcpu_halt does when the thread returns.
- vm_exit/vm_entry: `kvm_exit`/`kvm_entry` with guest rips that depend on the
  exit reason (the entry resumes after the exiting instruction).
- pv_kick: `kvm_hypercall` nr 0x5 (KVM_HC_KICK_CPU) with a1 = the target's APIC id;
  yield_to after a hypercall exit: nr 0xb (KVM_HC_SCHED_YIELD) with a0 = the target's APIC id.
- ple_window: `kvm_ple_window_update` with the previous window as `old`.
"""

from __future__ import annotations

import polars as pl

from pvtrace.simulate.render.identities import TASK_IDLE, TASK_NOISE, TASK_VCPU
from pvtrace.simulate.views import last_exit_reason
from pvtrace.trace import Trace

# KVM's default PAUSE-loop-exiting window (module parameter ple_window).
DEFAULT_PLE_WINDOW = 4096

KVM_HC_KICK_CPU = 5
KVM_HC_SCHED_YIELD = 11

# Normalized exit reason -> VMX name printed by kvm_exit.
VMX_REASON = {"PAUSE": "PAUSE_INSTRUCTION", "HYPERCALL": "VMCALL"}
# Guest rips of the exiting instruction and its length (the entry resumes after it).
EXIT_RIP = {
    "PAUSE": (0xFFFFFFFF8110B5E2, 2),  # `pause` in the pv qspinlock spin loop
    "HLT": (0xFFFFFFFF81095D46, 1),  # `hlt` in kvm_wait (pv_wait)
    "HYPERCALL": (0xFFFFFFFF81096A0F, 3),  # `vmcall` in kvm_kick_cpu / kvm_sched_yield
}
# Asynchronous exits land anywhere in the guest workload; picked by the event's seq.
ASYNC_RIPS = (
    0xFFFFFFFF81A3C4D1,
    0xFFFFFFFF81A3C502,
    0xFFFFFFFF8110B5E2,
    0xFFFFFFFF81A3C4F7,
    0xFFFFFFFF8123D0B8,
    0xFFFFFFFF81A3C519,
    0xFFFFFFFF8110B5E0,
    0xFFFFFFFF81A3C4E3,
)
# Guest user-mode rips (a PIE binary's text): where an interrupt finds a vCPU computing in user
# mode (vm_exit value 1); picked by the event's seq.
USER_RIPS = (0x55D4C3A1B2E0, 0x55D4C3A1B31C, 0x55D4C3A1B2F4, 0x7F3A2C41D0A2)
# VM-exit interruption info of an external interrupt: valid, vector 0xec (LOCAL_TIMER_VECTOR).
TIMER_INTR_INFO = 0x800000EC

# ftrace flag columns (irqs/need-resched/context/preempt-depth/migrate-disable) per event and context.
FLAGS = {
    ("sched_switch", "task"): "d..2.",
    ("sched_waking", "task"): "d..3.",
    ("sched_wakeup", "task"): "d..4.",
    ("sched_waking", "irq"): "d.h3.",
    ("sched_wakeup", "irq"): "d.h4.",
    ("kvm_exit", "task"): "d....",
    ("kvm_entry", "task"): "d....",
    ("kvm_hypercall", "task"): ".....",
    ("kvm_vcpu_wakeup", "task"): ".....",
    ("kvm_ple_window_update", "task"): ".....",
}

HOST_EVENTS: tuple[tuple[str, str], ...] = (
    ("sched", "sched_switch"),
    ("sched", "sched_waking"),
    ("sched", "sched_wakeup"),
    ("kvm", "kvm_exit"),
    ("kvm", "kvm_entry"),
    ("kvm", "kvm_hypercall"),
    ("kvm", "kvm_vcpu_wakeup"),
    ("kvm", "kvm_ple_window_update"),
)

RECORD_SCHEMA = pl.Schema(
    {
        "ts": pl.Int64(),
        "ord": pl.Int64(),  # canonical position of the event the line comes from
        "sub": pl.Int8(),  # order among the lines of one event
        "cpu": pl.Int32(),
        "event": pl.Enum([event for _, event in HOST_EVENTS]),
        "ctx": pl.Enum(["task", "irq"]),
        "task_kind": pl.Int8(),  # who prints the line (TASK_*)
        "task_vmi": pl.Int32(),
        "task_vcpu": pl.Int32(),
        "o_kind": pl.Int8(),  # the other task: next of a switch, the woken task of a wake-up
        "o_vmi": pl.Int32(),
        "o_vcpu": pl.Int32(),
        "state": pl.Categorical(),  # prev_state of a switch
        "reason": pl.Categorical(),  # normalized exit reason
        "rip": pl.UInt64(),
        "intr_info": pl.Int64(),
        "nr": pl.Int64(),  # hypercall number
        "apic": pl.Int64(),  # hypercall target APIC id
        "old": pl.Int64(),  # previous PLE window
        "new": pl.Int64(),  # new PLE window
        "wait_ns": pl.Int64(),
        "target_cpu": pl.Int32(),
    }
)


def _records(frame: pl.DataFrame, **columns: pl.Expr) -> pl.DataFrame:
    """Select record columns from frame; missing record columns are null."""
    if frame.height == 0:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    exprs = []
    for name, dtype in RECORD_SCHEMA.items():
        expr = columns.get(name, pl.lit(None))
        exprs.append(expr.cast(dtype).alias(name))
    return frame.select(exprs)


def _prepared(events: pl.DataFrame) -> pl.DataFrame:
    """Numbered events (see order.numbered) with each vCPU's current pCPU."""
    run_pcpu = pl.when(pl.col("kind") == "vcpu_run").then(pl.col("pcpu"))
    return events.with_columns(
        run_pcpu.forward_fill().over(["vmi", "vcpu"]).alias("cur_pcpu"),
        run_pcpu.backward_fill().over(["vmi", "vcpu"]).alias("next_run_pcpu"),
    ).with_columns(pl.coalesce("pcpu", "cur_pcpu").alias("line_cpu"))


def _state_events(ev: pl.DataFrame) -> pl.DataFrame:
    """run/preempt/halt events with the vCPU's previous state event."""
    return ev.filter(pl.col("kind").is_in(["vcpu_run", "vcpu_preempt", "vcpu_halt"])).with_columns(
        pl.col("kind").shift(1).over(["vmi", "vcpu"]).alias("prev_kind"),
        pl.col("ts").shift(1).over(["vmi", "vcpu"]).alias("prev_ts"),
        pl.col("pcpu").shift(1).over(["vmi", "vcpu"]).alias("prev_pcpu"),
    )


def _switches(st: pl.DataFrame) -> pl.DataFrame:
    """sched_switch records from the state events (one per pCPU hand-over)."""
    leaving = pl.col("kind").is_in(["vcpu_preempt", "vcpu_halt"]) & (pl.col("prev_kind") == "vcpu_run")
    sw = (
        st.with_columns(
            pl.when(pl.col("kind") == "vcpu_run")
            .then(pl.col("pcpu"))
            .otherwise(pl.coalesce("pcpu", "prev_pcpu"))
            .alias("cpu")
        )
        .filter(((pl.col("kind") == "vcpu_run") | leaving) & pl.col("cpu").is_not_null())
        .sort("cpu", "ord")
    )
    on_cpu = ["cpu"]
    sw = sw.with_columns(
        *[pl.col(c).shift(-1).over(on_cpu).alias(f"nxt_{c}") for c in ("kind", "ts", "vmi", "vcpu")],
        *[pl.col(c).shift(1).over(on_cpu).alias(f"prv_{c}") for c in ("kind", "ts")],
    )
    is_run = pl.col("kind") == "vcpu_run"
    paired_leave = (
        ~is_run & (pl.col("nxt_kind") == "vcpu_run") & (pl.col("nxt_ts") == pl.col("ts"))
    ).fill_null(False)
    prv_leave = pl.col("prv_kind").is_in(["vcpu_preempt", "vcpu_halt"])
    paired_run = (is_run & prv_leave & (pl.col("prv_ts") == pl.col("ts"))).fill_null(False)
    # The unpaired leave before an unpaired run tells who held the pCPU meanwhile.
    after_preempt = (is_run & (pl.col("prv_kind") == "vcpu_preempt")).fill_null(False)
    sw = sw.filter(~paired_run)
    state = (
        pl.when(pl.col("kind") == "vcpu_halt")
        .then(pl.lit("S"))
        .when(pl.col("kind") == "vcpu_preempt")
        .then(pl.coalesce(pl.col("reason").cast(pl.String), pl.lit("R+")))
        .when(after_preempt)
        .then(pl.lit("R+"))
        .otherwise(pl.lit("R"))
    )
    leaver_kind = (
        pl.when(is_run)
        .then(pl.when(after_preempt).then(TASK_NOISE).otherwise(TASK_IDLE))
        .otherwise(TASK_VCPU)
    )
    next_kind = (
        pl.when(is_run)
        .then(TASK_VCPU)
        .when(paired_leave)
        .then(TASK_VCPU)
        .when(pl.col("kind") == "vcpu_halt")
        .then(TASK_IDLE)
        .otherwise(TASK_NOISE)
    )
    return _records(
        sw,
        ts=pl.col("ts"),
        ord=pl.col("ord"),
        sub=pl.lit(0),
        cpu=pl.col("cpu"),
        event=pl.lit("sched_switch"),
        ctx=pl.lit("task"),
        task_kind=leaver_kind,
        task_vmi=pl.when(is_run).then(None).otherwise(pl.col("vmi")),
        task_vcpu=pl.when(is_run).then(None).otherwise(pl.col("vcpu")),
        o_kind=next_kind,
        o_vmi=pl.when(is_run).then(pl.col("vmi")).when(paired_leave).then(pl.col("nxt_vmi")),
        o_vcpu=pl.when(is_run).then(pl.col("vcpu")).when(paired_leave).then(pl.col("nxt_vcpu")),
        state=state,
    ).sort("ord")


def _wakeups(ev: pl.DataFrame, st: pl.DataFrame, switches: pl.DataFrame) -> pl.DataFrame:
    """sched_waking + sched_wakeup records of vcpu_wake events and of vCPUs runnable from the start."""
    declared = st.filter(
        (pl.col("kind") == "vcpu_preempt") & (pl.col("prev_kind") != "vcpu_run").fill_null(True)
    )
    wakes = pl.concat(
        [ev.filter(pl.col("kind") == "vcpu_wake"), declared.select(ev.columns)], how="vertical"
    ).sort("ord")
    if wakes.height == 0:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    kicks = (
        ev.filter(pl.col("kind") == "pv_kick")
        .select(
            "vmi",
            pl.col("target").alias("vcpu"),
            "ts",
            pl.col("vcpu").alias("kicker"),
            pl.col("line_cpu").alias("kicker_cpu"),
        )
        .unique(["vmi", "vcpu", "ts"], keep="last", maintain_order=True)
    )
    wakes = wakes.join(kicks, on=["vmi", "vcpu", "ts"], how="left", maintain_order="left").with_columns(
        pl.coalesce("pcpu", "next_run_pcpu", "cur_pcpu", pl.lit(0)).cast(pl.Int32).alias("target_cpu")
    )
    # Who is on the target pCPU when an interrupt there wakes the vCPU: the next task of its last switch.
    occupants = switches.select(
        pl.col("cpu").alias("target_cpu"), "ord", pl.col("o_kind").alias("occ_kind"), "o_vmi", "o_vcpu"
    ).sort("ord")
    wakes = wakes.sort("ord").join_asof(
        occupants,
        on="ord",
        by="target_cpu",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    kicked = pl.col("kicker").is_not_null()
    common = {
        "ts": pl.col("ts"),
        "ord": pl.col("ord"),
        "cpu": pl.when(kicked).then(pl.col("kicker_cpu")).otherwise(pl.col("target_cpu")),
        "ctx": pl.when(kicked).then(pl.lit("task")).otherwise(pl.lit("irq")),
        "task_kind": pl.when(kicked).then(TASK_VCPU).otherwise(pl.col("occ_kind").fill_null(TASK_IDLE)),
        "task_vmi": pl.when(kicked).then(pl.col("vmi")).otherwise(pl.col("o_vmi")),
        "task_vcpu": pl.when(kicked).then(pl.col("kicker")).otherwise(pl.col("o_vcpu")),
        "o_kind": pl.lit(TASK_VCPU),
        "o_vmi": pl.col("vmi"),
        "o_vcpu": pl.col("vcpu"),
        "target_cpu": pl.col("target_cpu"),
    }
    waking = _records(wakes, sub=pl.lit(0), event=pl.lit("sched_waking"), **common)
    wakeup = _records(wakes, sub=pl.lit(1), event=pl.lit("sched_wakeup"), **common)
    return pl.concat([waking, wakeup])


def _vcpu_wakeups(st: pl.DataFrame) -> pl.DataFrame:
    """kvm_vcpu_wakeup records: a halted vCPU's thread runs again."""
    runs = st.filter((pl.col("kind") == "vcpu_run") & (pl.col("prev_kind") == "vcpu_halt"))
    return _records(
        runs,
        ts=pl.col("ts"),
        ord=pl.col("ord"),
        sub=pl.lit(1),
        cpu=pl.col("pcpu"),
        event=pl.lit("kvm_vcpu_wakeup"),
        ctx=pl.lit("task"),
        task_kind=pl.lit(TASK_VCPU),
        task_vmi=pl.col("vmi"),
        task_vcpu=pl.col("vcpu"),
        wait_ns=pl.col("ts") - pl.col("prev_ts"),
    )


def _exit_rip(reason: pl.Expr, seq: pl.Expr, value: pl.Expr) -> pl.Expr:
    """Guest rip of an exit: fixed per synchronous reason, a user-mode rip where the exit found
    the guest in user mode (value 1), else one of the async kernel rips; picked by seq."""
    user = (seq % len(USER_RIPS)).replace_strict(
        list(range(len(USER_RIPS))), list(USER_RIPS), return_dtype=pl.UInt64
    )
    expr = pl.when(value == 1).then(user)
    for name, (address, _) in EXIT_RIP.items():
        expr = expr.when(reason == name).then(pl.lit(address, dtype=pl.UInt64))
    asynchronous = (seq % len(ASYNC_RIPS)).replace_strict(
        list(range(len(ASYNC_RIPS))), list(ASYNC_RIPS), return_dtype=pl.UInt64
    )
    return expr.otherwise(asynchronous)


def _insn_len(reason: pl.Expr) -> pl.Expr:
    expr = pl.when(pl.lit(False)).then(pl.lit(0, dtype=pl.UInt64))
    for name, (_, length) in EXIT_RIP.items():
        expr = expr.when(reason == name).then(pl.lit(length, dtype=pl.UInt64))
    return expr.otherwise(pl.lit(0, dtype=pl.UInt64))


def _kvm(ev: pl.DataFrame, ple_default: int) -> pl.DataFrame:
    """kvm_exit, kvm_entry, kvm_hypercall and kvm_ple_window_update records."""
    reason = pl.col("reason").cast(pl.String)
    is_exit = pl.col("kind") == "vm_exit"
    kvm = ev.filter(pl.col("kind").is_in(["vm_exit", "vm_entry", "pv_kick", "yield_to", "ple_window"]))
    kvm = kvm.with_columns(
        pl.when(is_exit).then(_exit_rip(reason, pl.col("seq"), pl.col("value"))).alias("exit_rip")
    ).with_columns(
        pl.col("exit_rip").forward_fill().over(["vmi", "vcpu"]).alias("last_rip"),
        last_exit_reason(partition=("vmi", "vcpu"), order_by=None).alias("last_reason"),
        pl.when(pl.col("kind") == "ple_window")
        .then(pl.col("value"))
        .shift(1)
        .forward_fill()
        .over(["vmi", "vcpu"])
        .alias("prev_window"),
    )
    task = {
        "ts": pl.col("ts"),
        "ord": pl.col("ord"),
        "sub": pl.lit(0),
        "cpu": pl.col("line_cpu"),
        "ctx": pl.lit("task"),
        "task_kind": pl.lit(TASK_VCPU),
        "task_vmi": pl.col("vmi"),
        "task_vcpu": pl.col("vcpu"),
    }
    kind = pl.col("kind")
    entry_rip = pl.col("last_rip") + _insn_len(pl.col("last_reason"))
    first_entry_rip = pl.lit(EXIT_RIP["PAUSE"][0], dtype=pl.UInt64)
    hypercall_yield = (kind == "yield_to") & (pl.col("last_reason") == "HYPERCALL")
    kvm = kvm.filter((kind != "yield_to") | hypercall_yield)
    return _records(
        kvm,
        **task,
        event=pl.when(kind == "vm_exit")
        .then(pl.lit("kvm_exit"))
        .when(kind == "vm_entry")
        .then(pl.lit("kvm_entry"))
        .when(kind == "ple_window")
        .then(pl.lit("kvm_ple_window_update"))
        .otherwise(pl.lit("kvm_hypercall")),
        reason=reason,
        rip=pl.when(is_exit).then(pl.col("exit_rip")).otherwise(pl.coalesce(entry_rip, first_entry_rip)),
        intr_info=pl.when(is_exit & (reason == "EXTERNAL_INTERRUPT")).then(TIMER_INTR_INFO).otherwise(0),
        nr=pl.when(kind == "pv_kick").then(KVM_HC_KICK_CPU).otherwise(KVM_HC_SCHED_YIELD),
        apic=pl.col("target"),
        old=pl.coalesce("prev_window", pl.lit(ple_default)),
        new=pl.col("value"),
    )


def ple_window_default(trace: Trace) -> int:
    """The PLE window every vCPU starts with: the scenario's, else KVM's default."""
    scenario = trace.meta.extra.get("scenario") or {}
    for section in (scenario, scenario.get("hypervisor") or {}):
        if isinstance(section, dict) and isinstance(section.get("ple_window"), int):
            return int(section["ple_window"])
    return DEFAULT_PLE_WINDOW


def host_records(trace: Trace, events: pl.DataFrame) -> pl.DataFrame:
    """Every host tracepoint line of the run, in print order (RECORD_SCHEMA).

    `events` are the trace's events numbered by order.numbered; kinds no host
    tracer sees are ignored.
    """
    ev = _prepared(events)
    st = _state_events(ev)
    switches = _switches(st)
    parts = [
        switches,
        _wakeups(ev, st, switches),
        _vcpu_wakeups(st),
        _kvm(ev, ple_window_default(trace)),
    ]
    return pl.concat(parts, how="vertical").sort("ord", "sub", maintain_order=True)
