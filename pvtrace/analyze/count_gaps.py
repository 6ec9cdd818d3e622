"""Totals that miss events the trace lost or could not attribute: lower bounds, said so.

A count over a trace with lost-event windows misses what the tracer dropped (the waits in
those windows are excluded, the exits and kicks are gone), and pv kicks from threads not
known as vCPUs are left out of pv kicks. Such totals stay at their level
(how they are measured) but are listed in the summary's `partial` (analyze.partial), so no
view presents them as the whole.
"""

from __future__ import annotations

from pvtrace.analyze.partial import add_parts
from pvtrace.summary import Summary

VCPU_MAP_FIX = "give the thread's vCPU in a --vcpu-map file (CSV tid,pid,vm,vcpu)"
LOST_FIX = "record with a bigger buffer (trace-cmd -b, buffer_size_kb) or fewer events"


def add_count_gaps(summary: Summary) -> None:
    """Add the lost-event and unattributed-kick parts to summary.extra['partial'] in place."""
    x = summary.extra
    partial = x.setdefault("partial", {})
    n_lost = int(x.get("n_lost_windows") or 0)
    if n_lost:
        part = {
            "missing": (
                f"a lower bound: {n_lost:,} lost-event window(s), {x.get('excluded_pct') or 0:.2f}% of "
                "vCPU time excluded"
            ),
            "fix": LOST_FIX,
        }
        for key in summary.totals:
            add_parts(partial, key, part)
    n_kicks = int(x.get("n_kicks_unmapped") or 0)
    if n_kicks and "n_kicks" in summary.totals:
        part = {"missing": f"a lower bound: {n_kicks:,} kick(s) from threads not known as vCPUs"}
        add_parts(partial, "n_kicks", {**part, "fix": VCPU_MAP_FIX})
