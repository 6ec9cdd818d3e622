"""Convoys on an unfair lock seen through the merged view (holders inferred): an uncontended take
nobody saw breaks a run of hand-offs, and spin that only shows an inferred hold ending too early
does not (docs/metrics.md, Inferred holders / Unseen takes; pvtrace/analyze/holders.py)."""

from __future__ import annotations

import pytest
from trace_rows import acquire, analyze_merged, contend, preempt, run

US = 1_000


def convoys(a) -> list[tuple]:
    return a.table("convoys").select("start", "end", "length", "cause").rows()


@pytest.mark.parametrize(
    ("back", "expected"),
    [(4_800, [(2 * US, 5 * US, 3, "none")]), (1_005_000, [(2 * US, 3 * US, 2, "none")])],
)
def test_a_long_free_stretch_on_an_unfair_lock_hides_an_uncontended_take(back, expected):
    # v0 takes the lock at 2 us (contended with nobody queued: a hand-off from whoever held it)
    # and hands it to v1 at 3 us; v2 queues at 3.5 us, is preempted at 3.6 us and takes the lock
    # when it runs again. v1's hold is inferred to end at 5 us (it has run the mean hold). Back
    # at 4.8 us, v2 spins until then and takes the lock at 5 us: no free instant, a convoy of
    # three hand-offs. Back only after 1 ms, during which v0, v1 and v3 ran freely and tried this
    # lock several times over (the attempt rate comes from the tries seen while it was held),
    # somebody surely took and released it meanwhile: v2's take is no hand-off of v1's.
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        contend(0, 1 * US),
        acquire(0, 2 * US),
        contend(1, 2_500),
        acquire(1, 3 * US),
        contend(2, 3_500),
        preempt(2, 3_600),
        run(2, back),
        acquire(2, max(back, 5 * US)),
    ]
    a = analyze_merged(rows, t_end=back + 20 * US, lock_kind="unfair")
    assert convoys(a) == expected


def test_spin_right_after_an_inferred_release_is_the_hold_going_on():
    # v1 takes the lock from v0 at 3 us; v2 queues at 3.5 us and spins until it takes the lock
    # at 8 us. v1's hold is inferred to end at 5 us (it has run the mean hold), so v2 spins on a
    # seemingly free lock from 5 us: v1, the only sibling running, holds it unseen until 8 us.
    # A spinner takes a free unfair lock at once, so it never was free: v1's hold went on, and
    # v0 -> v1 -> v2 is one convoy of three hand-offs (counting v1's unseen hold as a fresh take
    # would cut it in two).
    rows = [
        run(0, 0),
        run(1, 0),
        run(2, 0),
        run(3, 0),
        preempt(3, 500),
        contend(0, 1 * US),
        acquire(0, 2 * US),
        contend(1, 2_500),
        acquire(1, 3 * US),
        preempt(0, 3_200),
        contend(2, 3_500),
        acquire(2, 8 * US),
    ]
    a = analyze_merged(rows, t_end=20 * US, lock_kind="unfair")
    holds = a.table("holds").select("vcpu", "start", "end").rows()
    assert (1, 5 * US, 8 * US) in holds
    assert convoys(a) == [(2 * US, 8 * US, 3, "none")]
