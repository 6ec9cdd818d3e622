"""`perf script` text of tracepoint samples (also what `perf kvm record` / `perf sched script` give).

Layout (formats.md §3): `comm tid [cpu] secs.usecs: sys:event: payload`, the comm right-aligned
(not padded with -g), optionally `pid/tid`, the event name right-aligned to the longest one.
`--header` adds `#` lines, `-g` adds callchain frame lines (counted, not kept) ending with a blank
line, `--show-lost-events` adds PERF_RECORD_LOST lines (kept as lost_events rows).
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

SAMPLE = Grammar(
    "perf-script",
    r"^\s*(?P<comm>.*?)\s+(?:(?P<tgid>-?\d+)/)?(?P<tid>-?\d+)\s+\[(?P<cpu>\d+)\]\s+"
    r"(?P<secs>\d+)(?:\.(?P<frac>\d+))?: ?(?P<rest>.*)$",
)
FRAME = r"^\s+[0-9a-fA-F]+\s+\S"
ANCHOR = r"\s-?\d+(?:/-?\d+)?\s+\[\d+\]\s+\d+\.\d"


def sample_layout(m: re.Match[str], s: str) -> Layout | None:
    """The fixed-column form of a padded `comm tid [cpu] secs.frac: ` sample line."""
    g = m.groupdict()
    if g.get("tgid") is not None or g.get("frac") is None or g.get("comm") is None or not s.isascii():
        return None
    ce, te = m.end("comm"), m.end("tid")
    lbr, rbr = m.start("cpu") - 1, m.end("cpu")
    dot, colon = m.end("secs"), m.end("frac")
    if s[lbr] != "[" or s[rbr] != "]" or s[colon] != ":" or s[ce] != " ":
        return None
    slots = (
        ("comm", 0, ce),
        ("tid", ce, te),
        ("cpu", lbr + 1, rbr),
        ("secs", rbr + 1, dot),
        ("frac", dot + 1, colon),
        ("rest", colon + 1, None),
    )
    return Layout(grammar=SAMPLE.name, first_colon=s.find(": "), slots=slots)


_KV = re.compile(r"^#\s*([^:]+?)\s*:\s(.*)$")


def read_header_lines(lines: list[str], header: dict[str, Any]) -> None:
    """`perf script --header` lines (`# key : value`) into header["perf"]."""
    perf = header.setdefault("perf", {})
    for line in lines:
        m = _KV.match(line.strip())
        if m and len(perf) < 200:
            key, value = m.group(1).strip(), m.group(2).strip()
            if key == "event":
                perf.setdefault("events", []).append(value.split(",", 1)[0].removeprefix("name = "))
            else:
                perf[key] = value
    if "nrcpus avail" in perf:
        header.setdefault("n_cpus_possible", int(perf["nrcpus avail"]))


SPEC = FormatSpec(
    name="perf-script",
    grammars=(SAMPLE,),
    layout_of=sample_layout,
    frame_pattern=FRAME,
    attach_frames=False,
    anchor_pattern=ANCHOR,
    header=read_header_lines,
    pad_before_event=True,
)


def read_perf_script(path: Path | str, options: ParseOptions | None = None) -> tuple[pl.DataFrame, ParseInfo]:
    """Parse one `perf script` text file (plain or compressed) into the raw frame."""
    return read_text_records(Path(path), SPEC, options)
