"""The Dask engine: a LocalCluster of worker processes by default, or a running scheduler by
address, and a bounded stream of tasks through it.

Only a few tasks per worker are in flight at once and each finished future is released at
once, so the client's memory stays flat however many traces or cells there are.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from pvtrace.errors import PvtraceError, UsageError
from pvtrace.outputs import Terminated

WAIT_FOR_WORKERS_S = 600  # batch-queued workers (SLURM) may take minutes to join
POLL_S = 0.2  # how often a run waiting for its tasks looks for Ctrl-C

# Dask's housekeeping suits interactive clusters, not tasks of ~1 s: every server checks its event
# loop each 20 ms, each worker samples its threads' stacks each 10 ms (the dashboard's profile),
# polls its memory each 100 ms, and the scheduler tries work stealing each 100 ms. An idle
# 1-worker LocalCluster burned 6.6% of a core that way, 1.2% with these; a fleet pays it for
# every second it runs (benchmarks/README.md). Set for the client and the cluster pvtrace starts
# (its workers inherit it, with the preload that leaves Ctrl-C to the client); a cluster given by
# --scheduler keeps its own settings.
QUIET_CLUSTER = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.scheduler.work-stealing-interval": "1s",
    "distributed.worker.preload": ["pvtrace.fleet.worker_setup"],
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
    with warnings.catch_warnings(), _sigint_ignored():
        # 8787 taken (another cluster, another user): distributed picks a free port, printed below
        warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":8787",
            # a task that raises is reported by the client (its failure row, or the error); the
            # worker's own "Compute Failed ... Traceback" log line on stderr is no news
            silence_logs=logging.CRITICAL,
            env=worker_env(n),
        )
    with cluster, Client(cluster) as client:
        try:
            yield client
        finally:
            # closing a cluster races its workers' heartbeats (mid-task, and now and then after the
            # last task too: "CommClosedError ... heartbeat_worker"): the errors it logs are no news
            with suppress(Exception):
                client.run(silence_dask_logs)
            silence_dask_logs()


def silence_dask_logs() -> None:
    """No more Dask log lines from this process (a cluster being torn down on purpose)."""
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C belongs to the client. A terminal sends it to the whole process group, and a local
    worker that got it would die mid-task printing tracebacks. Worker processes started while it
    is ignored here keep ignoring it for life (a restarted worker ignores it through
    pvtrace.fleet.worker_setup); a Ctrl-C during these seconds of start-up is lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


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


def thread_counter(client: Any) -> Callable[[], int]:
    """The client's worker threads, asked of the scheduler at most once a second, not once per
    task (workers may join a running cluster later)."""
    last = [0.0, 1]

    def count() -> int:
        if time.monotonic() - last[0] > 1.0:
            last[:] = [time.monotonic(), n_threads(client)]
        return last[1]

    return count


def run_jobs(
    client: Any,
    next_job: Callable[[], Job | None],
    on_done: Callable[[Job, Any, BaseException | None], None],
    per_thread: int = 2,
    threads: Callable[[], int] | None = None,
) -> None:
    """Submit next_job() while fewer than `per_thread` tasks per worker thread are in flight,
    calling on_done(job, result, error) as each finishes (error: the task raised, or its workers
    kept dying: KilledWorker). next_job() is asked again whenever a task finishes, so on_done may
    give it more work; the run ends when nothing is in flight and it has none."""
    from distributed import as_completed, wait

    threads = threads or thread_counter(client)
    running: dict[str, tuple[Job, Any]] = {}
    done = as_completed()

    def fill() -> None:
        while len(running) < max(2, per_thread * threads()):
            job = next_job()
            if job is None:
                return
            future = client.submit(job.fn, *job.args, key=job.key)
            running[job.key] = (job, future)
            done.add(future)

    with _signals_as_flag() as stop:
        fill()
        while running:
            if stop:
                client.cancel([f for _, f in running.values()])
                _raise_for(stop[0])
            ready = done.next_batch(block=False)
            if not ready:
                with suppress(TimeoutError):  # back at least every POLL_S to look at `stop`
                    wait([f for _, f in running.values()], timeout=POLL_S, return_when="FIRST_COMPLETED")
            for future in ready:
                job, _ = running.pop(future.key)
                try:
                    result, error = future.result(), None
                except Exception as exc:
                    result, error = None, exc
                future.release()
                on_done(job, result, error)
                fill()
        if stop:  # it came with the last results: still an interrupted run, not a finished one
            _raise_for(stop[0])


def _raise_for(signum: int) -> None:
    raise Terminated(signum) if signum != signal.SIGINT else KeyboardInterrupt()


@contextmanager
def _signals_as_flag() -> Iterator[list[int]]:
    """Ctrl-C, SIGTERM and SIGHUP noted in a list while a run waits on its tasks, for the run to
    stop between two of Dask's calls: an exception raised inside one (as Python raises
    KeyboardInterrupt) leaves Dask's event loop logging tracebacks."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in sigs}
    try:
        yield got
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
