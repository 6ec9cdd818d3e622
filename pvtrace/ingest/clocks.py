"""Guest clock -> host clock: decide each guest VM's offset and say whether the sides line up.

host_ts = guest_ts + offset, one offset per guest VM (the layout of
TraceMeta.clock["guest_offset_ns"], as the simulator writes it); an estimated clock
may also drift, host_ts = guest_ts + offset - drift_ppm * 1e-6 * (guest_ts - at)
(TraceMeta.clock["guest_drift"], only for the VMs whose events show one). Where an offset
comes from, in order: the user (one number for every guest, or one per VM);
nothing (0) when host and guest already share a timeline (a merged trace-cmd
report after tsync, or a single side); or the `kvm_write_tsc_offset` host event
(guest_tsc = host_tsc + tsc_offset, which only holds when both sides used the TSC
as trace clock, so it is applied only when it turns disjoint time ranges into
overlapping ones). Without any of these, the offset is estimated
from the events (clock_estimate: guest events must fall inside their vCPU's run
intervals), which also checks a merged input's single timeline. A guest whose
events fit no shift, or (too few events to tell) whose time range does not meet
the host's, is reported as not synchronized, and the analysis then gives no
metric that joins host and guest events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.ingest.clock_estimate import (
    MIN_EVENTS,
    MIN_FIT,
    TOO_FEW,
    Estimate,
    estimate_offsets,
    outside_runs,
    resolution,
    snap_to_runs,
)
from pvtrace.ingest.offsets_file import GivenClock

# An estimate is used only when the events pin the offset down this closely (a shift of a few us
# moves wait pieces across vCPU state changes; ftrace prints microseconds).
MAX_UNCERTAINTY_NS = 10_000


def _span(ts: pl.Series) -> tuple[int, int] | None:
    ts = ts.drop_nulls()
    if ts.len() == 0:
        return None
    return int(ts.min()), int(ts.max())  # type: ignore[arg-type]


def _aligned(host: tuple[int, int], guest: tuple[int, int]) -> bool:
    """Whether two time ranges can be on one clock: they overlap, or the gap between them is no
    longer than the longer range (sparse guest events may fall just outside the host's range;
    unsynchronized clocks differ by the time between boots: seconds to days)."""
    gap = max(host[0], guest[0]) - min(host[1], guest[1])
    return gap <= max(host[1] - host[0], guest[1] - guest[0])


def _given_for(given: int | dict[str, int] | None, vm: str) -> int | None:
    """The user's offset for one guest VM: the one number for every guest, or the VM's own."""
    return given.get(vm) if isinstance(given, dict) else given


def _one_timeline(estimate: Estimate) -> bool:
    """No shift and no drift fit the events (the estimate's first choice when they do): a merged
    report already on the host clock."""
    return estimate.offset_ns == 0 and estimate.drift_ppm == 0


def _one_guest(
    host: tuple[int, int] | None,
    guest: tuple[int, int],
    given: int | None,
    tsc_offsets: pl.Series | None,
    estimate: Estimate | str,
    misfit: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """misfit: why a given offset is contradicted by the events (given_misfit), if it is."""
    report: dict[str, Any] = {}
    found = estimate  # (estimate becomes the reason when it is too wide to use)
    if given is not None:
        offset, report["mode"] = int(given), "given by the user"
        if isinstance(estimate, Estimate):  # made only to name the fix of a contradicted offset
            report["estimate"] = estimate.to_dict()
    elif host is None:
        return 0, {"mode": "guest only: one clock"}
    elif (
        isinstance(estimate, Estimate)
        and not _one_timeline(estimate)
        and estimate.span_uncertainty_ns > MAX_UNCERTAINTY_NS
    ):
        offset, report["mode"] = 0, "not aligned: the events do not pin the offset down"
        report["estimate"] = estimate.to_dict()
        estimate = (
            f"the events allow host times +-{estimate.span_uncertainty_ns} ns apart for one guest event "
            f"(offset {estimate.offset_ns} +- {estimate.uncertainty_ns} ns, drift {estimate.drift_ppm:+.2f} "
            f"+- {estimate.drift_uncertainty_ppm:.2f} ppm): too wide to join host and guest"
        )
        report["estimate_failed"] = estimate
    elif isinstance(estimate, Estimate):
        report["estimate"] = estimate.to_dict()
        if _one_timeline(estimate):
            offset, report["mode"] = 0, "one timeline with the host (checked: guest events inside vCPU runs)"
        else:
            offset = estimate.offset_ns
            report["mode"] = (
                f"estimated from the events (guest events inside vCPU runs), +-{estimate.span_uncertainty_ns} ns"
                + (
                    f"; the guest clock drifts {estimate.drift_ppm:+.2f} +- {estimate.drift_uncertainty_ppm:.2f} "
                    "ppm against the host's"
                    if estimate.drift_ppm
                    else ""
                )
            )
    else:
        offset, report["mode"] = 0, "one timeline with the host (merged input)"
        if estimate != TOO_FEW:
            report["estimate_failed"] = estimate
        distinct = tsc_offsets.drop_nulls().unique().sort() if tsc_offsets is not None else None
        if distinct is not None and distinct.len():
            candidate = -int(distinct[distinct.len() // 2])
            shifted = (guest[0] + candidate, guest[1] + candidate)
            if not _aligned(host, guest) and _aligned(host, shifted):
                offset, report["mode"] = candidate, "kvm_write_tsc_offset (both sides on the TSC clock)"
            else:
                report["tsc_offset_ignored"] = (
                    "kvm_write_tsc_offset present but not applied: it does not align the time ranges "
                    "(the traces are probably not both on the TSC clock)"
                )
    if host is not None:
        shifted = (guest[0] + offset, guest[1] + offset)
        report["host_span"], report["guest_span"] = list(host), list(shifted)
        # Known aligned: given, estimated or checked from the events, or (too few events to check)
        # time ranges that meet. Events that fit no shift are never taken as aligned.
        if given is not None:  # a wrong --guest-offset or side file is not trusted
            report["synchronized"] = _aligned(host, shifted) and misfit is None
            if not _aligned(host, shifted):
                report["estimate_failed"] = (
                    f"the given offset {int(given)} ns puts the guest events outside the host trace's time range"
                )
            elif misfit is not None:
                report["estimate_failed"] = misfit
        else:
            report["synchronized"] = isinstance(estimate, Estimate) or (
                estimate == TOO_FEW and _aligned(host, shifted)
            )
            if not report["synchronized"]:
                offset = _placement(host, guest, found)
                if offset:
                    report["placed_ns"] = offset
                    report["mode"] += (
                        f"; its events are placed {offset} ns later"
                        + (
                            " (by the estimate)"
                            if isinstance(found, Estimate)
                            else " (at the host trace's start)"
                        )
                        + " to show them beside the host's, not to join them"
                    )
    return offset, report


def _placement(host: tuple[int, int], guest: tuple[int, int], found: Estimate | str) -> int:
    """Where to show the events of a guest whose clock is not aligned (they join nothing): shifted
    by the estimate, however wide, or else to start with the host trace when their time ranges do
    not overlap, so the trace's window is the host's and not the gap between two clocks (the
    host's vCPU states would fill it; days between boots overflow its positions)."""
    if isinstance(found, Estimate):
        return found.offset_ns
    if guest[0] > host[1] or guest[1] < host[0]:
        return host[0] - guest[0]
    return 0


def guest_offsets(
    host_ts: pl.Series,
    guest: pl.DataFrame,
    *,
    given: int | dict[str, int] | None,
    tsc_offsets: pl.Series | None,
    decided: dict[str, int] | None = None,
    host_events: pl.DataFrame | None = None,
) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Per guest VM, the offset to add to its timestamps, and how it was decided.

    host_ts: the host events' timestamps; guest: (vm, ts[, vcpu]) of guest events still
    on their own clocks; given: the user's offset (int: every guest; dict: per
    VM); tsc_offsets: the signed offsets of kvm_write_tsc_offset events;
    decided: offsets an earlier chunk of the same input settled (kept as is,
    without a new report entry); host_events: vm, vcpu, kind, ts of the host events
    (with guest vcpu: the offset is estimated from the events, clock_estimate).
    """
    host = _span(host_ts)
    decided = decided or {}
    # each guest VM's timestamps, and their span, taken once
    times = {
        vm: guest.filter(pl.col("vm") == vm)["ts"]
        for vm in sorted(guest["vm"].drop_nulls().unique().to_list())
    }
    spans = {vm: _span(ts) for vm, ts in times.items()}
    estimates: dict[str, Estimate | str] = {}
    if host_events is not None and "vcpu" in guest.columns and host is not None:
        todo = [
            vm
            for vm in guest["vm"].drop_nulls().unique().to_list()
            if vm not in decided and _given_for(given, vm) is None
        ]
        misfits = given_misfits(host_events, guest, given, decided)
        todo += sorted(misfits)  # their estimate names the fix, as it does for an offset far off:
        todo += [vm for vm in _given_far_off(host, spans, given, decided) if vm not in misfits]
        if todo:
            estimates = estimate_offsets(host_events, guest.filter(pl.col("vm").is_in(todo)))
    else:
        misfits = {}
    offsets: dict[str, int] = {}
    per_vm: dict[str, dict[str, Any]] = {}
    for vm, mine in times.items():
        span = spans[vm]
        if span is None:
            continue
        user = _given_for(given, vm)
        if user is None and vm in decided:
            offsets[vm] = decided[vm]
            continue
        offsets[vm], per_vm[vm] = _one_guest(
            host, span, user, tsc_offsets, estimates.get(vm, TOO_FEW), misfits.get(vm)
        )
        per_vm[vm]["resolution_ns"] = resolution(mine)  # how its file prints times (the views print them so)
        if isinstance(user, GivenClock) and user.drift_ppm:  # a side file's drifting line
            per_vm[vm]["given_drift"] = {"drift_ppm": user.drift_ppm, "at_guest_ns": 0}
            per_vm[vm]["mode"] += f"; the guest clock drifts {user.drift_ppm:+.3f} ppm against the host's"
    return offsets, per_vm


def _given_far_off(
    host: tuple[int, int],
    spans: dict[str, tuple[int, int] | None],
    given: int | dict[str, int] | None,
    decided: dict[str, int],
) -> list[str]:
    """The guest VMs (their time spans) whose given offset puts their events outside the host
    trace's time range."""
    out = []
    for vm, span in spans.items():
        user = _given_for(given, vm)
        if (
            user is not None
            and vm not in decided
            and span is not None
            and not _aligned(host, (span[0] + int(user), span[1] + int(user)))
        ):
            out.append(vm)
    return out


def given_misfits(
    host_events: pl.DataFrame,
    guest: pl.DataFrame,
    given: int | dict[str, int] | None,
    decided: dict[str, int],
) -> dict[str, str]:
    """Per guest VM whose given offset (--guest-offset, a side file) puts more than 1% of its
    guest events inside the host trace outside their vCPU's runs: why it is not trusted. A guest
    event happens while its vCPU runs; an offset from another run of the VMs, or mistyped, would
    join the guest's waits to the wrong vCPU states and print them at the exact level."""
    out: dict[str, str] = {}
    for vm in sorted(guest["vm"].drop_nulls().unique().to_list()):
        user = _given_for(given, vm)
        if user is None or vm in decided:
            continue
        drift = user.drift_ppm if isinstance(user, GivenClock) else 0.0
        n_out, n = outside_runs(
            host_events.filter(pl.col("vm").cast(pl.String) == vm),
            guest.filter(pl.col("vm") == vm).select("vcpu", "ts"),
            int(user),
            drift,
        )
        if n >= MIN_EVENTS and n_out > (1 - MIN_FIT) * n:
            out[vm] = (
                f"the given offset {int(user)} ns puts {n_out} of {vm}'s {n} guest events in the host trace's "
                "time range outside every run of their vCPU (a guest event happens while its vCPU runs): "
                "an offset of another run of the VMs, or a typo?"
            )
    return out


def applied_drifts(per_vm: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{vm: {"drift_ppm", "at_guest_ns"}} of the applied estimates whose events show a drift, and of
    the drifts a side file gave."""
    given = {vm: r["given_drift"] for vm, r in per_vm.items() if "given_drift" in r}
    return given | {
        vm: {"drift_ppm": r["estimate"]["drift_ppm"], "at_guest_ns": r["estimate"]["at_guest_ns"]}
        for vm, r in per_vm.items()
        if str(r.get("mode", "")).startswith("estimated") and r["estimate"].get("drift_ppm")
    }


def to_host_clock(
    guest_events: pl.DataFrame, offsets: dict[str, int], drifts: dict[str, dict[str, float]]
) -> pl.DataFrame:
    """Guest events (vm, ts on the guest's clock) put on the host clock: + offset, and for a
    drifting guest clock - drift_ppm * 1e-6 * (ts - at_guest_ns), rounded to the nanosecond."""
    if not any(offsets.values()) and not drifts:
        return guest_events
    vm = pl.col("vm").cast(pl.String)
    shift = vm.replace_strict(offsets, default=0, return_dtype=pl.Int64)
    if drifts:
        ppm = vm.replace_strict(
            {k: d["drift_ppm"] for k, d in drifts.items()}, default=0.0, return_dtype=pl.Float64
        )
        at = vm.replace_strict(
            {k: d["at_guest_ns"] for k, d in drifts.items()}, default=0, return_dtype=pl.Int64
        )
        shift = shift - ((pl.col("ts") - at).cast(pl.Float64) * ppm / 1e6).round().cast(pl.Int64)
    return guest_events.with_columns(pl.col("ts") + shift)


def is_decided(entry: dict[str, Any]) -> bool:
    """An offset that later chunks keep: given by the user, or checked against host events."""
    return str(entry.get("mode", "")).startswith("given by the user") or "synchronized" in entry


def clock_report(
    offsets: dict[str, int], per_vm: dict[str, dict[str, Any]], has_host: bool
) -> dict[str, Any]:
    """The clock summary for TraceMeta.clock: offsets (and drifts) per VM, how, and a warning when
    not synchronized."""
    report: dict[str, Any] = {"guest_offset_ns": dict(offsets)}
    drifts = applied_drifts(per_vm)
    if drifts:
        report["guest_drift"] = drifts
    if not offsets:
        report["mode"] = "host only: one clock" if has_host else "no events"
        return report
    modes = {r["mode"] for r in per_vm.values()}
    report["mode"] = (
        modes.pop()
        if len(modes) == 1
        else "; ".join(f"{vm}: {r['mode']}" for vm, r in sorted(per_vm.items()))
        or "decided earlier in this input"
    )
    report["guests"] = per_vm
    if not has_host and len(offsets) > 1:  # each guest on its own clock: one window spans them all
        report["warning"] = (
            f"the guest traces of {len(offsets)} VMs ({', '.join(sorted(offsets))}) are each on their own "
            "clock and no host trace relates them: shares of the trace window (% of running, vCPU time) "
            "span all of them; analyze each VM's file on its own for those"
        )
    checked = {vm: r for vm, r in per_vm.items() if "synchronized" in r}
    if checked:
        report["synchronized"] = all(r["synchronized"] for r in checked.values())
    unsynced = sorted(vm for vm, r in checked.items() if not r["synchronized"])
    if unsynced:
        host = checked[unsynced[0]]["host_span"]
        spans = ", ".join(
            f"{vm}'s [{checked[vm]['guest_span'][0]}, {checked[vm]['guest_span'][1]}]" for vm in unsynced
        )
        why = "; ".join(
            f"{vm}: {checked[vm]['estimate_failed']}" for vm in unsynced if "estimate_failed" in checked[vm]
        )
        given = [vm for vm in unsynced if str(checked[vm].get("mode", "")).startswith("given by the user")]
        fix = (
            "Correct the offset given, or record with trace-cmd -A (tsync)"
            if given
            else "Record with trace-cmd -A (tsync) or pass --guest-offset VM=N (host = guest + N ns)"
        )
        report["warning"] = (
            f"host and guest clocks are not known to be aligned for {', '.join(unsynced)}"
            f"{f' ({why})' if why else ''}: host events span [{host[0]}, {host[1]}] ns, guest events {spans} ns; "
            f"{_what_is_lost(checked, unsynced)}. {fix}"
        )
    return report


def _what_is_lost(checked: dict[str, dict[str, Any]], unsynced: list[str]) -> str:
    """What the unaligned guests cost: every joined metric, or (others aligned) their part of it."""
    joined = sorted(set(checked) - set(unsynced))
    if not joined:
        return "metrics that join host and guest events are unavailable"
    return (
        f"metrics that join host and guest events leave {', '.join(unsynced)} out "
        f"(given for {', '.join(joined)} only)"
    )


def from_offsets_file(
    clock: dict[str, Any], path: Path | None, vms: set[str] | None = None
) -> dict[str, Any]:
    """The clock report with the offsets read from a side file (offsets_file) said to come from it:
    those of `vms` (default: every VM given one), the others the user gave."""
    if path is None:
        return clock
    mode = f"from {path.name}"
    clock = {**clock, "offsets_file": str(path)}
    guests = clock.get("guests") or {}
    if vms is not None:  # (a guest tied to a host VM of another name has the file's line of that name)
        vms = set(vms) | {g for h, g in (clock.get("vms_tied") or {}).items() if h in vms}
    mine = [vm for vm in guests if vms is None or vm in vms]
    for vm in mine:
        entry = guests[vm]
        if str(entry.get("mode", "")).startswith("given by the user"):
            entry["mode"] = entry["mode"].replace("given by the user", mode)
        offset = (clock.get("guest_offset_ns") or {}).get(vm)
        named = (f"the given offset {offset} ns", f"the offset {offset} ns from {path.name}")
        if offset is not None and "estimate_failed" in entry:  # a side file of another run is named
            entry["estimate_failed"] = entry["estimate_failed"].replace(*named)
        if offset is not None and "warning" in clock:
            clock["warning"] = clock["warning"].replace(*named)
    if "mode" in clock and (vms is None or set(guests) <= set(mine)):
        clock["mode"] = clock["mode"].replace("given by the user", mode)
    elif "mode" in clock:
        clock["mode"] = "; ".join(f"{vm}: {guests[vm]['mode']}" for vm in sorted(guests))
    return clock


def snap_guest_events(
    host_events: pl.DataFrame, guest_events: pl.DataFrame, per_vm: dict[str, dict[str, Any]]
) -> tuple[pl.DataFrame, int]:
    """Guest events (already on the host clock) printed just outside their vCPU's runs moved inside
    (clock_estimate.snap_to_runs), within the two sides' timestamp resolutions plus the widest
    estimate's uncertainty; only the events of guests whose clocks are known to be aligned."""
    joined = [vm for vm, r in per_vm.items() if r.get("synchronized")]
    if guest_events.height == 0 or host_events.height == 0 or not joined:
        return guest_events, 0
    if len(joined) < len(per_vm):  # a guest whose clock is not aligned keeps its events where they are
        mine = pl.col("vm").cast(pl.String).is_in(joined)
        snapped, n = snap_guest_events(
            host_events, guest_events.filter(mine), {vm: per_vm[vm] for vm in joined}
        )
        return pl.concat([snapped, guest_events.filter(~mine)]), n
    spread = max(
        (
            r["estimate"]["span_uncertainty_ns"]
            for r in per_vm.values()
            if "estimate" in r and str(r.get("mode", "")).startswith("estimated")  # an applied estimate
        ),
        default=0,
    )
    tolerance = resolution(host_events["ts"]) + resolution(guest_events["ts"]) + spread
    return snap_to_runs(host_events.select("vm", "vcpu", "kind", "ts", "row", "sub"), guest_events, tolerance)


def check_given_offsets(given: int | dict[str, int] | None, vms: set[str]) -> None:
    """A --guest-offset VM=N for a VM the trace does not have is a mistake (a typo would leave the
    real VM's clock unset in silence): a UsageError naming it."""
    unknown = sorted(set(given) - vms) if isinstance(given, dict) else []
    if unknown:
        have = ", ".join(sorted(vms)) or "none"
        raise UsageError(f"--guest-offset: no VM {unknown[0]!r} in the trace (it has {have})")
