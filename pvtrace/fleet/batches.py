"""Short items cut into batches, several per Dask task, sized from what items cost so far.

A task costs about 10 ms of CPU over client, scheduler and worker, and hops between them that
each wait for a core on a loaded machine (benchmarks/README.md): 1 % of a 1 s trace, 8 % of a
0.13 s sweep cell before any wait. Batches of about TASK_S seconds of work make it about 1 %;
they shrink towards the end (guided self-scheduling: at most the items left /
(TAIL_TASKS x worker threads)), so no worker is left alone with a long last batch while the
others idle.

The first items go alone, to be measured; then a batch's size is TASK_S over the median cost of
the last items measured (a median: the first item on a fresh worker also pays its imports).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

TASK_S = 1.0  # seconds of work aimed at per task
TAIL_TASKS = 4  # tasks per worker thread the items left are cut into, at least
RECENT = 64  # item costs the median is taken over


class Batches(Generic[T]):
    """The items, handed out a batch at a time (in their order), and the cost of those done."""

    def __init__(self, items: Iterable[T], threads: Callable[[], int], task_s: float = TASK_S) -> None:
        self._left: deque[T] = deque(items)
        self._alone: deque[T] = deque()
        self._threads = threads
        self._costs: deque[float] = deque(maxlen=RECENT)
        self.task_s = task_s

    def measured(self, seconds: Iterable[float]) -> None:
        """The work each item of a finished batch took."""
        self._costs.extend(seconds)

    def alone(self, items: Iterable[T]) -> None:
        """Items to run again one per task (their batch's task died: a bad item then fails alone)."""
        self._alone.extend(items)

    def size(self) -> int:
        """Items in the next batch."""
        if not self._costs:
            return 1
        cost = statistics.median(self._costs)
        by_cost = math.floor(self.task_s / cost) if cost > 0 else len(self._left)
        by_tail = len(self._left) // (TAIL_TASKS * max(1, self._threads()))
        return max(1, min(by_cost, by_tail))

    def next(self) -> list[T] | None:
        """The next batch, or None when every item was handed out (until alone() gives more)."""
        if self._alone:
            return [self._alone.popleft()]
        if not self._left:
            return None
        return [self._left.popleft() for _ in range(min(self.size(), len(self._left)))]
