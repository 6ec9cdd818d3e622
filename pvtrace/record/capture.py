"""Record a guest or host trace through a private tracefs instance, and clean up always.

The sequence: preflight; create the instance with tracing off; set its buffer
size, events and (guest) the stack-trace trigger on SPIN contentions; switch
tracing on; run the command or wait; switch tracing off; copy the instance's
`trace` text (non-consuming) to the output, then (with --dat, when trace-cmd
is installed) turn the instance's binary per-CPU pages into a trace.dat with
`trace-cmd restore`. `trace-cmd extract` is not used: it resets the
top-level instance, which pvtrace never touches. Whatever happens (success,
error, Ctrl-C, SIGTERM) the instance is removed and a tracefs this run
mounted is unmounted.

Ctrl-C while recording stops the recording and saves what was captured (the
normal way to end a capture without --duration or command); a second Ctrl-C,
or SIGTERM/SIGHUP at any time, aborts without output.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import lzma
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import zstandard

from pvtrace import __version__
from pvtrace.errors import RecordError, UsageError
from pvtrace.ingest.offsets_file import offsets_path
from pvtrace.outputs import OutputSet, atomic_file, current, staged_output, write_errors
from pvtrace.record.events import SPIN_STACK_TRIGGER, STACK_EVENT, TICK_EVENT, Mode
from pvtrace.record.inventory import Coverage, Inventory, coverage, inventory
from pvtrace.record.kvm_clock import (
    DEBUGFS_KVM,
    GuestOffsets,
    guest_offsets,
    read_tsc_offsets,
    write_offsets_file,
)
from pvtrace.record.preflight import Plan, Problem, preflight
from pvtrace.record.steal import KMSG, StealSampler, pv_spinlocks
from pvtrace.record.tracefs import MOUNTS, CpuStats, Instance, Tracefs, find_tracefs, unmount_tracefs
from pvtrace.record.vcpu_map import (
    PROC,
    VCPU_MAP_SCHEMA,
    merge_maps,
    scan_vcpu_threads,
    vcpu_map_path,
    write_vcpu_map,
)
from pvtrace.trace import check_writable

DEFAULT_BUFFER_KB = 8192
STOP_GRACE_S = 5.0
POLL_S = 0.05
_COMPRESSORS = (".xz", ".gz", ".zst")
_CHUNK = 1 << 20


class ProgressHandle(Protocol):
    def advance(self, n: float = 1) -> None: ...


ProgressFactory = Callable[[str, float | None], AbstractContextManager[ProgressHandle]]


class _NoProgress:
    def advance(self, n: float = 1) -> None:
        pass


@contextlib.contextmanager
def no_progress(description: str, total: float | None) -> Iterator[ProgressHandle]:
    yield _NoProgress()


class CaptureSignalled(RecordError):
    """SIGTERM/SIGHUP arrived: the capture was aborted (and cleaned up)."""

    def __init__(self, signum: int):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"aborted by {name}; tracing stopped, instance removed, nothing written")


@dataclass
class CaptureRequest:
    """What the user asked for."""

    mode: Mode
    output: Path
    duration: float | None = None
    buffer_kb: int = DEFAULT_BUFFER_KB
    instance: str | None = None  # default: pvtrace-<pid>
    stacktrace: bool | None = None  # None: guest yes where the kernel allows, host no
    irq: bool = False
    ticks: bool = True  # guest: scheduler ticks and steal samples (the guest-inferred level)
    force: bool = False
    command: list[str] = field(default_factory=list)
    trace_dat: bool = False  # --dat: also a trace.dat (needs trace-cmd); never unasked
    clock: str | None = None  # trace clock to select; None keeps the instance's (local)


@dataclass
class OutputPaths:
    text: Path
    dat: Path
    record: Path
    compression: str | None  # ".xz", ".gz", ".zst" or None

    @property
    def vcpus(self) -> Path:
        return vcpu_map_path(self.text)

    @property
    def dat_vcpus(self) -> Path:
        return vcpu_map_path(self.dat)


def output_paths(output: Path) -> OutputPaths:
    """The files one capture writes, all derived from -o."""
    compression = output.suffix if output.suffix in _COMPRESSORS else None
    base = output.with_suffix("") if compression else output
    if base.suffix == ".dat":
        raise UsageError(f"-o {output}: -o names the text trace; --dat writes a trace.dat next to it")
    if base.suffix == ".parquet":
        raise UsageError(f"-o {output}: record writes ftrace text; convert it with `pvtrace ingest`")
    stem = base.with_suffix("") if base.suffix else base
    return OutputPaths(
        text=output,
        dat=stem.with_name(stem.name + ".dat"),
        record=stem.with_name(stem.name + ".record.json"),
        compression=compression,
    )


@dataclass
class CaptureResult:
    """What a capture did and what it wrote."""

    mode: Mode
    outputs: dict[str, Path]  # text, dat, vcpus, record: only those written
    instance: str
    events: list[str]
    stacktrace: bool
    buffer_kb: int
    wall_ns: int
    ended_by: str  # "command", "duration", "ctrl-c"
    command_status: int | None
    stats: list[CpuStats]
    inventory: Inventory
    coverage: list[Coverage]
    n_vcpu_threads: int
    warnings: list[Problem]
    notes: list[str]
    platform: dict[str, Any]
    steal_ns: int | None = None
    clock: str | None = None
    guest_clock: GuestOffsets | None = None  # host mode: offsets from KVM debugfs, or why not
    mounted_here: str | None = None

    @property
    def n_lost(self) -> int:
        return sum(s.n_lost for s in self.stats)

    @property
    def suggested_buffer_kb(self) -> int | None:
        """A buffer that would have held the busiest CPU's events with 25% spare (when events were lost)."""
        if not self.n_lost:
            return None
        worst = max(self.stats, key=lambda s: s.n_lost)
        need = self.buffer_kb * (worst.entries + worst.n_lost) / max(worst.entries, 1) * 1.25
        return 1 << max(int(need) - 1, 1).bit_length()


def _read_steal_ticks(proc_root: Path) -> int | None:
    """Steal time of all CPUs (8th value of the `cpu` line of /proc/stat), in USER_HZ ticks."""
    try:
        first = (proc_root / "stat").read_text().splitlines()[0].split()
        return int(first[8]) if first[0] == "cpu" and len(first) > 8 else None
    except (OSError, ValueError, IndexError):
        return None


class _Signals:
    """What SIGINT means right now: while recording it asks to stop (and save); otherwise it aborts.

    Stopping is a flag the wait loop polls, never an exception, so a Ctrl-C
    landing inside, say, the start of the command cannot tear the run apart.
    """

    def __init__(self) -> None:
        self.recording = False
        self.stop_requested = False

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.recording and not self.stop_requested:
            self.stop_requested = True
            return
        raise KeyboardInterrupt

    @staticmethod
    def on_abort(signum: int, frame: Any) -> None:
        raise CaptureSignalled(signum)


@contextlib.contextmanager
def _signal_handling() -> Iterator[_Signals]:
    """SIGINT as described in _Signals (even when the shell started us with it ignored,
    as for a background job); SIGTERM/SIGHUP abort through an exception so cleanup
    runs. The previous handlers are restored afterwards."""
    state = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    old = {s: signal.signal(s, state.on_abort) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, state.on_sigint)
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _stop_command(proc: subprocess.Popen[bytes]) -> None:
    """Ask the command to end like Ctrl-C would, then insist."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)


def _wait(
    req: CaptureRequest,
    proc: subprocess.Popen[bytes] | None,
    signals: _Signals,
    notify: Callable[[str], None],
    progress: ProgressFactory,
) -> str:
    """Wait while tracing is on; returns what ended the recording.

    Polls in short sleeps rather than blocking in waitpid or a long sleep: a
    signal may be delivered to another thread (polars' pool), and Python only
    runs its handler when the main thread gets back to the interpreter.
    """
    deadline = None if req.duration is None else time.monotonic() + req.duration
    if proc is None and deadline is None:
        notify("recording; press Ctrl-C to stop")
    bar_factory = progress if proc is None else no_progress  # a command owns the terminal
    with bar_factory("recording", req.duration) as bar:
        while not signals.stop_requested:
            if proc is not None and proc.poll() is not None:
                return "command"
            left = POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return "duration"
            step = min(POLL_S, left)
            time.sleep(step)
            bar.advance(step)
    return "ctrl-c"


def _open_compressed(path: Path, compression: str | None) -> Any:
    if compression == ".xz":
        return lzma.open(path, "wb", preset=6)
    if compression == ".gz":
        return gzip.open(path, "wb")
    if compression == ".zst":
        return zstandard.ZstdCompressor(level=19).stream_writer(path.open("wb"))
    return path.open("wb")


def _copy(src: Path, dest: Any, bar: ProgressHandle) -> None:
    with src.open("rb") as f:
        while chunk := f.read(_CHUNK):
            dest.write(chunk)
            bar.advance(len(chunk))


def _save_text(src: Path, paths: OutputPaths, progress: ProgressFactory) -> Inventory:
    """Copy the instance's trace text (compressing when -o asks), and count what it holds."""
    with staged_output(paths.text) as staged, write_errors(paths.text):
        done = staged.tmp
        plain = done if paths.compression is None else done.with_name(done.name + ".plain")
        try:
            with plain.open("wb") as out, progress("reading trace", None) as bar:
                _copy(src, out, bar)
            inv = inventory(plain)
            if paths.compression is not None:
                size = plain.stat().st_size
                with _open_compressed(done, paths.compression) as out, progress("compressing", size) as bar:
                    _copy(plain, out, bar)
        finally:
            if plain != done:
                plain.unlink(missing_ok=True)
    return inv


class _DatFailed(Exception):
    """trace-cmd restore could not build the .dat (the note says why)."""


def _save_dat(instance: Instance, dest: Path) -> tuple[str, bool]:
    """Build a trace.dat from the instance's binary pages; returns a note, and whether it was written.

    Uses `trace-cmd restore -c` (reads event formats, kallsyms and cmdlines; it
    sets kptr_restrict to 0 while it reads kallsyms and then restores it) and
    `trace-cmd restore -i` on the drained trace_pipe_raw files. Must run
    after the text was copied: draining consumes the buffer.
    """
    trace_cmd = shutil.which("trace-cmd")
    if trace_cmd is None:
        return "no trace.dat: trace-cmd is not installed", False
    if find_tracefs() != instance.tracefs.root:
        return f"no trace.dat: trace-cmd reads only the system tracefs, not {instance.tracefs.root}", False
    with tempfile.TemporaryDirectory(prefix="pvtrace-dat-") as tmp_dir:
        tmp = Path(tmp_dir)
        head = tmp / "head.dat"
        raws = []
        for cpu in instance.tracefs.cpus():
            raw = tmp / f"cpu{cpu}.raw"
            instance.drain_raw(cpu, raw)
            raws.append(str(raw))
        try:
            with staged_output(dest) as staged:
                for args in (
                    ["restore", "-c", "-o", str(head)],
                    ["restore", "-i", str(head), "-o", str(staged.tmp), *raws],
                ):
                    res = subprocess.run(
                        [trace_cmd, *args], cwd=tmp, capture_output=True, text=True, check=False
                    )
                    if res.returncode != 0:
                        why = res.stderr.strip()[-200:]
                        raise _DatFailed(f"no trace.dat: trace-cmd {' '.join(args[:2])} failed: {why}")
        except _DatFailed as exc:
            return str(exc), False
    return f"trace.dat built by trace-cmd restore from the instance's raw buffers: {dest}", True


def _set_stack_trigger(instance: Instance, notes: list[Problem]) -> bool:
    try:
        instance.add_trigger(STACK_EVENT, SPIN_STACK_TRIGGER)
        return True
    except RecordError as exc:
        notes.append(Problem("warning", f"no stack traces of SPIN waits: {exc}"))
        return False


def _teardown(instance: Instance, events: list[str], stacktrace: bool) -> None:
    """Switch the instance off and remove it (its buffer, events and triggers go with it)."""
    with contextlib.suppress(RecordError):
        instance.set_tracing(False)
    if stacktrace:
        with contextlib.suppress(RecordError):
            instance.remove_trigger(STACK_EVENT, "stacktrace")
    for event in events:
        with contextlib.suppress(RecordError):
            instance.enable_event(event, on=False)
    instance.remove()


def record(
    req: CaptureRequest,
    *,
    tracefs: Tracefs | None = None,
    proc_root: Path = PROC,
    mounts: Path = MOUNTS,
    euid: int | None = None,
    notify: Callable[[str], None] = lambda message: None,
    progress: ProgressFactory = no_progress,
    kvm_debugfs: Path = DEBUGFS_KVM,
    kmsg: Path = KMSG,
) -> CaptureResult:
    """Capture one trace; see the module docstring for the sequence and guarantees."""
    paths = output_paths(req.output)
    targets = [paths.text, paths.record]
    if req.trace_dat and shutil.which("trace-cmd"):
        targets.append(paths.dat)
    if req.mode == "host":
        targets += [paths.vcpus, paths.dat_vcpus] if paths.dat in targets else [paths.vcpus]
        targets.append(offsets_path(paths.text))
    # every file of the capture appears together at the end, or none (pvtrace.outputs)
    with OutputSet(force=req.force) if current() is None else contextlib.nullcontext():
        for path in targets:
            check_writable(path, req.force)
        return _record_checked(
            req, paths, tracefs, proc_root, mounts, euid, notify, progress, kvm_debugfs, kmsg
        )


def _record_checked(
    req: CaptureRequest,
    paths: OutputPaths,
    tracefs: Tracefs | None,
    proc_root: Path,
    mounts: Path,
    euid: int | None,
    notify: Callable[[str], None],
    progress: ProgressFactory,
    kvm_debugfs: Path,
    kmsg: Path,
) -> CaptureResult:
    with _signal_handling() as signals:
        plan = preflight(
            req.mode,
            buffer_kb=req.buffer_kb,
            irq=req.irq,
            stacktrace=req.stacktrace,
            command=req.command,
            duration=req.duration,
            tracefs=tracefs,
            mounts=mounts,
            proc_root=proc_root,
            euid=euid,
        )
        try:
            return _record_planned(req, plan, paths, proc_root, signals, notify, progress, kvm_debugfs, kmsg)
        finally:
            if plan.mounted_here is not None:
                why = unmount_tracefs(plan.mounted_here)
                if why:
                    notify(f"warning: tracefs stays mounted at {plan.mounted_here}: {why}")


def _record_planned(
    req: CaptureRequest,
    plan: Plan,
    paths: OutputPaths,
    proc_root: Path,
    signals: _Signals,
    notify: Callable[[str], None],
    progress: ProgressFactory,
    kvm_debugfs: Path,
    kmsg: Path,
) -> CaptureResult:
    if plan.errors:
        raise RecordError("cannot record: " + "; ".join(str(p) for p in plan.errors))
    assert plan.tracefs is not None
    if not req.ticks and not req.irq:
        plan.events = [e for e in plan.events if e != TICK_EVENT]
    warnings = list(plan.warnings)
    for problem in warnings:
        notify(f"warning: {problem}")
    if plan.mounted_here is not None:
        notify(f"mounted tracefs at {plan.mounted_here}; it is unmounted again at the end")
    instance: Instance | None = None
    proc: subprocess.Popen[bytes] | None = None
    stacktrace = False
    failed = True
    outputs: dict[str, Path] = {}
    sampler: StealSampler | None = None
    try:
        instance = plan.tracefs.create_instance(req.instance or f"pvtrace-{os.getpid()}")
        instance.set_tracing(False)
        instance.set_buffer_kb(req.buffer_kb)
        if req.clock:
            instance.set_trace_clock(req.clock)
        for event in plan.events:
            instance.enable_event(event)
        if plan.stacktrace:
            stacktrace = _set_stack_trigger(instance, warnings)
        maps = [scan_vcpu_threads(proc_root)[0]] if req.mode == "host" else []
        tsc0 = read_tsc_offsets(_vm_of_pid(maps[0]), kvm_debugfs) if maps else None
        steal0 = _read_steal_ticks(proc_root) if req.mode == "guest" else None
        t0 = time.monotonic_ns()
        signals.recording = True
        instance.set_tracing(True)
        if req.mode == "guest" and req.ticks:
            plan.platform["pv_spinlocks"] = pv_spinlocks(kmsg)  # the boot log's word (record.json, samples)
            sampler = StealSampler(
                instance.path / "trace_marker", proc_root, pv=plan.platform["pv_spinlocks"]
            )
            sampler.start()
        if req.command:
            proc = subprocess.Popen(req.command)
        ended_by = _wait(req, proc, signals, notify, progress)
        if sampler is not None:
            sampler.stop()
        instance.set_tracing(False)
        signals.recording = False
        wall_ns = time.monotonic_ns() - t0
        if proc is not None and proc.poll() is None:
            notify(f"stopping the command ({ended_by})")
            _stop_command(proc)
        steal1 = _read_steal_ticks(proc_root) if req.mode == "guest" else None
        if req.mode == "host":
            maps.append(scan_vcpu_threads(proc_root)[0])
        tsc1 = read_tsc_offsets(_vm_of_pid(maps[-1]), kvm_debugfs) if maps else None
        stats = instance.cpu_stats()
        if ended_by == "ctrl-c":  # a second one abandons the capture: say so before the seconds of saving
            notify(f"saving the trace to {paths.text} (Ctrl-C again abandons it: nothing is kept)")
        inv = _save_text(instance.trace_path, paths, progress)
        outputs["text"] = paths.text
        notes = []
        if sampler is not None:
            kept = (
                f" ({inv.n_steal_samples} in the saved trace: the ring buffer overwrote the rest)"
                if inv.n_steal_samples < sampler.n_written
                else ""
            )
            notes.append(
                f"steal samples written into the trace: {sampler.n_written}{kept}"
                if sampler.error is None
                else f"warning: steal samples stopped after {sampler.n_written}: {sampler.error}"
            )
        vcpus = merge_maps(*maps) if maps else pl.DataFrame(schema=VCPU_MAP_SCHEMA)
        if req.trace_dat:
            note, written = _save_dat(instance, paths.dat)
            notes.append(note)
            if written:
                outputs["dat"] = paths.dat
        if req.mode == "host":
            for key, trace_key in (("vcpus", "text"), ("dat_vcpus", "dat")):
                if trace_key in outputs:
                    outputs[key] = vcpu_map_path(outputs[trace_key])
                    write_vcpu_map(vcpus, outputs[key], force=True)
        guest_clock = None
        if tsc0 is not None and tsc1 is not None:
            guest_clock = guest_offsets(tsc0, tsc1, instance.trace_clock())
            if guest_clock.offsets:
                outputs["offsets"] = write_offsets_file(paths.text, guest_clock.offsets)
                notes.append(f"guest clock offsets from KVM's TSC offsets: {outputs['offsets'].name}")
            for vm, why in guest_clock.reasons.items():
                notes.append(f"no clock offset saved for {vm}: {why}")
        result = CaptureResult(
            mode=req.mode,
            outputs=outputs,
            instance=instance.name,
            events=plan.events,
            stacktrace=stacktrace,
            buffer_kb=instance.buffer_kb(),
            wall_ns=wall_ns,
            ended_by=ended_by,
            command_status=proc.returncode if proc is not None else None,
            stats=stats,
            inventory=inv,
            coverage=coverage(
                req.mode,
                inv.counts,
                plan.events,
                vcpus.height,
                pv_spinlocks=plan.platform.get("pv_spinlocks"),
            ),
            n_vcpu_threads=vcpus.height,
            warnings=warnings,
            notes=notes,
            platform=plan.platform,
            steal_ns=_ticks_to_ns(steal0, steal1),
            clock=instance.trace_clock(),
            guest_clock=guest_clock,
            mounted_here=str(plan.mounted_here) if plan.mounted_here else None,
        )
        _write_record_json(result, req, paths.record)
        outputs["record"] = paths.record
        failed = False
        return result
    finally:
        signals.recording = False
        if sampler is not None:
            sampler.halt()
        if proc is not None and proc.poll() is None:
            _stop_command(proc)
        if instance is not None:
            try:
                _teardown(instance, plan.events, stacktrace)
            except RecordError as exc:
                if not failed:
                    raise
                notify(f"warning: {exc}")


def _vm_of_pid(vcpus: pl.DataFrame) -> dict[int, str]:
    return dict(vcpus.select("pid", "vm").unique().iter_rows())


def _ticks_to_ns(before: int | None, after: int | None) -> int | None:
    if before is None or after is None:
        return None
    return (after - before) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _write_record_json(result: CaptureResult, req: CaptureRequest, path: Path) -> None:
    """Provenance of the capture, next to the trace (machine-readable twin of the summary)."""
    doc = {
        "pvtrace_version": __version__,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": result.mode,
        "command": req.command,
        "duration_s": req.duration,
        "ended_by": result.ended_by,
        "command_status": result.command_status,
        "wall_ns": result.wall_ns,
        "platform": result.platform,
        "trace_clock": result.clock,
        "guest_clock_offsets": (
            {"offsets": result.guest_clock.offsets, "not_saved": result.guest_clock.reasons}
            if result.guest_clock is not None
            else None
        ),
        "instance": result.instance,
        "buffer_kb": result.buffer_kb,
        "events": result.events,
        "stacktrace_trigger": f"{STACK_EVENT}: {SPIN_STACK_TRIGGER}" if result.stacktrace else None,
        "files": {k: v.name for k, v in result.outputs.items()},
        "counts": result.inventory.counts,
        "n_lost": result.n_lost,
        "per_cpu": [
            {
                "cpu": s.cpu,
                "entries": s.entries,
                "overrun": s.overrun,
                "commit_overrun": s.commit_overrun,
                "dropped": s.dropped,
            }
            for s in result.stats
        ],
        "lost_lines": result.inventory.n_lost_lines,
        "stack_cost_median_ns": result.inventory.stack_cost_median_ns,
        "steal_ns": result.steal_ns,
        "n_vcpu_threads": result.n_vcpu_threads,
        "coverage": [
            {"analysis": c.analysis, "status": c.status, "detail": c.detail} for c in result.coverage
        ],
        "warnings": [str(w) for w in result.warnings],
        "notes": result.notes,
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
