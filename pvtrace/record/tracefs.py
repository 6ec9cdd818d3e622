"""tracefs access: find or mount it, and drive one private tracing instance.

pvtrace never writes to the top-level (global) tracing files. Every setting
goes into an instance (a directory under `instances/` with its own ring
buffer, events and triggers), which is removed afterwards, so whoever else uses
tracing on the machine is not disturbed. The root is injectable, and so are
mkdir/rmdir (the kernel creates a whole instance tree on mkdir), so tests can
drive a fake tracefs tree.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pvtrace.errors import RecordError

DEFAULT_MOUNT = Path("/sys/kernel/tracing")
MOUNTS = Path("/proc/mounts")
_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


def find_tracefs(mounts: Path = MOUNTS) -> Path | None:
    """Where tracefs is mounted (tracefs itself first, then debugfs/tracing), or None."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    found: dict[str, Path] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] in ("tracefs", "debugfs") and parts[2] not in found:
            where = Path(parts[1].replace("\\040", " "))
            found[parts[2]] = where if parts[2] == "tracefs" else where / "tracing"
    for kind in ("tracefs", "debugfs"):
        if kind in found and (found[kind] / "available_events").exists():
            return found[kind]
    return None


def mount_tracefs(where: Path = DEFAULT_MOUNT) -> None:
    """Mount tracefs at `where` (needs root)."""
    res = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(where)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RecordError(
            f"could not mount tracefs at {where}: {res.stderr.strip() or 'mount failed'}; "
            f"try: mount -t tracefs nodev {where}"
        )


def unmount_tracefs(where: Path) -> str | None:
    """Unmount a tracefs this run mounted; returns why it could not, or None."""
    res = subprocess.run(["umount", str(where)], capture_output=True, text=True, check=False)
    return None if res.returncode == 0 else (res.stderr.strip() or "umount failed")


@dataclass(frozen=True)
class CpuStats:
    """One CPU's ring-buffer counters (per_cpu/cpuN/stats) after a run."""

    cpu: int
    entries: int  # events still in the buffer
    overrun: int  # events overwritten because the buffer was full
    commit_overrun: int  # events lost to nested writes while the buffer was full
    dropped: int  # events refused (non-overwrite mode)

    @property
    def n_lost(self) -> int:
        return self.overrun + self.commit_overrun + self.dropped


def parse_stats(cpu: int, text: str) -> CpuStats:
    """Read a per_cpu/cpuN/stats file's text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        rest = rest.strip()
        if rest.isdigit():
            values[key.strip()] = int(rest)
    return CpuStats(
        cpu=cpu,
        entries=values.get("entries", 0),
        overrun=values.get("overrun", 0),
        commit_overrun=values.get("commit overrun", 0),
        dropped=values.get("dropped events", 0),
    )


def _write(path: Path, text: str) -> None:
    """Write a control file the way `echo text > file` does; errors name the file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as exc:
        raise RecordError(f"cannot open {path} for writing: {exc.strerror}") from None
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        raise RecordError(f"the kernel refused {text.strip()!r} in {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


class Tracefs:
    """A tracefs tree: its events, its CPUs, and its instances."""

    def __init__(
        self,
        root: Path,
        *,
        make_dir: Callable[[Path], None] = os.mkdir,
        remove_dir: Callable[[Path], None] = os.rmdir,
    ):
        self.root = Path(root)
        self._make_dir = make_dir
        self._remove_dir = remove_dir

    def available_events(self) -> frozenset[str]:
        """Every tracepoint this kernel offers, as "system:event"."""
        try:
            text = (self.root / "available_events").read_text()
        except OSError as exc:
            raise RecordError(f"cannot read {self.root / 'available_events'}: {exc.strerror}") from None
        return frozenset(line.strip() for line in text.splitlines() if ":" in line)

    def cpus(self) -> list[int]:
        """CPU numbers with a per-CPU buffer."""
        per_cpu = self.root / "per_cpu"
        found = [int(p.name[3:]) for p in per_cpu.glob("cpu*") if p.name[3:].isdigit()]
        return sorted(found)

    def instance_names(self) -> list[str]:
        inst = self.root / "instances"
        return sorted(p.name for p in inst.iterdir() if p.is_dir()) if inst.is_dir() else []

    def supports_instances(self) -> bool:
        return (self.root / "instances").is_dir()

    def create_instance(self, name: str) -> Instance:
        """Create a private instance; never reuses one that already exists."""
        if not _INSTANCE_NAME.match(name):
            raise RecordError(f"bad instance name {name!r}: use letters, digits, '_', '.', '+' or '-'")
        path = self.root / "instances" / name
        if path.exists():
            raise RecordError(
                f"tracefs instance {name!r} already exists ({path}); another capture may be running. "
                f"Pick another --instance, or remove a stale one with: rmdir {path}"
            )
        try:
            self._make_dir(path)
        except OSError as exc:
            raise RecordError(f"cannot create tracefs instance {path}: {exc.strerror}") from None
        return Instance(self, name, path)

    def remove_instance_dir(self, path: Path) -> None:
        self._remove_dir(path)


class Instance:
    """One private tracefs instance: its own buffer, events, triggers and tracing_on."""

    def __init__(self, tracefs: Tracefs, name: str, path: Path):
        self.tracefs = tracefs
        self.name = name
        self.path = path

    @property
    def trace_path(self) -> Path:
        return self.path / "trace"

    def set_tracing(self, on: bool) -> None:
        _write(self.path / "tracing_on", "1" if on else "0")

    def set_buffer_kb(self, kb: int) -> None:
        _write(self.path / "buffer_size_kb", str(kb))

    def buffer_kb(self) -> int:
        text = (self.path / "buffer_size_kb").read_text().split()
        return int(text[0]) if text and text[0].isdigit() else 0

    def set_trace_clock(self, name: str) -> None:
        """Select a trace clock this kernel offers (x86-tsc aligns host and guest through KVM's TSC offset)."""
        try:
            offered = (self.path / "trace_clock").read_text().replace("[", " ").replace("]", " ").split()
        except OSError as exc:
            raise RecordError(f"cannot read {self.path / 'trace_clock'}: {exc.strerror}") from None
        if name not in offered:
            raise RecordError(f"--clock {name}: this kernel's trace clocks are {', '.join(offered)}")
        _write(self.path / "trace_clock", name)

    def trace_clock(self) -> str | None:
        """The selected trace clock (the bracketed entry of trace_clock)."""
        try:
            text = (self.path / "trace_clock").read_text()
        except OSError:
            return None
        m = re.search(r"\[(\S+)\]", text)
        words = text.split()
        return m.group(1) if m else (words[0] if len(words) == 1 else None)

    def _event_dir(self, event: str) -> Path:
        system, _, name = event.partition(":")
        return self.path / "events" / system / name

    def enable_event(self, event: str, on: bool = True) -> None:
        _write(self._event_dir(event) / "enable", "1" if on else "0")

    def add_trigger(self, event: str, trigger: str) -> None:
        _write(self._event_dir(event) / "trigger", trigger)

    def remove_trigger(self, event: str, command: str) -> None:
        _write(self._event_dir(event) / "trigger", f"!{command}")

    def cpu_stats(self) -> list[CpuStats]:
        stats = []
        for cpu in self.tracefs.cpus():
            path = self.path / "per_cpu" / f"cpu{cpu}" / "stats"
            try:
                stats.append(parse_stats(cpu, path.read_text()))
            except OSError as exc:
                raise RecordError(f"cannot read {path}: {exc.strerror}") from None
        return stats

    def drain_raw(self, cpu: int, dest: Path) -> int:
        """Move one CPU's binary buffer pages (trace_pipe_raw, a consuming read) into dest."""
        src = self.path / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw"
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK)
        n = 0
        try:
            with dest.open("wb") as out:
                while True:
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        break
                    if not chunk:
                        break
                    out.write(chunk)
                    n += len(chunk)
        finally:
            os.close(fd)
        return n

    def remove(self, attempts: int = 20) -> None:
        """Remove the instance (the kernel says EBUSY while a file of it is still open)."""
        for i in range(attempts):
            try:
                self.tracefs.remove_instance_dir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or i == attempts - 1:
                    raise RecordError(
                        f"could not remove tracefs instance {self.path}: {exc.strerror}; "
                        f"remove it by hand with: rmdir {self.path}"
                    ) from None
                time.sleep(0.05)
