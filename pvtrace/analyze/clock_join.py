"""Which guest VMs' lock events can be joined with the host's vCPU states, decided per VM.

A guest's waits are joined with its vCPUs' host states only when the two clocks are known to be
aligned (ingest.clocks) and the guest's vCPU threads are known (ingest.vm_ties). Either is a
property of one guest: when some guests pass and others do not, the ones that pass are analyzed
in full and the others are left out of every joined metric (their rows null, the totals said to
be partial, with the fix); only when no guest passes is the whole trace unjoined (each side's
own metrics only, fidelity.unjoined).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pvtrace.ingest.clocks import MAX_UNCERTAINTY_NS
from pvtrace.ingest.vm_ties import unmapped_reason
from pvtrace.summary import SPIN_SPLIT_KEYS
from pvtrace.trace import TraceMeta


def bad_guests(clock: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(guests with lock-side events, those not tied to host vCPU threads, those whose clocks
    are not known to be aligned)."""
    guests = clock.get("guests") or {}
    unmapped = list(clock.get("unmapped_guests") or [])
    unsynced = sorted(vm for vm, g in guests.items() if g.get("synchronized") is False)
    return sorted({*guests, *unmapped}), unmapped, unsynced


def _offset_fix(clock: dict[str, Any], vms: list[str]) -> str:
    """Why those guests' clocks are not known to be aligned and the fix: what the events say of each
    offset where an estimate was made, offered as the offset to pass only when it is close enough
    to join by; an offset given (or read from a side file) that the events contradict is named."""
    guests = clock.get("guests") or {}
    doubts, seen, wide = [], [], False
    for vm in vms:
        g = guests.get(vm) or {}
        mode = str(g.get("mode", ""))
        if mode.startswith("given by the user"):
            doubts.append(f"the offset given for {vm} does not fit its events")
        elif mode.startswith("from "):
            doubts.append(
                f"the offset {mode[5:].split(';')[0]} gives for {vm} does not fit its events (a file of another run?)"
            )
        e = g.get("estimate")
        if e and e.get("offset_ns") is not None:
            spread = e.get("span_uncertainty_ns") or e["uncertainty_ns"]
            seen.append(f"{vm}'s offset at {e['offset_ns']} +- {spread} ns")
            wide |= spread > MAX_UNCERTAINTY_NS
    what = f"host and guest clocks are not known to be aligned ({', '.join(vms) or 'guests'})"
    if doubts:
        what += f": {'; '.join(doubts)}"
    tsync = "record with trace-cmd -A (tsync)"
    if seen and wide:  # no offset to pass: given, it would be used as exact
        return (
            f"{what}; the events put {', '.join(seen)}, too uncertain to join by: record with "
            f"`pvtrace record --host` (it saves the offsets beside its trace) or trace-cmd -A (tsync)"
        )
    if seen:
        return f"{what}; the events put {', '.join(seen)}: pass that as --guest-offset VM=N, or {tsync}"
    if doubts:
        return f"{what}: correct it (--guest-offset VM=N: host = guest + N ns), or {tsync}"
    return f"{what}: pass --guest-offset VM=N (host = guest + N ns), or {tsync}"


def clocks_unaligned(meta: TraceMeta) -> str | None:
    """Why no guest's events can be joined with the host's (no guest passes), with the fix; None
    when some can (or the trace has one side only)."""
    clock = meta.clock or {}
    guests, unmapped, unsynced = bad_guests(clock)
    if not unmapped and not unsynced:  # (not synchronized, with no word of which guest: none joins)
        return _offset_fix(clock, []) if clock.get("synchronized") is False else None
    if set(guests) - {*unmapped, *unsynced}:  # some guest joins: the others are left out (unjoined_vms)
        return None
    if unmapped:
        return unmapped_reason(clock)
    return _offset_fix(clock, unsynced)


def unjoined_vms(meta: TraceMeta) -> dict[str, str]:
    """{vm: why, with the fix} of the guests left out of the join while others are joined; empty
    when every guest joins, or none does (clocks_unaligned)."""
    clock = meta.clock or {}
    guests, unmapped, unsynced = bad_guests(clock)
    if not (set(guests) - {*unmapped, *unsynced}):
        return {}
    out = {vm: unmapped_reason({"unmapped_guests": [vm]}) or "" for vm in unmapped}
    out.update({vm: _offset_fix(clock, [vm]) for vm in unsynced if vm not in out})
    return out


def untraced_vms(meta: TraceMeta) -> dict[str, str]:
    """{vm: the fix} of the VMs whose vCPUs the host trace shows but no guest input covers, when
    other guests' inputs are given: their waits are in no total (a guest file left out)."""
    extra, clock = meta.extra or {}, meta.clock or {}
    named = set((extra.get("guest_vm_names") or {}).values())
    if not named:
        return {}
    covered = named | set(clock.get("guests") or {}) | set((clock.get("vms_tied") or {}).values())
    host_vms = {str(r["vm"]) for r in meta.vcpu_map or [] if r.get("vm") is not None}
    nearby = [str(f) for f in extra.get("guest_files_nearby") or []]
    out = {}
    for vm in sorted(host_vms - covered):
        file = next((f for f in nearby if Path(f).name.split(".")[0].endswith(f"-{vm}")), None)
        out[vm] = (
            f"give its guest trace too ({file} sits next to the host's)"
            if file
            else f"record the lock events in {vm} too (sudo pvtrace record --guest) and give that file with the host's"
        )
    return out


def untraced_parts(vms: dict[str, str]) -> list[dict[str, Any]]:
    """The `partial` entries of the totals that lack the waits of VMs no guest input covers."""
    return [
        {"missing": f"{vm}'s waits: no guest trace of {vm} is given", "fix": fix}
        for vm, fix in sorted(vms.items())
    ]


def left_out_vids(prep_vcpus: pl.DataFrame, vms: dict[str, str]) -> pl.Series:
    """The dense vCPU ids (prep.vcpus' vid) of the guests left out of the join."""
    return prep_vcpus.filter(pl.col("vm").is_in(list(vms)))["vid"]


# Per table, the columns a left-out guest's rows cannot have (they join waits with vCPU states);
# the tables of holders (held sections, incidents, convoys) lose those guests' rows instead.
_JOINED_COLUMNS = {
    "waits": (*SPIN_SPLIT_KEYS, "halted_ns", "preempted_ns", "handoff"),
    "waste_by_lock": SPIN_SPLIT_KEYS,
    "waste_by_vcpu": (*SPIN_SPLIT_KEYS, "spin_undecided_ns"),
    "waste_by_vm": (*SPIN_SPLIT_KEYS, "spin_undecided_ns"),
    "yields": ("target_held_lock",),
}
_HOLDER_TABLES = ("holds", "lhp_incidents", "lwp_incidents", "convoys")


def leave_out(tables: dict[str, pl.DataFrame], vms: dict[str, str]) -> dict[str, pl.DataFrame]:
    """The result tables with the left-out guests' joined figures null (not 0: unknown) and their
    rows of holders dropped, so no total adds them."""
    if not vms:
        return tables
    out = pl.col("vm").is_in(list(vms))
    for name, cols in _JOINED_COLUMNS.items():
        df = tables[name]
        tables[name] = df.with_columns(pl.when(~out).then(pl.col(c)).alias(c) for c in cols)
    for name in _HOLDER_TABLES:
        tables[name] = tables[name].filter(~out)
    return tables


def left_out_parts(tables: dict[str, pl.DataFrame], vms: dict[str, str]) -> list[dict[str, Any]]:
    """The `partial` entries (analyze.partial) of the totals that leave those guests out: what is
    missing (how many contended waits; their spin is unknown) and the fix, one per guest."""
    locks = tables["waste_by_lock"].group_by("vm").agg(pl.col("n_contended").sum())
    waits = dict(zip(locks["vm"].to_list(), locks["n_contended"].to_list(), strict=True))
    return [
        {
            "missing": f"{vm}'s {waits.get(vm) or 0:,} contended waits, not joined with its vCPU states",
            "n_contended_on_them": int(waits.get(vm) or 0),
            "fix": why,
        }
        for vm, why in sorted(vms.items())
    ]
