"""What fleets and sweeps share around their tasks: which items still need work (resume), running
them with the tally of what finished, and turning a task that never ran to its end into a
failure row, so a run is never stopped by one item."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pvtrace.fleet.cluster import Job, run_jobs
from pvtrace.fleet.tasks import one_line_error

T = TypeVar("T")


@dataclass
class Tally:
    """What a run did: items found, skipped as done, skipped as failed earlier, run to done, failed."""

    total: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    done: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.done + len(self.failed)

    @property
    def todo(self) -> int:
        return self.total - self.skipped_done - self.skipped_failed


def plan(
    items: list[T], ident: Callable[[T], str], done: set[str], failed: set[str], retry_failed: bool
) -> tuple[list[T], Tally]:
    """The items to run: not done (same id), and not failed before unless retrying."""
    tally = Tally(total=len(items))
    todo = []
    for item in items:
        key = ident(item)
        if key in done:
            tally.skipped_done += 1
        elif key in failed and not retry_failed:
            tally.skipped_failed += 1
        else:
            todo.append(item)
    return todo, tally


def run_tallied(
    client: Any,
    jobs: Iterable[Job],
    tally: Tally,
    *,
    name: Callable[[Any], str],
    write_failure: Callable[[Any, str, str], None],
    crash_stage: str,
    on_progress: Callable[[Tally], None] | None = None,
) -> Tally:
    """Run the jobs (each job's first argument is its item; its task returns a status dict and
    writes its own result or failure row) and count them into tally. A task that could not run to
    its end (its workers kept dying: stage `worker`; or a bug: `crash_stage`) gets its failure row
    written here."""

    def finished(job: Job, result: Any, error: BaseException | None) -> None:
        item = job.args[0]
        if error is not None:
            stage = "worker" if type(error).__name__ == "KilledWorker" else crash_stage
            line = one_line_error(error)
            write_failure(item, stage, line)
            tally.failed.append({"trace": name(item), "stage": stage, "error": line})
        elif result["status"] == "done":
            tally.done += 1
        else:
            tally.failed.append({"trace": name(item), "stage": result["stage"], "error": result["error"]})
        if on_progress is not None:
            on_progress(tally)

    if on_progress is not None:
        on_progress(tally)
    run_jobs(client, jobs, finished)
    return tally
