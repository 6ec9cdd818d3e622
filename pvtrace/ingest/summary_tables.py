"""Summary tables users paste around: `perf kvm stat` and `perf lock contention` output.

They are not traces (no events), but they answer the same questions (which exits,
which locks), so pvtrace reads them into documented tables and shows them beside
its own numbers. Layouts (formats.md section 4): perf kvm stat's legacy table
(`report` and every `live` refresh), its newer histogram-style table, arm64
TRAP/IRQ and TRAP-EVENT keys; perf lock contention's default (type, caller),
`-t` (pid, comm), `-l` (address, symbol), `-o` owner, `-v` call stacks and `-x`
CSV. Columns run together when a value is wider than its column
(`0.43us 901000.66us`) and units change per cell, so cells are read by their
value+unit shape, never by position. These tables are small: they are read line
by line.
"""

from __future__ import annotations

import re

import polars as pl

from pvtrace.errors import FormatError
from pvtrace.ingest import aliases
from pvtrace.ingest.problems import Problems
from pvtrace.schema import Column, schema_of

KVM_STAT_COLUMNS: tuple[Column, ...] = (
    Column("block", pl.Int32(), "Table number in the input, from 0 (each report section or `live` refresh)."),
    Column(
        "time", pl.String(), "Wall-clock line printed before a `live` refresh (15:52:35.709821); else null."
    ),
    Column(
        "scope",
        pl.String(),
        "What the table covers, from its title (`all VMs, all VCPUs`, `all VMs, VCPU 27`).",
    ),
    Column(
        "key_kind",
        pl.String(),
        "The key column: VM-EXIT, TRAP-EVENT, IO Port Access, MMIO Access, Event name.",
    ),
    Column("key", pl.String(), "The row key as printed (HLT, PAUSE_INSTRUCTION, npf, WFx, ...)."),
    Column(
        "reason",
        pl.String(),
        "Normalized exit reason (PAUSE, HLT, HYPERCALL, ...) as in events; else the key.",
    ),
    Column("n_samples", pl.Int64(), "Samples (exits) counted."),
    Column("samples_pct", pl.Float64(), "Share of all samples in the table, %."),
    Column("time_pct", pl.Float64(), "Share of all time in the table, %."),
    Column(
        "total_ns",
        pl.Int64(),
        "Total time in these exits, ns (histogram style only; null in the legacy table).",
    ),
    Column("min_ns", pl.Int64(), "Shortest exit, ns."),
    Column("max_ns", pl.Int64(), "Longest exit, ns."),
    Column("avg_ns", pl.Int64(), "Mean exit time, ns."),
    Column("stddev_pct", pl.Float64(), "Relative standard deviation of the mean, % (legacy `( +- x% )`)."),
    Column("block_samples", pl.Int64(), "The block's `Total Samples:` line; null when absent."),
    Column("block_time_ns", pl.Int64(), "The block's `Total events handled time:`, ns; null when absent."),
)
KVM_STAT_SCHEMA = schema_of(KVM_STAT_COLUMNS)

LOCK_CONTENTION_COLUMNS: tuple[Column, ...] = (
    Column("block", pl.Int32(), "Table number in the input, from 0."),
    Column("mode", pl.String(), "Key columns of the table: `type caller`, `pid comm`, `address symbol`, ..."),
    Column("n_contended", pl.Int64(), "Contentions counted."),
    Column("total_wait_ns", pl.Int64(), "Total wait, ns (units normalized per cell)."),
    Column("max_wait_ns", pl.Int64(), "Longest wait, ns."),
    Column("avg_wait_ns", pl.Int64(), "Mean wait, ns."),
    Column(
        "type", pl.String(), "Lock type (spinlock, mutex, rwsem:W, ...); from `(type)` after a -l symbol."
    ),
    Column("caller", pl.String(), "Calling function (default mode)."),
    Column("pid", pl.Int32(), "Thread id (-t mode) or owner pid (-o)."),
    Column("comm", pl.String(), "Thread name (-t mode, at most 15 characters) or owner comm (-o)."),
    Column("address", pl.UInt64(), "Lock address (-l mode)."),
    Column("symbol", pl.String(), "Lock symbol (-l mode), e.g. `&task_struct`, without the type."),
    Column("callstack", pl.String(), "The -v call stack under the row, one `addr  sym+off` frame per line."),
)
LOCK_CONTENTION_SCHEMA = schema_of(LOCK_CONTENTION_COLUMNS)

_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_CELL = r"[\d.]+\s*(?:ns|us|ms|s)"  # a time cell: value and unit, maybe without a blank between

_KVM_TITLE = re.compile(r"^\s*Analyze events for (?P<scope>.*?):?\s*$")
_KVM_TIME = re.compile(r"^\s*(?P<time>\d{1,2}:\d{2}:\d{2}(?:\.\d+)?)\s*$")
_KVM_TOTAL = re.compile(
    r"^\s*Total Samples:\s*(?P<n>\d+),\s*Total events handled time:\s*(?P<t>[\d.]+\s*(?:ns|us|ms|s))\.?\s*$"
)
_KVM_LEGACY_HEADER = re.compile(
    r"^\s*(?P<key>.*?)\s+Samples\s+Samples%\s+Time%\s+Min Time\s+Max Time\s+Avg time\s*$"
)
_KVM_HIST_HEADER = re.compile(r"^\s*(?P<key>.*?)\s+Samples\s+Sample%\s+Time \(ns\)\s+Time%")
_KVM_LEGACY_ROW = re.compile(
    rf"^\s*(?P<key>\S.*?)\s+(?P<n>\d+)\s+(?P<spct>[\d.]+)%\s+(?P<tpct>[\d.]+)%\s+"
    rf"(?P<min>{_CELL})\s*(?P<max>{_CELL})\s*(?P<avg>{_CELL})\s*\(\s*\+-\s*(?P<sd>[\d.]+)%\s*\)\s*$"
)
_KVM_HIST_ROW = re.compile(
    r"^\s*(?P<key>\S.*?)\s+(?P<n>\d+)\s+(?P<spct>[\d.]+)%\s+(?P<total>\d+)\s+(?P<tpct>[\d.]+)%\s+"
    r"(?P<max>\d+)\s+(?P<min>\d+)\s+(?P<avg>\d+)\s*$"
)

_LOCK_HEADER = re.compile(
    r"^\s*contended\s*,?\s*total wait\s*,?\s*max wait\s*,?\s*avg wait\s*,?\s*(?P<keys>.*?)\s*$"
)
_LOCK_ROW = re.compile(
    rf"^\s*(?P<n>\d+)\s+(?P<total>{_CELL})\s*(?P<max>{_CELL})\s*(?P<avg>{_CELL})\s+(?P<rest>\S.*?)\s*$"
)
_FRAME = re.compile(r"^\s+(?:0x[0-9a-fA-F]+|[0-9a-fA-F]{8,})\s+\S")  # -v call-stack line
_DEBUG_SECTION = re.compile(r"^\s*=+\s*output for debug")


def _ns(cell: str) -> int:
    """`0.43us`, `6.03 s`, `702.63 us`, or a bare number (ns) -> integer ns."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(ns|us|ms|s)?\s*", cell)
    if m is None:
        raise ValueError(cell)
    return round(float(m.group(1)) * _UNIT_NS[m.group(2) or "ns"])


def _bad(problems: Problems | None, path: str, line: int, text: str, what: str) -> None:
    if problems is None:
        raise FormatError(f"{what}: {text.strip()!r}", path, line)
    problems.add("malformed_line", line, text)


def read_perf_kvm_stat(text: str, path: str = "<text>", problems: Problems | None = None) -> pl.DataFrame:
    """Every `perf kvm stat report`/`live` table in text, as rows in KVM_STAT_SCHEMA.

    A row that sits in a table but does not parse raises FormatError (file and
    line), or is recorded in problems when given. Text with no table at all
    raises FormatError.
    """
    rows: list[dict] = []
    block, style = -1, None
    pending: dict[str, str | None] = {"time": None, "scope": None}
    key_kind = ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := _KVM_TIME.match(line):
            pending["time"] = m["time"]
        elif m := _KVM_TITLE.match(line):
            pending["scope"] = m["scope"]
        elif (m := _KVM_LEGACY_HEADER.match(line)) or (m := _KVM_HIST_HEADER.match(line)):
            style = "legacy" if m.re is _KVM_LEGACY_HEADER else "hist"
            block += 1
            key_kind = m["key"].strip()
            block_info = {"block": block, **pending, "key_kind": key_kind}
            pending = {"time": None, "scope": None}
        elif m := _KVM_TOTAL.match(line):
            for row in rows:
                if row["block"] == block:
                    row["block_samples"], row["block_time_ns"] = int(m["n"]), _ns(m["t"])
        elif style == "legacy" and (m := _KVM_LEGACY_ROW.match(line)):
            rows.append(
                {
                    **block_info,
                    "key": m["key"],
                    "n_samples": int(m["n"]),
                    "samples_pct": float(m["spct"]),
                    "time_pct": float(m["tpct"]),
                    "min_ns": _ns(m["min"]),
                    "max_ns": _ns(m["max"]),
                    "avg_ns": _ns(m["avg"]),
                    "stddev_pct": float(m["sd"]),
                }
            )
        elif style == "hist" and (m := _KVM_HIST_ROW.match(line)):
            rows.append(
                {
                    **block_info,
                    "key": m["key"],
                    "n_samples": int(m["n"]),
                    "samples_pct": float(m["spct"]),
                    "total_ns": int(m["total"]),
                    "time_pct": float(m["tpct"]),
                    "max_ns": int(m["max"]),
                    "min_ns": int(m["min"]),
                    "avg_ns": int(m["avg"]),
                }
            )
        elif style is not None:
            _bad(problems, path, lineno, line, "not a perf kvm stat table row")
    if block < 0:
        raise FormatError("no perf kvm stat table (no `VM-EXIT  Samples  Samples% ...` header) found", path)
    table = pl.DataFrame(rows, schema=KVM_STAT_SCHEMA) if rows else pl.DataFrame(schema=KVM_STAT_SCHEMA)
    is_exit = pl.col("key_kind").is_in(["VM-EXIT", "Event name"])
    return table.with_columns(
        pl.when(is_exit)
        .then(aliases.exit_reason(pl.col("key")).replace(aliases.ARM_TYPE_REASONS))
        .otherwise(pl.col("key"))
        .alias("reason")
    )


def _lock_keys(header_keys: str) -> list[str]:
    return [k for k in re.split(r"[\s,]+", header_keys.strip()) if k]


def read_perf_lock_contention(
    text: str, path: str = "<text>", problems: Problems | None = None
) -> pl.DataFrame:
    """Every `perf lock contention` table in text, as rows in LOCK_CONTENTION_SCHEMA.

    Units are normalized per cell (ns, us, ms, s; bare CSV numbers are ns).
    -v call-stack lines are attached to the row above them. The `=== output for
    debug ===` trailer is skipped.
    """
    rows: list[dict] = []
    block, keys, csv = -1, [], False
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _DEBUG_SECTION.match(line):
            keys = []
            continue
        if m := _LOCK_HEADER.match(line):
            block += 1
            keys, csv = _lock_keys(m["keys"]), "," in line
            continue
        if not keys:
            continue
        try:
            if csv:
                cells = [c.strip() for c in line.split(",")]
                n, total, mx, avg, rest = cells[0], cells[1], cells[2], cells[3], cells[4:]
            else:
                m = _LOCK_ROW.match(line)
                if m is None:
                    raise ValueError(line)
                n, total, mx, avg = m["n"], m["total"], m["max"], m["avg"]
                first, _, remainder = m["rest"].partition(" ")
                rest = [first, remainder.strip()] if len(keys) > 1 else [m["rest"]]
            row = _lock_row(block, keys, int(n), _ns(total), _ns(mx), _ns(avg), rest)
        except (ValueError, IndexError):
            if rows and rows[-1]["block"] == block and _FRAME.match(line):
                stack = rows[-1]["callstack"]
                frame = " ".join(line.split())
                rows[-1]["callstack"] = frame if stack is None else stack + "\n" + frame
            else:
                _bad(problems, path, lineno, line, "not a perf lock contention table row")
            continue
        rows.append(row)
    if block < 0:
        raise FormatError("no perf lock contention table (no `contended  total wait ...` header) found", path)
    return (
        pl.DataFrame(rows, schema=LOCK_CONTENTION_SCHEMA)
        if rows
        else pl.DataFrame(schema=LOCK_CONTENTION_SCHEMA)
    )


def _lock_row(
    block: int, keys: list[str], n: int, total: int, mx: int, avg: int, values: list[str]
) -> dict[str, object]:
    row: dict[str, object] = {
        "block": block,
        "mode": " ".join(keys),
        "n_contended": n,
        "total_wait_ns": total,
        "max_wait_ns": mx,
        "avg_wait_ns": avg,
        "callstack": None,
    }
    for key, value in zip(keys, values, strict=False):
        if key in ("pid", "owner") and value.isdigit():
            row["pid"] = int(value)
        elif key in ("comm", "owner"):
            row["comm"] = value
        elif key == "address":
            row["address"] = int(value.removeprefix("0x"), 16)
        elif key == "symbol":
            sym = re.fullmatch(r"(?P<sym>.*?)\s*\((?P<type>[^()]*)\)\s*", value)
            row["symbol"], row["type"] = (sym["sym"], sym["type"]) if sym else (value, None)
        elif key in ("type", "caller"):
            row[key] = value
    return row
