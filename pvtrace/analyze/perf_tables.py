"""perf kvm stat and perf lock contention tables as analysis results.

Ingest reads them into meta.extra["summary_tables"] (ingest/summary_tables.py); here
they become typed tables (`perf_kvm_stat`, `perf_lock_contention`) that every
output shows like the analyzer's own, plus what an exit table implies for
spinlocks: the share of PAUSE exits (pause-loop exiting: a vCPU spun long in the
guest), of HLT/WFx exits (idle or pv-halted vCPUs) and of hypercalls (pv kicks
and yields are hypercalls).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pvtrace.fmt import lock_hex
from pvtrace.ingest.summary_tables import KVM_STAT_SCHEMA, LOCK_CONTENTION_SCHEMA

# Normalized exit reasons (ingest/aliases.py) grouped by what they say about lock waiting.
IMPLICATION_GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    # arm64 traps WFE when a pCPU has other tasks, and KVM answers it as x86 a PAUSE exit:
    # kvm_vcpu_on_spin (arch/arm64/kvm/handle_exit.c, kvm_handle_wfx); a guest's spinlock waits in
    # WFE. perf kvm stat prints one class for WFI and WFE (WFx, the exception class): idle or spinning.
    "pause": (("PAUSE", "WFE"), "PAUSE exits: pause-loop exiting caught a vCPU spinning in the guest"),
    "halt": (
        ("HLT", "WFX", "WFx", "WFI"),
        "HLT/WFx exits: vCPUs idle or halted in a pv lock slow path (arm64's WFx: spinning too)",
    ),
    # RISC-V: a guest's SBI call is an ecall from VS-mode, which KVM sees as SUPERVISOR_SYSCALL
    # (cause 10; arch/riscv/kvm/vcpu_exit.c hands it to kvm_riscv_vcpu_sbi_ecall). HYPERVISOR_SYSCALL
    # (cause 9) is an ecall from HS-mode, the host's own: not a guest's hypercall.
    "hypercall": (
        ("HYPERCALL", "VMCALL", "VMMCALL", "HVC64", "HVC", "SUPERVISOR_SYSCALL"),
        "hypercalls: pv kicks and yields",
    ),
}


# Exit names only KVM on RISC-V prints. There a spinning vCPU makes no exit of its own (no
# pause-loop exiting), and WFI traps as an illegal virtual instruction (VIRTUAL_INST_FAULT, with
# others; arch/riscv/kvm/vcpu_insn.c): neither group can be told from the table, so both are
# unknown (null), not 0.
RISCV_EXITS = ("VIRTUAL_INST_FAULT", "SUPERVISOR_SYSCALL", "LOAD_GUEST_PAGE_FAULT", "STORE_GUEST_PAGE_FAULT")
NOT_ON_RISCV = ("pause", "halt")


def perf_tables(extra: dict[str, Any]) -> dict[str, pl.DataFrame]:
    """The summary tables a trace's metadata carries, typed, with the input file of each row."""
    raw = extra.get("summary_tables") or {}
    out: dict[str, pl.DataFrame] = {}
    for name, schema, order in (
        ("perf-kvm-stat", KVM_STAT_SCHEMA, [("block", False), ("n_samples", True)]),
        ("perf-lock-contention", LOCK_CONTENTION_SCHEMA, [("block", False), ("total_wait_ns", True)]),
    ):
        rows = raw.get(name)
        if not rows:
            continue
        full = pl.Schema({"input": pl.String(), **dict(schema)})
        df = pl.DataFrame([{c: r.get(c) for c in full} for r in rows], schema=full)
        out[name.replace("-", "_")] = df.sort(
            ["input", *[c for c, _ in order]], descending=[False, *[d for _, d in order]], maintain_order=True
        )
    return out


def kvm_stat_implications(table: pl.DataFrame) -> pl.DataFrame:
    """Per table block of exits: the share of samples and of time of each IMPLICATION_GROUPS group."""
    exits = table.filter(pl.col("key_kind").is_in(["VM-EXIT", "Event name", "TRAP-EVENT"]))
    if exits.height == 0:
        return pl.DataFrame(
            schema={"input": pl.String, "block": pl.Int32, "scope": pl.String, "group": pl.String}
            | {"samples_pct": pl.Float64, "time_pct": pl.Float64, "n_samples": pl.Int64}
        )
    reason = pl.col("reason").str.to_uppercase()
    group = pl.lit(None, pl.String)
    for name, (reasons, _) in IMPLICATION_GROUPS.items():
        group = pl.when(reason.is_in([r.upper() for r in reasons])).then(pl.lit(name)).otherwise(group)
    keys = ["input", "block", "scope"]
    blocks = exits.select(keys).unique(maintain_order=True)
    groups = pl.DataFrame({"group": list(IMPLICATION_GROUPS)})
    shares = (
        exits.with_columns(group.alias("group"))
        .filter(pl.col("group").is_not_null())
        .group_by(*keys, "group")
        .agg(
            pl.col("samples_pct").sum().round(2),
            pl.col("time_pct").sum().round(2),
            pl.col("n_samples").sum(),
        )
    )
    riscv = exits.group_by(keys).agg(
        reason.is_in(list(RISCV_EXITS)).any().alias("_riscv"), (reason == "WFX").any().alias("_wfx")
    )
    # arm64's one WFx class holds the spinning vCPUs' WFE traps: their share is not shown apart
    unknown = (pl.col("_riscv").fill_null(False) & pl.col("group").is_in(list(NOT_ON_RISCV))) | (
        pl.col("_wfx").fill_null(False) & (pl.col("group") == "pause")
    )
    return (
        blocks.join(groups, how="cross")
        .join(shares, on=[*keys, "group"], how="left", nulls_equal=True)
        .join(riscv, on=keys, how="left", nulls_equal=True)
        .with_columns(
            pl.when(~unknown).then(pl.col("samples_pct").fill_null(0.0)).alias("samples_pct"),
            pl.when(~unknown).then(pl.col("time_pct").fill_null(0.0)).alias("time_pct"),
            pl.when(~unknown).then(pl.col("n_samples").fill_null(0)).alias("n_samples"),
        )
        .drop("_riscv", "_wfx")
    )


def implication_lines(implications: pl.DataFrame) -> list[str]:
    """One sentence per block: the share of PAUSE, HLT/WFx and hypercall exits."""
    lines = []
    for (_inp, block, scope), df in implications.group_by(["input", "block", "scope"], maintain_order=True):
        parts = []
        for r in df.iter_rows(named=True):
            label = IMPLICATION_GROUPS[r["group"]][1]
            if r["samples_pct"] is None:
                parts.append(f"{label}: unknown (this architecture's exits do not show them)")
                continue
            parts.append(f"{label}: {r['samples_pct']:.2f}% of exits, {r['time_pct']:.2f}% of time")
        where = f"table {block}" + (f" ({scope})" if scope else "")
        lines.append(f"{where}: " + "; ".join(parts))
    return lines


def summary_json(tables: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """The perf tables for the summary JSON: rows (lock addresses in 0x hex) and the implications."""
    out: dict[str, Any] = {}
    if "perf_kvm_stat" in tables:
        kvm = tables["perf_kvm_stat"]
        out["perf_kvm_stat"] = {
            "rows": kvm.to_dicts(),
            "implications": kvm_stat_implications(kvm).to_dicts(),
        }
    if "perf_lock_contention" in tables:
        lock = tables["perf_lock_contention"].with_columns(lock_hex("address"))
        out["perf_lock_contention"] = {"rows": lock.to_dicts()}
    return out
