"""Holder inference for traces without lock acquire/release events (the inferred level).

Guest contention events show who acquired a lock after waiting (contention_end)
but neither releases nor uncontended acquisitions. Building on the rules of
METRICS.md, Fidelity (measured in docs/accuracy.md):
1. A contended acquirer holds the lock from its acquisition until the first of:
   the lock's next acquisition; a pv kick it sends (the unlocker kicks the next
   waiter; the release is at the HYPERCALL exit carrying it); the moment it has
   *run* the mean hold; and, looking ahead, the moment it stops running if the
   lock changes hands before it runs again (a vCPU that is not running cannot
   release). A holder that stops before it has run `3 x` the median hold keeps
   the lock through the stop (it is preempted while holding).
2. Spin on a lock these holds leave free, with nobody queued ahead (an
   "episode"), had an unseen holder that took the lock uncontended: the vCPU
   that kicks a waiter of the lock; else the target of a directed yield by a
   waiter (host: preempt "R" + run on the same pCPU at once; KVM boosts vCPUs in
   the kernel) that is not waiting itself; else, if a spinner acquires at the
   episode's end, the non-waiting sibling that ran again the latest before it
   within a long (p95) hold; else, if the episode lasts far longer than any hold
   (a running holder would have released), the non-waiting sibling absent for
   most of it that runs again before the lock changes hands.
3. At the inferred level, spin on a free fifo lock with no next owner takes the
   earliest waiter still queued as next owner (fifo locks hand over to it).
Hold statistics come from clean hand-offs: consecutive acquisitions of one lock
where the second acquirer was already waiting and both kept running in between
(per VM with >= MIN_HANDOFFS of them, else the trace's, else published typical
critical sections).
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import lookup, union
from pvtrace.analyze.locks import HOLD_COLUMNS, acquisitions, lock_order, lock_status
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.vcpu_states import VcpuStates
from pvtrace.analyze.waste import spin_pieces, wait_pieces

I64 = pl.Int64()
HOLD_BOUND_FACTOR = 3
LATE_QUANTILE = 0.95
LONG_FACTOR = 10.0  # an episode this many long (p95) holds long had a holder that was not running
MIN_HANDOFFS = 20  # clean hand-offs needed to trust a VM's (else the trace's) hold estimate
# Without enough clean hand-offs: typical guest critical sections (0.5-2 us, science.md).
FALLBACK_MEDIAN_NS = 1_000
FALLBACK_MEAN_NS = 2_000
FALLBACK_TAIL_NS = 6_000


def _release_key(prep: Prepared, ts: pl.Series) -> pl.Series:
    """The canonical position of a release inferred at time ts: just before the first event at or after ts."""
    return prep.event_ts.search_sorted(ts, side="left").cast(I64)


def _running_clock(states: VcpuStates) -> pl.DataFrame:
    """Per vid piece: start, end, running, cum (running time of the vid before the piece)."""
    p = states.partition.select(
        pl.col("key").alias("vid"),
        "start",
        "end",
        (pl.col("state") == "running").alias("running"),
    )
    dur = pl.when(pl.col("running")).then(pl.col("end") - pl.col("start")).otherwise(0)
    return p.with_columns((dur.cum_sum().over("vid") - dur).alias("cum"))


def _run_bound_end(holds: pl.DataFrame, clock: pl.DataFrame, prep: Prepared) -> pl.Series:
    """When each holder (vid, start, bound) has run `bound` ns since the hold started (null: never in the trace)."""
    w = prep.window
    at = lookup(
        holds.select("vid", "start", "bound"),
        clock.select(pl.col("vid").alias("key"), pl.col("start").alias("p_start"), "running", "cum"),
        by="vid",
        on="start",
        table_on="p_start",
        size=w.span,
        values=["p_start", "running", "cum"],
        origin=w.t_start,
    )
    ran = at.select(
        "vid",
        (
            pl.col("cum")
            + pl.when(pl.col("running")).then(pl.col("start") - pl.col("p_start")).otherwise(0)
            + pl.col("bound")
        )
        .clip(None, w.dur + 1)
        .alias("target"),
    )
    run_pieces = clock.filter(pl.col("running")).select(
        pl.col("vid").alias("key"), (pl.col("cum") + pl.col("end") - pl.col("start")).alias("cum_end"), "end"
    )
    found = lookup(
        ran,
        run_pieces,
        by="vid",
        on="target",
        table_on="cum_end",
        size=w.dur + 2,
        values=["cum_end", "end"],
        direction="forward",
    )
    return found.select(pl.col("end") - (pl.col("cum_end") - pl.col("target"))).to_series()


def _typical_hold(acq: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Per vm: median, mean and tail of the interval between consecutive acquisitions of a lock
    that were clean hand-offs: the first acquirer kept running, and the next one spun without
    a break from the first acquisition (or its own contention, if later) to its acquisition."""
    changes = states.changes.select(pl.col("vid").alias("key"), pl.col("ord").alias("change_ord"), "state")
    stops = changes.filter(pl.col("state") != "running").rename({"change_ord": "stop_ord"}).drop("state")
    a = acq.filter(
        pl.col("next_vid").is_not_null() & (pl.col("next_contend_ord") < pl.col("ord"))
    ).with_columns(pl.col("ord").alias("_from"))
    a = lookup(
        a,
        stops,
        by="vid",
        on="ord",
        table_on="stop_ord",
        size=prep.ord_size,
        values=["stop_ord"],
        direction="forward",
        strict=True,
    ).drop("_row")
    a = lookup(
        a,
        changes,
        by="next_vid",
        on="_from",
        table_on="change_ord",
        size=prep.ord_size,
        values=["state"],
        strict=True,
    ).drop("_row")
    a = lookup(
        a,
        changes,
        by="next_vid",
        on="_from",
        table_on="change_ord",
        size=prep.ord_size,
        values=["change_ord"],
        direction="forward",
        strict=True,
    ).drop("_row")
    clean = a.filter(
        (pl.col("stop_ord").is_null() | (pl.col("stop_ord") > pl.col("next_ord")))
        & (pl.col("state") == "running")
        & (pl.col("change_ord").is_null() | (pl.col("change_ord") > pl.col("next_ord")))
    ).with_columns((pl.col("next_ts") - pl.col("ts")).alias("gap"))
    stats = [
        pl.col("gap").median().round(0).cast(I64).alias("hold_median_ns"),
        pl.col("gap").mean().round(0).cast(I64).alias("hold_mean_ns"),
        pl.col("gap").quantile(LATE_QUANTILE, "higher").cast(I64).alias("hold_tail_ns"),
        pl.len().alias("n_handoffs"),
    ]
    clean = clean.join(prep.locks.select("lid", "vm"), on="lid")
    per_vm = clean.group_by("vm").agg(stats).filter(pl.col("n_handoffs") >= MIN_HANDOFFS)
    pooled = clean.select(stats).filter(pl.col("n_handoffs") >= MIN_HANDOFFS)
    if pooled.height == 0:  # too few clean hand-offs anywhere: published typical critical sections
        pooled = pl.DataFrame(
            {
                "hold_median_ns": [FALLBACK_MEDIAN_NS],
                "hold_mean_ns": [FALLBACK_MEAN_NS],
                "hold_tail_ns": [FALLBACK_TAIL_NS],
                "n_handoffs": [0],
            },
            schema={
                "hold_median_ns": I64,
                "hold_mean_ns": I64,
                "hold_tail_ns": I64,
                "n_handoffs": pl.UInt32(),
            },
        )
    vms = prep.locks.select("vm").unique()
    missing = vms.join(per_vm, on="vm", how="anti").join(pooled, how="cross")
    return pl.concat([per_vm, missing.select(per_vm.columns)])


def _ran_between(
    rows: pl.DataFrame, clock: pl.DataFrame, prep: Prepared, *, vid: str, t0: str, t1: str
) -> pl.Series:
    """How long vCPU `vid` ran between times t0 and t1 (null where t1 is null)."""
    w = prep.window

    def cum_at(col: str) -> pl.Series:
        at = lookup(
            rows.select(pl.col(vid).alias("_v"), pl.col(col).fill_null(w.t_start).alias("_t")),
            clock.select(pl.col("vid").alias("key"), pl.col("start").alias("p_start"), "running", "cum"),
            by="_v",
            on="_t",
            table_on="p_start",
            size=w.span,
            values=["p_start", "running", "cum"],
            origin=w.t_start,
        )
        return at.select(
            pl.col("cum") + pl.when(pl.col("running")).then(pl.col("_t") - pl.col("p_start")).otherwise(0)
        ).to_series()

    ran = cum_at(t1) - cum_at(t0)
    return pl.select(pl.when(rows[t1].is_not_null()).then(ran)).to_series()


def visible_holds(prep: Prepared, waits: pl.DataFrame, states: VcpuStates) -> tuple[pl.DataFrame, dict]:
    """Holds of the contended acquirers, ended by the rules of step 1.

    A holder that keeps running releases once it has run the mean hold (the estimate that
    keeps waste totals unbiased); one that stops before it has run `3 x` the median hold is
    taken to hold the lock through the stop, unless the lock changes hands before it runs again.
    """
    t1 = prep.window.t_end
    acq = (
        waits.filter(pl.col("end_ord").is_not_null())
        .select(
            "lid",
            "vid",
            pl.col("end").alias("ts"),
            pl.col("end_ord").alias("ord"),
            pl.col("start_ord").alias("contend_ord"),
        )
        .sort("lid", "ord")
    )
    same = (pl.col("lid") == pl.col("lid").shift(-1)).fill_null(False)
    acq = acq.with_columns(
        pl.when(same).then(pl.col("ts").shift(-1)).alias("next_ts"),
        pl.when(same).then(pl.col("ord").shift(-1)).alias("next_ord"),
        pl.when(same).then(pl.col("contend_ord").shift(-1)).alias("next_contend_ord"),
        pl.when(same).then(pl.col("vid").shift(-1)).alias("next_vid"),
    )
    typical = _typical_hold(acq, states, prep)
    acq = (
        acq.join(prep.locks.select("lid", "vm"), on="lid", how="left", maintain_order="left")
        .join(typical, on="vm", how="left", maintain_order="left")
        .with_columns(
            pl.col("hold_mean_ns").clip(1, None).alias("hold"),
            (pl.col("hold_median_ns").clip(1, None) * HOLD_BOUND_FACTOR).alias("bound"),
            pl.col("hold_tail_ns").clip(1, None).alias("tail"),
        )
        .drop("vm", "hold_median_ns", "hold_mean_ns", "hold_tail_ns", "n_handoffs")
    )
    # A kick it sends ends the hold.
    kicks = (
        _kicks(prep)
        .select(
            pl.col("vid").alias("key"), pl.col("ord").alias("kick_ord"), pl.col("released").alias("kick_ts")
        )
        .sort("key", maintain_order=True)
    )
    acq = lookup(
        acq,
        kicks,
        by="vid",
        on="ord",
        table_on="kick_ord",
        size=prep.ord_size,
        values=["kick_ts"],
        direction="forward",
        strict=True,
    ).drop("_row")
    # Its first stop after the acquisition, and whether the lock changed hands before it ran again.
    ch = states.changes
    stops = ch.filter(pl.col("state") != "running").select(
        pl.col("vid").alias("key"), pl.col("ord").alias("stop_ord"), pl.col("ts").alias("stop_ts")
    )
    runs = ch.filter(pl.col("state") == "running").select(
        pl.col("vid").alias("key"), pl.col("ord").alias("run_ord")
    )
    acq = lookup(
        acq,
        stops,
        by="vid",
        on="ord",
        table_on="stop_ord",
        size=prep.ord_size,
        values=["stop_ord", "stop_ts"],
        direction="forward",
        strict=True,
    ).drop("_row")
    acq = lookup(
        acq.with_columns(pl.col("stop_ord").fill_null(prep.n_events)),
        runs,
        by="vid",
        on="stop_ord",
        table_on="run_ord",
        size=prep.ord_size,
        values=["run_ord"],
        direction="forward",
        strict=True,
    ).drop("_row")
    handed = (
        pl.col("next_ord").is_not_null()
        & (pl.col("stop_ord") < pl.col("next_ord"))
        & (pl.col("run_ord").is_null() | (pl.col("run_ord") > pl.col("next_ord")))
    ).fill_null(False)
    clock = _running_clock(states)
    acq = acq.with_columns(
        _ran_between(acq, clock, prep, vid="vid", t0="ts", t1="stop_ts").alias("ran_to_stop"),
        pl.when(handed).then(pl.col("stop_ts")).alias("ahead_ts"),
    )
    through = (pl.col("ran_to_stop") < pl.col("bound")).fill_null(False) & ~handed
    run_for = pl.when(through).then(pl.max_horizontal("hold", "ran_to_stop")).otherwise(pl.col("hold"))
    acq = acq.with_columns(run_for.alias("_run_for"))
    acq = acq.with_columns(
        _run_bound_end(
            acq.select("vid", pl.col("ts").alias("start"), pl.col("_run_for").alias("bound")), clock, prep
        ).alias("ran_ts")
    )
    end = pl.min_horizontal("next_ts", "kick_ts", "ran_ts", "ahead_ts")
    acq = acq.with_columns(end.fill_null(t1).clip(None, t1).alias("end"), end.is_null().alias("truncated"))
    notes = {
        "typical_hold_ns": {r["vm"]: r["hold_median_ns"] for r in typical.iter_rows(named=True)},
        "n_clean_handoffs": {r["vm"]: int(r["n_handoffs"]) for r in typical.iter_rows(named=True)},
    }
    return (
        acq.select(
            "lid",
            "vid",
            pl.col("ts").alias("start"),
            "end",
            pl.col("ord").alias("start_ord"),
            "truncated",
            "hold",
            "bound",
            "tail",
        ),
        notes,
    )


def finish_holds(holds: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """Holds in the locks module's layout (HOLD_COLUMNS), inferred, with canonical keys."""
    key = _release_key(prep, holds["end"])
    h = holds.with_columns(
        pl.when(pl.col("truncated")).then(None).otherwise(key).alias("end_ord"),
        pl.when(pl.col("truncated")).then(None).otherwise(key * 2 - 1).alias("end_key"),
        pl.when(pl.col("start_ord").is_not_null())
        .then(pl.col("start_ord") * 2)
        .otherwise(_release_key(prep, holds["start"]) * 2 - 1)
        .alias("sort_key"),
        pl.lit(True).alias("inferred"),
    ).sort(lock_order(prep))
    return h.with_row_index("hid").with_columns(pl.col("hid").cast(I64)).select(HOLD_COLUMNS)


def _kicks(prep: Prepared) -> pl.DataFrame:
    """pv kicks with `released`: when the kicker released the lock, i.e. the HYPERCALL exit that
    carries the kick (the unlock comes just before it), or the kick itself."""
    calls = (
        prep.exits.filter((pl.col("kind") == "vm_exit") & (pl.col("reason") == "HYPERCALL"))
        .select(pl.col("vid").alias("key"), pl.col("ord").alias("x_ord"), pl.col("ts").alias("x_ts"))
        .sort("key", maintain_order=True)
    )
    k = lookup(
        prep.kicks,
        calls,
        by="vid",
        on="ord",
        table_on="x_ord",
        size=prep.ord_size,
        values=["x_ts"],
        strict=True,
    )
    return k.with_columns(pl.coalesce("x_ts", "ts").alias("released")).drop("x_ts", "_row")


def _waiting_at(
    points: pl.DataFrame, waits: pl.DataFrame, prep: Prepared, *, vid: str, ord_col: str
) -> pl.Series:
    """The lock vCPU `vid` waits for at event `ord_col` (null: none); a vCPU's waits do not overlap."""
    w = waits.select(
        pl.col("vid").alias("key"),
        pl.col("start_ord").alias("w_start"),
        pl.col("end_ord").fill_null(prep.n_events).alias("w_end"),
        "lid",
    ).sort("key", "w_start")
    found = lookup(
        points.select(pl.col(vid).fill_null(-1).alias("_v"), pl.col(ord_col).alias("_o")),
        w,
        by="_v",
        on="_o",
        table_on="w_start",
        size=prep.ord_size,
        values=["w_end", "lid"],
        strict=True,
    )
    return found.select(pl.when(pl.col("w_end") > pl.col("_o")).then(pl.col("lid"))).to_series()


def unseen_holds(
    prep: Prepared, waits: pl.DataFrame, states: VcpuStates, visible: pl.DataFrame
) -> pl.DataFrame:
    """Holds of vCPUs that took a lock uncontended, found where waiters spin on a lock that the
    visible holds leave free with nobody else queued (step 2)."""
    w = prep.window
    acq = acquisitions(finish_holds(visible, prep), waits)
    status = lock_status(acq, prep, pl.DataFrame(schema={"vm": pl.String(), "start": I64, "end": I64}))
    spin = spin_pieces(wait_pieces(waits, states, prep), status, states, prep)
    lonely = spin.filter(
        (~pl.col("held")).fill_null(False)
        & (pl.col("ref").is_null() | (pl.col("ref") == pl.col("vid")) | (pl.col("lock_kind") != "fifo"))
    )
    # Episodes: stretches of such spin on one lock, and the free stretch (gap) holding each; an
    # episode that ends with a spinning waiter acquiring saw the lock change hands.
    episodes = union(lonely.select("lid", "start", "end"), key="lid").rename({"start": "e0", "end": "e1"})
    acquired_at = (
        lonely.join(waits.filter(~pl.col("truncated")).select("wid", pl.col("end").alias("w_end")), on="wid")
        .filter(pl.col("end") == pl.col("w_end"))
        .select("lid", pl.col("end").alias("e1"), pl.lit(True).alias("handed"))
        .unique()
    )
    episodes = episodes.join(acquired_at, on=["lid", "e1"], how="left").with_columns(
        pl.col("handed").fill_null(False)
    )
    free = status.filter(~pl.col("held").fill_null(True)).select(
        pl.col("key"), pl.col("start").alias("g0"), pl.col("end").alias("g1"), pl.col("start").alias("_g0")
    )
    episodes = lookup(
        episodes, free, by="lid", on="e0", table_on="_g0", size=w.span, values=["g0", "g1"], origin=w.t_start
    ).drop("_row")
    episodes = episodes.filter(pl.col("g0").is_not_null()).join(
        prep.locks.select("lid", "vm"), on="lid", how="left"
    )
    if episodes.height == 0:
        return visible.clear()
    per_lock = visible.group_by("lid").agg(pl.col("hold", "bound", "tail").first())
    episodes = (
        episodes.join(per_lock, on="lid", how="left")
        .with_columns(
            pl.col("hold").fill_null(FALLBACK_MEAN_NS),
            pl.col("bound").fill_null(FALLBACK_MEDIAN_NS * HOLD_BOUND_FACTOR),
            pl.col("tail").fill_null(FALLBACK_TAIL_NS),
        )
        .sort("lid", "e0")
        .with_columns(pl.col("e0").shift(-1).over("lid").alias("next_e0"))
    )
    # (i) a kick to a waiter of the lock inside a gap names the holder and its release.
    kicks = _kicks(prep).filter(pl.col("target_vid").is_not_null())
    kicks = kicks.with_columns(
        _waiting_at(kicks, waits, prep, vid="target_vid", ord_col="ord").alias("lid"),
        pl.col("released").alias("ts"),
    ).filter(pl.col("lid").is_not_null())
    gaps = episodes.select("lid", "g0", "g1").unique().sort("lid", "g0")
    by_kick = lookup(
        kicks.select("lid", pl.col("vid").alias("holder"), pl.col("ts").alias("end")),
        gaps.select(pl.col("lid").alias("key"), "g0", "g1", pl.col("g0").alias("_g0")),
        by="lid",
        on="end",
        table_on="_g0",
        size=w.span,
        values=["g0", "g1"],
        origin=w.t_start,
    ).filter(pl.col("g1") > pl.col("end"))
    by_kick = by_kick.group_by("lid", "g0").agg(pl.col("holder").first(), pl.col("end").min())
    by_kick = by_kick.select("lid", "holder", pl.col("g0").alias("start"), "end")
    # (ii) else the target of a directed yield by a waiter of the lock inside the episode that is
    # not itself waiting (KVM boosts preempted siblings that are in the kernel: holding or waiting).
    ch = states.changes
    yielded = ch.filter((pl.col("kind") == "vcpu_preempt") & (pl.col("reason") == "R")).select(
        pl.col("vid").alias("yielder"), "ts", "pcpu", pl.col("ord").alias("y_ord")
    )
    boosted = ch.filter(pl.col("kind") == "vcpu_run").select(
        pl.col("vid").alias("target"), "ts", "pcpu", "ord"
    )
    yields = yielded.join(boosted, on=["ts", "pcpu"], how="inner").filter(pl.col("ord") > pl.col("y_ord"))
    yields = yields.with_columns(
        _waiting_at(yields, waits, prep, vid="yielder", ord_col="y_ord").alias("lid"),
        _waiting_at(yields, waits, prep, vid="target", ord_col="ord").alias("_tw"),
    ).filter(pl.col("lid").is_not_null() & pl.col("_tw").is_null())
    by_yield = lookup(
        yields.select("lid", "target", pl.col("ts").alias("y_ts")).sort("lid", "y_ts"),
        episodes.select(pl.col("lid").alias("key"), "e0", "e1", "g0", pl.col("e0").alias("_e0")),
        by="lid",
        on="y_ts",
        table_on="_e0",
        size=w.span,
        values=["e0", "e1", "g0"],
        origin=w.t_start,
    ).filter(pl.col("y_ts") <= pl.col("e1"))
    by_yield = by_yield.group_by("lid", "e0", maintain_order=True).agg(
        pl.col("target").first().alias("y_vid"), pl.col("y_ts").first()
    )
    episodes = episodes.join(by_yield, on=["lid", "e0"], how="left")
    # (iii) else, per episode, the sibling that is not waiting and runs again the latest inside it,
    # if that leaves at most a (long) hold's worth of running before a spinner acquires.
    # (iv) else, if the episode lasts far longer than a hold (its holder cannot have been running),
    # the sibling that is not waiting and runs again before the lock changes hands after being
    # away for most of the episode (the longest such absence).
    ch_sorted = states.changes.sort("vid", "ord").with_columns(
        pl.col("ts").shift(1).over("vid").alias("idle_since")
    )
    runs = (
        ch_sorted.filter(pl.col("kind") == "vcpu_run")
        .select("vid", "ts", "ord", "idle_since")
        .join(prep.vcpus.select("vid", "vm"), on="vid")
    )
    runs = runs.with_columns(_waiting_at(runs, waits, prep, vid="vid", ord_col="ord").alias("_w")).filter(
        pl.col("_w").is_null()
    )
    vm_ids = (
        prep.vcpus.select("vm")
        .unique()
        .sort("vm")
        .with_row_index("vm_id")
        .with_columns(pl.col("vm_id").cast(I64))
    )
    runs = (
        runs.join(vm_ids, on="vm")
        .select(pl.col("vm_id").alias("key"), pl.col("ts").alias("run_ts"), "vid", "idle_since")
        .sort("key", "run_ts")
    )
    cand = episodes.join(vm_ids, on="vm", how="left")
    cand = lookup(
        cand,
        runs.drop("idle_since"),
        by="vm_id",
        on="e1",
        table_on="run_ts",
        size=w.span,
        values=["run_ts", "vid"],
        origin=w.t_start,
    ).drop("_row")
    cand = lookup(
        cand,
        runs.rename({"run_ts": "last_ts", "vid": "last_vid", "idle_since": "last_idle"}),
        by="vm_id",
        on="g1",
        table_on="last_ts",
        size=w.span,
        values=["last_ts", "last_vid", "last_idle"],
        origin=w.t_start,
        strict=True,
    ).drop("_row")
    cand = cand.join(_longest_idle(cand, runs, w), on=["lid", "e0"], how="left")
    last_ok = (pl.col("last_ts") >= pl.col("e0")) & (pl.col("last_idle") <= pl.col("e0"))
    cand = cand.with_columns(
        pl.when(last_ok).then(pl.col("last_vid")).otherwise(pl.col("first_vid")).alias("first_vid"),
        pl.when(last_ok).then(pl.col("last_ts")).otherwise(pl.col("first_ts")).alias("first_ts"),
        pl.when(last_ok)
        .then(pl.col("e1") - pl.col("e0"))
        .otherwise(pl.col("idle_overlap"))
        .alias("idle_overlap"),
    )
    late = (
        pl.col("handed")
        & (pl.col("run_ts") >= pl.col("e0"))
        & (pl.col("e1") - pl.col("run_ts") <= pl.col("tail"))
    )
    long = (
        (pl.col("e1") - pl.col("e0") > pl.col("tail") * LONG_FACTOR)
        & (pl.col("idle_overlap") * 2 >= pl.col("e1") - pl.col("e0"))
    ).fill_null(False)
    cand = (
        cand.with_columns(
            pl.when(pl.col("y_vid").is_not_null())
            .then(pl.col("y_vid"))
            .when(late)
            .then(pl.col("vid"))
            .when(long)
            .then(pl.col("first_vid"))
            .alias("vid"),
            pl.when(pl.col("y_vid").is_not_null())
            .then(pl.col("y_ts"))
            .when(late)
            .then(pl.col("run_ts"))
            .otherwise(pl.col("first_ts"))
            .alias("run_ts"),
            late.alias("late"),
        )
        .filter(pl.col("vid").is_not_null())
        .join(by_kick.select("lid", pl.col("start").alias("g0")), on=["lid", "g0"], how="anti")
    )
    # A yield target releases once it has run a mean hold; a late runner just before the acquisition.
    resumed_end = _run_bound_end(
        cand.select("vid", pl.col("run_ts").alias("start"), pl.col("hold").alias("bound")),
        _running_clock(states),
        prep,
    )
    cap = pl.min_horizontal("g1", pl.col("next_e0").fill_null(pl.col("g1")))
    by_run = cand.with_columns(pl.lit(resumed_end).alias("_re")).select(
        "lid",
        pl.col("vid").alias("holder"),
        pl.col("e0").alias("start"),
        pl.when(pl.col("late") & pl.col("y_vid").is_null())
        .then(pl.min_horizontal("e1", cap))
        .otherwise(pl.min_horizontal(pl.col("_re").fill_null(pl.col("g1")), cap))
        .alias("end"),
    )
    chosen = pl.concat([by_kick, by_run])
    return chosen.select(
        "lid",
        pl.col("holder").alias("vid"),
        "start",
        "end",
        pl.lit(None, I64).alias("start_ord"),
        (pl.col("end") >= w.t_end).alias("truncated"),
    )


def _longest_idle(episodes: pl.DataFrame, runs: pl.DataFrame, w) -> pl.DataFrame:
    """Per episode (lid, e0): the non-waiting sibling run in [e0, g1] whose preceding absence
    overlaps the episode [e0, e1] the most: first_vid, first_ts, idle_overlap."""
    runs = runs.filter(pl.col("idle_since").is_not_null())
    pos = runs.select(w.pos(pl.col("key"), pl.col("run_ts"))).to_series()
    ep = episodes.select("lid", "e0", "e1", "g1", "vm_id").filter(pl.col("vm_id").is_not_null())
    lo = pos.search_sorted(ep.select(w.pos(pl.col("vm_id"), pl.col("e0"))).to_series(), side="left").cast(I64)
    hi = pos.search_sorted(ep.select(w.pos(pl.col("vm_id"), pl.col("g1"))).to_series(), side="left").cast(I64)
    pairs = (
        ep.with_columns(_i=pl.int_ranges(lo, hi, dtype=I64)).explode("_i").filter(pl.col("_i").is_not_null())
    )
    found = runs.select(
        pl.col("run_ts").alias("first_ts"), pl.col("vid").alias("first_vid"), "idle_since"
    ).gather(pairs["_i"])
    scored = pl.concat([pairs.drop("_i"), found], how="horizontal").with_columns(
        (pl.min_horizontal("first_ts", "e1") - pl.max_horizontal("idle_since", "e0")).alias("idle_overlap")
    )
    return (
        scored.sort("idle_overlap", descending=True)
        .group_by("lid", "e0", maintain_order=True)
        .first()
        .select("lid", "e0", "first_vid", "first_ts", "idle_overlap")
    )


def infer_holds(prep: Prepared, waits: pl.DataFrame, states: VcpuStates) -> pl.DataFrame:
    """Inferred holds (HOLD_COLUMNS layout, inferred = True): contended acquirers, then unseen holders."""
    visible, _ = visible_holds(prep, waits, states)
    unseen = unseen_holds(prep, waits, states, visible)
    cols = ["lid", "vid", "start", "end", "start_ord", "truncated"]
    return finish_holds(pl.concat([visible.select(cols), unseen.select(cols)]), prep)
