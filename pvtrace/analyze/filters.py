"""--window, --vm, --vcpu and --lock: narrowing an analysis the way perf's --time / --cpu do.

--window keeps the events in [START, END) (the analysis window becomes that stretch,
so waits crossing its edges count as cut), --vm the events of one VM (and the host
events of no VM), --lock the events of one lock (every other event stays: a lock's
waits, holders and incidents depend only on its own events and the vCPU states).
--vcpu cannot drop events (holders and waiters of other vCPUs make its incidents),
so it narrows the result tables instead: rows where that vCPU waits, holds, is the
holder or next owner of an incident, exits or kicks. The totals stay those of all
vCPUs, and the summary says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from pvtrace.analyze.result import Analysis
from pvtrace.errors import UsageError
from pvtrace.fmt import fmt_lock, fmt_ts, guest_clocks, host_time, parse_trace_time
from pvtrace.trace import Trace

# Result tables and the vCPU columns a --vcpu filter keeps rows by.
_VCPU_COLUMNS: dict[str, tuple[str, ...]] = {
    "vcpu_states": ("vcpu",),
    "waits": ("vcpu",),
    "holds": ("vcpu",),
    "waste_by_vcpu": ("vcpu",),
    "lhp_incidents": ("holder",),
    "lwp_incidents": ("next_owner",),
    "incidents": ("vcpu",),
    "pause_exits": ("vcpu",),
    "kicks": ("vcpu", "target"),
    "yields": ("vcpu", "target"),
    "vm_exits": ("vcpu",),
}


@dataclass(frozen=True)
class Filters:
    """What to keep; None keeps everything."""

    window: tuple[str | None, str | None] | None = None  # START, END as typed
    vm: str | None = None
    vcpu: int | None = None
    lock: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.window, self.vm, self.vcpu, self.lock))

    def describe(self, t0: int | None = None) -> str:
        """`window 1938.45 to 1938.46, VM guest, lock 0x1be0e624` for the summary header."""
        parts = []
        if self.window is not None:
            lo, hi = self.bounds(t0)
            parts.append(
                f"window {fmt_ts(lo) if lo is not None else 'start'} to {fmt_ts(hi) if hi is not None else 'end'}"
            )
        if self.vm is not None:
            parts.append(f"VM {self.vm}")
        if self.vcpu is not None:
            parts.append(f"vCPU {self.vcpu} (tables only; totals cover every vCPU)")
        if self.lock is not None:
            parts.append(f"lock {fmt_lock(self.lock)}")
        return ", ".join(parts)

    def bounds(self, t0: int | None) -> tuple[int | None, int | None]:
        """[start, end) in trace ns: bare numbers are trace timestamps in seconds as printed,
        numbers with a unit (2ms, 300us) count from the trace start t0."""
        if self.window is None:
            return None, None
        lo, hi = (parse_trace_time(v, t0) if v else None for v in self.window)
        return lo, hi


def parse_filters(window: str | None, vm: str | None, vcpu: int | None, lock: str | None) -> Filters:
    """Check the options' text; a bad one is a UsageError naming the option."""
    win = None
    if window is not None:
        if window.count(":") != 1:
            raise UsageError(
                f"--window: expected START:END (trace timestamps, e.g. 1938.45:1938.46), got {window!r}"
            )
        a, b = (p.strip() or None for p in window.split(":"))
        for v in (a, b):
            if v is not None:
                try:
                    parse_trace_time(v, 0)
                except ValueError:
                    raise UsageError(
                        f"--window: cannot read {v!r} (a trace timestamp in seconds like 1938.454793, "
                        "or a time from the trace start with a unit: 2ms, 300us)"
                    ) from None
        win = (a, b)
        lo, hi = Filters(window=win).bounds(0)
        if lo is not None and hi is not None and hi <= lo:
            raise UsageError(f"--window: END must be after START in {window!r}")
    addr = None
    if lock is not None:
        try:
            addr = int(lock, 16)  # 0x prefix optional: lock ids are hex everywhere
        except ValueError:
            raise UsageError(f"--lock: expected a lock id in hex (0x1be0e624), got {lock!r}") from None
    if vcpu is not None and vcpu < 0:
        raise UsageError(f"--vcpu: expected a vCPU index >= 0, got {vcpu}")
    return Filters(window=win, vm=vm, vcpu=vcpu, lock=addr)


def _as_decimal(events: pl.DataFrame, lock: int) -> str:
    """The hint when the id, read back as the decimal digits it was typed in, is a lock of the trace
    (the tables' Parquet files hold lock ids as integers: 4159105996 there is 0xf7e6ebcc)."""
    digits = f"{lock:x}"
    if not digits.isdigit() or int(digits) == lock:
        return ""
    if events.filter(pl.col("lock") == int(digits)).height == 0:
        return ""
    return (
        f"; {digits} read as a decimal number is lock {fmt_lock(int(digits))}, which has events "
        f"(lock ids are hex; the Parquet tables hold them as integers): pass --lock {fmt_lock(int(digits))}"
    )


def _in_window(lo: int | None, hi: int | None) -> pl.Expr:
    """Events at lo or after and before hi (either side open when None)."""
    keep = pl.lit(True)
    if lo is not None:
        keep &= pl.col("ts") >= lo
    if hi is not None:
        keep &= pl.col("ts") < hi
    return keep


def filter_trace(trace: Trace, f: Filters) -> Trace:
    """The events --window, --vm and --lock keep, with the trace window narrowed to --window."""
    ev = trace.events
    lo, hi = f.bounds(trace.t_start)
    keep = _in_window(lo, hi)
    if f.vm is not None:
        known = set(ev["vm"].cast(pl.String).drop_nulls().unique().to_list())
        if f.vm not in known:
            raise UsageError(
                f"--vm: no VM {f.vm!r} in the trace (it has {', '.join(sorted(known)) or 'none'})"
            )
        keep &= pl.col("vm").is_null() | (pl.col("vm").cast(pl.String) == f.vm)
    if f.vcpu is not None:
        _check_vcpu(ev, f)
    if f.lock is not None:
        keep &= pl.col("lock").is_null() | (pl.col("lock") == f.lock)
    events = ev.filter(keep)
    if f.lock is not None and events.filter(pl.col("lock").is_not_null()).height == 0:
        raise UsageError(
            f"--lock: no events of lock {fmt_lock(f.lock)} in the trace (or the window){_as_decimal(ev, f.lock)}"
        )
    meta = trace.meta
    if f.vm is not None:  # the other VMs' declared vCPUs are not part of this analysis
        meta = replace(meta, vms={name: info for name, info in meta.vms.items() if name == f.vm})
    if lo is not None or hi is not None:
        start = max(lo, trace.t_start) if lo is not None and trace.t_start is not None else lo
        end = min(hi, trace.t_end) if hi is not None and trace.t_end is not None else hi
        start = trace.t_start if start is None else start
        end = trace.t_end if end is None else end
        if start is not None and end is not None and end <= start:
            raise UsageError(
                f"--window: {fmt_ts(lo)} to {fmt_ts(hi)} is outside the trace "
                f"({fmt_ts(trace.t_start)} to {fmt_ts(trace.t_end)}){_as_guest_time(trace, lo, hi)}"
            )
        meta = replace(meta, t_start=start, t_end=end)
    return Trace(events=events, meta=meta)


def _as_guest_time(trace: Trace, lo: int | None, hi: int | None) -> str:
    """'; ...' when the window is a guest's own clock reading (the incidents table prints both
    clocks, `0.0444 (vm1 15.0444)`): the host-clock window it stands for."""
    t0, t1 = trace.t_start, trace.t_end
    for vm, clock in sorted(guest_clocks({"clock": trace.meta.clock}).items()):
        moved = [None if t is None else host_time(t, clock) for t in (lo, hi)]
        inside = [t for t in moved if t is not None and t0 is not None and t1 is not None and t0 <= t <= t1]
        if inside:
            host = ":".join("" if t is None else fmt_ts(t) for t in moved)
            return f"; --window takes host-clock times: read on {vm}'s own clock, it is {host} on the host"
    return ""


def _check_vcpu(ev: pl.DataFrame, f: Filters) -> None:
    """--vcpu N names a vCPU the trace has (of --vm, when given): else a UsageError listing them."""
    of_vm = ev if f.vm is None else ev.filter(pl.col("vm").cast(pl.String) == f.vm)
    seen = sorted(of_vm["vcpu"].drop_nulls().unique().to_list())
    if f.vcpu not in seen:
        where = f"VM {f.vm!r}" if f.vm is not None else "the trace"
        have = ", ".join(map(str, seen)) or "none"
        raise UsageError(f"--vcpu: no vCPU {f.vcpu} in {where} (it has {have})")


def filter_result(a: Analysis, f: Filters, whole: Trace | None = None) -> Analysis:
    """--vcpu: keep the rows of the result tables that involve that vCPU. --vm (given the whole,
    unfiltered trace): what ran on each pCPU is told from every VM's vCPUs, so another VM's vCPU
    that took a preempted vCPU's pCPU is shown as itself, never as a host task."""
    if f.vm is not None and whole is not None:
        a = _other_vms_shown(a, f, whole)
    if f.vcpu is None:
        return a
    tables = dict(a.tables)
    for name, cols in _VCPU_COLUMNS.items():
        if name in tables:
            keep = pl.lit(False)
            for c in cols:
                keep |= pl.col(c) == f.vcpu
            tables[name] = tables[name].filter(keep.fill_null(False))
    if "waits" in tables and "lock_callers" in tables:
        locks = tables["waits"].select("vm", "lock").unique()
        tables["lock_callers"] = tables["lock_callers"].join(locks, on=["vm", "lock"], how="semi")
        tables["waste_by_lock"] = tables["waste_by_lock"].join(locks, on=["vm", "lock"], how="semi")
    return Analysis(tables=tables, summary=a.summary)


def _other_vms_shown(a: Analysis, f: Filters, whole: Trace) -> Analysis:
    """The incidents' `ran_instead` and the pCPU timeline from the placements of every VM in the
    window (the --vm analysis dropped the other VMs' events, so their runs read as host tasks)."""
    from pvtrace.analyze import context  # the context stage: only for a --vm filter

    events = whole.events.lazy().filter(_in_window(*f.bounds(whole.t_start)))
    tables = dict(a.tables)
    tables["pcpu_timeline"] = context.pcpu_timeline(events)
    tables["incidents"] = context.incidents(a.table("lhp_incidents"), a.table("lwp_incidents"), events)
    return Analysis(tables=tables, summary=a.summary)
