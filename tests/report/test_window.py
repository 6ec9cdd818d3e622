"""Choosing the timeline window: the worst incident by default, or START:END."""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.analyze.result import Analysis, empty_table
from pvtrace.errors import UsageError
from pvtrace.report.window import Window, default_window, parse_time, parse_window, user_window


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1500", 1500),
        ("2us", 2000),
        ("2µs", 2000),
        ("2.5ms", 2_500_000),
        ("1s", 10**9),
        (".5ms", 500_000),
        ("3 ns", 3),
    ],
)
def test_parse_time(text, ns):
    assert parse_time(text) == ns


@pytest.mark.parametrize("text", ["", "abc", "5 min", "-3ms", "1e3"])
def test_parse_time_rejects(text):
    with pytest.raises(UsageError, match="--window"):
        parse_time(text)


def test_parse_window_forms():
    assert parse_window("2ms:5ms") == (2_000_000, 5_000_000)
    assert parse_window("1s:") == (10**9, None)
    assert parse_window(":10us") == (None, 10_000)
    for bad in ("5ms", "1:2:3", "5ms:2ms", "3ms:3ms"):
        with pytest.raises(UsageError):
            parse_window(bad)


def test_user_window_is_relative_to_trace_start_and_clipped():
    w = user_window((1000, 10**12), 5_000, 90_000)
    assert (w.start, w.end) == (6_000, 90_000)
    with pytest.raises(UsageError, match="after the trace ends"):
        user_window((10**9, None), 0, 1000)


def _lhp(rows):
    schema = empty_table("lhp_incidents").schema
    return pl.DataFrame(
        [
            {
                "vm": "vm0",
                "lock": 0x10,
                "holder": h,
                "holder_state": "preempted",
                "start": s,
                "end": e,
                "dur": e - s,
                "n_waiters": 1,
                "waste_ns": w,
                "harmful": True,
                "truncated": False,
            }
            for h, s, e, w in rows
        ],
        schema=schema,
    )


def test_default_window_centers_on_the_incident_that_wasted_most():
    a = Analysis(tables={"lhp_incidents": _lhp([(0, 1000, 5000, 100), (1, 20_000, 22_000, 900)])})
    w = default_window(a, 0, 100_000)
    # Incident [20000, 22000) padded by its length on each side.
    assert (w.start, w.end) == (18_000, 24_000)
    assert "LHP" in w.why and "vCPU 1" in w.why


def test_default_window_clips_to_the_trace():
    a = Analysis(tables={"lhp_incidents": _lhp([(0, 100, 5_100, 10)])})
    w = default_window(a, 0, 8_000)
    assert (w.start, w.end) == (0, 8_000)


def test_default_window_without_incidents_uses_longest_wait_then_whole_trace():
    waits = pl.DataFrame(schema=empty_table("waits").schema)
    assert default_window(Analysis(tables={"waits": waits}), 10, 500) == Window(
        10, 500, "the whole trace (no incidents or waits to center on)"
    )
    row = {c: None for c in waits.columns} | {
        "vm": "vm0",
        "lock": 1,
        "vcpu": 2,
        "start": 300,
        "end": 700,
        "dur": 400,
    }
    w = default_window(Analysis(tables={"waits": pl.DataFrame([row], schema=waits.schema)}), 0, 10_000)
    assert (w.start, w.end) == (0, 1700)  # padded by at least 1 µs each side, clipped at 0
    assert "longest wait" in w.why
