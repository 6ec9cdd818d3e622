"""Block-wise parsing: any batch size gives the same raw frame, and rendered fields come back exactly."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pvtrace.ingest.stream as stream_mod
from pvtrace.ingest.load import read_raw
from pvtrace.ingest.raw import KERNEL_STACK, LOST_EVENTS

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "ingest" / "golden"

COMM_CHARS = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 -_:/.<>()"
comms = st.text(COMM_CHARS, min_size=1, max_size=15).map(str.strip).filter(bool)
payloads = st.text("abcdefxyz0123456789 =:[]()<>-_/.,|+", min_size=0, max_size=60).map(str.strip)
events = st.from_regex(r"[a-z][a-z_]{2,20}", fullmatch=True)
records = st.tuples(
    comms,
    st.integers(0, 4_194_304),  # pid
    st.integers(-1, 600),  # tgid, -1: unknown
    st.sampled_from([0, 1, 2, 7, 15, 63, 127, 511]),  # cpu
    st.sampled_from(["d..2.", "...1.", "dNs2.", "D.h3.", "....."]),
    st.integers(0, 5_000_000),  # us since the previous record
    events,
    payloads,
    st.sampled_from(["plain", "plain", "plain", "lost", "stack", "bprint"]),
)


def render(rows, tgid: bool, start_s: int = 86_400) -> tuple[str, list[dict]]:
    """tracefs text of the rows (kernel format) and the raw fields each record must come back with."""
    lines, want = [], []
    t_us = start_s * 1_000_000
    for comm, pid, tg, cpu, flags, gap, event, payload, extra in rows:
        t_us += gap
        if extra == "lost":
            lines.append(f"CPU:{cpu} [LOST {gap + 1} EVENTS]")
        tgid_col = (f"({tg:>7}) " if tg >= 0 else "(-------) ") if tgid else ""
        secs, usecs = divmod(t_us, 1_000_000)
        prefix = f"{comm:>16}-{pid:<7} {tgid_col}[{cpu:03d}] {flags} {secs:5d}.{usecs:06d}: "
        if extra == "stack":
            lines += [prefix + "<stack trace>", " => func_a+0x12/0x80", " => func_b"]
            want.append(
                dict(
                    comm=comm,
                    tid=pid,
                    cpu=cpu,
                    ts=t_us * 1000,
                    event=KERNEL_STACK,
                    payload="func_a+0x12/0x80\nfunc_b",
                )
            )
            continue
        if extra == "bprint":
            lines += [prefix + f"bprint: {event}: {payload}", " gid=4"]
            want.append(
                dict(
                    comm=comm,
                    tid=pid,
                    cpu=cpu,
                    ts=t_us * 1000,
                    event="bprint",
                    payload=f"{event}: {payload}".strip() + "\n gid=4",
                )
            )
            continue
        lines.append(prefix + f"{event}: {payload}")
        want.append(dict(comm=comm, tid=pid, cpu=cpu, ts=t_us * 1000, event=event, payload=payload))
        if tgid:
            want[-1]["tgid"] = tg if tg >= 0 else None
    return "\n".join(lines) + "\n", want


def _records(raw: pl.DataFrame) -> list[dict]:
    rec = raw.filter(pl.col("event") != LOST_EVENTS)
    return rec.select(
        "comm", "tid", "cpu", "ts", pl.col("event").cast(pl.String), "payload", "tgid"
    ).to_dicts()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(records, min_size=1, max_size=40),
    tgid=st.booleans(),
    batch=st.integers(1, 9),
    gz=st.booleans(),
)
def test_rendered_fields_come_back_at_any_batch_size(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    rows,
    tgid: bool,
    batch: int,
    gz: bool,
) -> None:
    text, want = render(rows, tgid)
    path = tmp_path_factory.mktemp("t") / ("trace.txt.gz" if gz else "trace.txt")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    whole, info, _verdict = read_raw(path, format="ftrace")
    monkeypatch.setattr(stream_mod, "BATCH_ROWS", batch)
    small, small_info, _ = read_raw(path, format="ftrace")
    monkeypatch.undo()
    assert small.equals(whole)
    assert small_info.stats == info.stats
    assert info.problems.total == 0, info.problems.to_dict()
    got = _records(whole)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] if k != "tgid" else g["tgid"] for k in w} == w
    lost = whole.filter(pl.col("event") == LOST_EVENTS)
    assert lost.height == sum(1 for r in rows if r[8] == "lost")
    # a LOST marker takes the time of the next record on its CPU
    for row in lost.iter_rows(named=True):
        nxt = whole.filter(
            (pl.col("line") > row["line"]) & (pl.col("cpu") == row["cpu"]) & (pl.col("event") != LOST_EVENTS)
        )
        assert row["ts"] == (nxt["ts"][0] if nxt.height else None)


@pytest.mark.parametrize(
    "name",
    ["guest-pvqspinlock-mix-stacktrace-ftrace.txt.xz", "guest-pvqspinlock-futex-lossy-tracepipe.txt.xz"],
)
def test_real_files_give_the_same_frame_in_small_batches(
    real_traces: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = real_traces / "local" / name
    whole, info, _ = read_raw(path)
    monkeypatch.setattr(stream_mod, "BATCH_ROWS", 997)  # odd size: stacks and LOST lines straddle batches
    small, small_info, _ = read_raw(path)
    assert small.equals(whole)
    assert small_info.stats == info.stats


def test_invalid_utf8_is_counted_and_the_rest_still_parsed(tmp_path: Path) -> None:
    good = (GOLDEN / "ftrace_7flag.txt").read_bytes()
    bad = b"    CPU 0/KVM-16856   [007] .......   380.398700: kvm_msr: msr_read \xff\xfe = 0x0\n"
    path = tmp_path / "t.txt"
    path.write_bytes(good * 3 + bad + good)
    raw, info, _ = read_raw(path)
    assert raw.height == 9
    assert info.problems.counts == {"invalid_utf8": 1}
    assert info.problems.samples["invalid_utf8"][0][0] == 7
    assert raw.filter(pl.col("line") == 7)["payload"][0] == "msr_read \ufffd\ufffd = 0x0"


def test_layout_change_inside_a_file_is_followed(tmp_path: Path) -> None:
    """Seconds gaining a digit and a 4-digit CPU move the columns; every line is still read."""
    lines = [
        f"         contend-{100 + i:<7} [{cpu:03d}] d..2. {secs:5d}.{i:06d}: contention_begin: 00000000deadbeef (flags=SPIN)"
        for i, (secs, cpu) in enumerate([(99_999, 1)] * 300 + [(100_000, 1)] * 300 + [(100_001, 1024)] * 300)
    ]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines) + "\n")
    raw, info, _ = read_raw(path)
    assert raw.height == 900 and info.problems.total == 0
    assert raw["ts"].is_sorted() and raw["cpu"].tail(1).item() == 1024
