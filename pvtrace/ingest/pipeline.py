"""Overlapping stages of an ingest: parsing, normalizing and Parquet encoding on different threads.

An ingest is three stages over a stream of batches: parse text to raw records (polars' streaming
engine), normalize them to canonical events (polars), encode and compress them to Parquet (pyarrow).
All three release the GIL while they work, so running them one after another leaves one of the two
cores idle most of the time. `prefetch` runs a producer one or two batches ahead on a thread of its
own, `BackgroundSink` hands batches to a writer thread; both keep the order, bound the batches in
flight (memory stays bounded) and re-raise a stage's error in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterator[T], depth: int = 1, name: str = "pvtrace-parse") -> Iterator[T]:
    """The items of `items`, produced on a background thread up to `depth` ahead of the consumer.

    An error in the producer is raised here, at the item where it happened. When the consumer stops
    early (an error of its own, or it closes this generator) the producer stops at its next item.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failed(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


class BackgroundSink:
    """Calls `write(batch)` on a worker thread, in order, with at most `depth` batches waiting.

    `flush()` waits for every batch and raises the first error a write met; an error is also raised
    by the next `__call__` after it happened, so a failing writer stops the ingest early.
    """

    def __init__(self, write: Callable[[T], None], depth: int = 1, name: str = "pvtrace-encode"):
        self._write = write
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: list[Future] = []

    def __call__(self, batch: T) -> None:
        while len(self._pending) >= self._depth:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write, batch))

    def flush(self) -> None:
        try:
            while self._pending:
                self._pending.pop(0).result()
        finally:
            self._pool.shutdown(wait=True)

    def abandon(self) -> None:
        """Wait for the writes in flight without raising their errors (the ingest failed already)."""
        for future in self._pending:
            future.exception()
        self._pending.clear()
        self._pool.shutdown(wait=True)
