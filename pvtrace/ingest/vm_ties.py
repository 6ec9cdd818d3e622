"""Which host VM is which guest VM when nothing names them alike.

A real host+guest capture (`trace-cmd record -A`, or host and guest files traced
apart) names the guests after their files (`trace-vm0.dat`) while the host only
knows vCPU threads, grouped into VMs by process id or guessed by thread-id order
(vcpu_map). Without a map file the two namings never meet, and the guests' vCPUs
would look unknown all trace long. The events tie them: a guest prints only while
its vCPU's host thread is in guest mode, so a guest's events fit inside the run
intervals of exactly one host VM's threads, at one clock offset
(clock_estimate.estimate_offset, the same test that aligns the clocks). A host VM
and a guest VM are tied when each fits the other and no other candidate. A guest
that stays untied has no known vCPU states: the analysis then gives no metric that
joins host and guest events (unmapped_reason) rather than zeros.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pvtrace.ingest.clock_estimate import Estimate, estimate_offset, run_intervals

# candidate pairs tried at most (each is one offset estimate over the guest's events)
MAX_PAIRS = 64
# guest events per VM the test looks at (a big merged input is normalized in one piece)
MAX_EVENTS = 20_000


def tie_vms(
    host_vms: list[str],
    guest_vms: list[str],
    host_events: pl.DataFrame,
    guest_events: pl.DataFrame,
) -> dict[str, str]:
    """{host VM: guest VM} for the pairs whose events fit each other and nothing else.

    host_vms, guest_vms: the VMs named on one side only; host_events: vm, vcpu, kind, ts
    (row, sub); guest_events: vm, vcpu, ts on the guests' own clocks (the estimate searches
    every offset, so a given one is not needed; applied, it would blur a whole-us guest clock)."""
    if not host_vms or not guest_vms or len(host_vms) * len(guest_vms) > MAX_PAIRS:
        return {}
    runs = run_intervals(host_events.filter(pl.col("vm").cast(pl.String).is_in(host_vms)))
    fits: dict[tuple[str, str], bool] = {}
    for g in guest_vms:
        mine = guest_events.filter(pl.col("vm").cast(pl.String) == g).select("vcpu", "ts")
        mine = mine.gather_every(-(-mine.height // MAX_EVENTS) or 1)  # evenly thinned: shares hold
        for h in host_vms:
            # any accepted estimate: nearly every event fits one shift and no distant one rivals it
            # (how precise the shift is, clocks.py judges once the names agree)
            estimate = estimate_offset(runs.filter(pl.col("vm") == h).drop("vm"), mine)
            fits[h, g] = isinstance(estimate, Estimate)
    ties = {}
    for h in host_vms:
        mates = [g for g in guest_vms if fits[h, g]]
        if len(mates) == 1 and sum(fits[o, mates[0]] for o in host_vms) == 1:
            ties[h] = mates[0]
    return ties


def unmapped_guests(vmap: pl.DataFrame, guest_events: pl.DataFrame) -> list[str]:
    """Guest VMs with vCPU events but no host vCPU thread tied to them."""
    seen = guest_events.filter(pl.col("vcpu").is_not_null())["vm"].cast(pl.String).drop_nulls().unique()
    return sorted(set(seen.to_list()) - set(vmap["vm"].to_list()))


def unmapped_warning(guests: list[str], host_vms: list[str]) -> str:
    """One line: which guests are not tied, what that costs, and what to pass."""
    hosts = f" (the host's vCPU threads form {', '.join(host_vms)})" if host_vms else ""
    return (
        f"the host trace's vCPU threads could not be tied to guest VM(s) {', '.join(guests)}{hosts}: "
        "their vCPU states are unknown and metrics that join host and guest events are unavailable; "
        "pass --vcpu-map FILE (CSV tid,pid,vm,vcpu naming the guest VMs as their trace files do)"
    )


def unmapped_reason(clock: dict[str, Any]) -> str | None:
    """Why host and guest events cannot be joined for lack of a vCPU map, with the fix; None when
    every guest is tied (clock: TraceMeta.clock)."""
    guests = clock.get("unmapped_guests")
    if not guests:
        return None
    return (
        f"host vCPU threads are not tied to guest VM(s) {', '.join(guests)}: pass --vcpu-map FILE "
        "(CSV tid,pid,vm,vcpu)"
    )
