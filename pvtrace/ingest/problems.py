"""Lines an ingester could not read: counted by kind, the first few kept with their line numbers.

Lenient by default (a few bad lines in a GB trace should not lose the rest), fatal on
request: with strict=True the first problem raises FormatError naming file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pvtrace.errors import FormatError

N_SAMPLES = 5

DESCRIPTIONS: dict[str, str] = {
    "malformed_line": "line is not a record, a header or a continuation of the previous record",
    "truncated_record": "record line is cut short or garbled (it starts like a record but does not parse)",
    "invalid_utf8": "bytes that are not UTF-8 (replaced with U+FFFD)",
    "orphan_continuation": "continuation or stack-frame line with no record before it",
    "unsupported_layout": "a trace layout pvtrace does not read (verbose latency, raw/hex/bin output)",
    "truncated_stream": "compressed stream truncated or corrupt: the input ends early (the rest is missing; a cut last line is dropped)",
    "last_line_cut": "the input ends without a newline: its last line may be cut mid-record (kept as read)",
    "out_of_order": "timestamp earlier than the previous record on the same CPU (clock skew or corruption)",
    # values checked by ingest.sanity
    "cpu_out_of_range": "CPU id outside 0..8191 (the kernel's largest NR_CPUS)",
    "pid_out_of_range": "pid past 4194304 (PID_MAX_LIMIT)",
    "timestamp_out_of_range": "timestamp negative or past 2^62 ns (an overflow)",
    "time_backwards": "timestamp earlier than the record before it on the same CPU (span excluded as lost)",
    "time_jump": "timestamp over an hour after the record before it on the same CPU (span excluded as lost)",
    "time_spike": "timestamp ahead of the records on both sides of it on the same CPU, which are in order: "
    "a garbled timestamp (span excluded as lost)",
    "duplicate_record": "exact copy of the record before it on the same CPU (dropped)",
    "unreadable_payload": "a known event whose fields could not be read (a garbled lock address, "
    "pid or reason): the analysis cannot use it",
}


@dataclass
class Problems:
    """Problem counts and samples for one input file."""

    path: str
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    def add(self, kind: str, line: int | None, text: str, n: int = 1) -> None:
        """Record n occurrences of kind; keep (line, text) as a sample while there is room."""
        self.counts[kind] = self.counts.get(kind, 0) + n
        kept = self.samples.setdefault(kind, [])
        if len(kept) < N_SAMPLES:
            kept.append((line if line is not None else 0, text[:200]))

    def add_rows(self, kind: str, rows: pl.DataFrame) -> None:
        """Record every row of a (line, text) frame as one problem of kind."""
        if rows.height == 0:
            return
        self.counts[kind] = self.counts.get(kind, 0) + rows.height
        kept = self.samples.setdefault(kind, [])
        room = N_SAMPLES - len(kept)
        if room > 0:
            head = rows.sort("line").head(room)
            kept.extend((int(ln), str(tx)[:200]) for ln, tx in zip(head["line"], head["text"], strict=True))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def first(self) -> tuple[str, int, str] | None:
        """The earliest sampled problem: (kind, line, text); at the line where an archive ends early,
        the damage, which explains the cut line there."""
        found = [
            (line, kind != "truncated_stream", kind, text)
            for kind, kept in self.samples.items()
            for line, text in kept
        ]
        if not found:
            return None
        line, _, kind, text = min(found)
        return kind, line, text

    def check_strict(self, strict: bool) -> None:
        """Raise FormatError for the earliest problem when strict."""
        if not strict or not self.total:
            return
        kind, line, text = self.first()  # type: ignore[misc]
        raise FormatError(
            f"{DESCRIPTIONS.get(kind, kind)}: {text.strip()!r} (--strict makes this fatal)", self.path, line
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for TraceMeta.problems."""
        return {
            kind: {
                "count": n,
                "what": DESCRIPTIONS.get(kind, kind),
                "samples": [{"line": ln, "text": tx} for ln, tx in self.samples.get(kind, [])],
            }
            for kind, n in sorted(self.counts.items())
        }


def skipped_lines(problems: dict) -> dict:
    """What the ingester could not read, for the summary: total lines and counts by reason, and
    the inputs whose archive ended early (`damaged`: "path: why"), whose end is missing."""
    by_reason: dict[str, int] = {}
    damaged: list[str] = []
    first = None
    for path, kinds in sorted(problems.items()):
        if not isinstance(kinds, dict):
            continue
        earliest: tuple[int, str] | None = None  # the first bad line of this file, whatever its kind
        for kind, info in kinds.items():
            if isinstance(info, dict) and isinstance(info.get("count"), int):
                by_reason[kind] = by_reason.get(kind, 0) + info["count"]
                if kind == "truncated_stream":
                    damaged += [f"{path}: {x.get('text')}" for x in info.get("samples") or []]
                for sample in info.get("samples") or []:
                    line = sample.get("line")
                    key = line if isinstance(line, int) else 1 << 62
                    if earliest is None or key < earliest[0]:
                        earliest = (key, f"{path}:{line}: {info.get('what', kind)}")
        if first is None and earliest is not None:
            first = earliest[1]
    out = {"total": sum(by_reason.values()), "by_reason": by_reason, "first": first}
    return out | ({"damaged": damaged} if damaged else {})
