"""What every command shares: consoles, error mapping, progress bars."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from pvtrace.cli import command_finished
from pvtrace.errors import PvtraceError, UsageError
from pvtrace.outputs import (
    os_message,
    placed_outputs,
    remove_live_temps,
    signal_received,
    signals_unwind,
)

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table


def console(**kwargs: Any) -> Console:
    """A rich console that never turns `:name:` into an emoji: the text it prints holds file names,
    `file:100:` line references, lock symbols and `START:END` windows, which rich would read as
    emoji codes. Markup stays on for our own styling; text from outside goes through `escape`."""
    return Console(emoji=False, **kwargs)


# Piped or redirected, results are never cut or wrapped to rich's default 80 columns.
PIPED_WIDTH = 1000


def stdout_console(width: int | None = None, **kwargs: Any) -> Console:
    """stdout for results: a terminal's width (or `width`), else PIPED_WIDTH."""
    if width is None and not sys.stdout.isatty():
        width = PIPED_WIDTH
    return console(width=width, **kwargs)


out = stdout_console()  # results: stdout
err = console(stderr=True)  # errors, warnings, progress


def print_titled(con: Console, table: Table) -> None:
    """A table under its title on a line of its own: rich wraps a title to the table's width
    ('Records by' over 'tracepoint') and pads it with blanks, which piped output keeps."""
    con.print(f"[bold]{table.title}[/]", highlight=False, soft_wrap=True)
    table.title = None
    con.print(table)


def print_input_notes(extra: dict, *, run: str = "", strict: bool = True) -> None:
    """What an analysis says about its input beside the results, on stderr, after them: the input
    lines it skipped (never silent, even with -q) and its warnings; nothing when it has nothing to
    say ("skipped lines: none" came before the summary's first line). `run` names the run (compare
    reads two); `strict`: the command has --strict."""
    who = f"{escape(run)}: " if run else ""
    skipped = extra.get("skipped_lines") or {"total": 0}  # none in a summary read back from JSON
    if skipped["total"]:
        reasons = ", ".join(f"{n:,} {kind}" for kind, n in sorted(skipped["by_reason"].items()))
        err.print(
            f"{who}[bold yellow]skipped {skipped['total']:,} input lines[/] ({escape(reasons)}; first: "
            f"{escape(str(skipped['first']))}); `pvtrace ingest` lists them"
            + (", --strict makes them fatal" if strict else ""),
            highlight=False,
            soft_wrap=True,
        )
    for damage in skipped.get("damaged", []):
        err.print(
            f"{who}[bold yellow]warning:[/] {escape(damage)}: only what came before the damage was read; "
            "the rest of the capture is missing from every figure",
            highlight=False,
            soft_wrap=True,
        )
    for warning in extra.get("warnings", []):
        err.print(f"{who}[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])


def _interrupted(signum: int) -> typer.Exit:
    """Say a signal stopped the command, and which of its outputs were already written whole (a
    signal while it printed its summary came after them: 'interrupted' alone read as none)."""
    name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
    placed = [str(p) for p in placed_outputs()]
    done = ""
    if placed:
        shown = ", ".join(placed[:3]) + (f" and {len(placed) - 3} more" if len(placed) > 3 else "")
        done = f"; written before it and complete: {escape(shown)}"
    err.print(f"[bold red]interrupted[/]{name}{done}", highlight=False, soft_wrap=True)
    return typer.Exit(128 + signum)


def handle_errors(fn: F) -> F:
    """Turn a PvtraceError into one line on stderr and its exit code; no traceback. A signal is
    'interrupted' whatever exception it became on its way out of a library."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_unwind():
                result = fn(*args, **kwargs)
                if signal_received() is not None:  # its interrupt was lost in a library's callback
                    raise KeyboardInterrupt
                command_finished()
                return result
        except typer.Exit:  # the command's own exit code (fleet: 3, or its interrupted tally)
            raise
        except BaseException as exc:
            signum = signal_received()
            if signum is None and isinstance(exc, KeyboardInterrupt):
                signum = getattr(exc, "signum", signal.SIGINT)
            if signum is not None:
                raise _interrupted(signum) from None
            _fail(exc)
            raise
        finally:
            remove_live_temps()

    return wrapper  # type: ignore[return-value]


def _fail(exc: BaseException) -> None:
    """A failure as one line and its exit code: our errors, a closed pipe, an OS error. Anything
    else returns, to be raised as it is (a bug keeps its traceback)."""
    if isinstance(exc, PvtraceError):
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if isinstance(exc, BrokenPipeError):
        sys.stderr.close()
        raise typer.Exit(0) from None
    if isinstance(exc, OSError):  # the last resort: an OS error no stage turned into a sentence
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + os_message(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


class ProgressTask:
    """A progress handle; `advance(n)` and `total` work whether or not a bar is shown."""

    def __init__(self, progress: Progress | None, task_id: Any):
        self._progress = progress
        self._task_id = task_id

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task_id, n)

    def update(self, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, **kwargs)


@contextmanager
def progress(description: str, total: float | None, quiet: bool = False) -> Iterator[ProgressTask]:
    """A rich progress bar on a terminal; nothing when piped or quiet."""
    if quiet or not err.is_terminal:
        yield ProgressTask(None, None)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(  # imported here: piped runs (most) never draw a bar
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    with bar:
        yield ProgressTask(bar, bar.add_task(description, total=total))


LOCK_KIND_HELP = (
    "Lock kind of every lock: fifo or unfair; unknown infers it per lock from the trace "
    "(default: the trace's metadata, else inferred)."
)


def checked_lock_kind(lock_kind: str | None) -> str | None:
    """--lock-kind as given (None: not given), or a one-line usage error."""
    from pvtrace.schema import LOCK_KINDS  # polars: only for the commands that analyze

    if lock_kind is not None and lock_kind not in LOCK_KINDS:
        raise UsageError(f"--lock-kind must be one of {', '.join(LOCK_KINDS)}, not {lock_kind!r}")
    return lock_kind
