"""The Dask engine: a LocalCluster of worker processes by default, or a running scheduler by
address, and a bounded stream of tasks through it.

Only a few tasks per worker are in flight at once and each finished future is released at
once, so the client's memory stays flat however many traces or cells there are.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pvtrace.errors import PvtraceError, UsageError

WAIT_FOR_WORKERS_S = 600  # batch-queued workers (SLURM) may take minutes to join

# Dask's housekeeping suits interactive clusters, not tasks of ~1 s: every server checks its event
# loop each 20 ms, each worker samples its threads' stacks each 10 ms (the dashboard's profile),
# polls its memory each 100 ms, and the scheduler tries work stealing each 100 ms. An idle
# 1-worker LocalCluster burned 6.6% of a core that way, 1.2% with these; a fleet pays it for
# every second it runs (benchmarks/README.md). Set for the client and the cluster pvtrace starts
# (its workers inherit it); a cluster given by --scheduler keeps its own settings.
QUIET_CLUSTER = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.scheduler.work-stealing-interval": "1s",
}


@dataclass
class Job:
    """One task: a unique key (the trace or cell id), a function importable on the workers, its args."""

    key: str
    fn: Callable[..., Any]
    args: tuple


@contextmanager
def open_client(scheduler: str | None, workers: int | None, timeout_s: float = 10) -> Iterator[Any]:
    """A Client: of a new LocalCluster (`workers` processes, one thread each; default one per
    core), or of the scheduler at `scheduler` (reached within timeout_s; then waits for
    `workers` workers, if given)."""
    import dask
    import distributed  # noqa: F401  (loads its config defaults, which QUIET_CLUSTER overrides)

    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    with dask.config.set(QUIET_CLUSTER):
        yield from _clients(scheduler, workers, timeout_s)


def _clients(scheduler: str | None, workers: int | None, timeout_s: float) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise PvtraceError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            if workers:
                try:
                    client.wait_for_workers(workers, timeout=WAIT_FOR_WORKERS_S)
                except TimeoutError:
                    joined = len(client.scheduler_info()["workers"])
                    raise PvtraceError(
                        f"only {joined} of {workers} workers joined {scheduler} in {WAIT_FOR_WORKERS_S} s"
                    ) from None
            yield client
        finally:
            client.close()
        return
    n = workers or os.cpu_count() or 1
    with warnings.catch_warnings():
        # 8787 taken (another cluster, another user): distributed picks a free port, printed below
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":8787",
            silence_logs=logging.ERROR,
            env=worker_env(n),
        )
    with cluster, Client(cluster) as client:
        yield client


def worker_env(n_workers: int) -> dict[str, str]:
    """Each local worker's share of the cores for polars' thread pool (one task per worker), so
    n workers do not run n x cores threads; a user's POLARS_MAX_THREADS wins."""
    if "POLARS_MAX_THREADS" in os.environ:
        return {}
    return {"POLARS_MAX_THREADS": str(max(1, (os.cpu_count() or 1) // n_workers))}


def dashboard_note(client: Any) -> str:
    """Where the dashboard is (it needs bokeh on the scheduler's side)."""
    link = getattr(client, "dashboard_link", None)
    if not link:
        return "dashboard: none"
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return f"dashboard: {link} (needs `pip install bokeh` where the scheduler runs)"
    return f"dashboard: {link}"


def n_threads(client: Any) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def run_jobs(
    client: Any,
    jobs: Iterable[Job],
    on_done: Callable[[Job, Any, BaseException | None], None],
    per_thread: int = 2,
) -> None:
    """Submit jobs, at most `per_thread` per worker thread ahead, calling on_done(job, result,
    error) as each finishes (error: the task raised, or its workers kept dying: KilledWorker)."""
    from distributed import as_completed

    pending = iter(jobs)
    running: dict[str, Job] = {}
    done = as_completed()
    exhausted = False
    window, asked = 2, -1.0

    def fill() -> None:
        # workers may join a running cluster later: the window follows their number (asked of
        # the scheduler at most once a second, not once per task)
        nonlocal exhausted, window, asked
        if time.monotonic() - asked > 1.0:
            window, asked = max(2, per_thread * n_threads(client)), time.monotonic()
        while not exhausted and len(running) < window:
            job = next(pending, None)
            if job is None:
                exhausted = True
                return
            running[job.key] = job
            done.add(client.submit(job.fn, *job.args, key=job.key))

    fill()
    for future in done:
        job = running.pop(future.key)
        try:
            result, error = future.result(), None
        except Exception as exc:
            result, error = None, exc
        future.release()
        on_done(job, result, error)
        fill()
