"""The ingest's overlapping stages keep the order, bound what is in flight and surface errors."""

from __future__ import annotations

import threading

import pytest

from pvtrace.ingest.pipeline import BackgroundSink, prefetch


def test_prefetch_keeps_order_and_runs_on_another_thread():
    threads = set()

    def produce():
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i

    assert list(prefetch(produce())) == list(range(50))
    assert threads == {"pvtrace-parse"}


def test_prefetch_raises_the_producers_error_where_it_happened():
    def produce():
        yield 1
        yield 2
        raise ValueError("bad line 3")

    got = []
    with pytest.raises(ValueError, match="bad line 3"):
        for item in prefetch(produce()):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_stops_the_producer_when_the_consumer_stops():
    produced = []
    closed = threading.Event()

    def produce():
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    stream = prefetch(produce(), depth=1)
    assert next(stream) == 0
    stream.close()
    assert closed.wait(5)
    assert len(produced) <= 4  # one taken, at most depth waiting, one being put


def test_background_sink_writes_in_order_and_flush_raises_a_write_error():
    written = []
    sink = BackgroundSink(written.append)
    for i in range(20):
        sink(i)
    sink.flush()
    assert written == list(range(20))

    def failing(batch):
        raise OSError("disk full")

    sink = BackgroundSink(failing)
    sink(1)
    with pytest.raises(OSError, match="disk full"):
        sink(2)
        sink.flush()
