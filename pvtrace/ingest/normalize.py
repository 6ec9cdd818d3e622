"""Raw trace records -> canonical events (pvtrace.schema.EVENT_SCHEMA).

Each raw row (ingest.raw.RAW_SCHEMA: one record line) becomes zero, one or two
events through the alias table (ingest.aliases). What a row means depends on
the side that recorded it:

Host (KVM and the host scheduler; `CPU n/KVM` threads or kvm_* events):
- sched_switch: prev is a vCPU thread -> vcpu_preempt (prev_state R, R+) or
  vcpu_halt (S, D, I, ...), reason = the state; next is a vCPU thread ->
  vcpu_run. One line can give both (out before in). Neither -> task_switch
  (tid = prev, reason = prev_state, value = next pid).
- sched_wakeup / sched_wakeup_new (sched_waking when no sched_wakeup was
  recorded) of a vCPU thread -> vcpu_wake (tid = the woken thread, pcpu =
  target CPU); of another thread -> task_wakeup; a sched_waking doubled by a
  sched_wakeup, or a wake-up with success=0, -> other.
- kvm_exit -> vm_exit (reason normalized; value = the nr of the kvm_hypercall
  that follows it on its thread, if any, else 1 where its guest rip is in a
  64-bit guest's user space: the exit found the guest in user mode, so it held
  no spinlock), kvm_entry -> vm_entry,
  kvm_hypercall nr 5 -> pv_kick (target = vCPU of APIC id a1), nr 11 ->
  yield_to (target = vCPU of APIC id a0), other nrs -> other (value = nr);
  kvm_ple_window(_update) -> ple_window (value = new window);
  kvm_vcpu_wakeup -> other (reason wait/poll, value = ns).
- vm and vcpu come from the vCPU map (ingest.vcpu_map); pcpu = the line's CPU.
Guest (everything else): contention_begin -> lock_contend (reason = flags),
contention_end -> lock_acquire (value = ret), lockdep lock_acquire/acquired ->
lock_acquire (an acquire immediately followed by lock_contended on the same
thread and lock is the attempt, kept as other), lock_contended ->
lock_contend, lock_release -> lock_release (lockdep is used only when the
input has no lock:contention_* events); sched events -> task_switch /
task_wakeup. vcpu = the guest CPU, vm = the vm_name option, the input's name
(`trace-<vm>.dat` -> <vm>; see guest_vm_names), or "guest". Guest timestamps
are moved onto the host clock (ingest.clocks).
Both: `[LOST n EVENTS]` and buffer-started markers -> lost_events (host:
pcpu; guest: vcpu; value = count, null when unknown); any other event -> other
with its payload in args, counted by name.

seq is the file order (two events of one line: out, then in), and events are
sorted by (ts, seq). Everything here is vectorized in polars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.ingest import clocks
from pvtrace.ingest.aliases import ALIASES
from pvtrace.ingest.families import (
    GROUPS,
    GUEST_GROUPS,
    HOST_GROUPS,
    WAKEUPS,
    emit,
    parse_groups,
    prepare,
    unparsed,
)
from pvtrace.ingest.guest_events import guest_events as make_guest_events
from pvtrace.ingest.host_events import exits_across_cut, host_map, kvm_steps
from pvtrace.ingest.host_events import host_events as make_host_events
from pvtrace.ingest.sides import SIDES, detect_sides, guest_vm_names
from pvtrace.ingest.vcpu_map import VCPU_MAP_SCHEMA
from pvtrace.ingest.vm_ties import tie_vms, unmapped_guests, unmapped_warning
from pvtrace.schema import conform_events

__all__ = ["guest_vm_names", "normalize"]


def _user_map(vcpu_map: pl.DataFrame | None) -> pl.DataFrame | None:
    if vcpu_map is None:
        return None
    cols = [
        pl.col(c) if c in vcpu_map.columns else pl.lit(None, dtype=t).alias(c)
        for c, t in VCPU_MAP_SCHEMA.items()
    ]
    return (
        vcpu_map.select(cols)
        .cast(dict(VCPU_MAP_SCHEMA))
        .with_columns(pl.coalesce("apic_id", "vcpu").alias("apic_id"), pl.col("how").fill_null("map file"))
    )


def _carried_map(user_map: pl.DataFrame | None, carry: dict[str, Any]) -> pl.DataFrame | None:
    """The user's map plus the rows an earlier chunk found (user rows win)."""
    rows = carry.get("vcpu_map") or []
    if not rows:
        return user_map
    earlier = pl.DataFrame(rows, schema=VCPU_MAP_SCHEMA)
    if user_map is None:
        return earlier
    return pl.concat([user_map, earlier.filter(~pl.col("tid").is_in(user_map["tid"].implode()))])


def normalize(
    raw: pl.DataFrame,
    *,
    side: str | dict[str, str] = "auto",
    vm_name: str | None = None,
    vcpu_map: pl.DataFrame | None = None,
    guest_offset_ns: int | dict[str, int] | None = None,
    carry: dict[str, Any] | None = None,
    inputs: Sequence[str] = (),
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Canonical events (EVENT_SCHEMA, sorted by (ts, seq)) and an info dict.

    side: "host", "guest", "auto" (per input source: host when it has kvm_*
    events or `CPU n/KVM` threads), or {source: side} (source "" = no prefix).
    vm_name: the guest VM's name. vcpu_map: a user map (tid, pid, vm, vcpu
    [, apic_id]; see vcpu_map.read_vcpu_map). guest_offset_ns: host_ts =
    guest_ts + offset for guest events (one number for every guest VM, or
    {vm: offset}).
    carry: info["carry"] of the previous chunk when a big input is normalized
    chunk by chunk (sides, vCPU map, guest names, clock offset, which inputs
    recorded sched_wakeup / contention events), so chunks agree. inputs: the
    source labels of every input file, also those that gave no records (their
    names help name the guests of the others).
    info: side ("host", "guest" or "mixed"), sides (per source), origin, view,
    guest_vm_names, vcpu_map (rows with how each was found), vms, clock,
    events_by_tracepoint, events_by_kind, unknown_events, unparsed_payloads,
    notes, carry.
    """
    if isinstance(side, str) and side not in SIDES:
        raise UsageError(f"side must be one of {', '.join(SIDES)}, not {side!r}")
    if isinstance(side, dict) and not set(side.values()) <= {"host", "guest"}:
        raise UsageError(f"sides must be host or guest, not {sorted(set(side.values()))}")
    carry = carry or {}
    user_map = _user_map(vcpu_map)
    frame, n_untimed = prepare(raw)
    sides = detect_sides(frame, side, _carried_map(user_map, carry), carry.get("sides", {}))
    guest_srcs = sorted(sides.filter(pl.col("side") == "guest")["src"].to_list())
    host_srcs = sorted(sides.filter(pl.col("side") == "host")["src"].to_list())
    known_names = carry.get("guest_vm_names", {})
    others = [i for i in inputs if i not in host_srcs and i not in guest_srcs]
    new_names = guest_vm_names([s for s in guest_srcs if s not in known_names], vm_name, host_srcs, others)
    names = {**new_names, **known_names}
    names = {s: names[s] for s in guest_srcs}
    # whole-frame copies are what costs memory on big inputs: split only when both sides are present
    host = frame if not guest_srcs else frame.filter(pl.col("src").is_in(host_srcs))
    guest = frame if not host_srcs else frame.filter(pl.col("src").is_in(guest_srcs))
    if not guest_srcs:
        guest = guest.clear()
    guest = guest.with_columns(
        pl.col("src").replace_strict(names, default=None, return_dtype=pl.String).alias("vm")
    )
    notes: list[str] = []

    h_parsed = parse_groups(host, HOST_GROUPS)
    g_parsed = parse_groups(guest, GUEST_GROUPS)
    vmap, map_notes = host_map(host, h_parsed, _carried_map(user_map, carry))
    notes += map_notes
    host_vms = sorted(set(vmap["vm"].to_list()))
    guest_vms = sorted(set(names.values()))
    one_each = len(host_vms) == 1 and len(guest_vms) == 1 and host_vms[0] != guest_vms[0]
    # names settled by the user or by an earlier chunk stay as they are
    settled = vmap["how"].str.contains("map file").any() or bool(carry.get("vcpu_map"))
    if one_each and vm_name is None and not settled:
        # one VM seen from each side is the same VM; the guest's name is the readable one
        notes.append(
            f"host VM {host_vms[0]} and guest VM {guest_vms[0]} taken as one VM named {guest_vms[0]}"
        )
        vmap = vmap.with_columns(pl.col("vm").replace(host_vms[0], guest_vms[0]))

    def sources_with(events: tuple[str, ...], key: str) -> list[str]:
        # the one column filtered, not the whole frame (which would copy every row's payload)
        seen = frame.select(pl.col("src").filter(pl.col("event").is_in(list(events))).unique())[
            "src"
        ].to_list()
        return sorted(set(seen) | set(carry.get(key, [])))

    with_wakeup = sources_with(WAKEUPS, "wakeup_sources")
    with_contention = sources_with(GROUPS["contention"], "contention_sources")
    empty = emit(frame.clear())
    steps = kvm_steps(h_parsed)  # exits paired with their hypercalls, in this chunk and across its cut
    host_events = (
        pl.concat(make_host_events(host, h_parsed, vmap, with_wakeup, steps)) if host.height else empty
    )
    guest_events = (
        pl.concat(make_guest_events(guest, g_parsed, with_wakeup, with_contention)) if guest.height else empty
    )
    unmapped: list[str] = []
    ties: dict[str, str] = dict(carry.get("vms_tied", {}))  # (tied by the first chunk)
    if host.height and guest.height:
        # a map file's names may miss a renamed guest file's: the events still tie what is left unpaired
        vmap, host_events, tied = _tie_vms(vmap, host_events, guest_events, bool(carry.get("vcpu_map")))
        ties |= tied
        if tied:
            notes.append(
                "host VM(s) tied to guest VM(s) by their events' timing: "
                + ", ".join(f"{h} = {g}" for h, g in sorted(tied.items()))
            )
        unmapped = unmapped_guests(vmap, guest_events)
    if ties and isinstance(guest_offset_ns, dict):  # an offset given under the host's name is the guest's
        guest_offset_ns = {ties.get(vm, vm): n for vm, n in guest_offset_ns.items()} | {
            g: guest_offset_ns[g] for g in ties.values() if g in guest_offset_ns
        }
    earlier = carry.get("clock_guests", {})
    offsets, per_vm = clocks.guest_offsets(
        host_events["ts"],
        guest_events.select("vm", "vcpu", "ts"),
        given=guest_offset_ns,
        tsc_offsets=h_parsed["tsc"]["offset"],
        decided={vm: int(carry["guest_offsets"][vm]) for vm in carry.get("guest_offsets", {})},
        host_events=host_events.select("vm", "vcpu", "kind", "ts", "row", "sub"),
    )
    per_vm = {**earlier, **per_vm}
    has_host = host.height > 0 or "host" in carry.get("sides", {}).values()
    clock = clocks.clock_report({**carry.get("guest_offsets", {}), **offsets}, per_vm, has_host)
    # a VM decided by an earlier chunk keeps its line: its offset from carry, its drift from per_vm
    guest_events = clocks.to_host_clock(guest_events, offsets, clocks.applied_drifts(per_vm))
    guest_events, n_snapped = clocks.snap_guest_events(host_events, guest_events, per_vm)
    if n_snapped:
        clock["guest_events_moved_into_runs"] = n_snapped
    if n_untimed:
        clock["untimed_records"] = n_untimed
        notes.append(
            f"{n_untimed} record(s) had no timestamp; they keep their file order at the previous record's time"
        )
    if ties:
        clock["vms_tied"] = ties  # {host name: guest name}: an offset given under either is the VM's
    if unmapped:
        clock["unmapped_guests"] = unmapped
        tied = unmapped_warning(unmapped, sorted(set(vmap["vm"].to_list()) - set(names.values())))
        clock["warning"] = f"{clock['warning']}; {tied}" if "warning" in clock else tied
    if "warning" in clock:
        notes.append(clock["warning"])

    # seq = emission order (row, then out before in; ties keep their order of emission); then a
    # stable sort by ts, which is by (ts, seq), skipped when the file order is already time order
    events = (
        pl.concat([host_events, guest_events])
        .sort(pl.col("row") * 2 + pl.col("sub"), maintain_order=True)
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))
    )
    if not events["ts"].is_sorted():
        events = events.sort("ts", maintain_order=True)
    events = conform_events(events.drop("row", "sub"))
    not_parsed = pl.concat([unparsed(h_parsed), unparsed(g_parsed)])
    info = _info(frame, sides, vmap, names, events, clock, notes)
    info["unparsed_payloads"] = _counts(not_parsed, "event")
    info["unparsed_rows"] = not_parsed["row"].sort()  # (rows of `raw`: the caller names their lines)
    # kvm_exits of the previous chunk whose kvm_hypercall opens this one (load patches them)
    info["exits_closed"], open_exits = exits_across_cut(steps, carry.get("open_exits", []))
    info["carry"] = {
        "open_exits": open_exits,
        "sides": {**carry.get("sides", {}), **{k: v["side"] for k, v in info["sides"].items()}},
        "vcpu_map": info["vcpu_map"],
        "guest_vm_names": {**known_names, **names},
        "wakeup_sources": with_wakeup,
        "contention_sources": with_contention,
        "guest_offsets": {
            **carry.get("guest_offsets", {}),
            **{vm: off for vm, off in offsets.items() if clocks.is_decided(per_vm.get(vm, {}))},
        },
        "clock_guests": per_vm,
        "vms_tied": ties,
    }
    return events, info


def _tie_vms(
    vmap: pl.DataFrame,
    host_events: pl.DataFrame,
    guest_events: pl.DataFrame,
    settled: bool,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, str]]:
    """The vCPU map and host events, and the ties {host VM: guest VM}, with host VMs named on no guest side renamed after the guest
    VMs named on no host side whose events fit them (vm_ties), unless an earlier chunk settled
    the names."""
    host_vms = sorted(set(vmap["vm"].to_list()))
    guest_vms = sorted(set(guest_events["vm"].cast(pl.String).drop_nulls().to_list()))
    if settled:
        return vmap, host_events, {}
    ties = tie_vms(
        [h for h in host_vms if h not in guest_vms],
        [g for g in guest_vms if g not in host_vms],
        host_events.select("vm", "vcpu", "kind", "ts", "row", "sub"),
        guest_events.select("vm", "vcpu", "ts"),
    )
    if not ties:
        return vmap, host_events, {}
    how = pl.col("how") + pl.lit("; vm tied to the guest whose events fit its vCPU runs")
    vmap = vmap.with_columns(
        pl.when(pl.col("vm").is_in(list(ties))).then(how).otherwise(pl.col("how")).alias("how"),
        pl.col("vm").replace(ties),
    )
    vm_type = host_events.schema["vm"]
    host_events = host_events.with_columns(pl.col("vm").cast(pl.String).replace(ties).cast(vm_type))
    return vmap, host_events, ties


def _counts(df: pl.DataFrame, col: str) -> dict[str, int]:
    if df.height == 0:
        return {}
    c = df.group_by(col).len()
    if isinstance(c.schema[col], pl.Enum):  # counted by code, named after: ties sort by name
        c = c.with_columns(pl.col(col).cast(pl.String))
    c = c.sort(["len", col], descending=[True, False])
    return {str(k): int(v) for k, v in zip(c[col], c["len"], strict=True)}


def _info(
    frame: pl.DataFrame,
    sides: pl.DataFrame,
    vmap: pl.DataFrame,
    guest_names: dict[str, str],
    events: pl.DataFrame,
    clock: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    present = set(sides["side"].to_list())
    origin = "+".join(s for s in ("host", "guest") if s in present) or "none"
    vms: dict[str, dict[str, Any]] = {}
    # n_vcpus: highest vCPU index seen + 1 (a lower bound when some vCPUs stayed silent)
    for row in (
        vmap.group_by("vm").agg((pl.col("vcpu").max() + 1).alias("n")).sort("vm").iter_rows(named=True)
    ):
        vms[row["vm"]] = {"n_vcpus": int(row["n"]), "side": "host"}
    guest_cpus = (
        events.select("vm", "vcpu", "origin")
        .filter(pl.col("origin") == "guest")
        .group_by(pl.col("vm").cast(pl.String))
        .agg((pl.col("vcpu").max() + 1).fill_null(0).alias("n"))
        .sort("vm")
    )
    for row in guest_cpus.iter_rows(named=True):
        seen = vms.get(row["vm"])
        if seen is None:
            vms[row["vm"]] = {"n_vcpus": int(row["n"]), "side": "guest"}
        else:
            seen["n_vcpus"] = max(seen["n_vcpus"], int(row["n"]))
            seen["side"] = "both"
    other = events.select(pl.col("event").filter(pl.col("kind") == "other").cast(pl.String))
    return {
        "side": next(iter(present)) if len(present) == 1 else ("mixed" if present else "none"),
        "sides": {
            r["src"]: {"side": r["side"], "how": r["side_how"]}
            for r in sides.sort("src").iter_rows(named=True)
        },
        "origin": origin,
        "view": {"host": "host", "guest": "guest", "host+guest": "merged"}.get(origin, "full"),
        "guest_vm_names": guest_names,
        "vcpu_map": vmap.to_dicts(),
        "vms": vms,
        "clock": clock,
        "events_by_tracepoint": _counts(frame.select("event"), "event"),
        "events_by_kind": _counts(events.select("kind"), "kind"),
        "unknown_events": _counts(other.filter(~pl.col("event").is_in(list(ALIASES))), "event"),
        "notes": notes,
    }
