"""Views keep exactly what each kind of tracer sees of a run."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtrace.errors import UsageError
from pvtrace.schema import conform_events
from pvtrace.simulate.views import GUEST_KINDS, HOST_KINDS, VIEWS, contended_acquire, select_view
from pvtrace.trace import Trace, TraceMeta

DATA = Path(__file__).resolve().parents[1] / "data" / "render"


def handbuilt() -> Trace:
    events = pl.read_csv(DATA / "handbuilt-events.csv", schema_overrides={"lock": pl.UInt64})
    meta = TraceMeta.from_json((DATA / "handbuilt-meta.json").read_text())
    return Trace(conform_events(events), meta)


def kinds(trace: Trace) -> list[str]:
    return trace.events["kind"].cast(pl.String).to_list()


def test_full_view_is_everything():
    trace = handbuilt()
    full = select_view(trace, "full")
    assert full.events.equals(trace.events)
    assert full.meta.view == "full"


def test_host_view_has_host_kinds_but_no_invisible_yield():
    trace = handbuilt()
    host = select_view(trace, "host")
    assert host.meta.view == "host"
    assert set(kinds(host)) <= set(HOST_KINDS)
    expected = trace.events.filter(pl.col("kind").is_in(HOST_KINDS))
    # The PAUSE-exit directed yield (ts 260000) has no tracepoint; the SCHED_YIELD hypercall one (520000) has.
    yields = expected.filter(pl.col("kind") == "yield_to")["ts"].to_list()
    assert yields == [260_000, 520_000]
    assert host.events.filter(pl.col("kind") == "yield_to")["ts"].to_list() == [520_000]
    assert host.events.height == expected.height - 1
    assert "pv_halt" not in kinds(host)
    # Rows are kept as they were (host events keep their pCPU).
    original = trace.events.filter(pl.col("seq").is_in(host.events["seq"].implode()))
    assert host.events.equals(original)


def test_guest_view_keeps_contention_only():
    trace = handbuilt()
    guest = select_view(trace, "guest")
    assert set(kinds(guest)) == {*GUEST_KINDS, "other"}
    others = guest.events.filter(pl.col("kind") == "other")["event"].cast(pl.String).unique().to_list()
    assert set(others) == {"local_timer_entry", "tracing_mark_write"}  # the guest's ticks and steal samples
    contends = trace.events.filter(pl.col("kind") == "lock_contend")
    assert guest.events.filter(pl.col("kind") == "lock_contend").height == contends.height
    # Acquisitions at 100000 and 300500 never waited; the three others closed a wait.
    acquires = guest.events.filter(pl.col("kind") == "lock_acquire")
    assert acquires.select("ts", "vm", "vcpu").rows() == [
        (381_000, "vm0", 1),
        (400_000, "vm0", 0),
        (500_001, "vm1", 0),
    ]
    assert guest.events["pcpu"].null_count() == guest.events.height
    assert guest.meta.view == "guest"


def test_merged_is_host_plus_guest_in_order():
    trace = handbuilt()
    merged = select_view(trace, "merged")
    host, guest = select_view(trace, "host"), select_view(trace, "guest")
    guest_locks = guest.events.filter(pl.col("kind") != "other")  # ticks and steal: guest-only captures
    assert merged.events.height == host.events.height + guest_locks.height
    assert merged.events["seq"].is_sorted()
    both = pl.concat([host.events, guest_locks]).sort("seq")
    assert merged.events.equals(both)


def test_views_are_idempotent():
    trace = handbuilt()
    for view in VIEWS:
        once = select_view(trace, view)
        assert select_view(once, view).events.equals(once.events)


def test_unknown_view_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown view"):
        select_view(handbuilt(), "both")


def reference_contended(rows: list[tuple[int, int, str]]) -> list[bool]:
    """Straight-line reference: an acquire is contended when its vCPU's last lock event on that lock was a contend."""
    last: dict[tuple[int, int], str] = {}
    out = []
    for vcpu, lock, kind in rows:
        if kind in ("lock_contend", "lock_acquire"):
            out.append(kind == "lock_acquire" and last.get((vcpu, lock)) == "lock_contend")
            last[(vcpu, lock)] = kind
        else:
            out.append(False)
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 1),
            st.sampled_from(["lock_contend", "lock_acquire", "lock_release", "pv_halt"]),
        ),
        max_size=40,
    )
)
def test_contended_acquire_matches_reference(rows):
    frame = conform_events(
        pl.DataFrame(
            {
                "ts": [i // 3 for i in range(len(rows))],
                "vm": ["vm0"] * len(rows),
                "vcpu": [r[0] for r in rows],
                "lock": [1000 + r[1] for r in rows],
                "kind": [r[2] for r in rows],
            },
            schema={"ts": pl.Int64, "vm": pl.String, "vcpu": pl.Int32, "lock": pl.UInt64, "kind": pl.String},
        )
    )
    assert contended_acquire(frame).to_list() == reference_contended(rows)
