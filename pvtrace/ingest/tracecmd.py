"""`trace-cmd report` text: single and multi-input (file-name prefixes), instances, `-l`, `-t`, `-R`, `-N`.

The record line is the tracefs one (formats.md §2.2) with the event name padded to 20
columns, usually no flag column, and optionally a right-aligned `name: ` prefix per input
or buffer instance. Prologue lines (`version = 6`, `CPU N is empty`, `[name: ]cpus=N`) feed
the header facts. Continuation lines of multi-line events carry no prefix.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pvtrace.ingest.ftrace import (
    ANCHOR,
    FRAME,
    LATENCY,
    LATENCY_ABS,
    REC,
    RECORD,
    read_header_lines,
    record_layout,
)
from pvtrace.ingest.records import FormatSpec, Grammar, ParseInfo, ParseOptions
from pvtrace.ingest.stream import read_text_records

_PREFIX = r"^\s*(?P<source>\S+): \s*"
PREFIXED_RECORD = Grammar("trace-cmd-prefixed", _PREFIX + REC)
PREFIXED_LATENCY_ABS = Grammar(
    "trace-cmd-prefixed-latency",
    _PREFIX + LATENCY_ABS.pattern.removeprefix(r"^\s*"),
)

SPEC = FormatSpec(
    name="trace-cmd",
    grammars=(RECORD, LATENCY_ABS, LATENCY),
    layout_of=record_layout,
    frame_pattern=FRAME,
    attach_frames=True,
    anchor_pattern=ANCHOR,
    header=read_header_lines,
)
SPEC_PREFIXED = FormatSpec(
    name="trace-cmd",
    grammars=(PREFIXED_RECORD, PREFIXED_LATENCY_ABS, RECORD, LATENCY_ABS, LATENCY),
    layout_of=record_layout,
    frame_pattern=FRAME,
    attach_frames=True,
    anchor_pattern=ANCHOR,
    header=read_header_lines,
)


def spec_for(options: ParseOptions) -> FormatSpec:
    """The prefixed grammar set only when the sniffer saw `name: ` prefixes (a comm may hold `: `)."""
    return SPEC_PREFIXED if options.has_source else SPEC


def read_trace_cmd(path: Path | str, options: ParseOptions | None = None) -> tuple[pl.DataFrame, ParseInfo]:
    """Parse one `trace-cmd report` text file (plain or compressed) into the raw frame."""
    options = options or ParseOptions()
    return read_text_records(Path(path), spec_for(options), options)
