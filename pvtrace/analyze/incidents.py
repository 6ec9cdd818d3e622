"""Lock-holder preemption (LHP) and lock-waiter preemption (LWP) incidents.

docs/metrics.md, Incidents. LHP: per hold, each maximal stretch of positive
length in which the holder is preempted or halted. LWP (fifo locks): a release
whose next owner is not running at the release, from the release to the next
owner's acquisition. Waste and waiters come from the classified spin pieces.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pvtrace.analyze.intervals import dense_sums, lookup, sort_by_key_time, split
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.vcpu_states import VcpuStates, state_at
from pvtrace.schema import LHP_INCIDENT_SCHEMA, LWP_INCIDENT_SCHEMA

I64, I32, STR = pl.Int64(), pl.Int32(), pl.String()

_NOT_RUNNING = ["preempted", "halted"]


def lhp_stretches(acq: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """LHP incidents before waste: lid, hid, holder (vid), holder_state, start, end, truncated,
    holder_guessed (a hold of the likeliest unseen holder: the trace shows no take of it)."""
    guessed = pl.col("guessed") if "guessed" in acq.columns else pl.lit(False)
    h = acq.select(
        "hid",
        "lid",
        "vid",
        "start",
        "end",
        pl.col("truncated").alias("hold_truncated"),
        guessed.alias("guessed"),
    ).filter(pl.col("vid").is_not_null())
    # a hold's pieces tile it: a stretch is a run of its holder-down pieces that touch, across
    # consecutive holds of one holder on one lock too (a vCPU that is not running cannot release
    # and take the lock again, so only inferred holds can meet there: one preemption, one incident)
    p = split(h, states.partition, by="vid", window=prep.window, values=["state"], any_order=True)
    p = p.filter(pl.col("state").is_in(_NOT_RUNNING))
    p = p.with_columns((pl.col("lid").cast(I64) * prep.n_vcpus + pl.col("vid")).alias("_lv"))
    p = sort_by_key_time(p, "_lv", "start")
    new = (pl.col("_lv") != pl.col("_lv").shift(1)) | (pl.col("start") != pl.col("end").shift(1))
    p = p.with_columns(new.fill_null(True).cum_sum().alias("_grp"))
    return (
        p.group_by("_grp", maintain_order=True)
        .agg(
            pl.col("hid").first(),
            pl.col("lid").first(),
            pl.col("vid").first().alias("holder"),
            pl.col("state").first().cast(STR).alias("holder_state"),
            pl.col("start").min(),
            pl.col("end").max(),
            pl.col("hold_truncated").last(),
            pl.col("guessed").any().alias("holder_guessed"),
        )
        .with_columns((pl.col("hold_truncated") & (pl.col("end") == prep.window.t_end)).alias("truncated"))
        .drop("_grp", "hold_truncated")
        .sort("lid", "start")
    )


def attribute(
    incidents: pl.DataFrame, spin: pl.DataFrame, classes: list[str], prep: Prepared
) -> pl.DataFrame:
    """Add waste_ns and n_waiters: spin pieces of the classes inside each incident of their lock."""
    inc = incidents.with_row_index("_iid").with_columns(pl.col("_iid").cast(I64))
    pieces = spin.lazy().filter(pl.col("cls").is_in(classes)).select("lid", "vid", "start", "end").collect()
    found = lookup(
        pieces,
        inc.select(
            pl.col("lid").alias("key"), pl.col("start").alias("i_start"), pl.col("end").alias("i_end"), "_iid"
        ),
        by="lid",
        on="start",
        table_on="i_start",
        values=["i_end", "_iid"],
    ).filter(pl.col("_iid").is_not_null() & (pl.col("start") < pl.col("i_end")))
    # per incident (dense ids): waste by bincount, waiters as distinct (incident, waiter) pairs
    n = inc.height
    waste = dense_sums(found.select("_iid", (pl.col("end") - pl.col("start")).alias("waste_ns")), "_iid", n)
    pairs = found.select(pl.col("_iid") * prep.n_vcpus + pl.col("vid")).to_series().unique()
    waiters = np.bincount((pairs // prep.n_vcpus).to_numpy(), minlength=n)
    return inc.drop("_iid").with_columns(
        waste["waste_ns"].cast(I64),
        pl.Series("n_waiters", waiters, dtype=I64),
        pl.Series("harmful", waiters > 0),
    )


def lhp_incidents(acq: pl.DataFrame, spin: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """LHP incidents with waste (internal ids kept: lid, holder vid)."""
    return attribute(lhp_stretches(acq, states, prep), spin, ["lhp"], prep)


def lwp_incidents(acq: pl.DataFrame, spin: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """LWP incidents on fifo locks: lid, next_owner (vid), next_owner_state, start, end, pcpu_wait_ns, ..."""
    fifo = prep.locks.filter(pl.col("lock_kind") == "fifo").select("lid")
    rel = acq.select("lid", "next_owner", "end", "end_ord", "next_ts", "next_ord")
    rel = (
        rel.filter(pl.col("next_owner").is_not_null())
        .join(fifo, on="lid", how="semi")
        .select(
            "lid",
            pl.col("next_owner"),
            pl.col("end").alias("start"),
            pl.col("end_ord").alias("rel_ord"),
            pl.col("next_ts").alias("end"),
            "next_ord",
        )
    )
    rel = rel.with_columns(
        state_at(rel, states, prep, vid="next_owner", ord_col="rel_ord", ts_col="start").alias(
            "next_owner_state"
        )
    ).filter(pl.col("next_owner_state").is_in(_NOT_RUNNING))
    changes = states.changes.lazy()
    runs = changes.filter(pl.col("kind") == "vcpu_run").select(
        pl.col("vid").alias("key"), pl.col("ord").alias("run_ord"), pl.col("ts").alias("run_ts")
    )
    wakes = changes.filter(pl.col("kind") == "vcpu_wake").select(
        pl.col("vid").alias("key"), pl.col("ord").alias("wake_ord"), pl.col("ts").alias("wake_ts")
    )
    runs, wakes = pl.collect_all([runs, wakes])
    rel = lookup(
        rel,
        runs,
        by="next_owner",
        on="rel_ord",
        table_on="run_ord",
        values=["run_ord", "run_ts"],
        direction="forward",
        strict=True,
    ).drop("_row")
    rel = rel.with_columns(
        pl.when(pl.col("run_ts").is_null() | (pl.col("run_ord") > pl.col("next_ord")))
        .then(pl.col("end"))
        .otherwise(pl.col("run_ts"))
        .alias("run_ts"),
        pl.col("run_ord").fill_null(prep.n_events),
    )
    rel = lookup(
        rel,
        wakes,
        by="next_owner",
        on="run_ord",
        table_on="wake_ord",
        values=["wake_ts"],
        strict=True,
    ).drop("_row")
    woke = pl.when(pl.col("wake_ts") >= pl.col("start")).then(pl.col("wake_ts")).otherwise(pl.col("start"))
    rel = rel.with_columns(
        (pl.col("run_ts") - woke).clip(0, None).alias("pcpu_wait_ns"), pl.lit(False).alias("truncated")
    )
    rel = rel.select(
        "lid", "next_owner", pl.col("next_owner_state").cast(STR), "start", "end", "pcpu_wait_ns", "truncated"
    ).sort("lid", "start")
    return attribute(rel, spin, ["lwp_preempted", "lwp_halted"], prep)


def lhp_table(inc: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The lhp_incidents result table."""
    return _incident_table(inc, prep, "holder", LHP_INCIDENT_SCHEMA)


def lwp_table(inc: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The lwp_incidents result table."""
    return _incident_table(inc, prep, "next_owner", LWP_INCIDENT_SCHEMA)


def _incident_table(inc: pl.DataFrame, prep: Prepared, who: str, schema: pl.Schema) -> pl.DataFrame:
    """Incidents keyed by lock id and vCPU id (column `who`) -> the result table: vm, lock, vCPU index."""
    if inc.height == 0:
        return pl.DataFrame(schema=schema)
    return (
        inc.with_columns(
            prep.lock_attr("vm"),
            prep.lock_attr("lock"),
            prep.vcpu_attr("vcpu", vid=who).alias(who),
            (pl.col("end") - pl.col("start")).alias("dur"),
        )
        .select(list(schema))
        .cast(dict(schema))
    )
