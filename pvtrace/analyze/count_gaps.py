"""Totals that miss events the trace lost or could not attribute: lower bounds, said so.

A count over a trace with lost-event windows misses what the tracer dropped (the waits in
those windows are excluded, the exits and kicks are gone), and pv kicks from threads not
known as vCPUs are left out of pv kicks (when every kick is, the count is unavailable, never 0).
Such totals stay at their level
(how they are measured) but are listed in the summary's `partial` (analyze.partial), so no
view presents them as the whole.
"""

from __future__ import annotations

from pvtrace.analyze.partial import add_parts
from pvtrace.summary import Summary, Unavailable

VCPU_MAP_FIX = "give the thread's vCPU in a --vcpu-map file (CSV tid,pid,vm,vcpu)"
LOST_FIX = "record with a bigger buffer (pvtrace record --buffer-kb, trace-cmd record -b, buffer_size_kb) or fewer events"
# Records whose timestamp sanity.py found broken: each became a lost-events marker without a count.
BROKEN_TIMES = ("time_backwards", "time_jump", "time_spike")
# Totals that lost events can only make smaller (time and counts of what the trace shows).
BOUNDED = (
    "spin_ns",
    "wait_halted_ns",
    "wait_preempted_ns",
    "n_contended",
    "n_acquisitions",
    "n_pause_exits",
    "n_kicks",
)
BROKEN_FIX = (
    "the skipped lines name the records; if the file was damaged in a copy, take it again from its source"
)


def add_lost_parts(summary: Summary) -> None:
    """Add the lost-event part to summary.extra['partial'] in place (after extra['skipped_lines'] is
    set: windows around broken timestamps are no tracer's loss, and a bigger buffer is no fix)."""
    x = summary.extra
    if not int(x.get("n_lost_windows") or 0):
        return
    partial = x.setdefault("partial", {})
    fixes = ([LOST_FIX] if tracer_lost(x) else []) + ([BROKEN_FIX] if _n_broken(x) else [])
    lost, fix = lost_events_text(x, short=True), "; or ".join(fixes)
    bound = {"missing": f"a lower bound: {lost}", "fix": fix}
    # the split of spin, the incidents and convoys may be off either way around a lost window (a
    # wait's spin classed otherwise, a run of hand-offs cut in two or joined): not bounds
    either = {
        "missing": f"may be off either way: {lost} (what happened around them is classed without them)",
        "fix": fix,
    }
    for key in summary.totals:
        add_parts(partial, key, bound if key in BOUNDED else either)


def add_count_gaps(summary: Summary) -> None:
    """Add the unattributed-kick parts to summary.extra['partial'] in place (or make n_kicks unavailable)."""
    x = summary.extra
    partial = x.setdefault("partial", {})
    n_kicks = int(x.get("n_kicks_unmapped") or 0)
    if n_kicks and summary.totals.get("n_kicks") == 0:  # every kick is unattributed: 0 would be false
        del summary.totals["n_kicks"]
        summary.fidelity.pop("n_kicks", None)
        why = f"all {n_kicks:,} pv kick(s) came from threads not known as vCPUs: {VCPU_MAP_FIX}"
        summary.unavailable.append(Unavailable("n_kicks", [], why))
        partial.pop("n_kicks", None)
    elif n_kicks and "n_kicks" in summary.totals:
        part = {"missing": f"a lower bound: {n_kicks:,} kick(s) from threads not known as vCPUs"}
        add_parts(partial, "n_kicks", {**part, "fix": VCPU_MAP_FIX})


def lost_events_text(x: dict, *, short: bool = False) -> str:
    """What the tracer lost, in words: the events it counted (short: only those), the windows and
    the vCPU time excluded."""
    n_windows = int(x.get("n_lost_windows") or 0)
    n_events, n_broken = int(x.get("n_events_lost") or 0), _n_broken(x)
    uncounted = max(int(x.get("n_lost_windows_uncounted") or 0) - n_broken, 0)
    broken = f"{n_broken:,} record(s) with a broken timestamp" if n_broken else ""
    if not tracer_lost(x):
        events = broken
    elif not n_events:
        over = int(x.get("n_events_overwritten") or 0)  # the header's count (buffer-started markers)
        events = (
            f"events lost ({over:,} overwritten before the buffers' start, by the header)"
            if over
            else "events lost (the trace gives no count)"
        )
    elif uncounted:
        events = f"at least {n_events:,} events lost ({uncounted:,} marker(s) give no count)"
    else:
        events = f"{n_events:,} events lost"
    if broken and events != broken:
        events = f"{events}, and {broken}"
    if short:
        return events
    return f"{events} in {n_windows:,} window(s), {x.get('excluded_pct') or 0:.2f}% of vCPU time excluded"


def _n_broken(x: dict) -> int:
    """Records whose broken timestamp made a lost-events window (their problem counts)."""
    by_reason = (x.get("skipped_lines") or {}).get("by_reason") or {}
    return sum(int(by_reason.get(k) or 0) for k in BROKEN_TIMES)


def tracer_lost(x: dict) -> bool:
    """Whether any lost-events window is the tracer's (a count, or more markers than broken records)."""
    return bool(x.get("n_events_lost")) or int(x.get("n_lost_windows_uncounted") or 0) > _n_broken(x)
