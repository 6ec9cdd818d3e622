"""The guest-inferred level's lines of the analyze summary and the report page: what the guest's ticks and steal showed,
and each of its partial reasons once (pvtrace/cli/summary_view.py prints them above the headline)."""

from __future__ import annotations

from pvtrace.analyze.guest_steal import INCIDENT_KEYS, SPIN_KEYS
from pvtrace.fmt import fmt_ns, plural


def preemption_line(g: dict) -> str:
    """The guest-inferred level's line: the not-running intervals (how many of two ticks or more,
    the rest known to a tick only), then the steal to its resolution and what no interval holds."""
    n, two = g["n_intervals"], 2 * g["tick_ns"]
    line = f"vCPU preemption from guest ticks (HZ={g['hz']}): "
    if not n:
        line += "no not-running interval"
    else:
        placed = g.get("placed_ns") or 0
        share = "none" if not placed else "all" if placed >= g["not_running_ns"] else fmt_ns(placed)
        line += (
            f"{plural(n, 'not-running interval')}, {fmt_ns(g['not_running_ns'])} "
            f"({fmt_ns(g['not_running_lo_ns'])}-{fmt_ns(g['not_running_hi_ns'])}), "
            f"{share} in intervals of two ticks ({fmt_ns(two)}) or more"
        )
    line += f"; preempted {fmt_ns(g['preempted_ns'])}"
    if g["steal_ns"] is None:
        return line + "; no steal samples"
    steal, res, unit = g["steal_ns"], g.get("steal_resolution_ns") or 0, g.get("steal_unit_ns") or 0
    low = fmt_ns(steal - res) if steal > res else "0"
    line += f"; steal {fmt_ns(steal)} ({low}-{fmt_ns(steal + res)}: counted in {fmt_ns(unit)} units per vCPU)"
    outside = g.get("steal_outside_ns") or 0
    if outside > res:
        pct = 100 * outside / steal
        return line + f", {fmt_ns(outside)} of it ({pct:.0f}%) in no interval: stops that missed no tick"
    if not n:
        return line
    return line + (", which the interval accounts for" if n == 1 else ", which the intervals account for")


_PARTIAL_GROUPS = {"spin": SPIN_KEYS, "incidents": INCIDENT_KEYS}


def partial_groups(x: dict) -> dict[str, str]:
    """Each partial reason of the guest-inferred level, once, with what it makes partial (spin,
    incidents)."""
    parts = x.get("partial") or {}
    out: dict[str, str] = {}
    for why in (x.get("guest_preemption") or {}).get("partial_reasons") or []:
        hit = [
            name
            for name, keys in _PARTIAL_GROUPS.items()
            if any(p["missing"] == why for k in keys for p in parts.get(k) or [])
        ]
        out[why] = ", ".join(hit) or "spin, incidents"
    return out
