"""Output files every command writes the same way: checked first, staged, renamed into place together.

A command opens one `OutputSet` (its inputs and --force), plans each output path before the
work starts (`plan`: missing folders are created later, an existing file without --force, a
path that is one of the inputs, a folder that is not writable: one-line OutputError now), and
writes each file through `atomic_file` / `stage`: a unique temporary name in the target folder
(`.name.XXXXXX.partial`, so two writers never share one), renamed into place only when the whole
command succeeded. `commit` places every file of the set at once, with SIGINT/SIGTERM/SIGHUP held
back; a failure half-way restores what was there. Without --force a file that appeared meanwhile
(another writer) is never replaced: the commit links without clobbering and fails cleanly.
Temporary files are removed on any error or signal; `signals_unwind` turns SIGTERM and SIGHUP
into the same unwinding as Ctrl-C while a command runs.

Library writers (pages, traces, truth, tables) call `atomic_file`/`stage` with a path: inside a
command's OutputSet the file joins that set; alone, it is committed as soon as it is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path

import polars as pl

from pvtrace.errors import OutputExistsError, PvtraceError, UsageError

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_active: ContextVar[OutputSet | None] = ContextVar("pvtrace_outputs", default=None)
SIDE_SUFFIXES = (".vcpus.csv", ".guest-offsets.csv")  # read next to an input (ingest.vcpu_map, offsets_file)
_live_temps: set[Path] = set()  # every temporary file not yet placed or removed (signal / exit cleanup)
_received: list[int] = []  # signals taken while the command ran (signals_unwind), first first
_placed: list[Path] = []  # outputs placed under their final names while the command ran


def _write_error_types() -> tuple[type[Exception], ...]:
    """What a full or read-only disk raises: OSError, polars' and pyarrow's errors (pyarrow's only
    once something loaded it, as nothing else can raise them)."""
    pa = sys.modules.get("pyarrow")
    return (OSError, pl.exceptions.PolarsError, *((pa.ArrowException,) if pa else ()))


class OutputError(PvtraceError):
    """An output cannot be written (folder missing and not creatable, read-only, disk full, ...)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwound like Ctrl-C so every temporary file is removed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    _received.append(signum)
    raise Terminated(signum)


def _raise_interrupt(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def signal_received() -> int | None:
    """The first signal the running command took, if any. Its exception may not be what reaches the
    command's end: raised inside a library's callback (polars calling back into Python), it came
    out once as `TypeError: '<unprintable str object>' is not a Polars data type`."""
    return _received[0] if _received else None


def placed_outputs() -> list[Path]:
    """The outputs the running command has placed under their final names, complete."""
    return list(_placed)


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise Terminated and SIGINT KeyboardInterrupt, so
    every temporary file is removed; after it, the handlers from before are back (in the program,
    `cli.quiet_signals`: a signal while Python exits must not raise inside an exit handler)."""
    handlers = {signal.SIGINT: _raise_interrupt, signal.SIGTERM: _raise_terminated}
    handlers[signal.SIGHUP] = _raise_terminated
    _received.clear()
    _placed.clear()
    before = {}
    for sig, handler in handlers.items():
        with contextlib.suppress(ValueError, OSError):  # not the main thread: leave them
            if signal.getsignal(sig) is not signal.SIG_IGN:
                before[sig] = signal.signal(sig, handler)
    hook = sys.unraisablehook
    sys.unraisablehook = _quiet_after_signal(hook)
    try:
        yield
    finally:
        with _signals_held():  # a signal from here on reaches the handler from before
            for sig, handler in before.items():
                signal.signal(sig, handler)
        sys.unraisablehook = hook


def _quiet_after_signal(hook):
    """An unraisable-exception hook that drops the interrupt a signal raised where it could not
    propagate (inside a library's callback: Python printed 'Exception ignored in: DataTypeClass'
    and a traceback); the command still ends as interrupted (signal_received). Anything else goes
    to `hook`."""

    def quiet(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received:
            return
        hook(unraisable)

    return quiet


def _new_temp(folder: Path, name: str) -> Path:
    """A new empty temporary file `.<name>.<random>.partial` in folder, noted for removal *before* it
    exists: a signal at any instant leaves nothing behind (a SIGHUP 1.4 s into `generate` once came
    between mkstemp and the noting; holding signals does not help where another thread takes them)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(4)}.partial"
        _live_temps.add(tmp)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
            return tmp
        except FileExistsError:
            _live_temps.discard(tmp)
        except OSError:
            _live_temps.discard(tmp)  # not made; a signal instead leaves it noted, made or not
            raise


def remove_live_temps() -> None:
    """Remove every temporary output file still on disk (the last resort on exit)."""
    for tmp in list(_live_temps):
        with contextlib.suppress(OSError):
            tmp.unlink()
        _live_temps.discard(tmp)


# An errno inside a library's message: polars' `[errno 28] No space left on device`, its Rust
# writer's `... underlying IO error: No space left on device (os error 28)`.
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]|\(os error (\d+)\)", re.IGNORECASE)


def os_message(exc: BaseException) -> str:
    """The OS's words for an error, without Python's `[Errno n]` prefix; for a polars or Arrow error
    wrapping an OS error, the OS's words alone (not 'parquet: File out of specification: ...')."""
    words = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if m := _ERRNO_IN_TEXT.search(words):  # Arrow's OSError(28, 'Error writing bytes ... [errno 28] ...')
        return os.strerror(int(m.group(1) or m.group(2)))
    text = words.strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def unreadable_why(exc: BaseException, path: Path | str) -> str:
    """Why an input file could not be read, in the OS's words where it gave some ('is a directory'
    where polars read a folder), else the error's name."""
    if isinstance(exc, OSError):
        return os_message(exc)
    return "is a directory" if Path(path).is_dir() else exc.__class__.__name__


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """The resolved path and (device, inode) of a path, to tell when two names are one file."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM/SIGHUP (delivered after the block) so a commit is never cut."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _no_space(folder: Path) -> bool:
    """The file system of folder has not one block left for us (root may use the reserved ones): a
    full disk fails before the work (an `experiment` ran 8 s to find it), not at the first write.
    Any space left is tried; a file system that counts no blocks at all is not judged."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    free = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return st.f_blocks > 0 and free == 0


def _with_side_files(path: Path) -> list[Path]:
    """An input and the side files read with it (`t.txt.vcpus.csv`, `t.txt.guest-offsets.csv`,
    `t.record.json`; for `t.txt.xz` also `t.txt.vcpus.csv` ...): none of them is ever written over."""
    bases = [path.name] + ([path.stem] if path.suffix in (".gz", ".xz", ".zst") else [])
    sides = [path.with_name(b + s) for b in bases for s in SIDE_SUFFIXES]
    sides.append(path.with_name(path.name.split(".")[0] + ".record.json"))
    return [path, *(s for s in sides if s.is_file())]


class Staged:
    """One output being written: its final path and the temporary file that becomes it."""

    def __init__(self, path: Path, tmp: Path):
        self.path = path
        self.tmp = tmp
        self.ready = False

    def finish(self) -> None:
        """The temporary file is complete: flush it to disk (a full disk shows here, not later)."""
        try:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {os_message(exc)}") from None
        self.ready = True

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.tmp.unlink()
        _live_temps.discard(self.tmp)


class OutputSet:
    """All outputs of one command: checked before the work, placed together or not at all."""

    def __init__(self, *, force: bool = False, inputs: Iterable[Path | str] = ()):
        self.force = force
        self._inputs = [(q, _identity(q)) for p in inputs if str(p) != "-" for q in _with_side_files(Path(p))]
        self._planned: dict[str, Path] = {}
        self._staged: list[Staged] = []
        self._made_dirs: list[Path] = []  # folders stage() created, parents first: removed on abort
        self._token = None

    # -- planning ------------------------------------------------------------------------------------
    def add_inputs(self, paths: Iterable[Path | str]) -> None:
        """More files the command reads (e.g. a vCPU map): never written over."""
        self._inputs += [(q, _identity(q)) for p in paths if str(p) != "-" for q in _with_side_files(Path(p))]

    def plan(self, path: Path | str, *, force: bool = False, new: bool = False) -> Path:
        """Check an output path now (before the work): one-line errors for whatever would fail later.

        new: the command names this output itself, so another of its outputs may not be the same file.
        """
        path = Path(path)
        refuse_stdout(path)
        real, ident = _identity(path)
        if real in self._planned:
            if self._planned[real] == path and not new:
                return path
            same = (
                ""
                if str(self._planned[real]) == str(path)
                else f" ({self._planned[real]} and {path} are one file)"
            )
            raise UsageError(
                f"{path} would be written twice: two of the outputs asked for are that file{same}; "
                "give each output its own name"
            )
        for inp, (in_real, in_ident) in self._inputs:
            if real == in_real or (ident is not None and ident == in_ident):
                raise UsageError(f"the output {path} is also an input ({inp}); it is never written over")
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a directory")
        if path.exists() and not (force or self.force):
            raise OutputExistsError(str(path))
        folder = Path(real).parent
        existing = folder
        while not existing.exists():
            if existing.is_symlink():
                raise OutputError(f"cannot write {path}: {existing} is a broken symlink")
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(f"cannot write {path}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {path}: folder {existing} is not writable")
        if _no_space(existing):
            raise OutputError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")
        self._planned[real] = path
        return path

    # -- writing -------------------------------------------------------------------------------------
    def stage(self, path: Path | str, *, force: bool = False) -> Staged:
        """A unique temporary file next to `path` (missing folders are created) that becomes it at commit."""
        path = self.plan(path, force=force)
        if any(os.path.realpath(s.path) == os.path.realpath(path) for s in self._staged):
            raise UsageError(f"{path} is written twice by one command")
        folder = Path(os.path.realpath(path)).parent
        missing = [d for d in (folder, *folder.parents) if not d.exists()][::-1]
        for d in missing:
            try:
                with contextlib.suppress(FileExistsError):  # made meanwhile by another writer: theirs
                    d.mkdir()
                    self._made_dirs.append(d)
            except OSError as exc:
                raise OutputError(
                    f"cannot write {path}: cannot create the folder {d}: {os_message(exc)}"
                ) from None
        try:
            tmp = _new_temp(folder, path.name)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {os_message(exc)}") from None
        staged = Staged(path, tmp)
        self._staged.append(staged)
        return staged

    def unstage(self, staged: Staged) -> None:
        """Give up one staged file (its temporary file is removed; the rest of the set stays)."""
        staged.discard()
        with contextlib.suppress(ValueError):
            self._staged.remove(staged)

    def abort(self) -> None:
        """Remove every temporary file of the set, and the folders it created for them (an empty
        `tables/` left by a full disk or Ctrl-C is an output half there); final names are untouched."""
        with _signals_held():
            for s in self._staged:
                s.discard()
            self._staged.clear()
            self._remove_made_dirs()

    def _remove_made_dirs(self) -> None:
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
                d.rmdir()
        self._made_dirs.clear()

    def commit(self) -> list[Path]:
        """Place every staged file under its final name, all of them or (on failure) none."""
        staged, self._staged = self._staged, []
        with _signals_held():
            placed: list[tuple[Staged, Path | None]] = []  # (file, backup of what it replaced)
            try:
                for s in staged:
                    if not s.ready:
                        raise OutputError(f"{s.path} was not completely written")
                    placed.append((s, self._place(s)))
            except BaseException:
                for s, backup in reversed(placed):
                    with contextlib.suppress(OSError):
                        if backup is not None:
                            os.replace(backup, s.path)
                        else:
                            s.path.unlink()
                for s in staged:
                    s.discard()
                self._remove_made_dirs()
                raise
            for s, backup in placed:
                if backup is not None:
                    with contextlib.suppress(OSError):
                        backup.unlink()
                    _live_temps.discard(backup)
                _live_temps.discard(s.tmp)
            _placed.extend(s.path for s in staged)
            self._made_dirs.clear()
        return [s.path for s in staged]

    def _place(self, s: Staged) -> Path | None:
        """Rename one file into place; returns a backup (hard link) of the file it replaced, if any."""
        try:
            if self.force and s.path.exists():
                backup = s.tmp.with_name(s.tmp.name + ".old")
                try:
                    os.link(s.path, backup)
                    _live_temps.add(backup)
                except OSError:
                    backup = None
                os.replace(s.tmp, s.path)
                return backup
            try:
                os.link(s.tmp, s.path)  # fails if the name exists: another writer came first
            except FileExistsError:
                raise OutputExistsError(str(s.path)) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if s.path.exists():  # a file system without hard links: check, then rename
                    raise OutputExistsError(str(s.path)) from None
                os.replace(s.tmp, s.path)
                return None
            os.unlink(s.tmp)
            return None
        except OSError as exc:
            raise OutputError(f"cannot write {s.path}: {os_message(exc)}") from None

    # -- context -------------------------------------------------------------------------------------
    def __enter__(self) -> OutputSet:
        self._token = _active.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        finally:
            if self._token is not None:
                _active.reset(self._token)
                self._token = None


def current() -> OutputSet | None:
    """The OutputSet of the running command, if any."""
    return _active.get()


def refuse_stdout(path: Path | str) -> None:
    """`--report -`, `--out-dir -`, `-o -`: `-` is stdout, never a file or folder named `-`."""
    if "-" in Path(path).parts:
        raise UsageError(
            f"cannot write {path}: `-` means stdout, which only `--json -` and `--csv -` write; "
            "name a file or folder"
        )


def plan_output(path: Path | str, *, inputs: Iterable[Path | str] = (), force: bool = False) -> Path:
    """Check one output against these inputs now: in the command's OutputSet, or on its own."""
    outputs = current() or OutputSet(force=force)
    outputs.add_inputs(inputs)
    return outputs.plan(path, force=force)


@contextlib.contextmanager
def staged_output(path: Path | str, force: bool = False) -> Iterator[Staged]:
    """Stage one output: in the command's OutputSet if there is one, else in a set of its own.

    The body writes `staged.tmp`; on success the file is finished (and, alone, committed);
    on any exception the temporary file is removed.
    """
    outputs = current()
    own = outputs is None
    if own:
        outputs = OutputSet(force=force)
    staged = outputs.stage(path, force=force)
    try:
        yield staged
    except BaseException:
        if own:
            outputs.abort()  # and the folders made for it
        else:
            outputs.unstage(staged)
        raise
    staged.finish()
    if own:
        outputs.commit()


@contextlib.contextmanager
def write_errors(path: Path | str) -> Iterator[None]:
    """OS, polars and Arrow errors while writing `path` become one OutputError line naming it."""
    try:
        yield
    except PvtraceError:
        raise
    except _write_error_types() as exc:
        raise OutputError(f"cannot write {path}: {os_message(exc)}") from None


@contextlib.contextmanager
def atomic_file(path: Path | str, force: bool = False) -> Iterator[Path]:
    """Write `path` atomically: yields the temporary path to write; OS errors become one line."""
    with staged_output(path, force) as staged, write_errors(path):
        yield staged.tmp
