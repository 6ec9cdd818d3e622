"""`pvtrace fleet analyze` and `pvtrace fleet report`: many traces on a Dask cluster, and their report."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from pvtrace.cli.common import LOCK_KIND_HELP, checked_lock_kind, err, handle_errors, out, progress
from pvtrace.cli.ingest import check_read_options
from pvtrace.outputs import OutputSet, plan_output, refuse_stdout

# Exit status of a fleet that ran to its end but has traces that failed (they are failure rows).
EXIT_SOME_FAILED = 3

T = TypeVar("T")

SCHEDULER_HELP = "Address of a running Dask scheduler (tcp://HOST:PORT); default: a local cluster."
WORKERS_HELP = "Local cluster: worker processes (default one per core). With --scheduler: wait for N workers."
DASHBOARD_HELP = "Print the address of the Dask dashboard (live tasks, workers' memory; it needs bokeh)."


def finish_tally(tally, ran: str, dest: Path, failures: str, quiet: bool) -> None:
    """What a fleet or sweep run did, its first failures, and exit 3 when any task failed."""
    if not quiet:
        n_failed = len(tally.failed)
        err.print(f"{ran}: {tally.done} done, {n_failed} failed -> {dest}", highlight=False, soft_wrap=True)
        for f in tally.failed[:20]:
            err.print(
                f"  [red]failed[/] {escape(f['trace'])} ({f['stage']}): {escape(f['error'])}",
                highlight=False,
                soft_wrap=True,
            )
        if n_failed > 20:
            err.print(f"  ... and {n_failed - 20} more ({failures})", highlight=False, soft_wrap=True)
    if tally.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def check_results_folder(root: Path, marker: str) -> None:
    """FLEET_DIR or SWEEP_DIR writable, before the plan line and the cluster's start (a file in its
    place or a read-only folder was found seconds later, after 'N to analyze'). marker: the file
    that makes the folder ours (fleet.json, sweep.json)."""
    from pvtrace.fleet.store import check_root

    refuse_stdout(root)
    plan_output(root / marker, force=True)
    check_root(root, marker, marker.removesuffix(".json"))


def run_on_cluster(
    what: str,
    replan: Callable[[], Any],
    scheduler: str | None,
    workers: int | None,
    quiet: bool,
    dashboard: bool,
    run: Callable[[Any, Callable[[Any], None]], T],
) -> T:
    """A fleet or sweep run on its Dask cluster: run(client, on_progress) with a progress bar over
    `what`, and the dashboard's address when asked (`dashboard`: it was printed on every run, with
    how to install bokeh, which the dashboard's own page says). Ctrl-C (SIGTERM, SIGHUP) stops it in one line once the
    cluster is closed: what finished is kept (replan() counts it as a rerun would), and a rerun
    resumes."""
    from pvtrace.fleet.cluster import dashboard_note, open_client

    try:
        with open_client(scheduler, workers) as client:
            if dashboard:
                err.print(dashboard_note(client), highlight=False, soft_wrap=True)
            with progress(what, total=None, quiet=quiet) as bar:
                return run(client, lambda tally: bar.update(completed=tally.ran, total=tally.todo))
    except KeyboardInterrupt as exc:
        t = replan()
        err.print(
            f"[bold red]interrupted[/]; {t.skipped_done} of {t.total} {what} done, rerun to resume",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(128 + getattr(exc, "signum", signal.SIGINT)) from None


def register(app: typer.Typer) -> None:
    """Add `pvtrace fleet ...`."""
    fleet = typer.Typer(
        help="Analyze many traces on a Dask cluster into one results folder, and report on them.",
        no_args_is_help=True,
    )
    app.add_typer(fleet, name="fleet")

    @fleet.command("analyze")
    @handle_errors
    def analyze_cmd(
        inputs: Annotated[
            list[str],
            typer.Argument(
                help="Trace files, folders, globs, or a manifest (CSV/Parquet: path, trace, labels)."
            ),
        ],
        out_dir: Annotated[Path, typer.Option("-o", "--out", help="The fleet folder (FLEET_DIR).")],
        scheduler: Annotated[str | None, typer.Option("--scheduler", help=SCHEDULER_HELP)] = None,
        workers: Annotated[int | None, typer.Option("--workers", min=1, help=WORKERS_HELP)] = None,
        worst: Annotated[
            int, typer.Option("--worst", min=0, help="Worst LHP and LWP incidents kept per trace.")
        ] = 10,
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="Analyze again the traces that failed before.")
        ] = False,
        lock_kind: Annotated[str | None, typer.Option("--lock-kind", help=LOCK_KIND_HELP)] = None,
        fmt: Annotated[str, typer.Option("--format", help="Input format (auto: detect per trace).")] = "auto",
        strict: Annotated[bool, typer.Option("--strict", help="Malformed input lines are fatal.")] = False,
        quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar, no summary.")] = False,
        dashboard: Annotated[bool, typer.Option("--dashboard", help=DASHBOARD_HELP)] = False,
    ) -> None:
        """Ingest and analyze every trace as one Dask task; parts land in FLEET_DIR as they finish.

        Exit status 3 when some traces failed (stage and error on stderr and in FLEET_DIR/failures).
        """
        from pvtrace.fleet.inputs import expand_inputs, split_captures
        from pvtrace.fleet.run import plan, run_fleet
        from pvtrace.fleet.store import check_options

        checked_lock_kind(lock_kind)
        check_read_options(fmt)
        check_results_folder(out_dir, "fleet.json")
        options = {"format": fmt, "lock_kind": lock_kind, "strict": strict}
        check_options(out_dir, options)  # (results of other options would count every trace twice)
        traces = expand_inputs(inputs, options)
        for group in split_captures(traces):  # analyze warns of guest files left out; so does a fleet
            err.print(
                f"warning: {', '.join(map(escape, group))} look like one capture (a host trace and its guests') "
                "and are analyzed as separate traces, none of which can join lock waits with vCPU states; "
                "a manifest with a `trace` column makes them one (docs/fleet.md)",
                highlight=False,
                soft_wrap=True,
            )
        _, before = plan(traces, out_dir, retry_failed)
        if not quiet:
            err.print(
                f"fleet: {before.total} traces; {before.skipped_done} done before, "
                f"{before.skipped_failed} failed before"
                + (" (skipped: --retry-failed retries them)" if before.skipped_failed else "")
                + f"; {before.todo} to analyze",
                highlight=False,
                soft_wrap=True,
            )
        if before.todo == 0:
            return  # nothing to do: no cluster started

        tally = run_on_cluster(
            "traces",
            lambda: plan(traces, out_dir, retry_failed)[1],
            scheduler,
            workers,
            quiet,
            dashboard,
            lambda client, tick: run_fleet(
                client,
                traces,
                out_dir,
                options=options,
                worst=worst,
                retry_failed=retry_failed,
                on_progress=tick,
            ),
        )
        finish_tally(tally, f"analyzed {tally.ran}", out_dir, "FLEET_DIR/failures", quiet)

    @fleet.command("report")
    @handle_errors
    def report_cmd(
        fleet_dir: Annotated[Path, typer.Argument(help="A fleet folder written by `pvtrace fleet analyze`.")],
        output: Annotated[
            Path | None, typer.Option("-o", "--out", help="Write the HTML report here.")
        ] = None,
        top: Annotated[int, typer.Option("--top", min=1, help="Top offenders listed.")] = 10,
        force: Annotated[bool, typer.Option("--force", help="Overwrite the report file.")] = False,
        quiet: Annotated[
            bool, typer.Option("-q", "--quiet", help="No progress bar and no 'Wrote' line.")
        ] = False,
    ) -> None:
        """The fleet's waste per trace, host, VM and lock; top offenders; waste against each label; failures."""
        from pvtrace.fleet.report import load_fleet, render_terminal, write_fleet_report

        with OutputSet(force=force, inputs=[fleet_dir]) as outputs:
            if output is not None:  # before the work: a page already there, an unwritable folder
                outputs.plan(output, new=True)
            data = load_fleet(fleet_dir)
            render_terminal(data, out, top=top)
            if output is not None:
                with progress("writing the page", total=None, quiet=quiet) as bar:
                    write_fleet_report(data, output, top=top, force=force, progress=bar.advance)
        if output is not None and not quiet:
            out.print(f"Wrote {escape(str(output))}")
