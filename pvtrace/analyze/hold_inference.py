"""Unseen holders and unseen takes (rules 2-4 of holders.py), and infer_holds: the inferred
level's holds, visible ones (holders.py) first, then the holders spin reveals.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.holders import (
    FALLBACK_MEAN_NS,
    FALLBACK_MEDIAN_NS,
    FALLBACK_TAIL_NS,
    FALLBACK_TRY_INTERVAL_NS,
    HOLD_BOUND_FACTOR,
    I64,
    MIN_HANDOFFS,
    YIELD_EVIDENCE,
    _clock_at,
    _kicks,
    _ran_between,
    _run_bound_end,
    _running_clock,
    finish_holds,
    visible_holds,
)
from pvtrace.analyze.intervals import (
    changes_to_partition,
    cum_sum_within,
    lookup,
    packing,
    same_as_next,
    sort_by_key,
    sort_by_key_time,
    split,
    union,
)
from pvtrace.analyze.locks import acquisitions, lock_status
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.vcpu_states import VcpuStates
from pvtrace.analyze.waste import spin_pieces


def _waiting_at(
    points: pl.DataFrame, waits: pl.DataFrame, prep: Prepared, *, vid: str, ord_col: str
) -> pl.Series:
    """The lock vCPU `vid` waits for at event `ord_col` (null: none); a vCPU's waits do not overlap."""
    w = waits.select(
        pl.col("vid").alias("key"),
        pl.col("start_ord").alias("w_start"),
        pl.col("end_ord").fill_null(prep.n_events).alias("w_end"),
        "lid",
    ).pipe(sort_by_key, "key", then="w_start")
    found = lookup(
        points.select(pl.col(vid).alias("_v"), pl.col(ord_col).alias("_o")),
        w,
        by="_v",
        on="_o",
        table_on="w_start",
        values=["w_end", "lid"],
        strict=True,
    )
    return found.select(pl.when(pl.col("w_end") > pl.col("_o")).then(pl.col("lid"))).to_series()


def unseen_holds(
    prep: Prepared,
    waits: pl.DataFrame,
    pieces: pl.DataFrame,
    states: VcpuStates,
    visible: pl.DataFrame,
    seen: pl.DataFrame,
    clock: pl.DataFrame,
    yields: pl.DataFrame,
    free_clock: pl.DataFrame,
    rate: pl.DataFrame,
) -> pl.DataFrame:
    """Holds of vCPUs that took a lock uncontended, found where waiters spin on a lock that the
    visible holds leave free with nobody else queued ahead of them (step 2). `seen`: the visible
    holds through finish_holds()."""
    w = prep.window
    acq = acquisitions(seen, waits)
    status = lock_status(acq, prep, pl.DataFrame(schema={"vm": pl.String(), "start": I64, "end": I64}))
    spin = spin_pieces(pieces, status, states, prep, queue_heads=waits)
    # On a fifo lock only the spin of the queue head counts, and not that of a next owner fixed at
    # a visible release: the lock is free for it then (a kick), or its running extended the hold.
    fixed = lookup(
        spin.select("lid", "start"),
        status.select("key", pl.col("start").alias("s0"), pl.col("ref").alias("_fixed")),
        by="lid",
        on="start",
        table_on="s0",
        values=["_fixed"],
    )["_fixed"]
    head = pl.col("ref").is_null() | ((pl.col("ref") == pl.col("vid")) & pl.lit(fixed).is_null())
    lonely = spin.filter((~pl.col("held")).fill_null(False) & ((pl.col("lock_kind") != "fifo") | head))
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
    episodes = lookup(episodes, free, by="lid", on="e0", table_on="_g0", values=["g0", "g1"]).drop("_row")
    episodes = episodes.filter(pl.col("g0").is_not_null()).join(
        prep.locks.select("lid", "vm"), on="lid", how="left"
    )
    if episodes.height == 0:
        return visible.clear()
    per_lock = visible.group_by("lid").agg(pl.col("hold", "bound", "tail", "residual").first())
    episodes = (
        episodes.join(per_lock, on="lid", how="left")
        .with_columns(
            pl.col("hold").fill_null(FALLBACK_MEAN_NS),
            pl.col("bound").fill_null(FALLBACK_MEDIAN_NS * HOLD_BOUND_FACTOR),
            pl.col("tail").fill_null(FALLBACK_TAIL_NS),
            pl.col("residual").fill_null(FALLBACK_MEAN_NS),
        )
        .pipe(sort_by_key_time, "lid", "e0")
        .with_columns(pl.col("e0").shift(-1).over("lid").alias("next_e0"))
    )
    # (i) a kick to a waiter of the lock inside a gap names the holder and its release.
    kicks = _kicks(prep).filter(pl.col("target_vid").is_not_null())
    kicks = kicks.with_columns(
        _waiting_at(kicks, waits, prep, vid="target_vid", ord_col="ord").alias("lid"),
        pl.col("released").alias("ts"),
    ).filter(pl.col("lid").is_not_null())
    gaps = sort_by_key_time(episodes.select("lid", "g0", "g1").unique(), "lid", "g0")
    by_kick = lookup(
        kicks.select("lid", pl.col("vid").alias("holder"), pl.col("ts").alias("end")),
        gaps.select(pl.col("lid").alias("key"), "g0", "g1", pl.col("g0").alias("_g0")),
        by="lid",
        on="end",
        table_on="_g0",
        values=["g0", "g1"],
    ).filter((pl.col("g0") < pl.col("end")) & (pl.col("g1") > pl.col("end")))
    by_kick = by_kick.group_by("lid", "g0").agg(pl.col("holder").first(), pl.col("end").min())
    by_kick = by_kick.select("lid", "holder", pl.col("g0").alias("start"), "end")
    rest = episodes.join(by_kick.select("lid", pl.col("start").alias("g0")), on=["lid", "g0"], how="anti")
    by_run = _likely_holders(rest, waits, states, prep, clock, yields, free_clock, rate)
    return pl.concat([by_kick, by_run]).select(
        "lid",
        pl.col("holder").alias("vid"),
        "start",
        "end",
        pl.lit(None, I64).alias("start_ord"),
        (pl.col("end") >= w.t_end).alias("truncated"),
    )


def _free_running_clock(waits: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Per VM, the step function n(t) = how many of its vCPUs run without waiting for a lock, and
    its integral: vm_id, t, n, area (integral of n from t_start to t). Sorted by vm_id, t."""
    w = prep.window
    running = states.partition.filter(pl.col("state") == "running").select(
        pl.col("key").alias("vid"), "start", "end"
    )
    changes = (
        pl.concat(
            [
                waits.select(
                    "vid", pl.col("start").alias("ts"), pl.lit(True).alias("waiting"), pl.lit(1).alias("_o")
                ),
                waits.select(
                    "vid", pl.col("end").alias("ts"), pl.lit(False).alias("waiting"), pl.lit(0).alias("_o")
                ),
            ]
        )
        .pipe(sort_by_key_time, "vid", "ts", tie="_o")
        .select(pl.col("vid").alias("key"), "ts", "waiting")
    )
    part = changes_to_partition(
        changes, key="key", values=["waiting"], n_keys=prep.n_vcpus, window=w, initial={"waiting": False}
    )
    free = split(running, part, by="vid", window=w, values=["waiting"]).filter(~pl.col("waiting"))
    free = free.with_columns(prep.vcpu_attr("vm_id"))
    steps = pl.concat(
        [
            free.select("vm_id", pl.col("start").alias("t"), pl.lit(1, I64).alias("d")),
            free.select("vm_id", pl.col("end").alias("t"), pl.lit(-1, I64).alias("d")),
        ]
    ).pipe(sort_by_key_time, "vm_id", "t")
    # n after the last change at each (vm_id, t): one row per step
    last = (pl.col("vm_id") != pl.col("vm_id").shift(-1)) | (pl.col("t") != pl.col("t").shift(-1))
    steps = steps.with_columns(cum_sum_within("d", "vm_id").alias("n")).filter(last.fill_null(True))
    piece = pl.when(same_as_next("vm_id")).then(pl.col("t").shift(-1) - pl.col("t")).otherwise(0) * pl.col(
        "n"
    )
    return steps.with_columns(piece.alias("_piece")).select(
        "vm_id", "t", "n", (cum_sum_within("_piece", "vm_id") - pl.col("_piece")).alias("area")
    )


def _span_area(points: pl.DataFrame, clock: pl.DataFrame, prep: Prepared, t0: str, t1: str) -> pl.Series:
    """The free-running area of each point's VM between times t0 and t1."""
    a0, a1 = _areas_at(points, clock, prep, t0, t1)
    return a1 - a0


def _areas_at(points: pl.DataFrame, clock: pl.DataFrame, prep: Prepared, *ts: str) -> list[pl.Series]:
    """The free-running area of each point's VM (vm_id) up to each of the times `ts`."""
    free = clock.select(
        pl.col("vm_id").alias("key"),
        pl.col("t").alias("bp"),
        pl.col("n").alias("rate"),
        pl.col("area").alias("cum"),
    )
    return [a.fill_null(0) for a in _clock_at(points, free, by="vm_id", times=ts)]


def _attempt_rate(
    waits: pl.DataFrame, visible: pl.DataFrame, clock: pl.DataFrame, run_clock: pl.DataFrame, prep: Prepared
) -> pl.DataFrame:
    """Per lid: how often a vCPU that runs without waiting tries the lock, per ns (rate, take_rate).

    Counted where every try is seen because the lock is surely unavailable: inside the visible
    holds, and on fifo locks while anyone is queued. Rate = contentions that begin inside such
    stretches over the free-running vCPU time inside them, per lock, shrunk towards its VM's
    rate (the trace's where a VM has fewer than MIN_HANDOFFS such contentions, else
    1/FALLBACK_TRY_INTERVAL_NS) by one pseudo-contention: locks differ (one can be hot).
    `take_rate` leaves the holders' own running out of that time (a holder does not try the lock
    it holds; with few vCPUs running, its time is much of the total). It judges unseen takes
    (_unseen_takes); holder attribution keeps `rate`, on which its accuracy was measured.
    """
    fifo = prep.locks.filter(pl.col("lock_kind") == "fifo")["lid"]
    queued = waits.filter(pl.col("lid").is_in(fifo.implode())).select("lid", "start", "end")
    busy = union(pl.concat([visible.select("lid", "start", "end"), queued]), key="lid")
    busy = busy.with_columns(prep.lock_attr("vm_id"))
    # (union() gives them sorted by lid, start)
    busy = busy.with_columns(pl.lit(_span_area(busy, clock, prep, "start", "end")).alias("area"))
    inside = lookup(
        waits.select("lid", "start"),
        busy.select(pl.col("lid").alias("key"), pl.col("start").alias("b0"), pl.col("end").alias("b1")),
        by="lid",
        on="start",
        table_on="b0",
        values=["b1"],
        strict=True,
    ).filter(pl.col("start") < pl.col("b1"))
    ran = _ran_between(visible, run_clock, prep, vid="vid", t0="start", t1="end")
    own = visible.select("lid", pl.lit(ran).alias("own")).group_by("lid").agg(pl.col("own").sum())
    per_lock = (
        prep.locks.select("lid", "vm_id")
        .join(busy.group_by("lid").agg(pl.col("area").sum()), on="lid", how="left")
        .join(own, on="lid", how="left")
        .join(inside.group_by("lid").len("n"), on="lid", how="left")
        .with_columns(pl.col("n").fill_null(0).cast(I64), pl.col("area").fill_null(0))
        .with_columns((pl.col("area") - pl.col("own").fill_null(0)).clip(0, None).alias("others"))
    )

    def shrunk(area: str) -> pl.Expr:
        total_n, total_area = per_lock["n"].sum(), per_lock[area].sum()
        pooled = total_n / total_area if total_n and total_area else 1.0 / FALLBACK_TRY_INTERVAL_NS
        vm_n, vm_area = pl.col("n").sum().over("vm_id"), pl.col(area).sum().over("vm_id")
        vm_rate = pl.when((vm_n >= MIN_HANDOFFS) & (vm_area > 0)).then(vm_n / vm_area).otherwise(pooled)
        return (pl.col("n") + 1) / (pl.col(area) + 1 / vm_rate)

    return per_lock.select("lid", shrunk("area").alias("rate"), shrunk("others").alias("take_rate"))


def _yields_by_waiters(waits: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Directed yields (host: preempt "R" and a run on the same pCPU at once) by a vCPU waiting for
    a lock to a vCPU that waits for none: lid (the yielder's), target, y_ts."""
    ch = states.changes
    yielded = ch.filter((pl.col("kind") == "vcpu_preempt") & (pl.col("reason") == "R")).select(
        pl.col("vid").alias("yielder"), "ts", "pcpu", pl.col("ord").alias("y_ord")
    )
    boosted = ch.filter(pl.col("kind") == "vcpu_run").select(
        pl.col("vid").alias("target"), "ts", "pcpu", "ord"
    )
    yields = _same_instant_and_pcpu(yielded, boosted).filter(pl.col("ord") > pl.col("y_ord"))
    yields = yields.with_columns(
        _waiting_at(yields, waits, prep, vid="yielder", ord_col="y_ord").alias("lid"),
        _waiting_at(yields, waits, prep, vid="target", ord_col="ord").alias("_tw"),
    ).filter(pl.col("lid").is_not_null() & pl.col("_tw").is_null())
    return yields.select("lid", "target", pl.col("ts").alias("y_ts"))


def _same_instant_and_pcpu(left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
    """Inner join on (ts, pcpu), through one packed Int64 key when it fits (a join on two columns
    hashes whole rows: several times slower on a million rows)."""
    packed = packing([left, right], "ts", ("pcpu",))
    if packed is None:
        return left.join(right, on=["ts", "pcpu"], how="inner")
    t0, c0, size = packed
    key = ((pl.col("ts") - t0) * size + pl.col("pcpu").cast(I64) - c0).alias("_tp")
    return left.with_columns(key).join(right.with_columns(key).drop("ts", "pcpu"), on="_tp").drop("_tp")


def _likely_holders(
    episodes: pl.DataFrame,
    waits: pl.DataFrame,
    states: VcpuStates,
    prep: Prepared,
    run_clock: pl.DataFrame,
    yields: pl.DataFrame,
    free: pl.DataFrame,
    rate: pl.DataFrame,
) -> pl.DataFrame:
    """The most likely unseen holder of each episode: lid, holder, start, end.

    Every sibling that waits for no lock during the episode is a candidate. The holder took the
    lock while running, before the episode, and nobody tried the lock since (a try would have
    been seen): a candidate that stopped running at `rho` before the episode began is unlikely in
    proportion to the free-running sibling time in (rho, e0) times the attempt rate (on an unfair
    lock, also in the time it is away after the episode until it runs again: the lock was free
    to take then). And a holder that runs releases within about a hold: a candidate that ran `r`
    inside the episode is unlikely as exp(-r / mean residual hold). A directed yield to it by a
    waiter of the lock during the episode adds YIELD_EVIDENCE. Where a waiter takes the lock at
    the episode's end, the holder released it then and was running; otherwise it must run again
    before the lock's next acquisition. The candidate of highest likelihood holds from e0 to the
    end of the episode (handed) or until it has run a mean hold past it.
    """
    w = prep.window
    empty = pl.DataFrame(schema={"lid": I64, "holder": I64, "start": I64, "end": I64})
    if episodes.height == 0:
        return empty
    ep = (
        episodes.with_columns(prep.lock_attr("vm_id"))
        .join(rate.select("lid", "rate"), on="lid", how="left")
        .with_columns(pl.col("rate").fill_null(1.0 / FALLBACK_TRY_INTERVAL_NS))
    )
    cand = ep.join(prep.vcpus.select("vm", pl.col("vid").alias("cand")), on="vm")
    # (a) it waits for no lock during the episode.
    wt = sort_by_key(
        waits.select(pl.col("vid").alias("key"), pl.col("start").alias("w_start"), "end"),
        "key",
        then="w_start",
    )
    cand = (
        lookup(
            cand,
            wt,
            by="cand",
            on="e1",
            table_on="w_start",
            values=["end"],
            strict=True,
        )
        .drop("_row")
        .rename({"end": "_w_end"})
    )
    cand = cand.filter(pl.col("_w_end").is_null() | (pl.col("_w_end") <= pl.col("e0")))
    running = states.partition.filter(pl.col("state") == "running").select(
        pl.col("key"), pl.col("start").alias("r_start"), pl.col("end").alias("r_end")
    )
    # (b) when it last ran at or before e0.
    cand = lookup(cand, running, by="cand", on="e0", table_on="r_start", values=["r_end"]).drop("_row")
    cand = (
        cand.filter(pl.col("r_end").is_not_null())
        .with_columns(pl.min_horizontal("r_end", "e0").alias("rho"))
        .drop("r_end")
    )
    # (c) running at the hand-over, or running again before the next acquisition.
    cand = lookup(
        cand,
        running,
        by="cand",
        on="e1",
        table_on="r_start",
        values=["r_end"],
        strict=True,
    ).drop("_row")
    cand = (
        lookup(
            cand,
            running.select("key", "r_start"),
            by="cand",
            on="e1",
            table_on="r_start",
            values=["r_start"],
            direction="forward",
        )
        .drop("_row")
        .rename({"r_start": "next_run"})
    )
    at_e1 = (pl.col("r_end") >= pl.col("e1")).fill_null(False)
    later = at_e1 | (pl.col("next_run") < pl.col("g1")).fill_null(False) | (pl.col("g1") >= w.t_end)
    cand = cand.filter(pl.when(pl.col("handed")).then(at_e1).otherwise(later))
    if cand.height == 0:
        return empty
    # On an unfair lock, tries while the holder is away after the episode would be seen too.
    back = pl.when(at_e1).then(pl.col("e1")).otherwise(pl.min_horizontal("next_run", "g1"))
    cand = cand.join(prep.locks.select("lid", "lock_kind"), on="lid", how="left").with_columns(
        pl.when(pl.col("lock_kind") == "fifo").then(pl.col("e1")).otherwise(back).alias("back")
    )
    at_rho, at_e0, at_e1_, at_back = _areas_at(cand, free, prep, "rho", "e0", "e1", "back")
    cand = cand.with_columns(
        _ran_between(cand, run_clock, prep, vid="cand", t0="e0", t1="e1").alias("ran"),
        (at_e0 - at_rho + at_back - at_e1_).alias("absent"),
    )
    boosted = (
        cand.select("lid", "e0", "e1", "cand")
        .join(yields.rename({"target": "cand"}), on=["lid", "cand"])
        .filter(pl.col("y_ts").is_between(pl.col("e0"), pl.col("e1")))
        .select("lid", "e0", "cand", pl.lit(True).alias("boosted"))
        .unique()
    )
    cand = cand.join(boosted, on=["lid", "e0", "cand"], how="left").with_columns(
        (
            pl.col("rate") * pl.col("absent")
            + pl.col("ran") / pl.col("residual")
            - pl.when(pl.col("boosted")).then(YIELD_EVIDENCE).otherwise(0.0)
        ).alias("cost")
    )
    best = cand.sort("cost", "cand").group_by("lid", "e0", maintain_order=True).first()
    resumed_end = _run_bound_end(
        best.select(pl.col("cand").alias("vid"), pl.col("e1").alias("start"), pl.col("hold").alias("bound")),
        run_clock,
        prep,
    )
    # ... and at most until it next waits for the lock itself.
    lv = pl.col("lid") * (prep.n_vcpus + 1) + pl.col("cand")
    best = lookup(
        best.with_columns(lv.alias("_lv")),
        waits.select(
            (pl.col("lid") * (prep.n_vcpus + 1) + pl.col("vid")).alias("key"), pl.col("start").alias("own_ts")
        ).pipe(sort_by_key, "key", then="own_ts"),
        by="_lv",
        on="e1",
        table_on="own_ts",
        values=["own_ts"],
        direction="forward",
    ).drop("_row", "_lv")
    cap = pl.min_horizontal(
        "g1", pl.col("next_e0").fill_null(pl.col("g1")), pl.col("own_ts").fill_null(pl.col("g1"))
    )
    return best.with_columns(pl.lit(resumed_end).alias("_re")).select(
        "lid",
        pl.col("cand").alias("holder"),
        pl.col("e0").alias("start"),
        pl.when(pl.col("handed"))
        .then(pl.min_horizontal("e1", cap))
        .otherwise(pl.min_horizontal(pl.col("_re").fill_null(pl.col("g1")), cap))
        .alias("end"),
    )


def infer_holds(
    prep: Prepared, waits: pl.DataFrame, pieces: pl.DataFrame, states: VcpuStates
) -> pl.DataFrame:
    """Inferred holds (HOLD_COLUMNS layout, inferred = True, plus unseen_take): contended acquirers,
    then unseen holders. `pieces`: the waits split at their waiters' state changes (wait_pieces)."""
    clock = _running_clock(states)
    yields = _yields_by_waiters(waits, states, prep)
    visible, _ = visible_holds(prep, waits, states, clock, yields)
    free = _free_running_clock(waits, states, prep)
    rate = _attempt_rate(waits, visible, free, clock, prep)
    seen = finish_holds(visible, prep)
    unseen = unseen_holds(prep, waits, pieces, states, visible, seen, clock, yields, free, rate)
    cols = ["lid", "vid", "start", "end", "start_ord", "truncated"]
    holds = finish_holds(unseen.select(cols), prep, done=seen)
    return holds.with_columns(_unseen_takes(holds, visible, free, rate, clock, prep).alias("unseen_take"))


def _unseen_takes(
    holds: pl.DataFrame,
    visible: pl.DataFrame,
    free: pl.DataFrame,
    rate: pl.DataFrame,
    clock: pl.DataFrame,
    prep: Prepared,
) -> pl.Series:
    """Per hold (lock order), on unfair locks: whether the lock most likely changed hands unseen,
    uncontended, between the lock's previous hold and this one (null on other locks).

    In the free stretch between them the free-running siblings try the lock at take_rate, so an
    unseen take happened with probability p = 1 - exp(-take_rate * their running time). Before a
    contended acquisition the alternative is that nobody tried: a take if p > 1/2. An unseen
    holder was found from spin, so the lock was held: either still by the previous holder, likely
    as exp(-r / mean residual hold) if it ran r in the stretch, or taken anew (p); the likelier
    wins, so spin that begins where the previous hold ends (a spinner takes a free lock at once)
    is always the previous hold going on.
    """
    same = (pl.col("lid") == pl.col("lid").shift(1)).fill_null(False)
    residual = visible.group_by("lid").agg(pl.col("residual").first())
    h = (
        holds.select(
            "lid",
            "start",
            "start_ord",
            pl.when(same).then(pl.min_horizontal(pl.col("end").shift(1), "start")).alias("g0"),
            pl.when(same).then(pl.col("vid").shift(1)).alias("prev_vid"),
            prep.lock_attr("vm_id"),
            (prep.lock_attr("lock_kind") == "unfair").alias("unfair"),
        )
        .join(rate.select("lid", "take_rate"), on="lid", how="left", maintain_order="left")
        .join(residual, on="lid", how="left", maintain_order="left")
        .with_columns(pl.col("g0").fill_null(pl.col("start")))
    )
    a0, a1 = _areas_at(h, free, prep, "g0", "start")
    ran = _ran_between(h, clock, prep, vid="prev_vid", t0="g0", t1="start").fill_null(0)
    tries = pl.col("take_rate").fill_null(1.0 / FALLBACK_TRY_INTERVAL_NS) * pl.lit(a1 - a0)
    p_take = 1 - (-tries).exp()
    p_held = (-pl.lit(ran) / pl.col("residual").fill_null(FALLBACK_MEAN_NS)).exp()
    took = pl.when(pl.col("start_ord").is_not_null()).then(p_take > 0.5).otherwise(p_take > p_held)
    return h.select(pl.when(pl.col("unfair")).then(took)).to_series()
