"""The "Real traces" table of docs/accuracy.md: what each trace in ../shared/real-traces can tell,
per metric, analyzed with default options (the traces are read in place, never copied):

    python tests/analyze/real_trace_table.py > /tmp/real-traces.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load

REPO = Path(__file__).resolve().parents[2]
REAL = (REPO / ".." / "shared" / "real-traces").resolve()
NOT_TRACES = {"README.md", "PROVENANCE.md", "captures.json", "capture-env.txt"}


def row(path: Path) -> str:
    s = analyze(load([path]))
    given = ", ".join(s.summary.totals) or "none"
    kinds = s.table("lock_kinds")["kind"].value_counts() if s.table("lock_kinds").height else None
    n = {k: 0 for k in ("fifo", "unfair", "undecided")}
    if kinds is not None:
        n |= dict(kinds.select(pl.col("kind").cast(pl.String), "count").iter_rows())
    return (
        f"| {path.relative_to(REAL)} | {s.summary.extra['level']} | {given} | "
        f"{n['fifo']} / {n['unfair']} / {n['undecided']} |"
    )


def markdown() -> str:
    files = sorted(p for p in REAL.rglob("*") if p.is_file() and p.name not in NOT_TRACES)
    lines = [
        "| trace | level | totals given (all others unavailable, with the events they need) "
        "| lock kinds fifo / unfair / undecided |",
        "|---|---|---|---|",
    ]
    return "\n".join(lines + [row(p) for p in files])


if __name__ == "__main__":
    if not REAL.is_dir():
        sys.exit(f"{REAL}: not found (the real traces live beside the project, in ../shared)")
    print(markdown())
