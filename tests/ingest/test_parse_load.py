"""load() and the streaming Parquet conversion agree, whatever the chunking."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import pvtrace.ingest.load as load_mod
import pvtrace.ingest.stream as stream_mod
from pvtrace.errors import FormatError, UsageError
from pvtrace.ingest.emission import Events
from pvtrace.ingest.load import ingest_to_parquet, load
from pvtrace.schema import EVENT_SCHEMA
from pvtrace.trace import read_trace

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "ingest" / "golden"


def test_streamed_parquet_equals_load(real_traces: Path, tmp_path: Path) -> None:
    src = real_traces / "local" / "guest-pvqspinlock-stat-ftrace.txt.xz"
    trace = load([src])
    out = tmp_path / "s.parquet"
    meta = ingest_to_parquet([src], out)
    back = read_trace(out)
    assert back.events.equals(trace.events)
    assert meta.extra["n_events"] == trace.events.height == 87096
    assert back.meta.extra["events_by_tracepoint"] == trace.meta.extra["events_by_tracepoint"]


def test_small_chunks_give_the_same_events(real_traces: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest trace normalized in many small chunks equals the one-chunk result."""
    src = real_traces / "local" / "guest-pvqspinlock-futex-lossy-tracepipe.txt.xz"
    whole = load([src])
    monkeypatch.setattr(stream_mod, "BATCH_ROWS", 4096)
    monkeypatch.setattr(load_mod, "NORMALIZE_ROWS", 4096)
    small = load([src])
    assert small.events.equals(whole.events)
    assert whole.events["ts"].is_sorted()
    assert whole.events.schema == EVENT_SCHEMA


def test_events_are_sorted_with_a_global_seq(real_traces: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_mod, "BATCH_ROWS", 3000)
    monkeypatch.setattr(load_mod, "NORMALIZE_ROWS", 3000)
    trace = load([real_traces / "public" / "ftrace-tgid-4flag_android-surfaceflinger_trappy.txt"])
    ev = trace.events
    assert ev["seq"].n_unique() == ev.height
    assert ev.sort("ts", "seq").equals(ev)


def test_meta_describes_the_input(real_traces: Path) -> None:
    trace = load(
        [real_traces / "public" / "ftrace-dump-latency-fmt_kvm-guest-rcutorture_linux-next-2024-10-06.txt"]
    )
    meta = trace.meta
    (inp,) = meta.extra["inputs"]
    assert inp["clock"] == "relative" and inp["stats"]["lost_lines"] == 16
    assert meta.clock["timestamps"] == {inp["path"]: "relative"}
    assert meta.extra["ts_min"] == trace.events["ts"].min()
    lost = trace.events.filter(pl.col("kind") == "lost_events")
    assert lost.height == 16 and lost["value"].sum() == 200644354


def test_a_parquet_file_cannot_be_mixed_with_text(tmp_path: Path) -> None:
    out = tmp_path / "a.parquet"
    ingest_to_parquet([GOLDEN / "ftrace_7flag.txt"], out)
    with pytest.raises(UsageError, match="on its own"):
        load([out, GOLDEN / "ftrace_0flag.txt"])
    with pytest.raises(UsageError, match="also an input"):
        ingest_to_parquet([out], out, force=True)


def test_forced_format_mismatch_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"ftrace_7flag\.txt: is not perf-script text"):
        load([GOLDEN / "ftrace_7flag.txt"], format="perf")


def test_held_events_merge_in_order_and_in_one_chunk() -> None:
    """Events of a chunk later than the next chunk's first one (cross-CPU skew at a block edge)
    are merged into it by (ts, seq); every batch handed on is one chunk (the Parquet writer
    re-encodes each chunk's dictionaries)."""
    from pvtrace.schema import conform_events

    def chunk(ts: list[int]) -> pl.DataFrame:
        return conform_events(pl.DataFrame({"ts": ts, "kind": ["other"] * len(ts)}))

    for first, second in (([1, 2, 3], [3, 4, 6]), ([1, 2, 5], [3, 4, 6])):  # merge with and without a sort
        written: list[pl.DataFrame] = []
        events = Events(written.append)
        events.add(chunk(first))
        events.add(chunk(second))
        events.finish()
        out = pl.concat(written)
        assert out["ts"].to_list() == sorted(first + second)
        assert out.sort("ts", "seq").equals(out) and out["seq"].n_unique() == 6
        assert all(w.n_chunks() == 1 for w in written)


def test_small_chunks_of_a_host_trace_give_the_same_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host trace with pv kicks normalized in small chunks equals the one-chunk result: a
    HYPERCALL exit carries the number of the kvm_hypercall after it, also when that line falls in
    the next chunk (it took the guest-mode flag there instead: the output depended on the cut)."""
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    trace, _ = simulate_trace(
        load_preset("lhp-demo").replace(
            lock={"algorithm": "pv-ticket"},
            vm={"compute_ns": 5_000, "hold_ns": 3_000},
            run={"duration_ns": 100_000_000},
        )
    )
    files = [f for f in write_rendered(trace, "ftrace", "host", tmp_path / "h.txt") if f.suffix == ".txt"]
    whole = load(files)
    calls = whole.events.filter((pl.col("kind") == "vm_exit") & (pl.col("reason") == "HYPERCALL"))
    assert calls.height > 50 and calls["value"].is_in([5, 11]).all()
    for rows in (18, 23, 48):  # chunks that end on an exit whose kvm_hypercall opens the next
        monkeypatch.setattr(stream_mod, "BATCH_ROWS", rows)
        monkeypatch.setattr(load_mod, "NORMALIZE_ROWS", rows)
        assert load(files).events.equals(whole.events), rows
