"""What fleets and sweeps share around their tasks: which items still need work (resume), running
them with the tally of what finished, and turning a task that never ran to its end into a
failure row, so a run is never stopped by one item."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pvtrace.fleet.batches import TASK_S, Batches
from pvtrace.fleet.cluster import Job, run_jobs, thread_counter
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
    is_done: Callable[[Any], bool] | None = None,
    on_progress: Callable[[Tally], None] | None = None,
) -> Tally:
    """Run the jobs (each job's first argument is its item; its task returns a status dict and
    writes its own result or failure row) and count them into tally. A task that could not run to
    its end (its workers kept dying: stage `worker`; or a bug: `crash_stage`) gets its failure row
    written here, unless its result was published before its worker died (`is_done`): then it is
    done, not failed as well."""
    count = _Counter(tally, name, write_failure, crash_stage, on_progress)

    def finished(job: Job, result: Any, error: BaseException | None) -> None:
        if error is not None and is_done is not None and is_done(job.args[0]):
            tally.done += 1
        elif error is not None:
            count.crashed(job.args[0], error)
        else:
            count.status(job.args[0], result)
        count.progress()

    count.progress()
    pending = iter(jobs)
    run_jobs(client, lambda: next(pending, None), finished)
    return tally


def run_batched(
    client: Any,
    items: list[T],
    fn: Callable[..., list[dict[str, Any]]],
    args: tuple,
    tally: Tally,
    *,
    key: Callable[[T], str],
    is_done: Callable[[T], bool],
    name: Callable[[Any], str],
    write_failure: Callable[[Any, str, str], None],
    crash_stage: str,
    on_progress: Callable[[Tally], None] | None = None,
    task_s: float = TASK_S,
) -> Tally:
    """run_tallied for short items, several per task (pvtrace.fleet.batches): fn(batch, *args)
    returns one status per item, with the `seconds` it took; each item still writes its own
    result or failure row. A batch whose task never ran to its end: its items with a result count
    done, the others run again one per task, so an item that kills its worker fails alone."""
    threads = thread_counter(client)
    batches = Batches(items, threads, task_s)
    count = _Counter(tally, name, write_failure, crash_stage, on_progress)

    def next_job() -> Job | None:
        batch = batches.next()
        return None if batch is None else Job(f"{key(batch[0])}+{len(batch) - 1}", fn, (batch, *args))

    def finished(job: Job, result: Any, error: BaseException | None) -> None:
        batch = job.args[0]
        if error is None:
            for item, status in zip(batch, result, strict=True):
                count.status(item, status)
            batches.measured(s["seconds"] for s in result)
        else:
            left = [item for item in batch if not is_done(item)]
            tally.done += len(batch) - len(left)
            if len(batch) > 1:
                batches.alone(left)
            else:
                for item in left:
                    count.crashed(item, error)
        count.progress()

    count.progress()
    run_jobs(client, next_job, finished, threads=threads)
    return tally


@dataclass
class _Counter:
    """Statuses into the tally; a task that died into failure rows."""

    tally: Tally
    name: Callable[[Any], str]
    write_failure: Callable[[Any, str, str], None]
    crash_stage: str
    on_progress: Callable[[Tally], None] | None

    def status(self, item: Any, status: dict[str, Any]) -> None:
        if status["status"] == "done":
            self.tally.done += 1
        else:
            self.tally.failed.append(
                {"trace": self.name(item), "stage": status["stage"], "error": status["error"]}
            )

    def crashed(self, item: Any, error: BaseException) -> None:
        stage = "worker" if type(error).__name__ == "KilledWorker" else self.crash_stage
        line = one_line_error(error)
        self.write_failure(item, stage, line)
        self.tally.failed.append({"trace": self.name(item), "stage": stage, "error": line})

    def progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.tally)
