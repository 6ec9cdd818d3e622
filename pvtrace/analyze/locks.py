"""Lock waits, holds and the per-lock status timeline (held by whom, or free with whom next).

docs/metrics.md, Waits and holds / Next owner: a wait runs from lock_contend to
the same vCPU's lock_acquire of that lock; a hold from lock_acquire to the
lock's next lock_release; a hand-off is a contended acquisition whose contend
came before the previous release; the next owner at a release is the next
acquirer if it was already queued.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import (
    changes_to_partition,
    cum_sum_within,
    lookup,
    overlay,
    sort_by_key,
    sort_by_key_time,
    union,
)
from pvtrace.analyze.prepare import Prepared

I64, I32, STR, BOOL = pl.Int64(), pl.Int32(), pl.String(), pl.Boolean()

# sort_key / end_key place a hold's start and end in canonical order (2 * ord of the event; an
# inferred release or unseen acquisition between events gets an odd key).
HOLD_COLUMNS = (
    "hid",
    "lid",
    "vid",
    "start",
    "end",
    "start_ord",
    "end_ord",
    "truncated",
    "inferred",
    "sort_key",
    "end_key",
)


def lock_order(prep: Prepared) -> pl.Expr:
    """One Int64 key ordering holds by lock, then canonical position (sort_key)."""
    return pl.col("lid") * (2 * prep.ord_size + 4) + pl.col("sort_key") + 1


def _same_group(cols: list[str], offset: int) -> pl.Expr:
    expr = pl.lit(True)
    for c in cols:
        expr = expr & (pl.col(c) == pl.col(c).shift(offset))
    return expr.fill_null(False)


def waits(
    prep: Prepared, guest_windows: pl.DataFrame, *, uncontended_visible: bool
) -> tuple[pl.DataFrame, dict]:
    """Waits: wid, lid, vid, start, end, start_ord, end_ord (null if truncated), truncated, excluded,
    queued (waits of the lock open just before this one's acquisition, its own included; null
    if truncated).

    A contend followed by another contend of the same (vCPU, lock) with no
    acquire between is broken pairing (lost events): it is dropped and counted.
    Without visible uncontended acquisitions (guest-side events), an acquire
    with no contend before it ends a wait that began before the trace: unknown,
    counted, not analyzed. Waits overlapping a lost window of their guest CPU are
    `excluded` from the metrics.
    """
    t1 = prep.window.t_end
    ev = prep.lock_events
    contend, acquire = pl.col("kind") == "lock_contend", pl.col("kind") == "lock_acquire"
    # each (lock, vCPU)'s contends and acquires in row (canonical) order, as one sorted Int64 of
    # packed (pair, row): each contend's next event of its pair is a binary search away, and
    # only the contends' columns are gathered (a sort of every event's columns cost 3x more)
    n = ev.height
    pair = prep.lock_vcpu_key()
    packed = (pair * n + pl.int_range(n, dtype=I64)).alias("_pos")
    positions = ev.select(packed.filter(contend | acquire)).to_series().sort()
    c = ev.select(pl.all().filter(contend), packed.filter(contend), pair.filter(contend).alias("_pair"))
    at = positions.search_sorted(c["_pos"], side="left").cast(I64) + 1
    following = positions.gather(at.clip(0, max(positions.len() - 1, 0)))
    same = (at < positions.len()) & (following < (c["_pair"] + 1) * n)
    nxt = ev.select("kind", "ts", "ord")[following.zip_with(same, c["_pair"] * n) - c["_pair"] * n]
    c = c.with_columns(pl.when(same).then(nxt[col]).alias(f"next_{col}") for col in ("kind", "ts", "ord"))
    w = c.filter(pl.col("next_kind").is_null() | (pl.col("next_kind") == "lock_acquire")).select(
        "lid",
        "vid",
        pl.col("ts").alias("start"),
        pl.col("next_ts").fill_null(t1).alias("end"),
        pl.col("ord").alias("start_ord"),
        pl.col("next_ord").alias("end_ord"),
        pl.col("next_kind").is_null().alias("truncated"),
    )
    notes = {"n_unmatched_contend": c.filter(pl.col("next_kind") == "lock_contend").height}
    if not uncontended_visible:
        # each acquire's previous event of its pair, from the same positions
        by_pair = pl.DataFrame({"_pair": positions // n, "kind": ev["kind"].gather(positions % n)})
        prev_kind = pl.when(pl.col("_pair") == pl.col("_pair").shift(1)).then(pl.col("kind").shift(1))
        acquires = by_pair.select("kind", prev_kind.alias("prev_kind")).filter(acquire)
        notes["n_waits_unknown_start"] = acquires.filter(
            (pl.col("prev_kind") != "lock_contend").fill_null(True)
        ).height
        # an acquire right after an acquire, past the pair's first event: its contend is missing
        notes["n_unmatched_acquire"] = acquires.filter(pl.col("prev_kind") == "lock_acquire").height
    if not w["start_ord"].is_sorted():
        w = w.sort("start_ord")
    w = w.with_row_index("wid").with_columns(pl.col("wid").cast(I64))  # few rows: cheap
    w = w.with_columns(_overlaps(w, guest_windows, prep).alias("excluded"), queued_at_end(w))
    notes["n_waits_excluded"] = int(w["excluded"].sum())
    return w, notes


def waited_from_before(prep: Prepared, waits: pl.DataFrame) -> pl.DataFrame:
    """Per lock (lid, last_ord), where uncontended takes are not printed: the canonical position
    of its last acquisition that ends no wait of the trace, a wait that began before the trace."""
    ended = waits["end_ord"].drop_nulls()
    return (
        prep.lock_events.filter((pl.col("kind") == "lock_acquire") & ~pl.col("ord").is_in(ended.implode()))
        .group_by("lid")
        .agg(pl.col("ord").max().alias("last_ord"))
    )


def queued_at_end(waits: pl.DataFrame) -> pl.Series:
    """Per wait: the waits of its lock open just before its acquisition, its own included (null if
    truncated), from running counts of +1 at each wait's start and -1 at its end in (lock,
    canonical) order. Hand-off evidence (lock_kind) and convoys' waiters read it."""
    row = pl.int_range(pl.len(), dtype=I64).alias("_row")
    deltas = pl.concat(
        [
            waits.select(row, "lid", pl.col("start_ord").alias("ord"), pl.lit(1, I64).alias("d")),
            waits.select(row, "lid", pl.col("end_ord").alias("ord"), pl.lit(-1, I64).alias("d")).filter(
                pl.col("ord").is_not_null()
            ),
        ]
    )
    ends = (
        sort_by_key_time(deltas, "lid", "ord")
        .with_columns(cum_sum_within("d", "lid").alias("open_after"))
        .filter(pl.col("d") == -1)
    )
    queued = pl.repeat(None, waits.height, dtype=I64, eager=True)
    return queued.scatter(ends["_row"], ends["open_after"] + 1).alias("queued")


def _overlaps(iv: pl.DataFrame, guest_windows: pl.DataFrame, prep: Prepared) -> pl.Series:
    """Whether each interval (vid, start, end) overlaps a lost window of its guest CPU."""
    if guest_windows.height == 0 or iv.height == 0:
        return pl.Series([False] * iv.height, dtype=BOOL)
    win = union(
        guest_windows.join(
            prep.vcpus.select("vm", pl.col("vcpu").cast(I32).alias("cpu"), "vid"),
            on=["vm", "cpu"],
            how="inner",
        ).select(pl.col("vid").alias("key"), "start", "end"),
        key="key",
    ).rename({"start": "w_start", "end": "w_end"})
    hit = lookup(
        iv.select("vid", "start", "end"),
        win,
        by="vid",
        on="start",
        table_on="w_end",
        values=["w_start"],
        direction="forward",
        strict=True,
    )
    return (hit["w_start"] <= hit["end"]).fill_null(False)


def holds(prep: Prepared) -> tuple[pl.DataFrame, dict]:
    """Exact holds from lock_acquire/lock_release.

    hid, lid, vid (null: unknown holder), start, end, start_ord (null: held since
    before it was seen), end_ord (null: truncated), truncated, inferred, sort_key.
    A release with no open hold closes a hold of unknown holder that began at the
    lock's previous release (or the trace start).
    """
    t0, t1 = prep.window.t_start, prep.window.t_end
    ev = prep.lock_events
    # the acquires and releases in lock order (canonical within each lock) as rows of the lock
    # events: each hold gathers the columns it reads for its own rows only
    keep = pl.col("kind").is_in(["lock_acquire", "lock_release"])
    rows = pl.int_range(ev.height, dtype=I64).filter(keep).alias("_row")
    le = sort_by_key(ev.select(pl.col("lid", "kind").filter(keep), rows), "lid")
    nxt = _same_group(["lid"], -1)
    prv = _same_group(["lid"], 1)
    le = le.with_columns(
        pl.when(nxt).then(pl.col("kind").shift(-1)).alias("next_kind"),
        pl.when(nxt).then(pl.col("_row").shift(-1)).alias("_next"),
        pl.when(prv).then(pl.col("kind").shift(1)).alias("prev_kind"),
        pl.when(prv).then(pl.col("_row").shift(1)).alias("_prev"),
    )

    def at(rows: pl.DataFrame, row: str, *cols: str, prefix: str = "") -> list[pl.Series]:
        found = ev.select(pl.col(*cols).gather(rows[row])).get_columns()
        return [c.alias(prefix + c.name) for c in found]

    a = le.filter(pl.col("kind") == "lock_acquire")
    a = pl.DataFrame(
        [
            a["lid"],
            *at(a, "_row", "vid", "ts", "ord"),
            a["next_kind"],
            *at(a, "_next", "ts", "ord", prefix="next_"),
        ]
    )
    acq = a.select(
        "lid",
        "vid",
        pl.col("ts").alias("start"),
        pl.col("next_ts").fill_null(t1).alias("end"),
        pl.col("ord").alias("start_ord"),
        pl.when(pl.col("next_kind") == "lock_release").then(pl.col("next_ord")).alias("end_ord"),
        pl.col("next_kind").is_null().alias("truncated"),
        (pl.col("ord") * 2).alias("sort_key"),
        pl.when(pl.col("next_kind") == "lock_release").then(pl.col("next_ord") * 2).alias("end_key"),
    )
    r = le.filter(
        (pl.col("kind") == "lock_release") & (pl.col("prev_kind") != "lock_acquire").fill_null(True)
    )
    orphan = pl.DataFrame(
        [r["lid"], *at(r, "_row", "ts", "ord"), *at(r, "_prev", "ts", "ord", prefix="prev_")]
    )
    orphan = orphan.select(
        "lid",
        pl.lit(None, I64).alias("vid"),
        pl.col("prev_ts").fill_null(t0).alias("start"),
        pl.col("ts").alias("end"),
        pl.lit(None, I64).alias("start_ord"),
        pl.col("ord").alias("end_ord"),
        pl.lit(False).alias("truncated"),
        pl.when(pl.col("prev_ord").is_null())
        .then(pl.lit(-1, I64))
        .otherwise(pl.col("prev_ord") * 2 + 1)
        .alias("sort_key"),
        (pl.col("ord") * 2).alias("end_key"),
    )
    notes = {"n_acquire_while_held": int((acq["end_ord"].is_null() & ~acq["truncated"]).sum())}
    h = acq  # in lock order already (the lock events are sorted by lock, in canonical order)
    if orphan.height:
        h = pl.concat([acq, orphan]).sort(lock_order(prep))
    h = h.with_row_index("hid").with_columns(pl.col("hid").cast(I64), pl.lit(False).alias("inferred"))
    return h.select(HOLD_COLUMNS), notes


def acquisitions(holds: pl.DataFrame, waits: pl.DataFrame) -> pl.DataFrame:
    """Holds annotated with how they began and what their release leads to.

    Adds contended, contend_ord, handoff, prev_release_ts/_ord/prev_hid (the lock's
    release just before and its hold, if the previous hold ended by one), and for holds closed by a release:
    next_owner (vid), next_ts, next_ord (the next owner's acquisition).
    """
    closed = waits.filter(pl.col("end_ord").is_not_null()).select(
        pl.col("end_ord").alias("start_ord"), pl.col("start_ord").alias("contend_ord")
    )
    h = holds.join(closed, on="start_ord", how="left", maintain_order="left")  # holds are in lock order
    prv = _same_group(["lid"], 1)
    nxt = _same_group(["lid"], -1)
    is_acq = pl.col("start_ord").is_not_null()
    # the first acquisition of its lock: no acquisition earlier in the lock's rows
    acq_before = is_acq.cast(I64).cum_sum() - is_acq.cast(I64)
    lock_base = pl.when(prv).then(None).otherwise(acq_before).forward_fill()
    first_acq = is_acq & (acq_before == lock_base)
    prev_release = pl.when(prv).then(pl.col("end_ord").shift(1))
    h = h.with_columns(
        pl.when(prv & pl.col("end_ord").shift(1).is_not_null())
        .then(pl.col("end").shift(1))
        .alias("prev_release_ts"),
        prev_release.alias("prev_release_ord"),
        pl.when(prv & pl.col("end_ord").shift(1).is_not_null())
        .then(pl.col("hid").shift(1))
        .alias("prev_hid"),
        pl.col("contend_ord").is_not_null().alias("contended"),
        (
            pl.col("contend_ord").is_not_null()
            & ~first_acq
            & (pl.col("contend_ord") < prev_release).fill_null(False)
        ).alias("handoff"),
    )
    queued = (pl.col("contend_ord").shift(-1) < pl.col("end_ord")).fill_null(False)
    has_next = nxt & pl.col("end_ord").is_not_null() & pl.col("start_ord").shift(-1).is_not_null() & queued
    return h.with_columns(
        pl.when(has_next).then(pl.col("vid").shift(-1)).alias("next_owner"),
        pl.when(has_next).then(pl.col("start").shift(-1)).alias("next_ts"),
        pl.when(has_next).then(pl.col("start_ord").shift(-1)).alias("next_ord"),
    )


def lock_status(acq: pl.DataFrame, prep: Prepared, guest_windows: pl.DataFrame) -> pl.DataFrame:
    """The status partition of every lock (key = lid): held, ref.

    held True: ref = holder vid (null: unknown holder); held False: free, ref =
    next owner (null: none); held null: unknown (a lost window of the VM).
    """
    starts = acq.select(
        pl.col("lid").alias("key"),
        "start",
        "sort_key",
        pl.lit(True).alias("held"),
        pl.col("vid").alias("ref"),
    )
    ends = acq.filter(pl.col("end_key").is_not_null()).select(
        pl.col("lid").alias("key"),
        pl.col("end").alias("start"),
        pl.col("end_key").alias("sort_key"),
        pl.lit(False).alias("held"),
        pl.col("next_owner").alias("ref"),
    )
    # At equal keys (an unseen hold starting where an inferred one ended) the end comes first.
    changes = sort_by_key_time(
        pl.concat([starts.with_columns(pl.lit(1).alias("_tb")), ends.with_columns(pl.lit(0).alias("_tb"))]),
        "key",
        "sort_key",
        tie="_tb",
    ).rename({"start": "ts"})
    part = changes_to_partition(
        changes,
        key="key",
        values=["held", "ref"],
        n_keys=prep.n_locks,
        window=prep.window,
        initial={"held": False, "ref": None},
    )
    if guest_windows.height:
        win = guest_windows.join(prep.locks.select("vm", pl.col("lid").alias("key")), on="vm", how="inner")
        part = overlay(
            part,
            win.select("key", "start", "end"),
            key="key",
            values=["held", "ref"],
            set_values={"held": None, "ref": None},
            window=prep.window,
        )
    return part


def holds_table(acq: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The holds result table: vm, lock, vcpu, start, end, dur, inferred, truncated."""
    return acq.select(
        prep.lock_attr("vm"),
        prep.lock_attr("lock"),
        prep.vcpu_attr("vcpu").cast(I32),
        "start",
        "end",
        (pl.col("end") - pl.col("start")).alias("dur"),
        "inferred",
        "truncated",
    )
