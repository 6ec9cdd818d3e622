"""Dask worker preload for the clusters pvtrace starts: Ctrl-C is the client's to handle.

A terminal's Ctrl-C reaches every process of its group, local workers included. The client stops
the run and closes the cluster; a worker that handled the signal itself would die mid-task and
print a traceback per process.
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker: object) -> None:
    # polars installs its own SIGINT handler when imported (a Ctrl-C aborts a running query):
    # import it first (after pvtrace, whose allocator settings must precede it), then ignore
    import polars  # noqa: F401

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
