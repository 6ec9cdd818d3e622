"""trace-cmd .dat files, read through `trace-cmd report` (the only complete reader of every
.dat version, including v7 with zstd-compressed pages).

The report text streams from the subprocess into the trace-cmd text parser, so a .dat of
any size converts in bounded memory. A compressed .dat is first decompressed to a temporary
file (trace-cmd needs to seek).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pvtrace.errors import FormatError, ToolMissingError

INSTALL_HINT = (
    "reading trace-cmd .dat files needs trace-cmd; install it with `apt-get install trace-cmd` "
    "(or run `trace-cmd report -i FILE > FILE.txt` where it is installed and ingest the text)"
)
REPORT_ARGS = ("report", "-t")  # -t: nanosecond timestamps


def trace_cmd() -> str:
    """Path of the trace-cmd executable, or ToolMissingError saying how to install it."""
    exe = shutil.which("trace-cmd")
    if exe is None:
        raise ToolMissingError(INSTALL_HINT)
    return exe


class DatReport:
    """The running `trace-cmd report`: its stdout stream and a way to ask why it failed."""

    def __init__(self, proc: subprocess.Popen, err_path: Path, path: Path):
        self.proc = proc
        self.stream: BinaryIO = proc.stdout  # type: ignore[assignment]
        self._err_path = err_path
        self._path = path

    def check(self) -> None:
        """Wait for trace-cmd; FormatError with its last stderr line if it failed."""
        rc = self.proc.wait()
        if rc != 0:
            lines = [s for s in self._err_path.read_text(errors="replace").splitlines() if s.strip()]
            why = lines[-1].strip() if lines else "no message"
            raise FormatError(f"trace-cmd report failed (exit {rc}): {why}", str(self._path))


@contextmanager
def dat_report(path: Path, stream: BinaryIO, compression: str | None) -> Iterator[DatReport]:
    """`trace-cmd report` of a .dat file (text on report.stream); checks the exit status at the end."""
    try:
        exe = trace_cmd()
    except ToolMissingError as exc:
        raise ToolMissingError(f"{path}: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="pvtrace-dat-") as tmp:
        dat = path
        if compression is not None:
            dat = Path(tmp) / "trace.dat"
            with open(dat, "wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
        err_path = Path(tmp) / "stderr"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen([exe, *REPORT_ARGS, "-i", str(dat)], stdout=subprocess.PIPE, stderr=err)
        report = DatReport(proc, err_path, path)
        try:
            yield report
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            report.stream.close()
        report.check()
