"""Which stretch of time the timeline shows: the worst incident by default, or the user's choice."""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from pvtrace.analyze.context import incident_union
from pvtrace.analyze.result import Analysis
from pvtrace.errors import UsageError
from pvtrace.fmt import fmt_lock, fmt_ts
from pvtrace.report.labels import fmt_ns

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s)?\s*$")


@dataclass(frozen=True)
class Window:
    """[start, end) in ns on the trace's timeline, and why it was chosen."""

    start: int
    end: int
    why: str


def parse_time(text: str) -> int:
    """'2.5ms' -> 2500000; a bare number is ns."""
    m = _TIME.match(text)
    if not m:
        raise UsageError(
            f"--window: cannot read time {text!r} (use e.g. 1500us, 2.5ms, 1s; bare numbers are ns)"
        )
    return round(float(m.group(1)) * _UNITS[m.group(2) or "ns"])


def parse_window(text: str) -> tuple[int | None, int | None]:
    """'START:END' relative to the trace start; either side may be empty ('5ms:' = from 5 ms to the end)."""
    if text.count(":") != 1:
        raise UsageError(f"--window: expected START:END, got {text!r}")
    a, b = (part.strip() for part in text.split(":"))
    start = parse_time(a) if a else None
    end = parse_time(b) if b else None
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--window: END must be after START in {text!r}")
    return start, end


def user_window(spec: tuple[int | None, int | None], t_start: int, t_end: int) -> Window:
    """The window a user asked for (relative times), clipped to the trace."""
    rel_start, rel_end = spec
    start = t_start + (rel_start or 0)
    end = t_end if rel_end is None else min(t_end, t_start + rel_end)
    if start >= t_end:
        raise UsageError(
            f"--window starts at {fmt_ns(start - t_start)}, after the trace ends ({fmt_ns(t_end - t_start)})"
        )
    return Window(start, end, f"chosen window {fmt_ts(start)} to {fmt_ts(end)} s (trace time)")


def incidents(analysis: Analysis) -> pl.DataFrame:
    """LHP and LWP incidents in one frame: kind, vm, lock, vcpu (holder / next owner), state, start, end, dur, waste_ns."""
    return incident_union(analysis.table("lhp_incidents"), analysis.table("lwp_incidents"))


def default_window(analysis: Analysis, t_start: int, t_end: int) -> Window:
    """Around the incident that wasted the most spin (then the longest), padded by its length on each side.

    Without incidents: around the longest wait; without waits: the whole trace.
    """
    inc = incidents(analysis)
    if inc.height:
        worst = inc.sort([pl.col("waste_ns").fill_null(-1), "dur"], descending=True, maintain_order=True).row(
            0, named=True
        )
        what = (
            f"the worst incident: {worst['kind']} on {worst['vm']} lock {fmt_lock(worst['lock'])}, "
            f"vCPU {worst['vcpu']} {worst['state']} for {fmt_ns(worst['dur'])}"
        )
        if worst["waste_ns"] is not None:
            what += f", {fmt_ns(worst['waste_ns'])} of spin wasted"
        return _around(worst["start"], worst["end"], t_start, t_end, what)
    waits = analysis.table("waits")
    if waits.height:
        w = waits.sort("dur", descending=True, maintain_order=True).row(0, named=True)
        what = f"the longest wait: {w['vm']} vCPU {w['vcpu']} on lock {fmt_lock(w['lock'])} for {fmt_ns(w['dur'])}"
        return _around(w["start"], w["end"], t_start, t_end, what)
    return Window(t_start, t_end, "the whole trace (no incidents or waits to center on)")


def _around(start: int, end: int, t_start: int, t_end: int, what: str) -> Window:
    pad = max(end - start, 1_000)
    lo, hi = max(t_start, start - pad), min(t_end, end + pad)
    return Window(lo, max(hi, lo + 1), f"around {what}")
