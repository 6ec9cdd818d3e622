"""`pvtrace fleet analyze`, as a library call: which traces still need work, their tasks, the tally."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvtrace.fleet import store
from pvtrace.fleet.atomic import sweep_partials
from pvtrace.fleet.cluster import Job, run_jobs
from pvtrace.fleet.inputs import TraceInput
from pvtrace.fleet.tasks import analyze_trace, one_line_error, write_failure


@dataclass
class Tally:
    """What a run did: traces found, skipped as done, skipped as failed earlier, analyzed, failed."""

    total: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    done: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.done + len(self.failed)


def plan(traces: list[TraceInput], root: Path, retry_failed: bool) -> tuple[list[TraceInput], Tally]:
    """The traces to run: not done (same id), and not failed before unless retrying."""
    done, failed = store.done_ids(root), store.failed_ids(root)
    tally = Tally(total=len(traces))
    todo = []
    for t in traces:
        if t.trace_id in done:
            tally.skipped_done += 1
        elif t.trace_id in failed and not retry_failed:
            tally.skipped_failed += 1
        else:
            todo.append(t)
    return todo, tally


def run_fleet(
    client: Any,
    traces: list[TraceInput],
    root: Path,
    *,
    options: dict[str, Any],
    worst: int,
    retry_failed: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Tally:
    """Analyze every trace not yet done into root, one Dask task each."""
    store.prepare(root, {"options": options, "worst_incidents": worst, "n_traces": len(traces)})
    for folder in (store.parts_dir(root), store.failures_dir(root)):
        sweep_partials(folder)
    todo, tally = plan(traces, root, retry_failed)
    if on_progress is not None:
        on_progress(0, len(todo))
    key = "pvtrace-fleet-{}".format

    def finished(job: Job, result: Any, error: BaseException | None) -> None:
        t = job.args[0]
        if error is not None:  # the task could not run to its end: its workers died, or a bug
            stage = "worker" if type(error).__name__ == "KilledWorker" else "analyze"
            line = one_line_error(error)
            write_failure(root, t, stage, line)
            tally.failed.append({"trace": t.name, "stage": stage, "error": line})
        elif result["status"] == "done":
            tally.done += 1
        else:
            tally.failed.append({"trace": t.name, "stage": result["stage"], "error": result["error"]})
        if on_progress is not None:
            on_progress(tally.ran, len(todo))

    jobs = (Job(key(t.trace_id), analyze_trace, (t, str(root.resolve()), options, worst)) for t in todo)
    run_jobs(client, jobs, finished)
    return tally
