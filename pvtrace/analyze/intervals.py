"""Interval primitives: piecewise-constant timelines and splitting intervals by them.

Every analysis here is a question about what one timeline (a vCPU's state, a
lock's status) was during the intervals of another (a wait, a hold). A
*partition* answers it: per integer key, contiguous half-open pieces
`[start, end)` that cover the observed window, each carrying values. Splitting
intervals by a partition is a vectorized range join: two binary searches on a
composite (key, time) position and an explode of the piece-index ranges, so
the output has exactly one row per (interval, overlapping piece).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pvtrace.analyze.frames import (
    SMALL,
    clipped,
    filtered,
    full,
    larger,
    next_value,
    same_next,
    same_prev,
    same_prev_or_null,
    smaller,
    sorted_flag,
    with_series,
)
from pvtrace.errors import PvtraceError

I64 = pl.Int64()
_MAX_POS = 2**62


@dataclass(frozen=True)
class Window:
    """The observed window `[t_start, t_end)` and the composite positions built on it.

    A position `key * span + (ts - t_start)` orders rows by key, then time, in
    one Int64, so that binary search works across all keys at once.
    """

    t_start: int
    t_end: int

    @property
    def span(self) -> int:
        return self.t_end - self.t_start + 1

    @property
    def dur(self) -> int:
        return self.t_end - self.t_start

    def check_keys(self, n_keys: int) -> None:
        """Refuse key counts whose positions would overflow Int64."""
        if n_keys * self.span >= _MAX_POS:
            raise PvtraceError(
                f"trace too long for analysis in one piece ({n_keys} timelines over {self.dur} ns); "
                "split it into shorter time ranges"
            )

    def pos(self, key: pl.Expr, ts: pl.Expr) -> pl.Expr:
        return key.cast(I64) * self.span + (ts.cast(I64) - self.t_start)


def same_as_next(key: str) -> pl.Expr:
    """True where the next row has the same key (rows grouped by key)."""
    return (pl.col(key) == pl.col(key).shift(-1)).fill_null(False)


def same_as_previous(key: str) -> pl.Expr:
    """True where the previous row has the same key (rows grouped by key)."""
    return (pl.col(key) == pl.col(key).shift(1)).fill_null(False)


def cum_sum_within(value: str, key: str) -> pl.Expr:
    """Running sum of `value` restarting at each key (rows grouped by key)."""
    total = pl.col(value).cum_sum()
    base = pl.when(same_as_previous(key)).then(None).otherwise(total - pl.col(value)).forward_fill()
    return total - base


def dense_sums(df: pl.DataFrame, key: str, n: int) -> pl.DataFrame:
    """Every other column of `df` summed per key, for keys that are row numbers 0..n-1: one row
    per key in key order, 0 where a key has no rows.

    One np.bincount per column: several times faster than a hash group_by over many small
    groups. Its float64 sums are exact below 2**53 (104 days of ns); beyond, group_by sums.
    """
    cols = [c for c in df.columns if c != key]
    bound = sum(max(abs(df[c].min() or 0), abs(df[c].max() or 0)) for c in cols) * df.height
    big = bound >= 2**53 and df.select(pl.sum_horizontal(pl.col(cols).abs().sum()) >= 2**53).item()
    if big:
        sums = df.group_by(key).agg(pl.col(cols).sum())
        keys = pl.DataFrame({key: pl.int_range(n, dtype=I64, eager=True)})
        return keys.join(sums, on=key, how="left").with_columns(pl.col(cols).fill_null(0)).sort(key)
    at = df[key].to_numpy()
    return pl.DataFrame(
        {key: np.arange(n, dtype=np.int64)}
        | {c: np.bincount(at, weights=df[c].to_numpy(), minlength=n).astype(np.int64) for c in cols}
    ).cast({c: df.schema[c] for c in cols})


def sort_by_key(df: pl.DataFrame, key: pl.Expr | str, *, then: str | None = None) -> pl.DataFrame:
    """`df` sorted by an integer key, keeping the row order within each key (so rows already in
    `then` order come out sorted by (key, then)).

    Keys spanning fewer than 2**16 values (vCPUs, locks) take a radix sort in numpy, about
    twice as fast as polars' stable sort, and keys spanning fewer than 2**32 (a lock and a vCPU)
    two of them, low half then high half (several times faster); others, and keys with nulls,
    take polars' sort.
    """
    if df.height < 2:
        return df
    k = df[key] if isinstance(key, str) else df.select(key).to_series()
    if then is not None and not df[then].is_sorted():
        return sort_by_key_time(df.with_columns(k.alias("_sort_key")), "_sort_key", then).drop("_sort_key")
    order = key_order(k)
    if order is None:
        return df.with_columns(k.alias("_sort_key")).sort("_sort_key", maintain_order=True).drop("_sort_key")
    return df[order]


def key_order(k: pl.Series) -> np.ndarray | None:
    """The row order of sort_by_key for an integer key (a stable radix sort), None for keys with
    nulls or spanning 2**32 values or more (polars' sort then)."""
    lo, hi = k.min(), k.max()
    if k.null_count() or hi - lo >= 1 << 32:
        return None
    at = k.to_numpy() - lo
    if hi - lo < 1 << 16:
        return np.argsort(at.astype(np.uint16), kind="stable")
    low = np.argsort((at & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((at[low] >> 16).astype(np.uint16), kind="stable")]


def packing(frames: list[pl.DataFrame], major: str, minors: tuple[str, ...], spare: int = 1):
    """(m0, n0, size): `(major - m0) * size + minor - n0` orders the rows of `frames` by (major,
    minor) in one Int64, for each `minors` column (whose values then lie in [0, size)), with room
    for `spare` times as many positions. None where a value is null or the positions could
    overflow: the caller then takes the slower way on several columns."""
    frames = [f for f in frames if f.height]
    if not frames or any(f[c].null_count() for f in frames for c in (major, *minors)):
        return None
    m0, m1 = min(f[major].min() for f in frames), max(f[major].max() for f in frames)
    n0 = min(f[c].min() for f in frames for c in minors)
    size = max(f[c].max() for f in frames for c in minors) - n0 + 1
    if (m1 - m0 + 1) * size * spare >= _MAX_POS:
        return None
    return m0, n0, size


def sort_by_key_time(df: pl.DataFrame, key: str, time: str, tie: str | None = None) -> pl.DataFrame:
    """`df` sorted by (key, time[, tie]) through one composite Int64 (a sort on several columns is
    about 2.5x slower); `tie` holds 0 or 1."""
    if df.height < 2:
        return df
    packed = packing([df], key, (time,), spare=2 if tie else 1)
    if packed is None or (tie and df[tie].null_count()):
        return df.sort([key, time, *([tie] if tie else [])])
    k0, t0, size = packed
    position = (pl.col(key) - k0) * size + pl.col(time) - t0
    return df.sort(position * 2 + pl.col(tie) if tie else position)


def coverage_integral(
    intervals: pl.DataFrame, points: pl.DataFrame, *, key: str, at: tuple[str, ...]
) -> list[pl.Series]:
    """Per point (key, and each time column of `at`): the time integral, up to that time, of how
    many intervals (key, start, end; no nulls) of its key are open; 0 before the key's first.

    One sort of the interval edges on a composite (key, time) Int64: a key's count is back to 0
    after its last edge, so running sums over all keys (the integral less its value at the key's
    first edge) need no grouping. Then a lookup of the last edge at or before each point."""
    edges = pl.concat(
        [
            intervals.select(pl.col(key).cast(I64), pl.col("start").alias("x"), pl.lit(1, I64).alias("d")),
            intervals.select(pl.col(key).cast(I64), pl.col("end").alias("x"), pl.lit(-1, I64).alias("d")),
        ]
    )
    edges = sort_by_key_time(edges, key, "x").with_columns(pl.col("d").cum_sum().alias("n"))
    width = (pl.col("x").shift(-1) - pl.col("x")).fill_null(0)
    edges = edges.with_columns((pl.col("n") * width).cum_sum().shift(1).fill_null(0).alias("cum"))
    key_base = pl.when(same_as_previous(key)).then(None).otherwise(pl.col("cum")).forward_fill()
    edges = edges.with_columns(pl.col("cum") - key_base)
    # one edge per (key, time): the last, whose count includes every edge at that instant
    edges = edges.filter(~(same_as_next(key) & (pl.col("x") == pl.col("x").shift(-1)).fill_null(False)))
    out = []
    for t in at:
        found = lookup(points, edges, by=key, on=t, values=["x", "n", "cum"], table_key=key, table_on="x")
        integral = pl.col("cum") + pl.col("n") * (pl.col(t) - pl.col("x"))
        out.append(found.select(integral.fill_null(0).alias(t)).to_series())
    return out


def count_before(
    rows: pl.DataFrame, points: pl.DataFrame, *, key: str, at: str, by: str, on: str
) -> pl.Series:
    """Per point (`by`, `on`): the rows (`key`, `at`) of its key with `at` strictly before its `on`
    (0 for a key without rows; null for a null point). Rows with a null key or `at` are not
    counted.

    One sort of the rows' composite (key, at) positions and two binary searches per point: at
    its position and at its key's first, so no grouping and no join."""
    rkey, rat = rows[key].cast(I64), rows[at].cast(I64)
    if rkey.null_count() or rat.null_count():
        known = rkey.is_not_null() & rat.is_not_null()
        rkey, rat = rkey.filter(known), rat.filter(known)
    pkey, pon = points[by].cast(I64), points[on].cast(I64)
    size, origin = _composite_span((rkey, rat), (pkey, pon))
    sorted_pos = (rkey * size + rat - origin).sort()
    base = pkey * size
    valid = base.is_not_null() & pon.is_not_null()
    base, pos = base.fill_null(0), (base + pon - origin).fill_null(0)
    count = sorted_pos.search_sorted(pos, side="left").cast(I64) - sorted_pos.search_sorted(
        base, side="left"
    ).cast(I64)
    return count if valid.all() else count.zip_with(valid, full(count.len(), None, I64))


def changes_to_partition(
    changes: pl.DataFrame,
    *,
    key: str,
    values: list[str],
    n_keys: int,
    window: Window,
    initial: dict[str, object],
) -> pl.DataFrame:
    """A partition from change points (key, ts, values) sorted by key then canonical order.

    Each change holds from its ts to the next change of its key (or t_end); before
    a key's first change, and for keys without changes, `initial` holds. Pieces of
    zero length are dropped and consecutive equal pieces merged.
    """
    t0, t1 = window.t_start, window.t_end
    dtypes = {v: changes.schema[v] for v in values}
    n = changes.height
    k, ts = changes[key].cast(I64), changes["ts"]
    end = next_value(ts).zip_with(same_next(k), full(n, t1, ts.dtype))
    pieces = pl.DataFrame(
        [
            k,
            clipped(ts, t0, t1).alias("start"),
            clipped(end, t0, t1).alias("end"),
            *[changes[v] for v in values],
        ]
    )
    firsts = filtered(pieces[[key, "start"]], ~same_prev(k))
    heads = pl.DataFrame(
        [
            pl.int_range(0, n_keys, dtype=I64, eager=True).alias(key),
            full(n_keys, t0, I64).alias("start"),
            _first_starts(firsts, key, n_keys, t1).alias("end"),
            *[full(n_keys, initial[v], dtypes[v]).alias(v) for v in values],
        ]
    )
    # heads first, then each key's pieces in order: both are sorted by key, and a merge keeps
    # the left row first among equal keys.
    heads = filtered(heads, heads["end"] > heads["start"])
    pieces = filtered(pieces, pieces["end"] > pieces["start"])
    part = sorted_flag(heads, key).merge_sorted(sorted_flag(pieces, key), key=key)
    return merge_equal(part, key=key, values=values)


def _first_starts(firsts: pl.DataFrame, key: str, n_keys: int, t1: int) -> pl.Series:
    """Per key 0..n_keys-1, the start of its first piece (`firsts`: key, start; one row per key),
    t1 for keys without pieces."""
    keys = firsts[key]
    if (
        keys.null_count()
        or keys.n_unique() < keys.len()
        or (keys.len() and (keys.min() < 0 or keys.max() >= n_keys))
    ):
        all_keys = pl.DataFrame({key: pl.int_range(0, n_keys, dtype=I64, eager=True)})
        found = all_keys.join(firsts, on=key, how="left", maintain_order="left")
        return found["start"].fill_null(t1)
    return full(n_keys, t1, firsts["start"].dtype).scatter(keys, firsts["start"])


def merge_equal(part: pl.DataFrame, *, key: str, values: list[str]) -> pl.DataFrame:
    """Merge consecutive contiguous pieces of a key that carry equal values (nulls compare equal)."""
    if part.height == 0:
        return part
    k = part[key]
    same = same_prev(k)
    for v in values:
        same = same & same_prev_or_null(part[v])
    if not same.any() and _tiled(part, k):  # nothing to merge (a fine partition: the common case)
        return part
    firsts = filtered(part, ~same)
    # Pieces are contiguous, so a run ends where the next run of its key starts.
    last = filtered(part[[key, "end"]], ~same_next(k))
    lk = last[key]
    if k.null_count() or lk.n_unique() < lk.len() or not lk.is_sorted():  # keys not grouped
        last_end = firsts.join(last.rename({"end": "_last"}), on=key, how="left", maintain_order="left")[
            "_last"
        ]
    else:  # each key's last end, by a binary search of the run's key
        last_end = last["end"][pl.Series(np.searchsorted(lk.to_numpy(), firsts[key].to_numpy()))]
    end = next_value(firsts["start"]).zip_with(same_next(firsts[key]), last_end)
    return with_series(firsts, [end.alias("end")])


def _tiled(part: pl.DataFrame, k: pl.Series) -> bool:
    """Whether the pieces are grouped by key (sorted, no nulls) and each ends where the next piece
    of its key starts: merge_equal then gives every unmerged piece its own end back."""
    n = part.height
    if k.null_count() or not k.is_sorted() or n < 2:
        return n < 2 and k.null_count() == 0
    meets = part["end"].slice(0, n - 1) == part["start"].slice(1)
    return bool((meets | ~same_next(k).slice(0, n - 1)).fill_null(False).all())


def split(
    intervals: pl.DataFrame,
    partition: pl.DataFrame,
    *,
    by: str,
    window: Window,
    values: list[str],
    part_key: str = "key",
    any_order: bool = False,
) -> pl.DataFrame:
    """Split each interval at the pieces of the partition of its key.

    `intervals` has columns `by`, start, end (plus any others, carried along);
    `partition` is sorted by (part_key, start) and covers the window for every key
    the intervals use. Returns one row per (interval, piece) overlap with the
    interval's columns, start/end clipped to the overlap, and the piece's values.
    Empty intervals give no rows. Rows come in (by, start) order, the intervals that cross
    pieces last; `any_order` (for callers that sort them anyway) leaves intervals not in that
    order as they are: each finds its piece by a binary search instead of after a sort.
    """
    out_schema = {**intervals.schema, **{v: partition.schema[v] for v in values}}
    if intervals.height == 0 or partition.height == 0:
        return pl.DataFrame(schema=out_schema)
    iv = filtered(intervals, intervals["end"] > intervals["start"])
    iv = with_series(iv, [window.pos(iv[by], iv["start"]).alias("_pos")])
    searched = not iv["_pos"].is_sorted() and any_order and not iv["start"].is_sorted()
    if not searched and not iv["_pos"].is_sorted():  # (intervals taken from a partition already are)
        iv = sort_by_key(iv, by, then="start") if iv["start"].is_sorted() else iv.sort("_pos")
    rename = {f"_v{i}": v for i, v in enumerate(values)}
    pieces = pl.DataFrame(
        [
            window.pos(partition[part_key], partition["start"]).alias("_pos").set_sorted(),
            partition[part_key].cast(I64).alias("_pkey"),
            partition["start"].alias("_ps"),
            partition["end"].alias("_pe"),
            *[partition[v].alias(name) for name, v in rename.items()],
            pl.int_range(partition.height, dtype=I64, eager=True).alias("_first"),
        ]
    )
    # the piece each interval starts in; most intervals also end in it
    if searched:
        first = pieces["_pos"].search_sorted(iv["_pos"], side="right").cast(I64) - 1
        found = first >= 0  # (none before a key's first piece)
        iv = filtered(iv, found)
        at = iv.hstack(pieces.drop("_pos")[first.filter(found)].get_columns())
    else:
        at = iv.join_asof(pieces, on="_pos", check_sortedness=False)
    at = filtered(at, at["_pkey"] == at[by].cast(I64))
    inside = at["end"] <= at["_pe"]
    replaced = {v for v in values if v in iv.columns}  # the piece's value wins
    one = filtered(at, inside)
    one = pl.DataFrame(
        [c.rename(rename.get(c.name, c.name)) for c in one.get_columns() if c.name not in replaced]
    )
    if not inside.all():  # the rest cover the pieces up to the last one that starts before their end
        many = filtered(at, ~inside)
        ends = window.pos(many[by], many["end"])
        last = (
            pl.Series(np.searchsorted(pieces["_pos"].to_numpy(), ends.to_numpy(), side="left")).cast(I64) - 1
        )
        many = many.select(*iv.columns, pl.int_ranges("_first", last + 1, dtype=I64).alias("_gi")).explode(
            "_gi"
        )
        piece = pieces[["_ps", "_pe", *rename]][many["_gi"]]
        many = many[[c for c in iv.columns if c not in replaced]].hstack(
            [c.rename(rename.get(c.name, c.name)) for c in piece.get_columns()]
        )
        one = pl.concat([one[many.columns], many])
    start, end = larger(one["start"], one["_ps"]), smaller(one["end"], one["_pe"])
    keep = end > start
    out = [start if c == "start" else end if c == "end" else one[c] for c in out_schema]
    return filtered(pl.DataFrame(out), keep)


def lookup(
    points: pl.DataFrame,
    table: pl.DataFrame,
    *,
    by: str,
    on: str,
    values: list[str],
    table_key: str = "key",
    table_on: str | None = None,
    direction: str = "backward",
    strict: bool = False,
) -> pl.DataFrame:
    """Add to each point the values of one table row of the same key, found by `on`.

    backward: the last row with table `on` <= the point's (< if strict); forward:
    the first row with `on` >= the point's (> if strict). `table` is sorted by `on` within
    each key: by (table_key, table_on), or by table_on alone (tables in canonical order).
    Points without such a row (or with a null key or `on`) get nulls; `_row` is the table
    row index found.

    An as-of join: per key when points and table are both in `on` order (no sorting at all),
    else on composite positions `key * size + on - origin`, with origin and size spanning
    every `on` value (a merge of two sorted Int64 columns, sorting the points, or the table,
    only when they are not).
    """
    table_on = table_on or on
    cols = [*values, "_row"]
    # Series arithmetic and frames built from Series: a DataFrame operation costs about 0.1 ms
    # however small the frame, and the guest samples make some 40 lookups of a few hundred rows
    rkey, ron = table[table_key].cast(I64).alias("_key"), table[table_on].cast(I64).alias("_on")
    rvals = [*(table[v] for v in values), pl.int_range(table.height, dtype=I64, eager=True).alias("_row")]
    lkey, lon = points[by].cast(I64).alias("_key"), points[on].cast(I64).alias("_on")
    asof = {"strategy": direction, "allow_exact_matches": not strict, "check_sortedness": False}
    complete = lkey.null_count() == 0 and lon.null_count() == 0
    if complete and lon.is_sorted() and ron.is_sorted():
        found = pl.DataFrame([lkey, lon]).join_asof(
            pl.DataFrame([rkey, ron, *rvals]), on="_on", by="_key", **asof
        )
        return with_series(points, [found[c] for c in cols])
    size, origin = _composite_span((lkey, lon), (rkey, ron))
    right = pl.DataFrame([rkey, *rvals, (rkey * size + ron - origin).alias("_pos")])
    right = sorted_flag(right if right["_pos"].is_sorted() else right.sort("_pos"), "_pos")
    # positions of the points (null: null key or `on`), sorted with their row numbers if need be;
    # a position's key is `_pos // size`
    lpos = (lkey * size + lon - origin).alias("_pos")
    ordered = complete and lpos.is_sorted()
    if not ordered:
        at = pl.int_range(points.height, dtype=I64, eager=True).alias("_i")
        if not complete:
            known = lpos.is_not_null()
            at, lpos = at.filter(known), lpos.filter(known)
        if lpos.len() > SMALL:  # polars' parallel sort
            ordered_points = pl.DataFrame([at, lpos]).sort("_pos")
            at, lpos = ordered_points["_i"], ordered_points["_pos"]
        else:
            order = pl.Series(np.argsort(lpos.to_numpy()))
            at, lpos = at[order], lpos[order]
    found = pl.DataFrame([lpos]).join_asof(right, on="_pos", **asof)
    # a row of another key is no match: `_pos // size == _key`, as a range
    base = found["_key"] * size
    outside = ~((found["_pos"] >= base) & (found["_pos"] < base + size))
    vals = [found[c] for c in cols]
    if outside.any():
        vals = [c.set(outside, None) for c in vals]
    if ordered:
        return with_series(points, vals)
    n = points.height
    if found.height == n:  # every point found a place: back to their order by one gather
        inverse = np.empty(n, dtype=np.int64)
        inverse[at.to_numpy()] = np.arange(n)
        back = pl.Series(inverse)
        return with_series(points, [c[back] for c in vals])
    # points with a null key or `on` found nothing
    return with_series(points, [c.clear(n).scatter(at, c) for c in vals])


def _composite_span(*frames: tuple[pl.Series, pl.Series]) -> tuple[int, int]:
    """(size, origin) for composite positions `key * size + on - origin` that order the rows
    of `frames` (key, on) by (key, on); refuses spans whose positions would overflow Int64."""
    ons = [on for _, on in frames if on.len() and on.null_count() < on.len()]
    lo = min((s.min() for s in ons), default=0)
    hi = max((s.max() for s in ons), default=0)
    k = max((abs(key.min() or 0) for key, _ in frames if key.len()), default=0)
    k = max([k, *(abs(key.max() or 0) for key, _ in frames if key.len())])
    size = hi - lo + 1
    if (k + 1) * size >= _MAX_POS:
        raise PvtraceError(
            f"trace too long for analysis in one piece ({k + 1} timelines over {size} ns); "
            "split it into shorter time ranges"
        )
    return size, lo


def overlay(
    partition: pl.DataFrame,
    windows: pl.DataFrame,
    *,
    key: str,
    values: list[str],
    set_values: dict[str, object],
    window: Window,
) -> pl.DataFrame:
    """The partition with `set_values` replacing its values inside windows (key, start, end).

    Windows may overlap; an instant covered by any window of its key gets the
    set values. Used to mark lost-event windows as unknown.
    """
    t0, t1 = window.t_start, window.t_end
    w = windows.select(
        pl.col(key).cast(I64), pl.col("start").clip(t0, t1), pl.col("end").clip(t0, t1)
    ).filter(pl.col("end") > pl.col("start"))
    if w.height == 0:
        return partition
    bounds = (
        pl.concat(
            [
                partition.select(pl.col(key).cast(I64), "start"),
                w.select(key, "start"),
                w.select(key, pl.col("end").alias("start")),
            ]
        )
        .filter(pl.col("start") < t1)
        .unique()
        .sort(key, "start")
    )
    based = lookup(bounds, partition, by=key, on="start", values=values, table_key=key).drop("_row")
    starts = w.select(window.pos(pl.col(key), pl.col("start"))).to_series().sort()
    ends = w.select(window.pos(pl.col(key), pl.col("end"))).to_series().sort()
    at = bounds.select(window.pos(pl.col(key), pl.col("start"))).to_series()
    key0 = bounds.select(window.pos(pl.col(key), pl.lit(t0, I64))).to_series()

    def count(sorted_pos: pl.Series) -> pl.Series:
        return sorted_pos.search_sorted(at, side="right").cast(I64) - sorted_pos.search_sorted(
            key0, side="left"
        ).cast(I64)

    covered = (count(starts) - count(ends)) > 0
    dtypes = {v: partition.schema[v] for v in values}
    out = based.with_columns(
        *[
            pl.when(covered).then(pl.lit(set_values[v], dtype=dtypes[v])).otherwise(pl.col(v)).alias(v)
            for v in values
        ],
        pl.col("start").shift(-1).over(key).fill_null(t1).alias("end"),
    ).select(key, "start", "end", *values)
    return merge_equal(out, key=key, values=values)


def union(intervals: pl.DataFrame, *, key: str) -> pl.DataFrame:
    """Merge overlapping or touching intervals (key, start, end) per key, sorted by (key, start)."""
    iv = filtered(intervals[[key, "start", "end"]], intervals["end"] > intervals["start"])
    if iv.height == 0:
        return iv
    packed = packing([iv], key, ("start", "end"))
    if packed is None:  # no composite: the slow way
        iv = iv.sort(key, "start")
        reach = pl.col("end").cum_max().shift(1).over(key)
        return (
            iv.with_columns(((reach.is_null()) | (pl.col("start") > reach)).cum_sum().alias("_grp"))
            .group_by("_grp", maintain_order=True)
            .agg(pl.col(key).first(), pl.col("start").min(), pl.col("end").max())
            .drop("_grp")
        )
    # (key, time) in one Int64: one sort, and a running max that restarts at each key by itself
    k0, t0, size = packed
    base = (pl.col(key) - k0) * size - t0
    iv = iv.sort(base + pl.col("start"))
    reach = (base + pl.col("end")).cum_max() - base  # the furthest end so far, within the key
    new = (~same_as_previous(key)) | (pl.col("start") > reach.shift(1))
    iv = iv.with_columns(new.alias("_new"), reach.alias("_reach"))
    last = pl.col("_new").shift(-1).fill_null(True)
    return pl.concat(
        [
            iv.filter(pl.col("_new")).select(key, "start"),
            iv.filter(last).select(pl.col("_reach").alias("end")),
        ],
        how="horizontal",
    )
