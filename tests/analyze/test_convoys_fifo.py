"""Convoys on a fifo lock seen through the merged view (holders inferred): a contended acquisition
after the last seen release, with nobody else queued, was handed over by a holder nobody saw take
the lock; it opens a run of hand-offs (docs/metrics.md, Convoy; pvtrace/analyze/convoys.py)."""

from __future__ import annotations

import pytest
from trace_rows import acquire, analyze_merged, contend, run

US = 1_000


def convoys(a) -> list[tuple]:
    return a.table("convoys").select("start", "end", "length").rows()


def _rows(queued_elsewhere: bool) -> list[tuple]:
    # v0 takes the lock (contended: the trace's first acquisition) at 2 us and hands it to v1 at
    # 3 us. The lock is then taken unseen; v2 contends at 40 us and gets it in the same printed
    # microsecond (its wait was shorter than the text's resolution), and v3, queued behind it at
    # 40.4 us, gets it at 42 us: two hand-offs, one convoy, from the unseen holder's release.
    rows = [run(v, 0) for v in range(4)]
    rows += [contend(0, 1 * US), acquire(0, 2 * US), contend(1, 2_500), acquire(1, 3 * US)]
    rows += [contend(2, 40 * US), acquire(2, 40 * US), contend(3, 40_400), acquire(3, 42 * US)]
    if queued_elsewhere:
        # v1 queued since 30 us and still waiting: the queue, not a holder, may have made v2 contend
        # (and let it steal the lock). v2's acquisition is no hand-off then; v3 and v1 are.
        rows += [contend(1, 30 * US), acquire(1, 60 * US)]
    return rows


@pytest.mark.parametrize(
    ("queued_elsewhere", "expected"), [(False, [(40 * US, 42 * US, 2)]), (True, [(42 * US, 60 * US, 2)])]
)
def test_a_contention_with_nobody_queued_reveals_a_hand_off_from_an_unseen_holder(queued_elsewhere, expected):
    a = analyze_merged(_rows(queued_elsewhere), t_end=100 * US)
    assert [c for c in convoys(a) if c[0] >= 30 * US] == expected
