"""Helpers of the fault-injection suite: running pvtrace commands as a user would, and judging the
files they leave (all outputs or none, never a partial or corrupt one, other files intact)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL_SCENARIO = """\
description = "lhp-demo cut to 40 ms: LHP, LWP and convoys in a few seconds of CPU"
[host]
pcpus = 2
[vm]
count = 2
vcpus = 2
locks = 2
lock_skew = 1.0
compute_ns = 20_000
hold_ns = 2_000
hold_dist = "lognormal"
[lock]
algorithm = "ticket"
[hypervisor]
ple = false
[run]
seed = {seed}
duration_ns = 40_000_000
"""


def env(**extra: str) -> dict[str, str]:
    e = {**os.environ, **extra}
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["COLUMNS"] = "200"
    return e


def _child_setup(fsize: int | None) -> None:
    # A background CI job may start us with SIGINT ignored; Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if fsize is not None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))


def start(
    args: list[str], cwd: Path, fsize: int | None = None, stdin=None, extra_env: dict | None = None
) -> subprocess.Popen:
    """`python -m pvtrace ARGS` in cwd (stdout/stderr captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pvtrace", *args],
        cwd=cwd,
        env=env(**(extra_env or {})),
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _child_setup(fsize),
    )


@dataclass
class Done:
    args: list[str]
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"pvtrace {' '.join(self.args)} -> {self.rc}\n{self.stderr[-2000:]}"


def finish(proc: subprocess.Popen, timeout: float = 120) -> Done:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"pvtrace {proc.args} hung; stderr: {err[-2000:]}") from None
    return Done(list(proc.args[3:]), proc.returncode, out, err)


def run(args: list[str], cwd: Path, **kw) -> Done:
    return finish(start(args, cwd, **kw))


def run_all(commands: list[list[str]], cwd: Path) -> list[Done]:
    """Several commands at once (the suite's wall time), each result in order."""
    procs = [start(a, cwd) for a in commands]
    return [finish(p) for p in procs]


def signal_after(proc: subprocess.Popen, sig: int, delay: float) -> None:
    """Send sig after delay seconds, unless the command ended before."""
    end = time.monotonic() + delay
    while time.monotonic() < end:
        if proc.poll() is not None:
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too), relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_leftovers(folder: Path) -> list[str]:
    """Temporary output files (pvtrace.outputs names them .NAME.XXXX.partial) or any *.partial."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".partial") or ".partial." in p.name]


def assert_clean_exit(done: Done, codes: tuple[int, ...]) -> None:
    assert "Traceback" not in done.stderr, str(done)
    assert done.rc in codes, str(done)


def assert_one_line_error(done: Done, code: int, *words: str) -> None:
    assert_clean_exit(done, (code,))
    lines = [s for s in done.stderr.splitlines() if s.strip()]
    errors = [s for s in lines if s.startswith("error:")]
    assert len(errors) == 1, str(done)
    for w in words:
        assert w in errors[0], str(done)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at path (root only); raises OSError when mounting is not possible."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        raise OSError(res.stderr.decode(errors="replace").strip() or "mount failed")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
