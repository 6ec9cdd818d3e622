"""Writing a view of a run to disk in one format: the files a real capture would give.

A host (or merged) text capture comes with `<output>.vcpus.csv`, the vCPU map
(tid, QEMU pid, vm, vcpu) that `pvtrace ingest` picks up next to its input, and
a merged one whose guest files are on their own clocks with
`<output>.guest-offsets.csv`, the offsets the run used (host = guest + offset).
Guest text files are one per VM, `<stem>-<vm><suffix>`, each on its guest's
own clock, except inside a merged trace-cmd report (one file, host clock).
Nothing is overwritten without force, and a failed write leaves no partial file (pvtrace.outputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from pvtrace.errors import UsageError
from pvtrace.ingest.offsets_file import GivenClock, offsets_path, write_offsets
from pvtrace.outputs import OutputSet, atomic_file, current
from pvtrace.simulate.render.ftrace import to_ftrace
from pvtrace.simulate.render.guest import guest_offset_ns
from pvtrace.simulate.render.identities import vcpu_map, vm_names
from pvtrace.simulate.render.perf import to_perf_script
from pvtrace.simulate.render.tracecmd import to_trace_cmd_report
from pvtrace.simulate.views import VIEWS, select_view
from pvtrace.trace import Trace, check_writable, write_trace

FORMATS: tuple[str, ...] = ("parquet", "ftrace", "trace-cmd", "perf")

Writer = Callable[[TextIO], object]


def guest_path(out_path: Path, vm: str) -> Path:
    """The per-VM guest file next to out_path: <stem>-<vm><suffix>."""
    return out_path.with_name(f"{out_path.stem}-{vm}{out_path.suffix}")


def vcpu_map_path(out_path: Path) -> Path:
    """The vCPU map side file of a host capture: <output>.vcpus.csv."""
    return out_path.with_name(out_path.name + ".vcpus.csv")


def _plan(trace: Trace, fmt: str, view: str, out_path: Path, ns: bool | None) -> list[tuple[Path, Writer]]:
    """(path, writer) for every text file the view needs in the format."""
    if view == "full":
        raise UsageError(
            "view 'full' holds events no tracer prints (lock releases, uncontended acquisitions, pv_halt); "
            "text formats take --view host, guest or merged"
        )
    if fmt == "ftrace" and ns:
        raise UsageError(
            "ftrace text has microsecond timestamps; use --format trace-cmd (or perf) for nanoseconds"
        )
    host = view in ("host", "merged")
    guests = view in ("guest", "merged")
    plan: list[tuple[Path, Writer]] = []
    if fmt == "ftrace":
        if host:
            plan.append((out_path, lambda out: to_ftrace(trace, out, side="host")))
        if guests:
            for vm in vm_names(trace):
                plan.append(
                    (guest_path(out_path, vm), lambda out, vm=vm: to_ftrace(trace, out, side="guest", vm=vm))
                )
    elif fmt == "trace-cmd":
        ns_tc = True if ns is None else ns
        if view == "guest":
            for vm in vm_names(trace):
                plan.append(
                    (
                        guest_path(out_path, vm),
                        lambda out, vm=vm: to_trace_cmd_report(trace, out, side="guest", vm=vm, ns=ns_tc),
                    )
                )
        else:
            plan.append((out_path, lambda out: to_trace_cmd_report(trace, out, side=view, ns=ns_tc)))
    elif fmt == "perf":
        ns_perf = bool(ns)
        if host:
            plan.append((out_path, lambda out: to_perf_script(trace, out, side="host", ns=ns_perf)))
        if guests:
            for vm in vm_names(trace):
                plan.append(
                    (
                        guest_path(out_path, vm),
                        lambda out, vm=vm: to_perf_script(trace, out, side="guest", vm=vm, ns=ns_perf),
                    )
                )
    else:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    offsets = guest_offsets(trace)
    if host and guests and fmt != "trace-cmd" and offsets:  # guest files on their own clocks
        plan.append((offsets_path(out_path), lambda out: write_offsets(offsets, out, "pvtrace generate")))
    if host:
        plan.append((vcpu_map_path(out_path), lambda out: vcpu_map(trace).write_csv(out)))
    return plan


def guest_offsets(trace: Trace) -> dict[str, int | GivenClock]:
    """{vm: offset_ns} of the run's guests that have a clock offset (host = guest + offset_ns), as
    the side file gives them: a guest clock that drifts (guest = host - offset + ppm * 1e-6 * host,
    render.guest) as the line host = guest + offset / (1 + p) - p / (1 + p) * guest, p = ppm * 1e-6."""
    drifts = trace.meta.clock.get("guest_drift_ppm") or {}
    out: dict[str, int | GivenClock] = {}
    for vm in vm_names(trace):
        offset, p = guest_offset_ns(trace, vm), float(drifts.get(vm, 0.0)) / 1e6
        out[vm] = GivenClock(round(offset / (1 + p)), p / (1 + p) * 1e6) if p else offset
    return out


def _write_atomically(path: Path, writer: Writer, force: bool) -> None:
    with atomic_file(path, force) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as out:
        writer(out)


def write_rendered(
    trace: Trace, fmt: str, view: str, out_path: Path | str, force: bool = False, *, ns: bool | None = None
) -> list[Path]:
    """Write `view` of the run in `fmt` (parquet, ftrace, trace-cmd, perf) at out_path; return the files.

    ns chooses the timestamp resolution where the tool offers both: trace-cmd prints
    nanoseconds by default (`report -t`), perf microseconds (`--ns` for nanoseconds);
    ftrace text is always microseconds.
    """
    if view not in VIEWS:
        raise UsageError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    out_path = Path(out_path)
    seen = select_view(trace, view)
    if fmt == "parquet":
        write_trace(seen, out_path, force=force)
        return [out_path]
    plan = _plan(seen, fmt, view, out_path, ns)
    for path, _ in plan:
        check_writable(path, force)  # all checked before any is written
    # every file or none (pvtrace.outputs): inside the command's OutputSet, or a set of their own
    with OutputSet(force=force) if current() is None else contextlib.nullcontext():
        for path, writer in plan:
            _write_atomically(path, writer, force)
    return [path for path, _ in plan]
