"""tracefs text: `trace`, `trace_pipe`, `per_cpu/cpuN/trace`, latency format and console dumps.

Variants read (formats.md §1, detected per line): flag columns of 0/4/5/7 characters,
the TGID column in both widths, the latency layout (8-char comm, CPU glued to the flags,
`NNNus` since buffer start), printk `[ secs]` and mail `> ` prefixes (stripped per file),
raw integer timestamps of counter clocks, and trimmed excerpts without timestamps.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from pvtrace.ingest.records import (
    FormatSpec,
    Grammar,
    Layout,
    ParseInfo,
    ParseOptions,
)
from pvtrace.ingest.stream import read_text_records

REC = (
    r"(?P<comm>.*)-(?P<tid>\d+)\s+(?:\(\s*(?P<tgid>[0-9-]+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\d]\S*)\s+)?(?P<secs>\d+)(?:\.(?P<frac>\d+))?: (?P<rest>.*)$"
)
RECORD = Grammar("ftrace", r"^\s*" + REC)
LATENCY = Grammar(
    "latency",
    r"^\s*(?P<comm>.*)-(?P<tid>\d+)\s+(?P<cpu>\d+)(?P<flags>[^\s\d]\S*)\s+(?P<us>\d+)us.: (?P<rest>.*)$",
)
LATENCY_ABS = Grammar(
    "latency-abs-ts",
    r"^\s*(?P<comm>.*)-(?P<tid>\d+)\s+(?P<cpu>\d+)(?P<flags>[^\s\d]\S*)\s+"
    r"(?P<secs>\d+)(?:\.(?P<frac>\d+))?: (?P<rest>.*)$",
)
NO_TS = Grammar("excerpt-no-ts", r"^\s*(?P<comm>.*)-(?P<tid>\d+): (?P<rest>[A-Za-z_][\w:-]*: .*)$")
TS_ONLY = Grammar(
    "excerpt-ts-only", r"^\s*(?P<secs>\d+)(?:\.(?P<frac>\d+))?: (?P<rest>[A-Za-z_][\w:-]*: ?.*)$"
)
GRAMMARS = (RECORD, LATENCY, LATENCY_ABS, NO_TS, TS_ONLY)

ANCHOR = (
    r"-\d+\s+(?:\(\s*[0-9-]+\)\s+)?\[\d+\]"  # comm-pid [cpu]
    r"|-\d+\s+\d+[^\s\d]\S*\s+\d+(?:us|\.\d)"  # latency comm-pid cpu+flags ts
)
FRAME = r"^\s*=> "


def record_layout(m: re.Match[str], s: str) -> Layout | None:
    """The fixed-column form of a `comm-pid [cpu] flags secs.frac: ` line (with optional source/TGID)."""
    g = m.groupdict()
    if g.get("comm") is None or g.get("cpu") is None or g.get("secs") is None or not s.isascii():
        return None
    slots: list[tuple[str, int, int | None]] = []
    start = 0
    if g.get("source") is not None:
        slots.append(("source", 0, m.end("source")))
        start = m.end("source") + 2
    dash, lbr, rbr = m.end("comm"), m.start("cpu") - 1, m.end("cpu")
    if s[dash] != "-" or s[lbr] != "[" or s[rbr] != "]":
        return None
    slots.append(("comm", start, dash))
    if g.get("tgid") is not None:
        po, pc = s.rfind("(", 0, m.start("tgid")), s.find(")", m.end("tgid"))
        slots += [("tid", dash + 1, po), ("tgid", po + 1, pc)]
    else:
        slots.append(("tid", dash + 1, lbr))
    slots.append(("cpu", lbr + 1, rbr))
    ts_start = rbr + 1
    if g.get("flags") is not None:
        slots.append(("flags", *m.span("flags")))
        ts_start = m.end("flags")
    colon = m.end("secs")
    slots.append(("secs", ts_start, colon))
    if g.get("frac") is not None:
        slots.append(("frac", colon + 1, m.end("frac")))
        colon = m.end("frac")
    if s[colon : colon + 2] != ": ":
        return None
    slots.append(("rest", colon + 2, None))
    return Layout(grammar="ftrace", first_colon=s.find(": "), slots=tuple(slots))


_ENTRIES = re.compile(r"entries-in-buffer/entries-written:\s*(\d+)/(\d+)\s+#P:(\d+)")
_LAT_HDR = re.compile(r"#\s*(\S+) latency trace v[\d.]+ on (\S+)")
_CPUS = re.compile(r"^\s*(?:(\S+): +)?cpus=(\d+)\s*$")
_EMPTY = re.compile(r"^CPU (\d+) is empty")


def read_header_lines(lines: list[str], header: dict[str, Any]) -> None:
    """Fill header facts from tracefs comment lines, console framing and trace-cmd prologue lines."""
    for line in lines:
        s = line.strip()
        if s.startswith("# tracer:"):
            header.setdefault("tracer", s.split(":", 1)[1].strip())
            header["header_blocks"] = header.get("header_blocks", 0) + 1
        elif m := _ENTRIES.search(s):
            a, b, p = (int(x) for x in m.groups())
            header["entries_in_buffer"] = header.get("entries_in_buffer", 0) + a
            header["entries_written"] = header.get("entries_written", 0) + b
            header.setdefault("n_cpus_possible", p)
        elif s.startswith("# enabled events:"):
            header["enabled_events"] = s.split(":", 1)[1].split()
        elif m := _LAT_HDR.search(s):
            header["latency_tracer"], header["kernel_release"] = m.groups()
        elif "#P:" in s and s.startswith("#"):
            if p := re.search(r"#P:(\d+)", s):
                header.setdefault("n_cpus_possible", int(p.group(1)))
        elif s.startswith("# WARNING"):
            header.setdefault("warnings", []).append(s[1:].strip())
        elif s.startswith("Dumping ftrace buffer"):
            header["console_dump"] = True
        elif m := _CPUS.match(s):
            header.setdefault("cpus", {})[m.group(1) or ""] = int(m.group(2))
        elif s.startswith("version ="):
            header["tracecmd_file_version"] = int(s.split("=", 1)[1])
        elif m := _EMPTY.match(s):
            header.setdefault("empty_cpus", []).append(int(m.group(1)))


SPEC = FormatSpec(
    name="ftrace",
    grammars=GRAMMARS,
    layout_of=record_layout,
    frame_pattern=FRAME,
    attach_frames=True,
    anchor_pattern=ANCHOR,
    header=read_header_lines,
)


def read_ftrace(path: Path | str, options: ParseOptions | None = None) -> tuple[pl.DataFrame, ParseInfo]:
    """Parse one tracefs text file (plain or compressed) into the raw frame."""
    return read_text_records(Path(path), SPEC, options)
