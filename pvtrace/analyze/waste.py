"""Spin classification: what the lock was doing at each instant a waiter spun.

docs/metrics.md, Spin classification. A wait is split at the waiter's state
changes (spin = running pieces), each spin piece at the lock's status changes
(held by whom / free with which next owner), and the pieces that depend on
another vCPU at that vCPU's state changes. Each resulting piece gets one class:
useful, lhp, lwp_preempted, lwp_halted or unattributed.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import dense_sums, lookup, sort_by_key_time, split
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.vcpu_states import VcpuStates
from pvtrace.summary import SPIN_SPLIT_KEYS

I64, I32, STR = pl.Int64(), pl.Int32(), pl.String()

SPLIT_COLUMNS = SPIN_SPLIT_KEYS
# Spin on locks of undecided kind, per vCPU and VM: the part of a row whose LWP is unknown.
UNDECIDED = "spin_undecided_ns"
SPIN_CLASS = pl.Enum(["useful", "lhp", "lwp_preempted", "lwp_halted", "unattributed"])
CLASS_COLUMN = {
    "useful": "spin_useful_ns",
    "lhp": "waste_lhp_ns",
    "lwp_preempted": "waste_lwp_preempted_ns",
    "lwp_halted": "waste_lwp_halted_ns",
    "unattributed": "spin_unattributed_ns",
}


def wait_pieces(waits: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Each analyzed wait split at its waiter's state changes: wid, lid, vid, start, end, state."""
    iv = waits.filter(~pl.col("excluded")).select("wid", "lid", "vid", "start", "end")
    return split(iv, states.partition, by="vid", window=prep.window, values=["state"])


def spin_pieces(
    pieces: pl.DataFrame,
    status: pl.DataFrame,
    states: VcpuStates,
    prep: Prepared,
    *,
    queue_heads: pl.DataFrame | None = None,
    any_order: bool = False,
) -> pl.DataFrame:
    """Classified spin: wid, lid, vid, start, end, cls, held, ref (holder or next owner), ref_state, lock_kind.

    With `queue_heads` (the waits, at the inferred level), spin on a free fifo lock that the
    inferred releases leave without a next owner takes the earliest waiter still queued as
    the next owner, as a fifo lock hands over to it. `any_order`: the rows may come in any
    order (the pieces that depend on another vCPU are not sorted by it to be split).
    """
    running = pieces.filter(pl.col("state") == "running").drop("state")
    p = split(running, status, by="lid", window=prep.window, values=["held", "ref"])
    p = p.with_columns(prep.lock_attr("lock_kind"))
    if queue_heads is not None:
        p = _queue_head(p, queue_heads, prep)
    held = pl.col("held")
    needs = (held & pl.col("ref").is_not_null()).fill_null(False) | (
        (~held).fill_null(False)
        & (pl.col("lock_kind") == "fifo")
        & pl.col("ref").is_not_null()
        & (pl.col("ref") != pl.col("vid"))
    )
    p = p.with_columns(needs.alias("_needs"))
    dep = split(
        p.filter(pl.col("_needs")),
        states.partition,
        by="ref",
        window=prep.window,
        values=["state"],
        any_order=any_order,
    ).rename({"state": "ref_state"})
    rest = p.filter(~pl.col("_needs")).with_columns(pl.lit(None, dep.schema["ref_state"]).alias("ref_state"))
    allp = pl.concat([dep, rest.select(dep.columns)])
    rs = pl.col("ref_state")
    cls = (
        pl.when(held.is_null() | (held & pl.col("ref").is_null()))
        .then(pl.lit("unattributed", SPIN_CLASS))
        .when(held)
        .then(
            pl.when(rs == "running")
            .then(pl.lit("useful", SPIN_CLASS))
            .when(rs == "unknown")
            .then(pl.lit("unattributed", SPIN_CLASS))
            .otherwise(pl.lit("lhp", SPIN_CLASS))
        )
        .when(pl.col("_needs"))
        .then(
            pl.when(rs == "running")
            .then(pl.lit("useful", SPIN_CLASS))
            .when(rs == "preempted")
            .then(pl.lit("lwp_preempted", SPIN_CLASS))
            .when(rs == "halted")
            .then(pl.lit("lwp_halted", SPIN_CLASS))
            .otherwise(pl.lit("unattributed", SPIN_CLASS))
        )
        .otherwise(pl.lit("useful", SPIN_CLASS))
    )
    return allp.with_columns(cls.alias("cls")).select(
        "wid", "lid", "vid", "start", "end", "cls", "held", "ref", "ref_state", "lock_kind"
    )


def _queue_head(p: pl.DataFrame, waits: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """Fill the next owner of free fifo spin pieces that have none: the queued waiter that leaves
    the queue first (fifo: the earliest still queued)."""
    orphan = (~pl.col("held")).fill_null(False) & pl.col("ref").is_null() & (pl.col("lock_kind") == "fifo")
    table = sort_by_key_time(
        waits.filter(~pl.col("excluded")).select(
            pl.col("lid").alias("key"), pl.col("end").alias("w_end"), pl.col("start").alias("w_start"), "vid"
        ),
        "key",
        "w_end",
    )
    found = lookup(
        p.select("lid", "start"),
        table,
        by="lid",
        on="start",
        table_on="w_end",
        values=["w_start", "vid"],
        direction="forward",
        strict=True,
    )
    head = pl.when(found["w_start"] < found["start"]).then(found["vid"])
    return p.with_columns(
        pl.when(orphan).then(pl.select(head).to_series()).otherwise(pl.col("ref")).alias("ref")
    )


def _class_durations(spin: pl.DataFrame) -> pl.DataFrame:
    """Per spin piece: wid, spin_ns and its duration under the column of its class (0 elsewhere)."""
    dur = pl.col("end") - pl.col("start")
    return spin.select(
        "wid",
        dur.alias("spin_ns"),
        *[
            pl.when(pl.col("cls") == cls).then(dur).otherwise(0).alias(col)
            for cls, col in CLASS_COLUMN.items()
        ],
    )


def _state_durations(pieces: pl.DataFrame) -> pl.DataFrame:
    """Per wait piece: wid and its duration under halted_ns, preempted_ns or unknown_ns."""
    dur = pl.col("end") - pl.col("start")
    return pieces.select(
        "wid",
        *[
            pl.when(pl.col("state") == s).then(dur).otherwise(0).alias(f"{s}_ns")
            for s in ("halted", "preempted", "unknown")
        ],
    )


def per_wait(
    waits: pl.DataFrame, pieces: pl.DataFrame, spin: pl.DataFrame, acq: pl.DataFrame
) -> pl.DataFrame:
    """The analyzed waits (excluded ones are counted in the summary) with their spin split,
    halted/preempted/unknown time and hand-off flag, keyed by lid and vid: every waits and
    waste table is made from it."""
    w = waits.filter(~pl.col("excluded"))
    n = waits.height  # wid numbers every wait, excluded ones too
    sums = pl.concat(
        [
            dense_sums(_class_durations(spin), "wid", n),
            dense_sums(_state_durations(pieces), "wid", n).drop("wid"),
        ],
        how="horizontal",
    ).gather(w["wid"])
    handoff = acq.select(pl.col("start_ord").alias("end_ord"), "handoff").filter(acq["contended"])
    out = pl.concat([w, sums.drop("wid")], how="horizontal").join(
        handoff, on="end_ord", how="left", maintain_order="left"
    )  # waits stay in the order they began
    return out.with_columns(
        (pl.col("waste_lwp_preempted_ns") + pl.col("waste_lwp_halted_ns")).alias("waste_lwp_ns"),
        pl.col("handoff").fill_null(False),
        (pl.col("end") - pl.col("start")).alias("dur"),
    )


def _zero_fill(df: pl.DataFrame, cols: tuple[str, ...] | list[str]) -> pl.DataFrame:
    return df.with_columns(*[pl.col(c).fill_null(0).cast(I64) for c in cols])


def waits_table(waits: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The waits result table, from per_wait()."""
    return waits.select(
        prep.lock_attr("vm"),
        prep.lock_attr("lock"),
        prep.vcpu_attr("vcpu").cast(I32),
        "start",
        "end",
        "dur",
        *SPLIT_COLUMNS,
        "halted_ns",
        "preempted_ns",
        "handoff",
        "truncated",
    )


def nearest_rank(values: pl.Expr, q: float) -> pl.Expr:
    """The nearest-rank percentile inside a group: the ceil(q * n)-th smallest value."""
    rank = (pl.len() * q).ceil().cast(I64).clip(1, None) - 1
    return values.sort().gather(rank).first().cast(I64)


def waste_by_lock(
    waits: pl.DataFrame, acq: pl.DataFrame, prep: Prepared, *, acquisitions_known: bool
) -> pl.DataFrame:
    """Per lock, from per_wait(): acquisitions, contended, spin split, wait percentiles (nearest
    rank over closed waits)."""
    n_acq = (
        acq.select("lid", "start_ord", "contended")
        .filter(pl.col("start_ord").is_not_null())
        .group_by("lid")
        .agg(
            pl.len().cast(I64).alias("n_acquisitions"),
            pl.col("contended").sum().cast(I64).alias("n_contended"),
        )
    )
    closed = waits.filter(~pl.col("truncated"))
    pct = closed.group_by("lid").agg(*wait_percentiles(), pl.len().cast(I64).alias("_n_closed"))
    sums = waits.group_by("lid").agg(*[pl.col(c).sum() for c in SPLIT_COLUMNS])
    out = (
        prep.locks.select("lid", "vm", "lock")
        .join(n_acq, on="lid", how="left")
        .join(sums, on="lid", how="left")
        .join(pct, on="lid", how="left")
    )
    out = _zero_fill(out, SPLIT_COLUMNS)
    if acquisitions_known:
        out = out.with_columns(pl.col("n_acquisitions").fill_null(0), pl.col("n_contended").fill_null(0))
    else:
        out = out.with_columns(
            pl.lit(None, I64).alias("n_acquisitions"), pl.col("_n_closed").fill_null(0).alias("n_contended")
        )
    return out.select(
        "vm",
        "lock",
        pl.col("n_acquisitions").cast(I64),
        pl.col("n_contended").cast(I64),
        *SPLIT_COLUMNS,
        "wait_p50_ns",
        "wait_p90_ns",
        "wait_p99_ns",
        "wait_max_ns",
    ).pipe(in_waste_order)


def wait_percentiles() -> list[pl.Expr]:
    """A lock's wait percentiles (nearest rank) and longest wait, over its closed waits' `dur`."""
    return [
        nearest_rank(pl.col("dur"), 0.5).alias("wait_p50_ns"),
        nearest_rank(pl.col("dur"), 0.9).alias("wait_p90_ns"),
        nearest_rank(pl.col("dur"), 0.99).alias("wait_p99_ns"),
        pl.col("dur").max().cast(I64).alias("wait_max_ns"),
    ]


def in_waste_order(table: pl.DataFrame) -> pl.DataFrame:
    """waste_by_lock's rows as reported: most spin waste first, then spin, then contentions
    (a stable sort: a partitioned analysis merges groups' rows into the same order)."""
    return table.sort(
        pl.col("waste_lhp_ns") + pl.col("waste_lwp_ns"),
        "spin_ns",
        "n_contended",
        descending=True,
        nulls_last=True,
        maintain_order=True,
    )


def running_time(states: VcpuStates) -> pl.DataFrame:
    """Per vid: running_ns over the window."""
    return (
        states.partition.filter(pl.col("state") == "running")
        .group_by("key")
        .agg((pl.col("end") - pl.col("start")).sum().alias("running_ns"))
        .rename({"key": "vid"})
    )


def waste_by_vcpu(waits: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Per vCPU (waiter), from per_wait(): spin split, the spin on locks of undecided kind (whose
    LWP the split cannot hold: a row's LWP is partial where it is not 0) and running time."""
    undecided = (pl.col("lock_kind") == "unknown").fill_null(False)
    sums = (
        waits.join(prep.locks.select("lid", "lock_kind"), on="lid", how="left")
        .group_by("vid")
        .agg(
            *[pl.col(c).sum() for c in SPLIT_COLUMNS],
            pl.col("spin_ns").filter(undecided).sum().alias(UNDECIDED),
        )
    )
    out = prep.vcpus.join(sums, on="vid", how="left").join(running_time(states), on="vid", how="left")
    out = _zero_fill(out, [*SPLIT_COLUMNS, UNDECIDED, "running_ns"])
    return out.select("vm", pl.col("vcpu").cast(I32), *SPLIT_COLUMNS, UNDECIDED, "running_ns").sort(
        "vm", "vcpu"
    )


def waste_by_vm(by_vcpu: pl.DataFrame) -> pl.DataFrame:
    """Per VM: spin split, spin on locks of undecided kind and running time."""
    return (
        by_vcpu.group_by("vm")
        .agg(*[pl.col(c).sum() for c in (*SPLIT_COLUMNS, UNDECIDED, "running_ns")])
        .select("vm", *SPLIT_COLUMNS, UNDECIDED, "running_ns")
        .sort("vm")
    )
