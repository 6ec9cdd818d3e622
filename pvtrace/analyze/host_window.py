"""A host trace that covers less time than its guests' (a file cut short, a capture started late
or stopped early): the analysis window is the span both sides traced.

Beyond the host trace no vCPU state is known. Before this, the last state of each vCPU ran on
to the end of the guests' events: a vCPU preempted where the host file was cut stayed
"preempted", every guest wait after it became lock-holder or lock-waiter preemption, and the
hold statistics taken over that stretch moved every inferred holder before it too (new-user
audit: harmful LHP 63 for 19, convoys 124 for 42, nothing flagged). The guests' events outside
the host's span are left out, and a warning says so (docs/metrics.md, Trace edges).
"""

from __future__ import annotations

from pvtrace.analyze.clock_join import bad_guests
from pvtrace.fmt import fmt_ts
from pvtrace.trace import TraceMeta

# Guest events this far past the host's (and 1% of the span) mean the host trace covers less:
# shorter overhangs are the two sides' buffers starting or stopping a moment apart.
OVERHANG_MIN_NS = 1_000_000


def host_window(meta: TraceMeta, t_start: int, t_end: int) -> tuple[int, int, str | None]:
    """The window cut to the host trace's span where the guests' events overhang it, and the
    warning that says so (None when nothing is cut)."""
    x = meta.extra or {}
    _, unmapped, unsynced = bad_guests(meta.clock or {})  # (their events join nothing, wherever placed)
    spans = [s for vm, s in (x.get("guest_spans") or {}).items() if vm not in {*unmapped, *unsynced}]
    host = x.get("host_span")
    if not host or not spans:
        return t_start, t_end, None
    guest = (min(int(s[0]) for s in spans), max(int(s[1]) for s in spans))
    slack = max(OVERHANG_MIN_NS, (t_end - t_start) // 100)
    start = int(host[0]) if int(host[0]) - max(guest[0], t_start) > slack else t_start
    end = int(host[1]) if min(guest[1], t_end) - int(host[1]) > slack else t_end
    if (start, end) == (t_start, t_end):
        return t_start, t_end, None
    cut = [
        f"{(start - t_start) / 1e6:.1f} ms before it" if start > t_start else "",
        f"{(t_end - end) / 1e6:.1f} ms after it" if end < t_end else "",
    ]
    warning = (
        f"the host trace covers {fmt_ts(start)} to {fmt_ts(end)}, and the guests' events go on "
        f"{' and '.join(c for c in cut if c)}: no vCPU state is known there, so the analysis covers "
        "the host trace's span and leaves those guest events out (was the host file cut short, or "
        "its capture started later or stopped earlier than the guests'?)"
    )
    return start, end, warning
