"""The command line: a thin typer layer over the library (the only place that prints)."""

import contextlib
import signal


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# Until a command starts (pvtrace.outputs.install_signal_handlers), SIGINT/SIGTERM/SIGHUP end the
# program quietly: loading the libraries takes a second or more, and a signal then must not print
# a traceback from inside some import. Signals the shell told us to ignore stay ignored.
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    with contextlib.suppress(ValueError, OSError):  # not the main thread
        if signal.getsignal(_sig) is not signal.SIG_IGN:
            signal.signal(_sig, _exit_quietly)
