"""Hand-made raw frames (RAW_SCHEMA) for the normalizer tests.

A row is written as one tab-separated line, the way the golden snippets under
tests/data/normalize/ are: `source comm tid tgid cpu ts event payload`
(`-` for null). Keeping the payload text exactly as a kernel or tool prints it
is the point: the normalizer sees what a parser would hand it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pvtrace.ingest.raw import conform_raw

FIELDS = ("source", "comm", "tid", "tgid", "cpu", "ts", "event", "payload")
INTS = ("tid", "tgid", "cpu", "ts")


def raw_from_lines(lines: list[str]) -> pl.DataFrame:
    """Raw frame from tab-separated row lines; blank lines and `#` comments are skipped."""
    rows = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.rstrip("\n").split("\t")
        assert len(cells) == len(FIELDS), f"need {len(FIELDS)} tab-separated cells: {line!r}"
        row: dict[str, object] = {}
        for name, cell in zip(FIELDS, cells, strict=True):
            value: object = None if cell == "-" else cell
            if value is not None and name in INTS:
                value = int(cell)
            row[name] = value
        row["line"] = len(rows) + 1
        rows.append(row)
    schema = {f: (pl.Int64 if f in INTS else pl.String) for f in FIELDS} | {"line": pl.Int64}
    return conform_raw(pl.DataFrame(rows, schema=schema))


def raw_from_file(path: Path) -> pl.DataFrame:
    return raw_from_lines(path.read_text().splitlines())


def row(event: str, payload: str, *, comm: str = "-", tid: int | None = None, cpu: int = 0, ts: int = 0,
        tgid: int | None = None, source: str = "-") -> str:  # fmt: skip
    """One row line (for tests that build rows in code)."""
    cells = [source, comm, "-" if tid is None else str(tid), "-" if tgid is None else str(tgid), str(cpu),
             str(ts), event, payload]  # fmt: skip
    return "\t".join(cells)
