"""CLI for the record stage: `pvtrace record --guest|--host ... [-- COMMAND ...]`."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.table import Table

from pvtrace.cli.common import err, handle_errors, out, print_titled, progress
from pvtrace.errors import UsageError
from pvtrace.record.capture import DEFAULT_BUFFER_KB, CaptureRequest, CaptureResult, record
from pvtrace.record.inventory import STACK_PSEUDO_EVENT
from pvtrace.record.kvm_clock import DEBUGFS_KVM
from pvtrace.record.tracefs import Tracefs
from pvtrace.record.vcpu_map import PROC

_ENDED_BY = {"command": "when the command ended", "duration": "at --duration", "ctrl-c": "by Ctrl-C"}
_STATUS_MARK = {
    "yes": "[green]yes[/]",
    "part": "[yellow]in part[/]",
    "needs other side": "[yellow]with the other side[/]",
    "unmapped": "[yellow]unmapped[/]",
    "none seen": "[yellow]none seen[/]",
}


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def command_status(code: int | None) -> str:
    """', command exit status N', or the signal that ended it (Popen's -N), for the summary line."""
    if code is None:
        return ""
    if code >= 0:
        return f", command exit status {code}"
    try:
        return f", command ended by {signal.Signals(-code).name}"
    except ValueError:  # a signal with no name (real-time)
        return f", command ended by signal {-code}"


def print_summary(result: CaptureResult) -> None:
    """The end-of-capture report: events by tracepoint, lost events, what each analysis can get."""
    ended = _ENDED_BY[result.ended_by]
    status = command_status(result.command_status)
    size = _fmt_bytes(result.outputs["text"].stat().st_size)
    out.print(
        f"[bold]Recorded a {result.mode} trace[/] for {result.wall_ns / 1e9:.2f} s "
        f"(stopped {ended}{status}): {result.outputs['text']} ({size})"
    )
    table = Table(title="Events by tracepoint", title_justify="left", show_edge=False)
    table.add_column("tracepoint")
    table.add_column("events", justify="right")
    by_name = {e.partition(":")[2]: e for e in result.events}
    counts = result.inventory.counts
    for name in sorted(set(counts) | set(by_name), key=lambda n: (-counts.get(n, 0), n)):
        label = "stack traces (trigger)" if name == STACK_PSEUDO_EVENT else by_name.get(name, name)
        table.add_row(label, f"{counts.get(name, 0):,}")
    print_titled(out, table)

    if result.n_lost:
        per_cpu = ", ".join(f"cpu{s.cpu} {s.n_lost:,}" for s in result.stats if s.n_lost)
        out.print(
            f"[bold red]Lost events: {result.n_lost:,}[/] ({per_cpu}; ring-buffer overrun/dropped counters). "
            f"The buffer was too small for the event rate: re-run with --buffer-kb {result.suggested_buffer_kb} "
            "or a shorter capture. The ingester marks the losses; waits across them are not measured."
        )
    else:
        out.print("Lost events: none (per-CPU ring-buffer overrun and dropped counters are 0)")
    inv = result.inventory
    if result.stacktrace:
        cost = (
            ""
            if inv.stack_cost_median_ns is None
            else f"; taking one costs {inv.stack_cost_median_ns / 1000:.1f} us (median), time that lands inside each SPIN wait: use --no-stacktrace for exact wait times"
        )
        out.print(f"Stack traces of SPIN waits: {inv.n_stacks:,}{cost}")
    if result.steal_ns is not None:
        out.print(f"Steal time during the capture (all vCPUs, /proc/stat): {result.steal_ns / 1e6:.0f} ms")
    if result.mode == "host":
        out.print(
            f"vCPU threads mapped: {result.n_vcpu_threads} (side file {result.outputs.get('vcpus')})",
            markup=False,
        )

    needs = Table(title="What this trace can feed", title_justify="left", show_edge=False)
    needs.add_column("analysis")
    needs.add_column("status")
    needs.add_column("why")
    for c in result.coverage:
        needs.add_row(c.analysis, _STATUS_MARK.get(c.status, f"[red]{c.status}[/]"), c.detail)
    print_titled(out, needs)
    for note in result.notes:
        out.print(note, markup=False)
    out.print("Files: " + ", ".join(str(p) for p in result.outputs.values()), markup=False)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""

    @app.command("record")
    @handle_errors
    def record_cmd(
        command: list[str] | None = typer.Argument(
            None, help="Command to run while recording (put it after --); tracing stops when it ends."
        ),
        guest: bool = typer.Option(False, "--guest", help="Record inside a VM: lock contention + scheduler."),
        host: bool = typer.Option(
            False, "--host", help="Record on the KVM host: exits, vCPU threads, kicks."
        ),
        output: Path | None = typer.Option(
            None,
            "-o",
            "--out",
            help="ftrace text to write (.xz/.gz/.zst compress it); default pvtrace-guest.txt / pvtrace-host.txt.",
        ),
        duration: float | None = typer.Option(
            None, "--duration", help="Seconds to record (caps a command; without one, Ctrl-C stops)."
        ),
        buffer_kb: int = typer.Option(DEFAULT_BUFFER_KB, "--buffer-kb", help="Ring buffer per CPU, KiB."),
        instance: str | None = typer.Option(
            None, "--instance", help="tracefs instance name (default pvtrace-<pid>)."
        ),
        stacktrace: bool | None = typer.Option(
            None,
            "--stacktrace/--no-stacktrace",
            help="Guest: stack trace of each SPIN lock wait (default: on where the kernel allows).",
        ),
        irq: bool = typer.Option(False, "--irq", help="Also record irq and irq_vectors entry/exit events."),
        ticks: bool | None = typer.Option(
            None,
            "--ticks/--no-ticks",
            help="Guest: scheduler ticks and per-CPU steal samples (vCPU preemption from inside the "
            "guest; default: on).",
        ),
        clock: str | None = typer.Option(
            None,
            "--clock",
            help="Trace clock (default: the kernel's, local). x86-tsc on both host and guests lets "
            "--host save each guest's offset from KVM's TSC offset.",
        ),
        dat: bool = typer.Option(
            False,
            "--dat",
            help="Also write a trace.dat next to -o (trace-cmd restore of the instance's binary "
            "buffers: needs trace-cmd, and is about as large as the buffers filled).",
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
        quiet: bool = typer.Option(
            False, "-q", "--quiet", help="No progress bar, status lines or summary (warnings still)."
        ),
        tracefs_root: Path | None = typer.Option(None, "--tracefs-root", hidden=True),
        proc_root: Path = typer.Option(PROC, "--proc-root", hidden=True),
        kvm_debugfs: Path = typer.Option(DEBUGFS_KVM, "--kvm-debugfs", hidden=True),
    ) -> None:
        """Capture a trace pvtrace can analyze, through a private tracefs instance (needs root)."""
        if guest == host:
            raise UsageError("say where you record: --guest (inside a VM) or --host (on the KVM host)")
        mode = "guest" if guest else "host"
        if host and ticks is not None:  # as --stacktrace: a guest option, not silently dropped
            raise UsageError("--ticks/--no-ticks is a guest option (the guest's scheduler ticks and steal)")
        req = CaptureRequest(
            mode=mode,
            output=output or Path(f"pvtrace-{mode}.txt"),
            duration=duration,
            buffer_kb=buffer_kb,
            instance=instance,
            stacktrace=stacktrace,
            irq=irq,
            ticks=ticks is not False,
            force=force,
            command=list(command or []),
            clock=clock,
            trace_dat=dat,
        )
        result = record(
            req,
            tracefs=Tracefs(tracefs_root) if tracefs_root is not None else None,
            proc_root=proc_root,
            kvm_debugfs=kvm_debugfs,
            # -q keeps the warnings only (the status lines are for a person watching)
            notify=lambda message: (
                None
                if quiet and not message.startswith("warning:")
                else err.print(message, highlight=False, soft_wrap=True)
            ),
            progress=lambda description, total: progress(description, total, quiet=quiet),
        )
        if not quiet:
            print_summary(result)
