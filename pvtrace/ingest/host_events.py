"""Canonical events of host rows: vCPU runs, preemptions, halts and wake-ups, exits, hypercalls.

Rules (ingest.normalize has the whole table): sched_switch of a vCPU thread -> vcpu_preempt /
vcpu_halt / vcpu_run, of other threads -> task_switch; wake-ups -> vcpu_wake / task_wakeup;
kvm_exit / kvm_entry -> vm_exit / vm_entry; kvm_hypercall 5 / 11 -> pv_kick / yield_to with the
target's APIC id mapped to its vCPU; PLE window updates; everything else -> other. vm and vcpu
come from the vCPU map (ingest.vcpu_map).
"""

from __future__ import annotations

import polars as pl

from pvtrace.ingest.aliases import KVM_HC_KICK_CPU, KVM_HC_SCHED_YIELD
from pvtrace.ingest.families import GROUPS, HOST_GROUPS, LOST, counted_wakes, emit, lost, other
from pvtrace.ingest.vcpu_map import build_vcpu_map


def host_map(
    host: pl.DataFrame, parsed: dict[str, pl.DataFrame], user_map: pl.DataFrame | None
) -> tuple[pl.DataFrame, list[str]]:
    switch, wake = parsed["switch"], parsed["wake"]
    names = pl.concat(
        [
            host.select("tid", "comm"),
            switch.select(pl.col("prev_pid").alias("tid"), pl.col("prev_comm").alias("comm")),
            switch.select(pl.col("next_pid").alias("tid"), pl.col("next_comm").alias("comm")),
            wake.select(pl.col("pid").alias("tid"), pl.col("woken_comm").alias("comm")),
        ]
    )
    ids = pl.concat(
        [parsed[g].select("tid", pl.col("vcpu").alias("kvm_vcpu")) for g in ("exit", "entry", "ple")]
    )
    return build_vcpu_map(names, ids, host.select("tid", "tgid"), user_map)


def kvm_steps(parsed: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Each thread's KVM events in file order: row, tid, step (0 exit, 1 entry, 2 hypercall), nr
    (one frame per chunk, for host_events and exits_across_cut)."""
    return pl.concat(
        [
            parsed["exit"].select(
                "row", "tid", pl.lit(0, pl.Int8).alias("step"), pl.lit(None, pl.Int64).alias("nr")
            ),
            parsed["entry"].select(
                "row", "tid", pl.lit(1, pl.Int8).alias("step"), pl.lit(None, pl.Int64).alias("nr")
            ),
            parsed["hypercall"].select("row", "tid", pl.lit(2, pl.Int8).alias("step"), "nr"),
        ]
    ).sort("row")


def _hypercall_after_exit(steps: pl.DataFrame) -> pl.DataFrame:
    """(row, hypercall_nr) of each kvm_exit whose thread's next KVM event is kvm_hypercall.

    A VMCALL/VMMCALL exit is followed, on the same thread and before the next
    kvm_entry, by the kvm_hypercall that says which call it was; the exit
    carries that number as its value (5 kick, 11 yield), as the simulator's do.
    Across a chunk cut, exits_across_cut pairs them. steps: kvm_steps.
    """
    nxt = steps.with_columns(
        pl.col("step").shift(-1).over("tid").alias("next_step"),
        pl.col("nr").shift(-1).over("tid").alias("next_nr"),
    )
    return nxt.filter((pl.col("step") == 0) & (pl.col("next_step") == 2)).select(
        "row", pl.col("next_nr").alias("hypercall_nr")
    )


def exits_across_cut(steps: pl.DataFrame, open_before: list[int]) -> tuple[dict[int, int], list[int]]:
    """The kvm_exit / kvm_hypercall pairs a chunk cut separates, for a trace normalized in chunks.

    Returns ({tid: hypercall nr} for the threads of `open_before` (those whose last KVM event in
    the previous chunk was a kvm_exit) whose first KVM event in this chunk is a kvm_hypercall: that
    exit's value, patch_exit_values), and the threads whose last KVM event here is a kvm_exit.
    steps: kvm_steps of the chunk."""
    if steps.height == 0:
        return {}, []
    ends = steps.group_by("tid", maintain_order=True).agg(
        pl.col("step").first().alias("first_step"),
        pl.col("nr").first().alias("first_nr"),
        pl.col("step").last().alias("last_step"),
    )
    closed = ends.filter(pl.col("tid").is_in(open_before) & (pl.col("first_step") == 2))
    still_open = ends.filter(pl.col("last_step") == 0)["tid"].to_list()
    return dict(zip(closed["tid"].to_list(), closed["first_nr"].to_list(), strict=True)), still_open


def patch_exit_values(events: pl.DataFrame, closed: dict[int, int]) -> pl.DataFrame:
    """Canonical events of a chunk with the value of each thread's last vm_exit set to the
    hypercall number the next chunk opened with (exits_across_cut)."""
    if not closed:
        return events
    tids = list(closed)
    last = (
        events.with_row_index("_i")
        .filter((pl.col("kind") == "vm_exit") & pl.col("tid").is_in(tids))
        .group_by("tid")
        .agg(pl.col("_i").last())
    )
    nr = last["tid"].replace_strict(tids, list(closed.values()), return_dtype=pl.Int64)
    value = events["value"].clone().scatter(last["_i"], nr)
    return events.with_columns(value.alias("value"))


def _on_thread(thread: pl.DataFrame, key: str, vm: str = "vm", vcpu: str = "vcpu") -> list[pl.Expr]:
    """vm and vcpu of the thread whose id is in column key (null when not a vCPU thread): lookups in
    the small map (one row per thread) instead of joins, which would copy every row's columns."""
    tid = pl.col(key)
    return [
        tid.replace_strict(thread["tid"], thread["vm"], default=None).alias(vm),
        tid.replace_strict(thread["tid"], thread["vcpu"], default=None).alias(vcpu),
    ]


def host_events(
    host: pl.DataFrame,
    parsed: dict[str, pl.DataFrame],
    vmap: pl.DataFrame,
    with_wakeup: list[str],
    steps: pl.DataFrame,
) -> list[pl.DataFrame]:
    """Canonical events of host rows (vmap: the vCPU map; steps: kvm_steps of parsed)."""
    origin = "host"
    # vm as Categorical (the events' type) on the small map: the lookups then carry it, no per-row cast
    thread = vmap.select("tid", pl.col("vm").cast(pl.Categorical), "vcpu")
    out: list[pl.DataFrame] = []

    # sched_switch: vCPU out (preempt/halt), vCPU in (run), or a plain task switch
    sw = parsed["switch"].with_columns(
        *_on_thread(thread, "prev_pid", "prev_vm", "prev_vcpu"),
        *_on_thread(thread, "next_pid", "next_vm", "next_vcpu"),
    )
    ok = pl.col("prev_pid").is_not_null() & pl.col("next_pid").is_not_null()
    out += [
        emit(
            sw.filter(ok & pl.col("prev_vm").is_not_null()),
            kind=pl.when(pl.col("prev_state").str.starts_with("R"))
            .then(pl.lit("vcpu_preempt"))
            .otherwise(pl.lit("vcpu_halt")),
            vm=pl.col("prev_vm"),
            vcpu=pl.col("prev_vcpu"),
            pcpu=pl.col("cpu"),
            reason=pl.col("prev_state"),
            tid=pl.col("prev_pid"),
            origin=origin,
        ),
        emit(
            sw.filter(ok & pl.col("next_vm").is_not_null()),
            sub=1,
            kind="vcpu_run",
            vm=pl.col("next_vm"),
            vcpu=pl.col("next_vcpu"),
            pcpu=pl.col("cpu"),
            tid=pl.col("next_pid"),
            origin=origin,
        ),
        emit(
            sw.filter(ok & pl.col("prev_vm").is_null() & pl.col("next_vm").is_null()),
            kind="task_switch",
            pcpu=pl.col("cpu"),
            reason=pl.col("prev_state"),
            tid=pl.col("prev_pid"),
            value=pl.col("next_pid"),
            origin=origin,
        ),
        other(sw.filter(~ok), pcpu=pl.col("cpu"), tid=pl.col("tid"), origin=origin),
    ]

    wake = parsed["wake"]
    wk = wake.with_columns(*_on_thread(thread, "pid")).with_columns(
        counted_wakes(with_wakeup).alias("counts")
    )
    out += [
        emit(
            wk.filter(pl.col("counts")),
            kind=pl.when(pl.col("vm").is_not_null())
            .then(pl.lit("vcpu_wake"))
            .otherwise(pl.lit("task_wakeup")),
            vm=pl.col("vm"),
            vcpu=pl.col("vcpu"),
            pcpu=pl.col("target_cpu"),
            tid=pl.col("pid"),
            origin=origin,
        ),
        other(wk.filter(~pl.col("counts")), pcpu=pl.col("cpu"), tid=pl.col("tid"), origin=origin),
    ]

    def on_thread(group: str, drop: tuple[str, ...] = ("vcpu",)) -> pl.DataFrame:
        df = parsed[group]
        return df.drop([c for c in drop if c in df.columns]).with_columns(*_on_thread(thread, "tid"))

    at = {
        "vm": pl.col("vm"),
        "vcpu": pl.col("vcpu"),
        "pcpu": pl.col("cpu"),
        "tid": pl.col("tid"),
        "origin": origin,
    }
    calls = _hypercall_after_exit(steps)
    exits = on_thread("exit").with_columns(
        pl.col("row").replace_strict(calls["row"], calls["hypercall_nr"], default=None).alias("hypercall_nr")
    )
    out.append(
        emit(
            exits,
            kind="vm_exit",
            reason=pl.col("norm_reason"),
            value=pl.coalesce("hypercall_nr", "guest_user"),
            **at,
        )
    )
    out.append(emit(on_thread("entry"), kind="vm_entry", **at))

    # hypercalls: kick / yield targets are APIC ids, mapped to vCPU indexes of the caller's VM
    apic = vmap.select(
        pl.col("vm").cast(pl.Categorical),
        pl.col("apic_id").alias("target_apic"),
        pl.col("vcpu").alias("target_vcpu"),
    ).unique(subset=["vm", "target_apic"], keep="first")
    nr = pl.col("nr")
    hc = (
        on_thread("hypercall", ())
        .with_columns(
            pl.when(nr == KVM_HC_KICK_CPU)
            .then(pl.col("a1"))
            .when(nr == KVM_HC_SCHED_YIELD)
            .then(pl.col("a0"))
            .cast(pl.Int32)
            .alias("target_apic")
        )
        .join(apic, on=["vm", "target_apic"], how="left", nulls_equal=False)
    )
    hc_kind = (
        pl.when(nr == KVM_HC_KICK_CPU)
        .then(pl.lit("pv_kick"))
        .when(nr == KVM_HC_SCHED_YIELD)
        .then(pl.lit("yield_to"))
        .otherwise(pl.lit("other"))
    )
    out.append(
        emit(
            hc,
            kind=hc_kind,
            target=pl.coalesce("target_vcpu", "target_apic"),
            value=nr,
            args=pl.when(hc_kind == "other").then(pl.col("payload")),
            **at,
        )
    )
    out.append(other(on_thread("vcpu_wakeup", ()), reason=pl.col("how"), value=pl.col("time_ns"), **at))
    ple = parsed["ple"].rename({"vcpu": "kvm_vcpu"}).with_columns(*_on_thread(thread, "tid"))
    out.append(
        emit(
            ple,
            kind="ple_window",
            value=pl.col("window"),
            **{**at, "vcpu": pl.coalesce("vcpu", "kvm_vcpu")},
        )
    )
    out.append(other(on_thread("tsc"), value=pl.col("offset"), **at))
    out.append(lost(host, origin, pcpu=pl.col("cpu")))
    handled = [e for g in HOST_GROUPS for e in GROUPS[g]] + list(LOST)
    rest = host.filter(~pl.col("event").is_in(handled)).with_columns(*_on_thread(thread, "tid"))
    out.append(other(rest, **at))
    return out
