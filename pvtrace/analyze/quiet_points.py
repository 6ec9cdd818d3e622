"""Quiet points of one VM: where its events may be cut into time windows analyzed apart.

A VM bigger than a memory budget's group can be analyzed a time window at a time only if little
crosses a cut (benchmarks/README.md, "What the cut of one big VM into time windows needs"). At a
quiet point no lock of the VM is held or waited for, and no lost-event window of the VM is open,
so only each vCPU's state, its PLE window and the forward lookups cross it. Convoys never do: a
convoy is a run of hand-offs, and between two hand-offs of a run either the hold or the next
owner's wait is open (docs/metrics.md, Convoy).

A cut is named by the whole-trace `ord` of the first event of the window it starts (the window
before it ends just before that event). It is quiet when:
- no busy span of a (lock, vCPU) pair covers it: from the pair's first contend or acquire after a
  release to the next release. A release with no contend or acquire before it (events lost, or a
  hold taken before the trace starts) makes the pair busy since its previous release (or the
  trace start): where the hold began is unknown. Contends and acquires after the pair's last
  release keep it busy to the trace end, so a VM whose releases are not in the trace (inferred
  holders) has no quiet point and stays whole;
- no guest lost-event window of the VM covers it (from the previous guest event of that guest CPU
  to the marker);
- its event's ts is above the VM's previous event's: a cut never separates events of one instant.

Finding them is one vectorized pass over the VM's lock events and lost markers, plus a
`search_sorted` of every event's ord against the span ends.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pvtrace.analyze.prepare import LOCK_EVENT_KINDS

I64, I32 = pl.Int64(), pl.Int32()
NEVER = np.iinfo(np.int64).max  # a span that lasts to the trace end
SPAN_SCHEMA = {"start": I64, "end": I64}


def busy_spans(events: pl.LazyFrame) -> pl.DataFrame:
    """(start, end) ords of the spans in which a lock of these events is held or waited for; a cut
    at ord o is inside one when start < o <= end (see the module doc for events out of sequence)."""
    pair = ["lock", "vcpu"]
    release = pl.col("kind") == "lock_release"
    lock_ev = events.filter(
        pl.col("kind").is_in(LOCK_EVENT_KINDS) & pl.col("vcpu").is_not_null() & pl.col("lock").is_not_null()
    ).select(*pair, "ord", release.alias("release"))
    # in ord order, per pair: the event before, and the first event after the pair's last release
    before = pl.col("ord").shift(1).over(pair)
    after_release = pl.col("release").shift(1).over(pair).fill_null(True)
    first = pl.when(after_release).then(pl.col("ord")).forward_fill().over(pair)
    last = pl.col("ord") == pl.col("ord").max().over(pair)
    rows = lock_ev.with_columns(before.alias("before"), first.alias("first"), last.alias("last")).filter(
        pl.col("release") | pl.col("last")
    )
    return rows.select(
        # a release alone after a release (or first of its pair): busy since that one (or the start)
        pl.when(pl.col("release") & (pl.col("first") == pl.col("ord")))
        .then(pl.col("before").fill_null(-1))
        .otherwise(pl.col("first"))
        .cast(I64)
        .alias("start"),
        pl.when(pl.col("release")).then(pl.col("ord")).otherwise(NEVER).cast(I64).alias("end"),
    ).collect()


def lost_spans(events: pl.LazyFrame) -> pl.DataFrame:
    """(start, end) ords of the guest lost-event windows of these events: from the previous guest
    event of the marker's guest CPU (-1: none) to the marker (as lost.lost_windows places them)."""
    cpu = pl.coalesce("vcpu", "pcpu").cast(I32)
    guest = (
        events.filter(pl.col("origin") == "guest")
        .select("ord", cpu.alias("cpu"), (pl.col("kind") == "lost_events").alias("marker"))
        .collect()
        .sort("cpu", "ord")
    )
    seen = pl.when(~pl.col("marker")).then(pl.col("ord"))  # markers are not events seen
    prev = seen.shift(1).forward_fill().over("cpu").fill_null(-1)
    return (
        guest.select(prev.cast(I64).alias("start"), pl.col("ord").cast(I64).alias("end"), "marker")
        .filter(pl.col("marker"))
        .drop("marker")
    )


def quiet_cuts(events: pl.LazyFrame) -> pl.DataFrame:
    """The quiet points of one VM's events (columns ord, ts, kind, vcpu, pcpu, lock, origin; ord
    the whole trace's): `ord` of each event a window may start at, and `row`, its position among
    the VM's events, and its `ts`. Reads ord and ts of every event (16 bytes an event) and the
    lock events."""
    spans = pl.concat([busy_spans(events), lost_spans(events)]).cast(SPAN_SCHEMA)
    ev = events.select("ord", "ts").collect().sort("ord").with_row_index("row")
    if ev.height < 2:
        return ev.clear().select("ord", pl.col("row").cast(I64), "ts")
    # spans covering ord o: those that start before it, less those that also end before it
    starts = spans["start"].sort().to_numpy()
    ends = spans["end"].sort().to_numpy()
    ords = ev["ord"].to_numpy()
    covered = np.searchsorted(starts, ords, side="left") - np.searchsorted(ends, ords, side="left")
    return ev.filter(
        pl.Series(covered == 0) & (pl.col("ts") > pl.col("ts").shift(1)) & (pl.col("row") > 0)
    ).select("ord", pl.col("row").cast(I64), "ts")


def place_cuts(quiet: pl.DataFrame, requests: list[int], reach: int) -> list[int] | None:
    """The quiet cut nearest (in the VM's events) to each requested row, as whole-trace ords in
    order without repeats; None when a request has no quiet point within `reach` events (the VM
    is then analyzed whole)."""
    if not requests:
        return []
    rows = quiet["row"].to_numpy()
    if rows.size == 0:
        return None
    want = np.asarray(requests, dtype=np.int64)
    right = np.clip(np.searchsorted(rows, want), 0, rows.size - 1)
    left = np.clip(right - 1, 0, rows.size - 1)
    pick = np.where(np.abs(rows[left] - want) <= np.abs(rows[right] - want), left, right)
    if np.any(np.abs(rows[pick] - want) > reach):
        return None
    return sorted(set(quiet["ord"].to_numpy()[pick].tolist()))
