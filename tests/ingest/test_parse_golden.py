"""Golden tests of the text parsers: one small snippet per format quirk + the expected raw table.

Snippets live in tests/data/ingest/golden/<case>.<ext>; the expected raw frame is
<case>.expected.csv and the parse facts (format, variants, line stats, problems, clock)
<case>.expected.json. Re-bless after a deliberate change with:

    PVTRACE_BLESS=1 pytest tests/ingest/test_parse_golden.py

and review the diff of the expected files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from pvtrace.ingest.load import read_raw
from pvtrace.ingest.raw import RAW_SCHEMA

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "ingest" / "golden"
CASES = sorted(p for p in GOLDEN.iterdir() if ".expected." not in p.name)
BLESS = os.environ.get("PVTRACE_BLESS") == "1"


def _as_text(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(pl.col(c).cast(pl.String) for c in RAW_SCHEMA.names())


def _facts(info, verdict) -> dict:
    return {
        "format": verdict.format,
        "options": vars(verdict.options),
        "variants": dict(sorted(info.variants.items())),
        "clock": info.clock,
        "stats": dict(sorted(info.stats.items())),
        "problems": {k: [s[0] for s in info.problems.samples[k]] for k in sorted(info.problems.counts)},
        "header": info.header,
    }


def _stem(case: Path) -> str:
    return case.name.split(".")[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path) -> None:
    raw, info, verdict = read_raw(case)
    assert raw.schema == RAW_SCHEMA
    got = _as_text(raw)
    facts = _facts(info, verdict)
    csv_path = GOLDEN / f"{_stem(case)}.expected.csv"
    json_path = GOLDEN / f"{_stem(case)}.expected.json"
    if BLESS:
        got.write_csv(csv_path)
        json_path.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    assert csv_path.exists(), f"no expected table for {case.name}; run with PVTRACE_BLESS=1"
    want = pl.read_csv(csv_path, schema={c: pl.String for c in RAW_SCHEMA.names()})
    assert got.to_dicts() == want.to_dicts()
    assert json.loads(json.dumps(facts)) == json.loads(json_path.read_text())


def test_every_case_has_expectations() -> None:
    expected = {p.name.split(".")[0] for p in GOLDEN.glob("*.expected.csv")}
    assert {_stem(c) for c in CASES} == expected


@pytest.mark.parametrize(
    ("reader", "case"),
    [
        ("read_ftrace", "ftrace_tgid.txt"),
        ("read_trace_cmd", "tracecmd_multi_input.txt"),
        ("read_perf_script", "perf_script_padded.txt"),
    ],
)
def test_format_readers_match_the_sniffing_path(reader: str, case: str) -> None:
    from pvtrace.ingest import ftrace, perf_script, tracecmd

    fn = {"read_ftrace": ftrace.read_ftrace, "read_trace_cmd": tracecmd.read_trace_cmd}.get(
        reader, perf_script.read_perf_script
    )
    raw, info, verdict = read_raw(GOLDEN / case)
    direct, direct_info = fn(GOLDEN / case, verdict.options)
    assert direct.equals(raw)
    assert direct_info.stats == info.stats
