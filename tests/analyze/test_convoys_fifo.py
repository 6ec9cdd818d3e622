"""Convoys on a fifo lock seen through the merged view (holders inferred): a contended acquisition
after the last seen release, with nobody else queued, was handed over by a holder nobody saw take
the lock; it opens a run of hand-offs, unless the previous hold most likely went on past the
contention (docs/metrics.md, Convoy; pvtrace/analyze/convoys.py)."""

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


@pytest.mark.parametrize(
    ("contended_at", "expected"),
    [(5_500, [(2 * US, 7_500, 4)]), (40 * US, [(2 * US, 3 * US, 2), (40 * US, 42 * US, 2)])],
)
def test_a_contention_soon_after_an_inferred_release_found_that_hold_going_on(contended_at, expected):
    # v1 takes the lock from v0 at 3 us; its release is inferred once it has run the mean hold
    # (2 us: the fallback figures). v2 contends and takes the lock within one printed
    # microsecond, v3 queued behind it gets it 2 us later. (v0's own contended take at 2 us, the
    # lock's first, is a hand-off too: next test.) Contended 2.5 us into v1's section, the
    # lock was held then: v1's section, as a lognormal with the published median and mean says,
    # outlasts 2.5 us one time in five, and nobody else tried the lock meanwhile; a take by one of
    # four siblings in the half microsecond since its inferred release (about one try per 17 us
    # of running each, from the trace's contentions) is half as likely. So v1 -> v2 -> v3 is one
    # convoy of v0 -> v1 -> v2 -> v3. Contended 37 us into it, the section is long over and
    # somebody took the lock unseen: v0 -> v1, then a run of two.
    rows = [run(v, 0) for v in range(4)]
    rows += [contend(0, 1 * US), acquire(0, 2 * US), contend(1, 2_500), acquire(1, 3 * US)]
    t = contended_at
    rows += [contend(2, t), acquire(2, t), contend(3, t + 400), acquire(3, t + 2 * US)]
    a = analyze_merged(rows, t_end=100 * US)
    assert convoys(a) == expected


@pytest.mark.parametrize(("waited_from_before", "expected"), [(False, [(2 * US, 3 * US, 2)]), (True, [])])
def test_the_locks_first_contended_take_in_the_trace_is_a_hand_off(waited_from_before, expected):
    # v0 contends at 1 us with nobody queued, so the lock was held (taken before the trace, or
    # unseen), and takes it at 2 us: a hand-off, and v0 -> v1 at 3 us makes a convoy of two. But
    # if v2 takes the lock at 5 us with no contention printed, its wait began before the trace:
    # it was queued all along, and the queue may have been what v0 contended on (and let it
    # steal the lock past v2): then v0's take is no hand-off, and v1's alone makes no convoy.
    rows = [run(v, 0) for v in range(4)]
    rows += [contend(0, 1 * US), acquire(0, 2 * US), contend(1, 2_500), acquire(1, 3 * US)]
    if waited_from_before:
        rows += [acquire(2, 5 * US)]
    a = analyze_merged(rows, t_end=100 * US)
    assert convoys(a) == expected
