"""The canonical schema, the Trace container and the summary layout."""

import polars as pl
import pytest

from pvtrace.errors import OutputExistsError, SchemaError
from pvtrace.schema import EVENT_SCHEMA, KINDS, conform_events, validate_events
from pvtrace.summary import TOTAL_KEYS, Summary, Unavailable
from pvtrace.trace import Trace, TraceMeta, VmInfo, read_trace, write_trace


def tiny_events() -> pl.DataFrame:
    return conform_events(
        pl.DataFrame(
            {
                "ts": [0, 10, 10],
                "vm": ["vm0", "vm0", "vm0"],
                "vcpu": [0, 0, 1],
                "kind": ["vcpu_run", "lock_acquire", "lock_contend"],
                "lock": [None, 7, 7],
                "origin": ["sim"] * 3,
            }
        )
    )


def test_conform_fills_missing_columns_and_seq():
    df = tiny_events()
    assert df.schema == EVENT_SCHEMA
    assert df["seq"].to_list() == [0, 1, 2]
    assert df["pcpu"].null_count() == 3


def test_conform_rejects_unknown_kind_and_columns():
    with pytest.raises(SchemaError, match=r"column kind: conversion .*no_such_kind"):
        conform_events(pl.DataFrame({"ts": [1], "kind": ["no_such_kind"]}))
    with pytest.raises(SchemaError, match="unknown column"):
        conform_events(pl.DataFrame({"ts": [1], "kind": ["other"], "bogus": [1]}))
    with pytest.raises(SchemaError, match="required"):
        conform_events(pl.DataFrame({"kind": ["other"]}))


def test_validate_names_the_wrong_column():
    df = tiny_events().with_columns(pl.col("vcpu").cast(pl.Int64))
    with pytest.raises(SchemaError, match="vcpu: expected Int32"):
        validate_events(df)


def test_kind_priority_follows_metrics_order():
    order = [
        "lock_release",
        "pv_kick",
        "vcpu_preempt",
        "vcpu_halt",
        "vcpu_wake",
        "vcpu_run",
        "lock_contend",
        "lock_acquire",
    ]
    positions = [KINDS.index(k) for k in order]
    assert positions == sorted(positions)


def test_parquet_round_trip_keeps_events_and_meta(tmp_path):
    meta = TraceMeta(
        source=["x"],
        format="sim",
        t_start=0,
        t_end=100,
        n_pcpus=2,
        vms={"vm0": VmInfo(n_vcpus=2, lock_kind="fifo", lock_algorithm="ticket")},
    )
    trace = Trace(tiny_events(), meta)
    path = tmp_path / "t.parquet"
    write_trace(trace, path)
    back = read_trace(path)
    assert back.events.equals(trace.events)
    assert back.meta == meta
    assert back.t_end == 100


def test_parquet_keeps_ts_statistics_and_dictionaries_only_where_values_repeat(tmp_path):
    """Readers find a file's time span in the footer (ts min/max); the encoding that makes writing
    cheaper (trace._DICTIONARY, _STATISTICS) must keep those and lose no value."""
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    write_trace(Trace(tiny_events()), path)
    group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    ts = chunks["ts"].statistics
    assert ts is not None and (ts.min, ts.max) == (0, 10)
    assert chunks["kind"].statistics is None  # a string column: statistics cost much, prune nothing
    assert chunks["kind"].has_dictionary_page and not chunks["ts"].has_dictionary_page
    assert read_trace(path).events.equals(tiny_events())


def test_write_refuses_to_overwrite(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("precious")
    with pytest.raises(OutputExistsError):
        write_trace(Trace(tiny_events()), path)
    assert path.read_text() == "precious"
    write_trace(Trace(tiny_events()), path, force=True)
    assert read_trace(path).events.height == 3


def test_summary_layout_and_checks():
    s = Summary(
        totals={"spin_ns": 5, "n_kicks": 0},
        fidelity={"spin_ns": "exact"},
        unavailable=[Unavailable("n_lhp", ["lock_acquire"], "trace-cmd record -e lock")],
    )
    d = s.to_dict()
    assert list(d) == ["totals", "fidelity", "unavailable"]
    assert Summary.from_dict(d).to_dict() == d
    with pytest.raises(ValueError):
        Summary(totals={"not_a_key": 1})
    with pytest.raises(TypeError):
        Summary(totals={"spin_ns": 1.5})
    with pytest.raises(ValueError):
        Summary(totals={"n_lhp": 1}, unavailable=[Unavailable("n_lhp", [], "")])
    assert len(set(TOTAL_KEYS)) == len(TOTAL_KEYS)
