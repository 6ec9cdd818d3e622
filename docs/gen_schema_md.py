"""Writes docs/schema.md from the documented schemas (tests/test_docs.py checks it is current)."""

from __future__ import annotations

import sys
from pathlib import Path

from pvtrace.analyze.result import TABLES
from pvtrace.ingest.summary_tables import KVM_STAT_COLUMNS, LOCK_CONTENTION_COLUMNS
from pvtrace.schema import EVENT_COLUMNS, KINDS, markdown_table

HEADER = """# pvtrace tables

Generated from `pvtrace/schema.py` and `pvtrace/analyze/result.py` by
`python docs/gen_schema_md.py`; do not edit by hand.

## Canonical events

Every producer (simulator, ingesters) writes this table and every analysis reads
only it. Canonical order is `(ts, seq)`.
"""


def render() -> str:
    parts = [
        HEADER,
        markdown_table(EVENT_COLUMNS),
        "",
        "Kinds: " + ", ".join(f"`{k}`" for k in KINDS) + ".",
        "",
    ]
    parts.append("## Analysis result tables\n")
    for name, cols in TABLES.items():
        parts += [f"### `{name}`\n", markdown_table(cols), ""]
    parts.append("## perf summary tables\n")
    parts.append(
        "Present when an input is a `perf kvm stat` or `perf lock contention` table, with an `input` "
        "column naming the file.\n"
    )
    for name, cols in (
        ("perf_kvm_stat", KVM_STAT_COLUMNS),
        ("perf_lock_contention", LOCK_CONTENTION_COLUMNS),
    ):
        parts += [f"### `{name}`\n", markdown_table(cols), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    target = Path(__file__).with_name("schema.md")
    target.write_text(render())
    sys.stdout.write(f"wrote {target}\n")
