"""Per-CPU steal samples written into the trace while a guest capture records.

The guest's steal counters (8th value of each `cpuN` line of /proc/stat, USER_HZ
units) count exactly, if coarsely, how long the host kept each vCPU runnable but
off a pCPU. A thread writes all of them through the instance's `trace_marker` as
one line (pvtrace/guest_signals.py) when tracing starts, every STEAL_INTERVAL_NS
and just before it stops, so the trace carries them and no side file is needed.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from pathlib import Path

from pvtrace.guest_signals import STEAL_INTERVAL_NS, USER_HZ, steal_marker


def user_hz() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return USER_HZ


def read_cpu_steal(proc_root: Path) -> dict[int, int] | None:
    """Steal per CPU (USER_HZ ticks) from `cpuN` lines of /proc/stat; None when unreadable."""
    try:
        lines = (proc_root / "stat").read_text().splitlines()
    except OSError:
        return None
    out: dict[int, int] = {}
    for line in lines:
        fields = line.split()
        if fields and fields[0].startswith("cpu") and fields[0][3:].isdigit() and len(fields) > 8:
            try:
                out[int(fields[0][3:])] = int(fields[8])
            except ValueError:
                continue
    return out or None


KMSG = Path("/dev/kmsg")
# arch/x86/kernel/kvm.c, kvm_spinlock_init(): "PV spinlocks enabled", or "PV spinlocks disabled, ..."
_PV_SPINLOCKS = re.compile(rb"PV spinlocks (enabled|disabled)")


def pv_spinlocks(kmsg: Path = KMSG) -> bool | None:
    """Whether this KVM guest's kernel turned paravirt spinlocks on, from its boot log; None when
    the log does not say (not a KVM guest, the message rotated out, or no permission)."""
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    found: bool | None = None
    try:
        while True:
            try:
                chunk = os.read(fd, 8192)  # /dev/kmsg: one record per read
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                if exc.errno == errno.EPIPE:  # a record overwritten while reading: go on
                    continue
                return found
            if not chunk:
                break
            m = _PV_SPINLOCKS.search(chunk)
            if m:
                found = m.group(1) == b"enabled"
    finally:
        os.close(fd)
    return found


class StealSampler:
    """Writes a steal sample at start(), every interval, and at stop(); counts what it wrote."""

    def __init__(
        self,
        marker: Path,
        proc_root: Path,
        interval_ns: int = STEAL_INTERVAL_NS,
        pv: bool | None = None,
    ):
        self.marker = marker
        self.proc_root = proc_root
        self.pv = pv  # paravirt spinlocks on (the guest-inferred level then declines spin)
        self.interval_s = interval_ns / 1e9
        self.hz = user_hz()
        self.n_written = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        if self.error is not None:
            return
        ticks = read_cpu_steal(self.proc_root)
        if ticks is None:
            self.error = f"cannot read per-CPU steal from {self.proc_root / 'stat'}"
            return
        try:
            with self.marker.open("w") as f:
                f.write(steal_marker(self.hz, ticks, self.pv) + "\n")
            self.n_written += 1
        except OSError as exc:
            self.error = f"cannot write {self.marker}: {exc.strerror or exc}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="pvtrace-steal", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Stop the periodic samples (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        """Stop, with the final sample."""
        self.halt()
        self.sample()
