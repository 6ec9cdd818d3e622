"""`pvtrace fleet analyze`, as a library call: which traces still need work, their tasks, the tally."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvtrace.fleet import store
from pvtrace.fleet.atomic import sweep_partials
from pvtrace.fleet.cluster import Job
from pvtrace.fleet.inputs import TraceInput
from pvtrace.fleet.resume import Tally, run_tallied
from pvtrace.fleet.resume import plan as plan_items
from pvtrace.fleet.tasks import analyze_trace, write_failure


def plan(traces: list[TraceInput], root: Path, retry_failed: bool) -> tuple[list[TraceInput], Tally]:
    """The traces to run: not done (same id), and not failed before unless retrying."""
    return plan_items(
        traces, lambda t: t.trace_id, store.done_ids(root), store.failed_ids(root), retry_failed
    )


def run_fleet(
    client: Any,
    traces: list[TraceInput],
    root: Path,
    *,
    options: dict[str, Any],
    worst: int,
    retry_failed: bool = False,
    on_progress: Callable[[Tally], None] | None = None,
) -> Tally:
    """Analyze every trace not yet done into root, one Dask task each."""
    store.prepare(root, {"options": options, "worst_incidents": worst, "n_traces": len(traces)})
    for folder in (store.parts_dir(root), store.failures_dir(root)):
        sweep_partials(folder)
    todo, tally = plan(traces, root, retry_failed)
    where = str(root.resolve())
    jobs = (Job(f"pvtrace-fleet-{t.trace_id}", analyze_trace, (t, where, options, worst)) for t in todo)
    done = run_tallied(
        client,
        jobs,
        tally,
        name=lambda t: t.name,
        write_failure=lambda t, stage, line: write_failure(root, t, stage, line),
        crash_stage="analyze",
        is_done=lambda t: store.part_dir(root, t.trace_id).is_dir(),
        on_progress=on_progress,
    )
    # every task has finished: what a killed worker's attempt left is stale now, not only at the next run
    for folder in (store.parts_dir(root), store.failures_dir(root)):
        sweep_partials(folder)
    return done
