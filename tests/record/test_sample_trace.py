"""The bundled sample capture: it matches its provenance file and ingests at guest-only level."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from pvtrace.record.inventory import inventory

SAMPLES = Path(__file__).resolve().parents[2] / "sample-traces"
SAMPLE = SAMPLES / "guest-futex.txt.xz"


@pytest.fixture(scope="module")
def provenance() -> dict:
    return json.loads((SAMPLES / "guest-futex.record.json").read_text())


def test_sample_matches_its_record_file(tmp_path: Path, provenance: dict) -> None:
    plain = tmp_path / "guest-futex.txt"
    plain.write_bytes(lzma.decompress(SAMPLE.read_bytes()))
    inv = inventory(plain)
    assert inv.counts == provenance["counts"]
    assert provenance["n_lost"] == 0 and inv.n_lost_lines == 0
    assert sum(c["entries"] for c in provenance["per_cpu"]) == inv.n_events
    assert provenance["mode"] == "guest" and provenance["stacktrace_trigger"] is None
    assert SAMPLE.stat().st_size < 1_000_000


def test_sample_ingests_and_analyzes_at_guest_only_level(provenance: dict) -> None:
    load = pytest.importorskip("pvtrace.ingest.load").load
    analyze = pytest.importorskip("pvtrace.analyze").analyze
    trace = load([SAMPLE])
    assert trace.meta.view == "guest"
    summary = analyze(trace).summary
    assert summary.extra["level"] == "guest-only"
    spin_begins = lzma.decompress(SAMPLE.read_bytes()).decode().count("(flags=SPIN)")
    assert summary.totals["n_contended"] == spin_begins
    assert "spin_ns" in {u.metric for u in summary.unavailable}


TICKS = SAMPLES / "guest-ticks.txt.xz"


def test_ticks_sample_matches_its_record_file(tmp_path: Path) -> None:
    record = json.loads((SAMPLES / "guest-ticks.record.json").read_text())
    plain = tmp_path / "guest-ticks.txt"
    plain.write_bytes(lzma.decompress(TICKS.read_bytes()))
    inv = inventory(plain)
    assert inv.counts == record["counts"]
    assert record["counts"]["local_timer_entry"] > 0 and record["counts"]["tracing_mark_write"] >= 2
    assert "irq_vectors:local_timer_entry" in record["events"]
    assert record["n_lost"] == 0 and TICKS.stat().st_size < 1_000_000


def test_ticks_sample_analyzes_at_guest_inferred_level() -> None:
    load = pytest.importorskip("pvtrace.ingest.load").load
    analyze = pytest.importorskip("pvtrace.analyze").analyze
    trace = load([TICKS])
    summary = analyze(trace).summary
    assert summary.extra["level"] == "guest-inferred"
    found = summary.extra["guest_preemption"]
    assert found["hz"] == 250  # the capturing kernel's CONFIG_HZ
    assert found["steal_unit_ns"] == 10_000_000 and found["steal_ns"] == 30_000_000  # USER_HZ units
    # two whole-VM stops of 8-13 ms, each vCPU missing two or three ticks: all placed
    assert found["n_intervals"] == 4 and found["placed_ns"] == found["not_running_ns"]
    assert found["not_running_lo_ns"] <= found["not_running_ns"] <= found["not_running_hi_ns"]
    # the capture's own steal samples say the spinlocks are paravirt (its boot log did): spin declined
    assert found["pv_spinlocks"] is True and found["pv_spinlocks_from"] == "the steal samples say so"
    assert "spin_ns" not in summary.totals and "waste_lhp_ns" not in summary.totals
    assert summary.totals["n_contended"] == 746
    assert json.loads((SAMPLES / "guest-ticks.record.json").read_text())["platform"]["pv_spinlocks"] is True
    # declared native, the same trace gives spin and LHP waste (none: no waiter spun on a stopped holder)
    native = analyze(trace, pv_spinlocks=False).summary
    assert native.fidelity["waste_lhp_ns"] == "guest-inferred" and native.totals["waste_lhp_ns"] == 0
