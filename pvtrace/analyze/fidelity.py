"""Fidelity: what a trace's events allow, and what each metric therefore is.

METRICS.md, Fidelity: exact (acquire/release + waits + vCPU states), inferred
holder (guest contention events + host vCPU states), guest-inferred (guest
contention events + vCPU states inferred from the guest's ticks and steal
samples, pvtrace/analyze/guest_preemption.py), host only (vCPU states and exits,
no lock events), guest only (lock events, no vCPU states). A metric the
events cannot give is listed as unavailable with the events it misses and the
`pvtrace record` command that would capture them; it is never written as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvtrace.analyze.prepare import Prepared
from pvtrace.summary import SPIN_SPLIT_KEYS, TOTAL_KEYS, Unavailable

# Tracepoints behind each canonical kind, by the side that records them.
HOST_STATES = ("sched:sched_switch", "sched:sched_wakeup", "kvm:kvm_entry", "kvm:kvm_exit")
GUEST_WAITS = ("lock:contention_begin", "lock:contention_end")
GUEST_HOLDS = ("lock:lock_acquire", "lock:lock_release")
HOST_EXITS = ("kvm:kvm_exit", "kvm:kvm_entry")
HOST_KICKS = ("kvm:kvm_hypercall",)


def capture_command(host: tuple[str, ...] = (), guest: tuple[str, ...] = ()) -> str:
    """The `pvtrace record` command(s) that capture the given tracepoints (record --host also
    writes the vCPU thread map); lockdep's acquire/release events are outside what record enables."""
    parts = []
    if host:
        parts.append("on the host: sudo pvtrace record --host -o host.txt")
    if any(e not in GUEST_HOLDS for e in guest):
        parts.append("in the guest: sudo pvtrace record --guest -o guest.txt")
    if any(e in GUEST_HOLDS for e in guest):
        parts.append(
            "in the guest, on a CONFIG_LOCKDEP kernel: trace-cmd record -e lock:lock_acquire -e lock:lock_release"
        )
    return "; ".join(parts)


@dataclass(frozen=True)
class Capabilities:
    """Which kinds of events the trace has."""

    states: bool  # vCPU state events (host scheduler view)
    waits: bool  # lock_contend / contended lock_acquire (guest)
    holds: bool  # lock_release: every acquisition and release is visible
    exits: bool  # vm_exit / vm_entry
    kicks: bool  # pv_kick (or the host exits they come with)
    guest_states: bool = False  # the vCPU states were inferred from guest ticks (no host trace)
    guest_limited: str | None = None  # why those states cannot place the preemptions, if they cannot
    guest_halting: str | None = None  # why spin cannot be told from pv halting at that level, if it cannot
    guest_unavailable: tuple[tuple[str, str], ...] = ()  # (metric, why) the guest's signals cannot give

    @property
    def level(self) -> str:
        if self.guest_states:  # states from the guest's own ticks: a guest trace, never host-only
            return "guest-inferred" if self.waits else "guest-only"
        if self.states and self.holds:
            return "exact"
        if self.states and self.waits:
            return "inferred"
        if self.states or self.exits:
            return "host-only"
        if self.waits or self.holds:
            return "guest-only"
        return "none"


def unjoined(caps: Capabilities, clocks_unaligned: str | None) -> bool:
    """Host vCPU states and guest lock events are both there but cannot be joined (clocks not
    known to be aligned, or vCPU threads not tied to guests): no metric that joins them is given."""
    return bool(clocks_unaligned) and caps.states and caps.waits


def summary_level(caps: Capabilities, clocks_unaligned: str | None) -> str:
    """The level of what the summary shows: 'unjoined' when the events would allow exact or
    inferred holders but the sides cannot be joined (each side's own metrics only), else
    caps.level."""
    return "unjoined" if unjoined(caps, clocks_unaligned) else caps.level


def capabilities(prep: Prepared) -> Capabilities:
    k = prep.kinds
    has = lambda *names: any(k.get(n, 0) > 0 for n in names)  # noqa: E731
    exits = has("vm_exit")
    # Every acquisition and release is visible with lockdep-like events (lock_release seen), or in
    # the simulator's full view; guest contention events show contended acquisitions only.
    full_sim = prep.view == "full" and prep.lock_origins <= {"sim"} and has("lock_acquire")
    guest = prep.guest_preemption
    return Capabilities(
        guest_states=guest is not None,
        guest_limited=guest.limited if guest is not None else None,
        guest_halting=guest.halting if guest is not None else None,
        guest_unavailable=tuple(guest.unavailable.items()) if guest is not None else (),
        states=has("vcpu_run", "vcpu_preempt", "vcpu_halt"),
        waits=has("lock_contend", "lock_acquire"),
        holds=has("lock_release") or full_sim,
        exits=exits,
        kicks=has("pv_kick") or exits,
    )


SPLIT_KEYS = SPIN_SPLIT_KEYS[1:]  # the parts of spin_ns
LWP_KEYS = (
    "waste_lwp_ns",
    "waste_lwp_preempted_ns",
    "waste_lwp_halted_ns",
    "n_lwp",
    "n_lwp_preempted",
    "n_lwp_halted",
)
STATE_KEYS = ("spin_ns", "wait_halted_ns", "wait_preempted_ns")
HOLDER_KEYS = (
    *SPLIT_KEYS,
    "n_lhp",
    "n_lhp_harmful",
    "n_lwp",
    "n_lwp_preempted",
    "n_lwp_halted",
    "n_convoys",
    "convoy_len_max",
    "n_truncated",
)


HOST_ESTIMATES = ("spin_ns",)
# What needs spin told apart from halting (guest-inferred level with pv waiters that halt).
SPIN_DEPENDENT = (
    *SPLIT_KEYS,
    "spin_ns",
    "wait_halted_ns",
    "n_lhp_harmful",
    *LWP_KEYS,
    "n_convoys",
    "convoy_len_max",
)


CROSS_KEYS = (*STATE_KEYS, *HOLDER_KEYS)  # need guest lock events and host vCPU states together


def plan(
    caps: Capabilities,
    *,
    unknown_kind_locks: bool,
    pause_exits: bool = False,
    clocks_unaligned: str | None = None,
) -> tuple[dict[str, str], list[Unavailable]]:
    """The level of every total key this trace can give, and the unavailable ones with why.

    At the host-only level, spin and LHP waste are estimated from PAUSE exits (pause_exits:
    the trace has some) and labelled host-only. clocks_unaligned (the fix, when host and guest
    clocks are not known to be aligned): every metric that joins host and guest events is
    unavailable, never given at any level.
    """
    level = caps.level
    fidelity: dict[str, str] = {}
    missing: dict[str, Unavailable] = {}

    def lack(metric: str, events: tuple[str, ...], cmd: str) -> None:
        missing[metric] = Unavailable(metric, list(events), cmd)

    host_cmd = capture_command(host=HOST_STATES)
    guest_cmd = capture_command(guest=GUEST_WAITS)
    holds_cmd = capture_command(guest=GUEST_HOLDS)
    for key in TOTAL_KEYS:
        if key == "n_pause_exits":
            if caps.exits:
                fidelity[key] = "exact"
            else:
                lack(key, HOST_EXITS, capture_command(host=HOST_EXITS))
        elif key == "n_kicks":
            if caps.kicks:
                fidelity[key] = "exact"
            else:
                lack(key, HOST_KICKS, capture_command(host=(*HOST_EXITS, *HOST_KICKS)))
        elif key == "n_acquisitions":
            if caps.holds:
                fidelity[key] = "exact"
            else:
                lack(key, GUEST_HOLDS, holds_cmd)
        elif key == "n_contended":
            if caps.waits:
                fidelity[key] = "exact"
            else:
                lack(key, GUEST_WAITS, guest_cmd)
        elif key in STATE_KEYS or (level == "guest-inferred" and key in HOLDER_KEYS):
            # (what the guest's ticks cannot tell, a host trace's vCPU states do: those are missing)
            if level == "guest-inferred" and caps.guest_limited:
                lack(key, HOST_STATES, caps.guest_limited)
            elif level == "guest-inferred" and caps.guest_halting and key in SPIN_DEPENDENT:
                lack(key, HOST_STATES, caps.guest_halting)
            elif level == "guest-inferred" and key in dict(caps.guest_unavailable):
                lack(key, HOST_STATES, dict(caps.guest_unavailable)[key])
            elif level == "guest-inferred" and key == "n_lhp":
                lack(key, GUEST_HOLDS, holds_cmd)
            elif level == "guest-inferred":
                fidelity[key] = "guest-inferred"
            elif caps.waits and caps.states:
                fidelity[key] = "exact"
            elif not caps.waits:
                lack(key, GUEST_WAITS, guest_cmd)
            else:
                lack(key, HOST_STATES, host_cmd)
        else:  # needs holders
            if level == "exact":
                fidelity[key] = "exact"
            elif level == "inferred":
                if key == "n_lhp":
                    lack(key, GUEST_HOLDS, holds_cmd)
                else:
                    fidelity[key] = "inferred"
            elif not caps.waits:
                lack(key, GUEST_WAITS, guest_cmd)
            else:
                lack(key, HOST_STATES, host_cmd)
    if caps.level == "host-only" and pause_exits:
        for key in HOST_ESTIMATES:
            missing.pop(key, None)
            fidelity[key] = "host-only"
        fidelity["spin_waste_ns"] = "host-only"  # in Summary.extra: LHP + LWP, not separable here
    if unknown_kind_locks:
        # inferred holders: a convoy's hand-offs are the takes the kind decides (analyze.partial)
        kind_keys = LWP_KEYS if caps.holds else (*LWP_KEYS, "n_convoys", "convoy_len_max")
        for key in (k for k in kind_keys if k in fidelity):  # else the trace lacks more than the kind
            del fidelity[key]
            what = "LWP needs" if key in LWP_KEYS else "Convoys with inferred holders need"
            missing[key] = Unavailable(
                key,
                [],
                f"{what} each lock's kind: pass --lock-kind fifo (ticket, queued spinlocks) or unfair "
                "(test-and-set)",
            )
    if unjoined(caps, clocks_unaligned):
        for key in CROSS_KEYS:
            if key in fidelity:
                del fidelity[key]
                missing[key] = Unavailable(key, [], clocks_unaligned)
    return fidelity, list(missing.values())
