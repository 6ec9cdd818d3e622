"""Every trace in ../shared/real-traces analyzes without error at its level, and the wait
percentiles agree with an independent pairing done here and with captures.json."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load

REPO = Path(__file__).resolve().parents[2]
REAL = (REPO / ".." / "shared" / "real-traces").resolve()
SKIP_NAMES = {"README.md", "PROVENANCE.md", "captures.json", "capture-env.txt"}
FILES = (
    sorted(p for p in REAL.rglob("*") if p.is_file() and p.name not in SKIP_NAMES) if REAL.is_dir() else []
)
LEVELS = {"exact", "inferred", "guest-inferred", "host-only", "guest-only", "unjoined", "none"}


@cache
def analyzed(path: Path):
    trace = load([path])
    return trace, analyze(trace)


def independent_waits(events: pl.DataFrame) -> dict[tuple, list[int]]:
    """Wait durations per (vm, lock): contention begin -> end on one CPU and lock, spin locks only.

    A plain loop over the lock events (this is the test's own pairing, not the analyzer's):
    a begin opens a wait of (vm, cpu, lock); the next end of the same key closes it; a second
    begin first drops the one left open (its end was lost)."""
    rows = events.filter(pl.col("kind").is_in(["lock_contend", "lock_acquire"])).select(
        pl.col("vm").cast(pl.String),
        "vcpu",
        "lock",
        pl.col("kind").cast(pl.String),
        "ts",
        pl.col("reason").cast(pl.String),
    )
    sleeping = {
        (vm, lock)
        for vm, lock, kind, reason in rows.select("vm", "lock", "kind", "reason").iter_rows()
        if kind == "lock_contend" and reason is not None and ("SPIN" not in reason or "MUTEX" in reason)
    }
    open_at: dict[tuple, int] = {}
    waits: dict[tuple, list[int]] = {}
    for vm, cpu, lock, kind, ts, _ in rows.iter_rows():
        if (vm, lock) in sleeping:
            continue
        key = (vm, cpu, lock)
        if kind == "lock_contend":
            open_at[key] = ts
        elif key in open_at:
            waits.setdefault((vm, lock), []).append(ts - open_at.pop(key))
    return waits


def nearest_rank(values: list[int], q: float) -> int:
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s))) - 1]


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_real_trace_analyzes_at_its_level(path):
    trace, a = analyzed(path)
    level = a.summary.extra["level"]
    assert level in LEVELS
    # every total it gives has a level, everything else it lacks is listed with a capture command
    assert set(a.summary.totals) <= set(a.summary.fidelity)
    for u in a.summary.unavailable:
        assert u.metric not in a.summary.totals and u.how_to_capture
    if trace.events.filter(pl.col("kind") == "lock_contend").height:
        assert level in ("guest-only", "guest-inferred", "inferred", "exact", "unjoined")
    if level == "guest-only":  # no vCPU states: waits are counted, spin is not invented
        assert "n_contended" in a.summary.totals and "spin_ns" not in a.summary.totals


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in FILES if "pvqspinlock" in p.name], ids=lambda p: p.name)
def test_wait_percentiles_match_an_independent_pairing(path):
    trace, a = analyzed(path)
    mine = a.table("waits").filter(~pl.col("truncated"))
    theirs = independent_waits(trace.events)
    if a.table("lost_windows").height:
        # Waits that overlap a lost window are excluded by the analyzer: every one it keeps must
        # be a wait of the independent pairing.
        for vm, lock, durs in mine.group_by("vm", "lock").agg("dur").iter_rows():
            assert not set(durs) - set(theirs.get((vm, lock), [])), (vm, lock)
        return
    by_lock = a.table("waste_by_lock").filter(pl.col("wait_max_ns").is_not_null())
    assert by_lock.height == len(theirs)
    for r in by_lock.iter_rows(named=True):
        durs = theirs[(r["vm"], r["lock"])]
        assert r["n_contended"] == len(durs)
        assert (r["wait_p50_ns"], r["wait_p90_ns"], r["wait_p99_ns"], r["wait_max_ns"]) == (
            nearest_rank(durs, 0.5),
            nearest_rank(durs, 0.9),
            nearest_rank(durs, 0.99),
            max(durs),
        )


def captures() -> dict[str, dict]:
    path = REAL / "local" / "captures.json"
    if not path.exists():
        return {}
    caps = {c["file"]: c["stats"] for c in json.loads(path.read_text())["captures"]}
    # the .dat file is the same run as the trace-cmd report text
    caps["guest-pvqspinlock-futex-tracecmd.dat.xz"] = caps.get("guest-pvqspinlock-futex-tracecmd.txt.xz")
    return caps


CAPTURED = {
    name: stats
    for name, stats in captures().items()
    if stats
    and stats.get("spin_wait_us")
    and not stats.get("lost_lines")
    and not stats.get("unmatched_begin")
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_wait_percentiles_match_captures_json(name):
    # captures.json: flags=SPIN waits only, in us (the text has 1 us resolution).
    trace, a = analyzed(REAL / "local" / name)
    spin_only = (
        trace.events.filter(pl.col("kind") == "lock_contend")
        .group_by(pl.col("vm").cast(pl.String), "lock")
        .agg((pl.col("reason").cast(pl.String) == "SPIN").all().alias("spin_only"))
        .filter("spin_only")
    )
    waits = a.table("waits").filter(~pl.col("truncated")).join(spin_only, on=["vm", "lock"], how="semi")
    us = sorted(d // 1000 for d in waits["dur"].to_list())
    want = CAPTURED[name]["spin_wait_us"]
    assert max(us) == want["max"]
    for q, key in ((0.5, "median"), (0.9, "p90"), (0.99, "p99")):
        assert abs(nearest_rank(us, q) - want[key]) <= 1, (key, nearest_rank(us, q), want[key])
    assert len(us) == CAPTURED[name]["spin_pairs"]
