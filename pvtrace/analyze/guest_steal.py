"""What the guest's steal samples add to its ticks: how much preemption the ticks cannot place.

The steal counters (pvtrace/guest_signals.py) count every preemption, however short, to a
USER_HZ unit. Against them: the share of the not-running intervals that is preemption (the
rest, inside lock waits, halted), how much of the steal lies outside the intervals of two
ticks or more (`unseen_ns`: too short to place, or to leave any trace), and from that which
metrics of the guest-inferred level are partial or unavailable, and why (docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pvtrace.guest_signals import MARKER_EVENTS, parse_steal_markers, pv_spinlocks_of

MIN_PLACED = 0.5  # intervals of two ticks or more must hold this share of the steal, or the level declines
HALTED_SHARE = 0.05  # more of the silence than this inside waits not being steal: waiters halt
UNSEEN_NOTE_SHARE = 0.02  # less unseen steal than this (and than a unit per vCPU) is the counters' rounding
MIN_STEAL_UNITS = 3  # per vCPU on average: less steal than this is too coarse to judge coverage


@dataclass
class GuestPreemption:
    """What the inference found, for the summary (all times in ns)."""

    hz: int
    tick_ns: int
    n_intervals: int = 0
    not_running_ns: int = 0  # estimate (start at the middle of its bounds)
    not_running_lo_ns: int = 0  # if every interval started as late as it can
    not_running_hi_ns: int = 0  # ... as early as it can
    preempted_ns: int = 0  # the part labelled preempted (the rest halted)
    placed_ns: int = 0  # not-running time in intervals of two ticks or more (the rest known to a tick)
    steal_ns: int | None = None  # from the steal samples, between the first and last
    steal_unit_ns: int | None = None
    steal_resolution_ns: int | None = (
        None  # the total is known to a unit per vCPU either way (floored counters)
    )
    steal_coverage: float | None = None  # not-running time seen by ticks / steal, over the sample window
    placed_share: float | None = None  # ... of which in intervals of two ticks or more
    unseen_ns: int | None = None  # steal not in those intervals: preemption too short to place or see
    steal_outside_ns: int | None = None  # steal not in any interval: stops that missed no tick
    n_steal_vcpus: int | None = None
    pv_spinlocks: bool | None = None  # declared, or from the steal samples or stacks; None when none says
    pv_spinlocks_from: str | None = None  # which of those said it
    short_share: float | None = None  # share of the intervals shorter than two ticks
    limited: str | None = None  # why the ticks cannot resolve the preemptions, when they cannot
    halting: str | None = None  # why spin cannot be told from pv halts or sub-tick yields, if it cannot
    wait_stops: dict | None = None  # gaps inside lock waits against the count expected (guest_yields)
    lhp_waste_range_ns: list[int] | None = None  # some LHP may be fifo hand-offs (guest_lwp)
    lhp_maybe_lwp: dict | None = None  # those incidents: n, of, waste_ns
    lhp_waiter_stops: dict | None = (
        None  # waiter stops inside LHP incidents: n, minus, plus (guest_stop_slack)
    )
    lhp_late_releases: dict | None = None  # incidents whose lock was taken as another vCPU resumed: n, plus
    stops: pl.DataFrame | None = (
        None  # vm, vcpu, start, start_lo, start_hi, end of every interval (not in extra)
    )
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why this level cannot give it
    partial: dict[str, list[dict]] = field(default_factory=dict)  # metric -> what it lacks (partial.py)

    def as_extra(self) -> dict:
        skip = ("notes", "unavailable", "partial", "stops")
        return {k: v for k, v in self.__dict__.items() if k not in skip} | {
            "notes": list(self.notes),
            "unavailable": dict(self.unavailable),
            "partial_reasons": sorted({part["missing"] for parts in self.partial.values() for part in parts}),
        }


def lock_waits(events: pl.DataFrame) -> pl.DataFrame:
    """Per vCPU event: whether a lock wait is open after it (its last lock event is a contend)."""
    return (
        events.filter(pl.col("kind").is_in(["lock_contend", "lock_acquire"]))
        .select("vm", "vcpu", "ts", (pl.col("kind") == "lock_contend").alias("waiting"))
        .sort("ts", maintain_order=True)  # a wait shorter than the clock's tick: contend, then acquire
    )


def markers(events: pl.DataFrame) -> pl.DataFrame:
    return events.filter(
        (pl.col("kind") == "other") & pl.col("event").cast(pl.String).is_in(list(MARKER_EVENTS))
    ).select(pl.col("vm").cast(pl.String), "ts", "args")


def steal_per_vcpu(events: pl.DataFrame) -> pl.DataFrame:
    """Per vCPU: steal between its first and last sample (ns), the window it covers and the unit. A
    CPU's counter moves at its own tick (the guest accounts steal there), so each sample holds the
    steal up to that vCPU's last event before it: the window runs between those events."""
    samples = parse_steal_markers(markers(events)).sort("ts")
    own = (
        events.filter(pl.col("vm").is_not_null() & pl.col("vcpu").is_not_null())
        .select(pl.col("vm").cast(pl.String), pl.col("vcpu").cast(pl.Int32), pl.col("ts").alias("upto"))
        .sort("upto")
    )
    samples = samples.with_columns(pl.col("vcpu").cast(pl.Int32)).join_asof(
        own, left_on="ts", right_on="upto", by=["vm", "vcpu"], strategy="backward", check_sortedness=False
    )
    upto = pl.col("upto").fill_null(pl.col("ts"))
    return samples.group_by("vm", "vcpu").agg(
        upto.sort_by("ts").first().alias("w_start"),
        upto.sort_by("ts").last().alias("w_end"),
        (pl.col("steal_ns").sort_by("ts").last() - pl.col("steal_ns").sort_by("ts").first()).alias(
            "steal_ns"
        ),
        pl.col("unit_ns").first(),
        pl.len().alias("n_samples"),
    )


def _clipped(lo: pl.Expr, hi: pl.Expr) -> pl.Expr:
    return (pl.min_horizontal(pl.col("end"), hi) - pl.max_horizontal(pl.col("start"), lo)).clip(lower_bound=0)


# Who says the spinlocks are paravirt, or not (pv_spinlocks_evidence), as the summary words it.
PV_DECLARED = "declared with --pv-spinlocks"
PV_FROM_STEAL = "the steal samples say so"
PV_FROM_STACKS = "its stack traces show the spinlock slow path"
# A wait's stack names the slow path the kernel patched in at boot: the paravirt one only when pv
# spinlocks are on (kernel/locking/qspinlock_paravirt.h), the native one otherwise.
_PV_FRAME = r"(?m)^__pv_queued_spin_lock_slowpath\b"
_NATIVE_FRAME = r"(?m)^(?:native_)?queued_spin_lock_slowpath\b"


def pv_spinlocks_evidence(events: pl.DataFrame, declared: bool | None) -> tuple[bool | None, str | None]:
    """Whether the guest's spinlocks are paravirt, and who says so: the user's declaration, else the
    recorder's steal samples, else the stack traces of the waits (ftrace `<stack trace>` lines);
    (None, None) when nothing says."""
    if declared is not None:
        return declared, PV_DECLARED
    said = pv_spinlocks_of(markers(events))
    if said is not None:
        return said, PV_FROM_STEAL
    stacks = events.filter((pl.col("kind") == "other") & (pl.col("event").cast(pl.String) == "kernel_stack"))
    if stacks.is_empty():
        return None, None
    frames = stacks.select(
        pl.col("args").str.contains(_PV_FRAME).any().alias("pv"),
        pl.col("args").str.contains(_NATIVE_FRAME).any().alias("native"),
    ).row(0)
    if frames[0] == frames[1]:  # neither (no spinlock wait stacked), or both (cannot be)
        return None, None
    return bool(frames[0]), PV_FROM_STACKS


def pv_halts(source: str | None) -> str:
    """Why spin is unavailable when the spinlocks are paravirt."""
    return (
        f"the guest kernel uses paravirt spinlocks ({source}): their waiters halt, mostly for less than a "
        "tick, which leaves no trace, so spin cannot be told from halting"
    )


PV_UNKNOWN = (
    "whether the guest's spinlocks are paravirt is not in the trace: if they are, waiters' halts shorter "
    "than a tick leave no trace and count as spin here"
)
HALT_UNSEEN = (
    "a halted vCPU looks like a preempted one from inside the guest (both miss their ticks), and a "
    "halt shorter than a tick leaves no trace at all; a host trace (pvtrace record --host) shows halts"
)


def split_by_steal(gaps: pl.DataFrame, steal: pl.DataFrame, info: GuestPreemption) -> pl.DataFrame:
    """Column `f`, each gap's preempted share, from the steal budget; the steal totals, what the
    placed intervals (two ticks or more) cover of it, and the decline when that is too little."""
    window = gaps.join(steal, on=["vm", "vcpu"], how="left")
    inside = _clipped(pl.col("w_start"), pl.col("w_end"))
    per_vcpu = window.group_by("vm", "vcpu").agg(
        inside.filter(~pl.col("ambiguous")).sum().alias("sure"),
        inside.filter(pl.col("ambiguous")).sum().alias("amb"),
        inside.filter(pl.col("placed")).sum().alias("placed_ns"),
    )
    per_vcpu = steal.join(per_vcpu, on=["vm", "vcpu"], how="left").fill_null(0)
    # the counters are floored to USER_HZ units: the steal in the window may be up to one unit more
    budget = pl.col("steal_ns") + pl.col("unit_ns")
    share = ((budget - pl.col("sure")) / pl.col("amb")).clip(0.0, 1.0)
    # gaps outside lock waits beyond the steal were not preemption either (idle without a
    # sched_switch, a long stretch with interrupts off): the preempted share of them
    sure_share = (budget / pl.col("sure")).clip(0.0, 1.0)
    per_vcpu = per_vcpu.with_columns(
        pl.when(pl.col("amb") > 0).then(share).otherwise(1.0).alias("f"),
        pl.when(pl.col("sure") > 0).then(sure_share).otherwise(1.0).alias("f_sure"),
    )
    gaps = gaps.join(per_vcpu.select("vm", "vcpu", "f", "f_sure"), on=["vm", "vcpu"], how="left")
    gaps = gaps.with_columns(pl.when(pl.col("ambiguous")).then("f").otherwise("f_sure").alias("f")).drop(
        "f_sure"
    )
    total = int(per_vcpu["steal_ns"].sum())
    seen = int((per_vcpu["sure"] + per_vcpu["amb"]).sum())
    placed = int(per_vcpu["placed_ns"].clip(upper_bound=per_vcpu["steal_ns"] + per_vcpu["unit_ns"]).sum())
    outside = int((per_vcpu["steal_ns"] - per_vcpu["sure"] - per_vcpu["amb"]).clip(lower_bound=0).sum())
    unit = int(steal["unit_ns"].max())
    info.steal_ns, info.steal_unit_ns, info.n_steal_vcpus = total, unit, per_vcpu.height
    info.steal_outside_ns, info.steal_resolution_ns = outside, unit * per_vcpu.height
    if total > 0:
        info.steal_coverage = round(min(seen / total, 1.0), 4)
        info.placed_share = round(min(placed / total, 1.0), 4)
    info.unseen_ns = max(total - placed, 0)
    enough = total >= MIN_STEAL_UNITS * unit * per_vcpu.height
    if enough and info.placed_share is not None and info.placed_share < MIN_PLACED:
        info.limited = (
            f"only {100 * info.placed_share:.0f}% of the steal time ({placed / 1e6:.1f} of {total / 1e6:.1f} ms) "
            f"lies in not-running intervals of two ticks or more (HZ={info.hz}, every {info.tick_ns / 1e6:g} ms): "
            "the host preempts this guest for less than about two ticks at a time, too short to place; "
            "a guest kernel with a higher CONFIG_HZ, or a host trace, can"
        )
    return gaps


def unseen_partial(info: GuestPreemption) -> dict[str, list[dict]]:
    """The `partial` entries of the metrics that need the vCPU states, when some of the steal lies in
    stretches the ticks cannot place: those incidents are not countable, and that preemption, where it
    falls inside a wait, counts as spin."""
    if info.limited or info.halting:  # those metrics are unavailable outright
        return {}
    out: dict[str, list[dict]] = {}
    if info.pv_spinlocks is None:
        fix = (
            "pvtrace analyze --pv-spinlocks yes|no (dmesg: 'kvm-guest: PV spinlocks enabled'); pvtrace record "
            "--guest notes it in its steal samples; or a host trace (pvtrace record --host)"
        )
        out = {k: [{"missing": PV_UNKNOWN, "fix": fix}] for k in SPIN_KEYS}
    if info.steal_ns is None:  # nothing sizes what the ticks miss
        part = {
            "missing": f"no steal samples: preemption shorter than two ticks at HZ={info.hz} is neither seen nor sized",
            "fix": "pvtrace record --guest writes them",
        }
        for k in (*INCIDENT_KEYS, *SPIN_KEYS):
            out[k] = [*out.get(k, []), part]
        return out
    if not info.steal_ns or info.unseen_ns is None:
        return out
    noise = max(UNSEEN_NOTE_SHARE * info.steal_ns, info.steal_resolution_ns or 0)
    if info.unseen_ns <= noise:
        return out
    pct = round(100.0 * info.unseen_ns / info.steal_ns, 2)
    # one reason for both: the stops behind it hide incidents and, inside a wait, count as spin
    why = (
        f"{info.unseen_ns / 1e6:.1f} ms of the steal ({pct:g}%) is not in not-running intervals of two ticks "
        f"or more (HZ={info.hz}, {2 * info.tick_ns / 1e6:g} ms): shorter stops are placed only to a tick, or "
        "missed no tick and left no trace, so incidents there may be missed, and such a stop inside a lock "
        "wait counts as spin"
    )
    fix = "a guest kernel with a higher CONFIG_HZ, or a host trace (pvtrace record --host)"
    part = {"missing": why, "unseen_preempted_ns": info.unseen_ns, "unseen_pct_of_steal": pct, "fix": fix}
    for k in (*INCIDENT_KEYS, *SPIN_KEYS):
        out[k] = [*out.get(k, []), part]
    return out


INCIDENT_KEYS = ("n_lhp_harmful", "waste_lhp_ns", "n_lwp", "n_lwp_preempted", "n_lwp_halted", "n_convoys")
SPIN_KEYS = ("spin_ns", "spin_useful_ns", "spin_unattributed_ns", "wait_preempted_ns", "spin_waste")
