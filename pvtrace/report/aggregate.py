"""Polars aggregations that shrink result tables to what a chart can show.

Every chart reads its data through one of these (log-binned histograms, time
bins, window clipping, coarsened intervals), so a page never carries millions
of rows whatever the size of the trace.
"""

from __future__ import annotations

import math

import polars as pl

# Most rows any one chart layer may carry into the page (Altair refuses more than 5000).
MAX_LAYER_ROWS = 4000


def log_histogram(
    df: pl.DataFrame, value: str, by: tuple[str, ...] = (), per_decade: int = 5
) -> tuple[pl.DataFrame, int]:
    """Counts of `value` (ns) in log-spaced bins, per group.

    Returns the histogram (by..., lo_ns, hi_ns, mid_ns, count, share_pct) and the
    number of values left out because they are null or not positive (a log axis
    cannot show them; callers say so).
    """
    keep = pl.col(value).is_not_null() & (pl.col(value) > 0)
    n_left_out = df.height - df.filter(keep).height
    k = (pl.col(value).cast(pl.Float64).log10() * per_decade + 1e-9).floor().cast(pl.Int64).alias("_k")
    counts = df.lazy().filter(keep).group_by([*by, k]).agg(pl.len().cast(pl.Int64).alias("count"))
    # Every bin from one before a group's first to one after its last, empty ones at 0: lines start and
    # end on the axis and never jump over gaps (a frequency polygon).
    grid = (
        counts.group_by(list(by) or pl.lit(0).alias("_g"))
        .agg(pl.int_ranges(pl.col("_k").min() - 1, pl.col("_k").max() + 2).first().alias("_k"))
        .explode("_k")
        .filter(pl.col("_k").is_not_null())
    )
    if not by:
        grid = grid.drop("_g")
    hist = (
        grid.join(counts, on=[*by, "_k"], how="left")
        .with_columns(
            pl.col("count").fill_null(0),
            (10.0 ** (pl.col("_k") / per_decade)).alias("lo_ns"),
            (10.0 ** ((pl.col("_k") + 1) / per_decade)).alias("hi_ns"),
            (10.0 ** ((pl.col("_k") + 0.5) / per_decade)).alias("mid_ns"),
        )
        .with_columns(
            (100.0 * pl.col("count") / pl.col("count").sum().over(list(by) or pl.lit(1))).alias("share_pct")
        )
        .sort([*by, "_k"])
        .drop("_k")
        .collect()
    )
    return hist, n_left_out


def bin_width(t0: int, t1: int, n_bins: int) -> int:
    """Integer ns width of `n_bins` bins covering [t0, t1) (at least 1)."""
    return max(1, math.ceil((t1 - t0) / max(1, n_bins)))


def time_bin(ts: str, t0: int, width: int) -> pl.Expr:
    """The bin index of a timestamp column."""
    return ((pl.col(ts) - t0) // width).alias("bin")


def clip_intervals(df: pl.DataFrame, t0: int, t1: int) -> pl.DataFrame:
    """Intervals overlapping [t0, t1), clipped to it (dur recomputed when present)."""
    out = df.filter((pl.col("end") > t0) & (pl.col("start") < t1)).with_columns(
        pl.col("start").clip(lower_bound=t0), pl.col("end").clip(upper_bound=t1)
    )
    if "dur" in out.columns:
        out = out.with_columns((pl.col("end") - pl.col("start")).alias("dur"))
    return out


def bin_overlaps(df: pl.DataFrame, t0: int, t1: int, width: int) -> pl.LazyFrame:
    """One row per (interval, time bin it touches) with the ns of overlap (`bin`, `overlap_ns`).

    Intervals are clipped to [t0, t1) first; rows grow by the bins each interval
    spans, which bounds them by intervals + lanes x bins.
    """
    lf = (
        clip_intervals(df, t0, t1)
        .lazy()
        .filter(pl.col("end") > pl.col("start"))
        .with_columns(
            pl.int_ranges((pl.col("start") - t0) // width, (pl.col("end") - 1 - t0) // width + 1).alias("bin")
        )
        .explode("bin")
        .with_columns(
            (
                pl.min_horizontal(pl.col("end"), t0 + (pl.col("bin") + 1) * width)
                - pl.max_horizontal(pl.col("start"), t0 + pl.col("bin") * width)
            ).alias("overlap_ns")
        )
    )
    return lf


def coarsen_intervals(
    df: pl.DataFrame,
    lane: str,
    category: str,
    t0: int,
    t1: int,
    max_rows: int = MAX_LAYER_ROWS,
    mode: str = "dominant",
) -> tuple[pl.DataFrame, int | None]:
    """Intervals (lane, category, start, end) inside [t0, t1), at most about `max_rows` of them.

    When the clipped intervals fit they are returned as they are (and None). Otherwise
    time is cut into bins per lane; `mode="dominant"` keeps, per lane and bin, the
    category that covered most of the bin, `mode="any"` keeps every category present
    in the bin; consecutive bins of one category merge. Returns the intervals and the
    bin width used (ns).
    """
    clipped = clip_intervals(df.select(lane, category, "start", "end"), t0, t1).filter(
        pl.col("end") > pl.col("start")
    )
    if clipped.height <= max_rows:
        return clipped, None
    n_lanes = max(1, clipped[lane].n_unique())
    n_cats = 1 if mode == "dominant" else max(1, clipped[category].n_unique())
    width = bin_width(t0, t1, max(1, max_rows // (n_lanes * n_cats)))
    per_bin = (
        bin_overlaps(clipped, t0, t1, width).group_by(lane, "bin", category).agg(pl.col("overlap_ns").sum())
    )
    if mode == "dominant":
        per_bin = per_bin.sort(
            lane, "bin", "overlap_ns", category, descending=[False, False, True, False]
        ).unique(subset=[lane, "bin"], keep="first", maintain_order=True)
    merged = (
        per_bin.sort(lane, category, "bin")
        .with_columns(
            (
                (pl.col("bin") != pl.col("bin").shift(1) + 1)
                | (pl.col(lane) != pl.col(lane).shift(1))
                | (pl.col(category) != pl.col(category).shift(1))
            )
            .fill_null(True)
            .cum_sum()
            .alias("_run")
        )
        .group_by("_run")
        .agg(
            pl.col(lane).first(),
            pl.col(category).first(),
            (t0 + pl.col("bin").min() * width).alias("start"),
            pl.min_horizontal(t0 + (pl.col("bin").max() + 1) * width, pl.lit(t1)).alias("end"),
        )
        .drop("_run")
        .sort(lane, "start")
        .collect()
    )
    return merged.select(lane, category, "start", "end"), width
