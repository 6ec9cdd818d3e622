"""One input opened for ingest: decompressed, sniffed (reading more while the sniffer needs more),
and read as raw record frames (text and .dat inputs) or as a summary table (perf kvm stat, perf lock
contention). A pvtrace Parquet file is not ingested: it is read as it is (is_one_parquet).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from pvtrace.errors import FormatError, PvtraceError
from pvtrace.ingest import ftrace as ftrace_fmt
from pvtrace.ingest import perf_script, summary_tables, tracecmd
from pvtrace.ingest.compressed import is_stream, open_input, stream_damage
from pvtrace.ingest.dat import dat_report
from pvtrace.ingest.problems import Problems
from pvtrace.ingest.records import FormatSpec, ParseInfo, ParseOptions
from pvtrace.ingest.sniff import NEED_MORE, SNIFF_BYTES, Verdict, detect_format
from pvtrace.ingest.stream import iter_raw_chunks

MAX_SNIFF_BYTES = 16 << 20


@dataclass
class Input:
    """An opened input and what the sniffer made of it."""

    path: Path
    stream: BinaryIO
    raw_file: BinaryIO  # the file on disk (its position drives progress for compressed inputs)
    compression: str | None
    head: bytes
    verdict: Verdict


def open_sniffed(path: Path, forced: str) -> Input:
    """Open, decompress and sniff one input (reading more while the sniffer needs more)."""
    if str(path) != "-" and not path.exists():
        raise FormatError("no such file", str(path))
    if path.is_dir():
        raise FormatError("is a directory, not a trace file", str(path))
    stream, compression, raw_file = open_input(path)
    try:
        head, verdict = _sniff(stream, path, forced)
    except FormatError as exc:
        close_quietly(stream, raw_file)
        damage = stream_damage(stream)
        if damage is not None:  # the sniffer saw only what came before the damage: say so first
            detail = str(exc).removeprefix(f"{path}: ")
            raise FormatError(f"{damage}; what could be read before it: {detail}", str(path)) from None
        raise
    except BaseException:
        close_quietly(stream, raw_file)  # a half-read archive must not be left to the garbage collector
        raise
    return Input(path, stream, raw_file, compression, head, verdict)


def _sniff(stream: BinaryIO, path: Path, forced: str) -> tuple[bytes, Verdict]:
    head = b""
    want = SNIFF_BYTES
    name = {"perf": "perf-script"}.get(forced, forced)
    while True:
        more = stream.read(want - len(head))
        head += more
        eof = not more or len(head) < want
        verdict = detect_format(head, eof, str(path), name)
        if verdict.answer != NEED_MORE or eof or want >= MAX_SNIFF_BYTES:
            break
        want *= 4
    if verdict.answer == NEED_MORE:
        if not eof:
            raise FormatError(f"could not tell the format from the first {len(head) >> 20} MiB", str(path))
        verdict = Verdict(verdict.format, "yes", verdict.reason + " (short file)", verdict.options)
    return head, verdict


def close_quietly(*files: BinaryIO) -> None:
    for f in files:
        with suppress(OSError, ValueError, EOFError, PvtraceError):
            f.close()


def format_spec(fmt: str, options: ParseOptions) -> FormatSpec:
    if fmt == "ftrace":
        return ftrace_fmt.SPEC
    if fmt == "trace-cmd":
        return tracecmd.spec_for(options)
    if fmt == "perf-script":
        return perf_script.SPEC
    raise AssertionError(fmt)


def summary_table(inp: Input, problems: Problems) -> tuple[str, list[dict[str, Any]]]:
    text = (inp.head + inp.stream.read()).decode("utf-8", errors="replace")
    if inp.verdict.format == "perf-kvm-stat":
        table = summary_tables.read_perf_kvm_stat(text, str(inp.path), problems)
    else:
        table = summary_tables.read_perf_lock_contention(text, str(inp.path), problems)
    return inp.verdict.format, table.to_dicts()


def raw_chunks(inp: Input, stack: ExitStack, info: ParseInfo) -> Iterator[pl.DataFrame]:
    """Raw frames of a text or .dat input."""
    streamed = is_stream(inp.path)  # stdin or a FIFO: read once, never seeked
    if inp.verdict.format == "dat":
        if inp.compression is None and not streamed:
            inp.stream.seek(0)
            rest: Any = inp.stream
        else:
            rest = _Rejoin(inp.head, inp.stream)
        # a compressed or streamed .dat is first copied to a temporary file (trace-cmd seeks)
        report = stack.enter_context(
            dat_report(inp.path, rest, inp.compression or ("stream" if streamed else None))
        )
        text = report.stream
        head = text.read(SNIFF_BYTES)
        if not head.strip():  # trace-cmd exits 0 and prints nothing for a cut or damaged file
            report.check()
            raise FormatError(
                "trace-cmd report printed no records: the .dat file is truncated or damaged", str(inp.path)
            )
        try:
            verdict = detect_format(head, len(head) < SNIFF_BYTES, str(inp.path), "trace-cmd")
        except FormatError:
            report.check()  # trace-cmd's own complaint says more than an empty report
            raise
        info.format = "dat"
        count_damage(inp, info.problems)  # the archive was read whole into the file trace-cmd reads
        yield from iter_raw_chunks(
            text, format_spec("trace-cmd", verdict.options), verdict.options, info, head=head
        )
        return
    spec = format_spec(inp.verdict.format, inp.verdict.options)
    source: Path | BinaryIO = inp.path if inp.compression is None and not streamed else inp.stream
    yield from iter_raw_chunks(source, spec, inp.verdict.options, info, head=inp.head)


def count_damage(inp: Input, problems: Problems) -> None:
    """A compressed .dat or summary input that ended early (truncated or corrupt archive): one
    counted problem (text inputs count it as they are read, ingest.stream)."""
    damage = stream_damage(inp.stream)
    if damage is not None:
        problems.add("truncated_stream", None, damage)


class _Rejoin:
    """A stream that first returns bytes already read, then the rest of the original stream."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._rest.read(n)


def position(inp: Input) -> int:
    try:
        return int(inp.raw_file.tell())
    except (OSError, ValueError, AttributeError):
        return 0


def summary_formats() -> tuple[str, ...]:
    return ("perf-kvm-stat", "perf-lock-contention")


def is_one_parquet(paths: list[Path], format: str = "auto") -> bool:
    """Whether the inputs are one Parquet file: a pvtrace trace, read as it is (not ingested)."""
    return len(paths) == 1 and (format == "parquet" or (format == "auto" and _is_parquet(paths[0])))


def _is_parquet(path: Path) -> bool:
    if is_stream(path):  # a peek would consume a stream's first bytes; Parquet needs a seekable file
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False
