"""Golden normalizer cases: one snippet per quirk, its expected events and info.

tests/data/normalize/<case>.tsv holds raw rows (see raw_rows.py); the expected
output sits next to it as <case>.events.csv and <case>.info.json. After an
intended change, re-bless with `PVTRACE_BLESS=1 pytest tests/ingest/test_normalize_golden.py`
and review the diff.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import polars as pl
import pytest
from raw_rows import raw_from_file

from pvtrace.ingest.normalize import normalize

DATA = Path(__file__).resolve().parents[1] / "data" / "normalize"
CASES = sorted(p.stem for p in DATA.glob("*.tsv"))
BLESS = os.environ.get("PVTRACE_BLESS") == "1"
INFO_KEYS = (
    "side",
    "sides",
    "guest_vm_names",
    "vcpu_map",
    "vms",
    "clock",
    "unknown_events",
    "unparsed_payloads",
    "notes",
)


def events_csv(events: pl.DataFrame) -> str:
    buf = io.StringIO()
    events.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String)).write_csv(buf)
    return buf.getvalue()


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    events, info = normalize(raw_from_file(DATA / f"{case}.tsv"))
    got_csv = events_csv(events)
    got_info = json.dumps({k: info[k] for k in INFO_KEYS}, indent=1, sort_keys=True) + "\n"
    csv_path, info_path = DATA / f"{case}.events.csv", DATA / f"{case}.info.json"
    if BLESS:
        csv_path.write_text(got_csv)
        info_path.write_text(got_info)
        return
    assert csv_path.is_file(), f"no golden output for {case}; run with PVTRACE_BLESS=1 and review it"
    assert got_csv == csv_path.read_text()
    assert got_info == info_path.read_text()
