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

# Events read at once: the spans and quiet points of a VM bigger than memory are found a slice
# at a time.
SLICE_ROWS = 2_000_000

I64, I32 = pl.Int64(), pl.Int32()
NEVER = np.iinfo(np.int64).max  # a span that lasts to the trace end
SPAN_SCHEMA = {"start": I64, "end": I64}


def busy_spans(events: pl.LazyFrame, slice_rows: int = SLICE_ROWS) -> pl.DataFrame:
    """(start, end) ords of the spans in which a lock of these events (in ord order) is held or
    waited for; a cut at ord o is inside one when start < o <= end (see the module doc for events
    out of sequence). Read a slice of lock events at a time, each (lock, vCPU)'s state carried."""
    pair = ["lock", "vcpu"]
    lock_ev = events.filter(
        pl.col("kind").is_in(LOCK_EVENT_KINDS) & pl.col("vcpu").is_not_null() & pl.col("lock").is_not_null()
    ).select(*pair, "ord", (pl.col("kind") == "lock_release").alias("release"))
    n = lock_ev.select(pl.len()).collect().item()
    # per pair, after the slices so far: its last event's ord, whether it was a release, and the
    # first event after the release before it (where its open span starts)
    carried = pl.DataFrame(
        schema={"lock": pl.UInt64(), "vcpu": I32, "p_ord": I64, "p_release": pl.Boolean(), "p_first": I64}
    )
    spans = []
    for offset in range(0, n, slice_rows):
        chunk = lock_ev.slice(offset, slice_rows).collect().cast({"lock": pl.UInt64(), "vcpu": I32})
        chunk = chunk.join(carried, on=pair, how="left", maintain_order="left")
        head = pl.struct(pair).is_first_distinct()
        before = pl.when(head).then(pl.col("p_ord")).otherwise(pl.col("ord").shift(1).over(pair))
        after_release = (
            pl.when(head)
            .then(pl.col("p_release").fill_null(True))
            .otherwise(pl.col("release").shift(1).over(pair))
        )
        opened = pl.when(after_release).then(pl.col("ord")).otherwise(pl.when(head).then(pl.col("p_first")))
        chunk = chunk.with_columns(before.alias("before"), opened.forward_fill().over(pair).alias("first"))
        spans.append(
            chunk.filter(pl.col("release")).select(
                # a release alone after a release (or first of its pair): busy since that one (or the start)
                pl.when(pl.col("first") == pl.col("ord"))
                .then(pl.col("before").fill_null(-1))
                .otherwise(pl.col("first"))
                .cast(I64)
                .alias("start"),
                pl.col("ord").cast(I64).alias("end"),
            )
        )
        last = chunk.filter(pl.struct(pair).is_last_distinct()).select(
            *pair,
            pl.col("ord").alias("p_ord"),
            pl.col("release").alias("p_release"),
            pl.col("first").alias("p_first"),
        )
        carried = pl.concat([carried.join(last, on=pair, how="anti"), last])
    # pairs whose last event is no release: busy to the trace end
    open_ = carried.filter(~pl.col("p_release")).select(
        pl.col("p_first").alias("start"), pl.lit(NEVER, I64).alias("end")
    )
    return pl.concat([*spans, open_]).cast(SPAN_SCHEMA)


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


def quiet_cuts(events: pl.LazyFrame, slice_rows: int = SLICE_ROWS) -> pl.DataFrame:
    """The quiet points of one VM's events (columns ord, ts, kind, vcpu, pcpu, lock, origin; in
    ord order, the whole trace's): `ord` of each event a window may start at, `row`, its position
    among the VM's events, and its `ts`. Holds the busy spans (16 bytes a release) and a slice of
    events at a time."""
    spans = pl.concat([busy_spans(events, slice_rows), lost_spans(events)]).cast(SPAN_SCHEMA)
    starts = np.sort(spans["start"].to_numpy())
    ends = np.sort(spans["end"].to_numpy())
    del spans
    times = events.select("ord", "ts")
    n = times.select(pl.len()).collect().item()
    found, last_ts = [], None
    for offset in range(0, n, slice_rows):
        ev = times.slice(offset, slice_rows).collect().with_row_index("row", offset=offset)
        ords = ev["ord"].to_numpy()
        # spans covering ord o: those that start before it, less those that also end before it
        covered = np.searchsorted(starts, ords, side="left") - np.searchsorted(ends, ords, side="left")
        before = pl.col("ts").shift(1, fill_value=last_ts) if last_ts is not None else pl.col("ts").shift(1)
        found.append(
            ev.filter(pl.Series(covered == 0) & (pl.col("ts") > before).fill_null(False)).select(
                "ord", pl.col("row").cast(I64), "ts"
            )
        )
        last_ts = int(ev["ts"][-1])
    if not found:
        return pl.DataFrame(schema={"ord": I64, "row": I64, "ts": I64})
    return pl.concat(found)


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
