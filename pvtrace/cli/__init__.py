"""The command line: a thin typer layer over the library (the only place that prints)."""

import atexit
import contextlib
import gc
import os
import signal
import sys
from typing import NoReturn

QUIET_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_done = {
    "command": False,
    "gc_held": False,
    "no_teardown": False,
}  # command: it returned, its outputs are all written


def command_finished() -> None:
    """Mark the command done, so a signal from now on says the outputs are complete."""
    _done["command"] = True


def no_teardown() -> None:
    """Let the program end without the interpreter's teardown (see _exit): for a command that
    leaves no thread working (analyze), not one whose threads the exit still waits for."""
    _done["no_teardown"] = True


def _exit_quietly(signum: int, frame: object) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if _done["command"]:  # the exit code says interrupted; the line says nothing was lost
        with contextlib.suppress(OSError):
            os.write(2, b"interrupted after the command finished: its outputs are complete\n")
    os._exit(128 + signum)


def quiet_signals() -> None:
    """SIGINT/SIGTERM/SIGHUP end the program at once with 128+signal and no traceback.

    Set while the libraries load (a second or more: a signal then must not print a traceback from
    inside some import) and again once a command is over (a late signal must not print one from
    inside an exit handler). Signals the shell told us to ignore stay ignored."""
    for sig in QUIET_SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, _exit_quietly)


def imports_done() -> None:
    """Start the cyclic garbage collector that main() held off while the libraries and the command's
    module loaded, their objects frozen out of its sweeps: they live to the end anyway, and some
    130 collections over them cost about 5% of analyzing a small trace."""
    if _done.get("gc_held"):
        _done["gc_held"] = False
        gc.freeze()
        gc.enable()


def main() -> None:
    """The `pvtrace` program. While a command runs, `cli.common.handle_errors` owns the signals.

    A usage error (an unknown command or option, a value out of range) is one line on stderr with
    click's exit code 2, not click's boxed usage block: the house rule for bad input."""
    quiet_signals()
    if gc.isenabled():  # until the command's module is loaded (imports_done)
        gc.disable()
        _done["gc_held"] = True
    import typer

    from pvtrace.cli.app import app

    if len(sys.argv) < 2:  # bare `pvtrace`: the help, as typer prints it
        app(prog_name="pvtrace")
    try:
        code = app(prog_name="pvtrace", standalone_mode=False)
    except typer.Abort:  # Ctrl-C while the command line was still being read
        sys.stderr.write("interrupted\n")
        _exit(130)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "pvtrace"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        sys.stderr.write(f"error: {message} (see {where} --help)\n")
        _exit(getattr(exc, "exit_code", 2))
    _exit(code if type(code) is int else 0)


def _exit(code: int) -> NoReturn:
    """End the program without the interpreter's teardown, which frees every object of polars,
    numpy and rich one by one (0.1-0.15 s of CPU, a tenth of analyzing a small trace), where the
    command allows it (no_teardown). The exit handlers run and both streams are flushed first;
    if a flush fails (a closed pipe), the ordinary exit reports it as Python does."""
    if not _done["no_teardown"]:
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        sys.exit(code)
    os._exit(code)
