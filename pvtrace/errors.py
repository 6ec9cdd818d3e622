"""The pvtrace error family: every failure a user can cause, with a clear message.

The CLI maps any PvtraceError to one line on stderr and a non-zero exit code;
anything else is a bug and may show a traceback.
"""

from __future__ import annotations


class PvtraceError(Exception):
    """Base of all errors pvtrace reports to users as one line."""

    exit_code = 1


class UsageError(PvtraceError):
    """The command line or an option value is wrong."""

    exit_code = 2


class ScenarioError(PvtraceError):
    """A simulator scenario has a bad or unknown parameter (the message names it)."""

    exit_code = 2


class SchemaError(PvtraceError):
    """A table does not match the canonical schema."""


class FormatError(PvtraceError):
    """An input file is not a trace pvtrace can read, or is malformed at a line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class MissingEventsError(PvtraceError):
    """An analysis needs events the trace does not have; says how to capture them."""

    def __init__(self, what: str, missing: list[str], how_to_capture: str):
        self.missing = missing
        self.how_to_capture = how_to_capture
        super().__init__(
            f"{what} needs events the trace lacks: {', '.join(missing)}; capture them with: {how_to_capture}"
        )


class OutputExistsError(PvtraceError):
    """Refusing to overwrite a file the user already has."""

    def __init__(self, path: str):
        super().__init__(f"{path} already exists; pass --force to overwrite it")


class ToolMissingError(PvtraceError):
    """An external tool (trace-cmd, perf) is needed but not installed."""


class RecordError(PvtraceError):
    """Capturing a trace failed (tracefs missing, permissions, events absent)."""
