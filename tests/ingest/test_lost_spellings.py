"""Every lost-event spelling ftrace, trace-cmd and perf print is read as a lost_events record
(docs/lost-events.md); a plain `CPU 1 LOST n EVENTS` line was once taken for garbage."""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.ingest.load import read_raw
from pvtrace.ingest.raw import LOST_EVENTS

RECORD = "          <idle>-0       [001] d..2. 100.{us:06d}: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=CPU 0/KVM next_pid=42 next_prio=120\n"


@pytest.mark.parametrize(
    ("line", "count"),
    [
        ("CPU:1 [LOST 102 EVENTS]", 102),  # ftrace (kernel/trace/trace.c)
        ("CPU:1 [LOST EVENTS]", None),  # ftrace, count unknown
        ("CPU:1 [102 EVENTS DROPPED]", 102),  # trace-cmd report
        ("CPU:1 [EVENTS DROPPED]", None),  # trace-cmd report, count unknown
        ("CPU 1 LOST 102 EVENTS", 102),  # plain
        ("CPU 1: LOST 102 EVENTS", 102),
    ],
)
def test_lost_marker_spellings(tmp_path, line, count):
    path = tmp_path / "t.txt"
    text = "".join(RECORD.format(us=i * 10) for i in range(8)) + line + "\n"
    path.write_text(text + "".join(RECORD.format(us=100 + i * 10) for i in range(8)))
    raw, info, _ = read_raw(path)
    lost = raw.filter(pl.col("event") == LOST_EVENTS)
    assert lost.height == 1, raw
    assert lost["cpu"].to_list() == [1]
    assert info.stats["lost_lines"] == 1
    assert info.stats.get("lost_events_reported", 0) == (count or 0)
    assert info.problems.total == 0
