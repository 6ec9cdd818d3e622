"""Unseen holders and unseen takes (rules 2-4 of holders.py; which sibling holds is
likely_holder.py), and infer_holds: the inferred level's holds, visible ones (holders.py) first,
then the holders spin reveals.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.hold_statistics import (
    FALLBACK_TRY_INTERVAL_NS,
    I64,
    MIN_HANDOFFS,
    still_held,
)
from pvtrace.analyze.holders import _kicks, finish_holds, quit_stops, visible_holds, waiting_at
from pvtrace.analyze.intervals import (
    lookup,
    packing,
    sort_by_key,
    sort_by_key_time,
    union,
)
from pvtrace.analyze.likely_holder import areas_at, free_running_clock, likely_holders, span_area
from pvtrace.analyze.locks import acquisitions, lock_status
from pvtrace.analyze.prepare import COARSE_TICK_NS, Prepared
from pvtrace.analyze.running_clock import ran_between, running_clock
from pvtrace.analyze.silent_stops import release_silent_stops, until_stop
from pvtrace.analyze.vcpu_states import VcpuStates
from pvtrace.analyze.waste import spin_pieces


def unseen_holds(
    prep: Prepared,
    waits: pl.DataFrame,
    pieces: pl.DataFrame,
    states: VcpuStates,
    visible: pl.DataFrame,
    figures: pl.DataFrame,
    seen: pl.DataFrame,
    clock: pl.DataFrame,
    yields: pl.DataFrame,
    free_clock: pl.DataFrame,
    rate: pl.DataFrame,
    quits: pl.DataFrame,
) -> pl.DataFrame:
    """Holds of vCPUs that took a lock uncontended, found where waiters spin on a lock that the
    visible holds leave free with nobody else queued ahead of them (step 2). `seen`: the visible
    holds through finish_holds(); `figures`: each lock's hold figures; `quits`: holders.quit_stops."""
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
    # A waiter that resumes and takes the lock within prep.entry_slack() was entering the guest,
    # not spinning on a held lock: it took the lock as soon as it could.
    ends = waits.select("wid", pl.col("start").alias("w_start"), pl.col("end").alias("w_end"), "truncated")
    lonely = lonely.join(ends, on="wid", how="left").with_columns(
        ((pl.col("end") == pl.col("w_end")) & ~pl.col("truncated")).fill_null(False).alias("_acquired")
    )
    entering = (
        pl.col("_acquired")
        & (pl.col("start") > pl.col("w_start"))
        & (pl.col("end") - pl.col("start") < prep.entry_slack())
    )
    lonely = lonely.filter(~entering)
    # Episodes: stretches of such spin on one lock, and the free stretch (gap) holding each; an
    # episode that ends with a spinning waiter acquiring saw the lock change hands.
    episodes = union(lonely.select("lid", "start", "end"), key="lid").rename({"start": "e0", "end": "e1"})
    acquired_at = (
        lonely.filter("_acquired")
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
    # The lock's last seen acquisition before the episode: an unseen holder took it after that, so
    # it ran after it (not judged where stops are known to a guest tick only).
    if prep.stops_to_a_tick:
        episodes = episodes.with_columns(pl.lit(None, I64).alias("prev_acq"))
    else:
        acquired = visible.select(pl.col("lid").alias("key"), pl.col("start").alias("prev_acq"))
        episodes = lookup(
            episodes,
            sort_by_key_time(acquired, "key", "prev_acq"),
            by="lid",
            on="e0",
            table_on="prev_acq",
            values=["prev_acq"],
        ).drop("_row")
    episodes = episodes.filter(pl.col("g0").is_not_null()).join(
        prep.locks.select("lid", "vm"), on="lid", how="left"
    )
    if episodes.height == 0:
        return visible.clear().with_columns(pl.lit(False).alias("guessed"))
    episodes = (
        episodes.join(figures.select("lid", "hold", "bound", "tail", "residual"), on="lid", how="left")
        .pipe(sort_by_key_time, "lid", "e0")
        .with_columns(pl.col("e0").shift(-1).over("lid").alias("next_e0"))
    )
    # (i) a kick to a waiter of the lock inside a gap names the holder and its release.
    kicks = _kicks(prep).filter(pl.col("target_vid").is_not_null())
    kicks = kicks.with_columns(
        waiting_at(kicks, waits, prep, vid="target_vid", ord_col="ord").alias("lid"),
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
    by_kick = by_kick.filter(~_acquired_in_gap(by_kick, waits, prep))
    by_kick = by_kick.group_by("lid", "g0").agg(pl.col("holder").first(), pl.col("end").min())
    by_kick = by_kick.select("lid", "holder", pl.col("g0").alias("start"), "end")
    rest = episodes.join(by_kick.select("lid", pl.col("start").alias("g0")), on=["lid", "g0"], how="anti")
    by_run = likely_holders(rest, waits, states, prep, clock, yields, free_clock, rate, quits)
    return pl.concat(
        [
            by_kick.with_columns(pl.lit(False).alias("guessed")),
            by_run.with_columns(pl.lit(True).alias("guessed")),
        ]
    ).select(
        "lid",
        pl.col("holder").alias("vid"),
        "start",
        "end",
        pl.lit(None, I64).alias("start_ord"),
        (pl.col("end") >= w.t_end).alias("truncated"),
        "guessed",
    )


def _acquired_in_gap(by_kick: pl.DataFrame, waits: pl.DataFrame, prep: Prepared) -> pl.Series:
    """Whether each kicker acquired the lock itself, contended, inside the gap before its kick.

    The kick then comes from that hold (take, release, kick the next waiter), not from a hold of
    the whole gap: a hold whose release shares the acquisition's microsecond is no held stretch,
    so the free stretches on either side of it read as one gap. Where the lock's events are
    printed to the microsecond the take may even print after the kick (the guest's clock and
    the host's are cut to their own microseconds): a take within one after the kick, of a wait
    begun before it, is that hold's too.
    """
    lv = prep.lock_vcpu_key("holder")
    own = waits.filter(pl.col("end").is_not_null()).select(
        prep.lock_vcpu_key().alias("key"), pl.col("end").alias("own_end"), pl.col("start").alias("own_start")
    )
    late = prep.coarse_lock("lid").cast(pl.Int64()) * COARSE_TICK_NS
    found = lookup(
        by_kick.select(lv.alias("_lv"), (pl.col("end") + late).alias("_at")),
        sort_by_key(own, "key", then="own_end"),
        by="_lv",
        on="_at",
        table_on="own_end",
        values=["own_end", "own_start"],
    )
    return ((found["own_end"] > by_kick["g0"]) & (found["own_start"] <= by_kick["end"])).fill_null(False)


def _attempt_rate(
    waits: pl.DataFrame,
    visible: pl.DataFrame,
    figures: pl.DataFrame,
    clock: pl.DataFrame,
    run_clock: pl.DataFrame,
    prep: Prepared,
) -> pl.DataFrame:
    """Per lid: how often a vCPU that runs without waiting tries the lock, per ns (rate).

    Counted where every try is seen because the lock is surely unavailable: inside the visible
    holds, and on fifo locks while anyone is queued. Rate = contentions that begin inside such
    stretches over the free-running vCPU time inside them, leaving out the holders' own running
    (a holder does not try the lock it holds; with few vCPUs running, its time is much of the
    total, and counting it made the rate 2-3x low on calm runs, so a sibling away for a long time
    looked as likely a holder as one that ran), per lock, shrunk by one pseudo-contention towards
    its VM's rate (locks differ: one can be hot). Where the VM has fewer than MIN_HANDOFFS such
    contentions, towards the lock's own contention rate instead (_contention_prior): a fixed 40 us
    between tries (FALLBACK_TRY_INTERVAL_NS, now only for a lock never contended) was 5-40x the
    presets' cold locks' rates, and a holder preempted for a millisecond on one looked
    impossible. One VM's locks say nothing of another's, and so a trace can be analyzed a VM at
    a time.
    """
    fifo = prep.locks.filter(pl.col("lock_kind") == "fifo")["lid"]
    queued = waits.filter(pl.col("lid").is_in(fifo.implode())).select("lid", "start", "end")
    busy = union(pl.concat([visible.select("lid", "start", "end"), queued]), key="lid")
    busy = busy.with_columns(prep.lock_attr("vm_id"))
    # (union() gives them sorted by lid, start)
    busy = busy.with_columns(pl.lit(span_area(busy, clock, prep, "start", "end")).alias("area"))
    inside = lookup(
        waits.select("lid", "start"),
        busy.select(pl.col("lid").alias("key"), pl.col("start").alias("b0"), pl.col("end").alias("b1")),
        by="lid",
        on="start",
        table_on="b0",
        values=["b1"],
        strict=True,
    ).filter(pl.col("start") < pl.col("b1"))
    ran = ran_between(visible, run_clock, prep, vid="vid", t0="start", t1="end")
    own = visible.select("lid", pl.lit(ran).alias("own")).group_by("lid").agg(pl.col("own").sum())
    per_lock = (
        prep.locks.select("lid", "vm_id")
        .join(busy.group_by("lid").agg(pl.col("area").sum()), on="lid", how="left")
        .join(own, on="lid", how="left")
        .join(inside.group_by("lid").len("n"), on="lid", how="left")
        .with_columns(pl.col("n").fill_null(0).cast(I64), pl.col("area").fill_null(0))
        .with_columns((pl.col("area") - pl.col("own").fill_null(0)).clip(0, None).alias("others"))
    )

    vm_n, vm_area = pl.col("n").sum().over("vm_id"), pl.col("others").sum().over("vm_id")
    vm_rate = (
        pl.when((vm_n >= MIN_HANDOFFS) & (vm_area > 0))
        .then(vm_n / vm_area)
        .otherwise(pl.col("prior").fill_null(1.0 / FALLBACK_TRY_INTERVAL_NS))
    )
    per_lock = per_lock.join(_contention_prior(waits, figures, clock, prep), on="lid", how="left")
    return per_lock.select("lid", ((pl.col("n") + 1) / (pl.col("others") + 1 / vm_rate)).alias("rate"))


def _contention_prior(
    waits: pl.DataFrame, figures: pl.DataFrame, clock: pl.DataFrame, prep: Prepared
) -> pl.DataFrame:
    """Per contended lid: its attempt rate as its number of contentions implies (prior).

    Every contention is seen, and a try contends when it finds the lock held, which it is a share
    rate x A x h / T of the time (A: the VM's free-running vCPU time in the window, T the window,
    h its mean hold), so the contentions are c = rate x A x that share, and rate = sqrt(c T / h) / A.
    Rough (a holder preempted with the lock makes more tries contend; the mean hold is a VM's),
    but 0.4-1.9x the simulator's per-lock rates on overcommit-2x test-and-set, where the fixed
    figure it replaces was 5-40x.
    """
    w = prep.window
    c = waits.group_by("lid").len("c").with_columns(prep.lock_attr("vm_id"))
    vms = pl.DataFrame({"vm_id": c["vm_id"].unique()}).with_columns(
        pl.lit(w.t_start, I64).alias("t0"), pl.lit(w.t_end, I64).alias("t1")
    )
    vms = vms.with_columns(pl.lit(span_area(vms, clock, prep, "t0", "t1")).alias("area"))
    c = c.join(vms.select("vm_id", "area"), on="vm_id", how="left").join(
        figures.select("lid", "hold"), on="lid", how="left"
    )
    span = float(max(w.t_end - w.t_start, 1))
    prior = (pl.col("c").cast(pl.Float64()) * span / pl.col("hold")).sqrt() / pl.col("area")
    return c.filter(pl.col("area") > 0).select("lid", prior.alias("prior"))


def _yields_by_waiters(waits: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Directed yields (host: preempt "R" and a sibling's run on the same pCPU at once; another VM's
    vCPU that runs there is no target) by a vCPU waiting for a lock to a vCPU that waits for none:
    lid (the yielder's), target, y_ts."""
    ch = states.changes
    yielded = ch.filter((pl.col("kind") == "vcpu_preempt") & (pl.col("reason") == "R")).select(
        pl.col("vid").alias("yielder"), "ts", "pcpu", pl.col("ord").alias("y_ord")
    )
    boosted = ch.filter(pl.col("kind") == "vcpu_run").select(
        pl.col("vid").alias("target"), "ts", "pcpu", "ord"
    )
    yields = _same_instant_and_pcpu(yielded, boosted).filter(
        (pl.col("ord") > pl.col("y_ord"))
        & (prep.vcpu_attr("vm_id", "yielder") == prep.vcpu_attr("vm_id", "target"))
    )
    yields = yields.with_columns(
        waiting_at(yields, waits, prep, vid="yielder", ord_col="y_ord").alias("lid"),
        waiting_at(yields, waits, prep, vid="target", ord_col="ord").alias("_tw"),
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


def infer_holds(
    prep: Prepared, waits: pl.DataFrame, pieces: pl.DataFrame, states: VcpuStates
) -> pl.DataFrame:
    """Inferred holds (HOLD_COLUMNS layout, inferred = True, plus unseen_take, held_on and guessed): contended acquirers,
    then unseen holders. `pieces`: the waits split at their waiters' state changes (wait_pieces)."""
    clock = running_clock(states)
    yields = _yields_by_waiters(waits, states, prep)
    free = free_running_clock(waits, states, prep)
    quits = quit_stops(states.changes, waits, prep)  # read by both steps
    visible, figures, kept = visible_holds(prep, waits, states, clock, yields, quits)
    rate = _attempt_rate(waits, until_stop(visible, kept), figures, free, clock, prep)

    def tries(rows: pl.DataFrame) -> pl.Series:
        r = rows.join(rate, on="lid", how="left", maintain_order="left")["rate"]
        return r * span_area(rows, free, prep, "t0", "t1")

    if not prep.stops_to_a_tick:  # the silence after a stop needs the stop to a hold
        visible = release_silent_stops(visible, kept, prep, waits, states, clock, tries)
    seen = finish_holds(visible, prep)
    unseen = unseen_holds(
        prep, waits, pieces, states, visible, figures, seen, clock, yields, free, rate, quits
    )
    cols = ["lid", "vid", "start", "end", "start_ord", "truncated"]
    holds = finish_holds(unseen.select(cols), prep, done=seen)
    # which holds are the likeliest of several unseen holders (likely_holder), not shown by a take
    # or named by a kick: their LHP incidents say so
    guessed = (
        unseen.filter("guessed").select("lid", "vid", "start", "guessed").unique(["lid", "vid", "start"])
    )
    holds = holds.join(guessed, on=["lid", "vid", "start"], how="left", maintain_order="left").with_columns(
        (pl.col("guessed").fill_null(False) & pl.col("start_ord").is_null()).alias("guessed")
    )
    return holds.with_columns(
        _unseen_takes(holds, figures, free, rate, clock, prep).alias("unseen_take"),
        _held_through_contention(holds, figures, waits, free, rate, clock, prep).alias("held_on"),
    )


def _unseen_takes(
    holds: pl.DataFrame,
    figures: pl.DataFrame,
    free: pl.DataFrame,
    rate: pl.DataFrame,
    clock: pl.DataFrame,
    prep: Prepared,
) -> pl.Series:
    """Per hold (lock order), on unfair locks: whether the lock most likely changed hands unseen,
    uncontended, between the lock's previous hold and this one (null on other locks).

    In the free stretch between them the free-running siblings try the lock at its rate, so an
    unseen take happened with probability p = 1 - exp(-rate * their running time). Before a
    contended acquisition the alternative is that nobody tried: a take if p > 1/2. An unseen
    holder was found from spin, so the lock was held: either still by the previous holder, likely
    as exp(-r / mean residual hold) if it ran r in the stretch, or taken anew (p); the likelier
    wins, so spin that begins where the previous hold ends (a spinner takes a free lock at once)
    is always the previous hold going on.
    """
    same = (pl.col("lid") == pl.col("lid").shift(1)).fill_null(False)
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
        .join(rate.select("lid", "rate"), on="lid", how="left", maintain_order="left")
        .join(figures.select("lid", "residual"), on="lid", how="left", maintain_order="left")
        .with_columns(pl.col("g0").fill_null(pl.col("start")))
    )
    ran = ran_between(h, clock, prep, vid="prev_vid", t0="g0", t1="start").fill_null(0)
    p_take = _take_chance(h, free, prep, "g0", "start")
    p_held = (-pl.lit(ran) / pl.col("residual")).exp()
    took = pl.when(pl.col("start_ord").is_not_null()).then(p_take > 0.5).otherwise(p_take > p_held)
    return h.select(pl.when(pl.col("unfair")).then(took)).to_series()


def _held_through_contention(
    holds: pl.DataFrame,
    figures: pl.DataFrame,
    waits: pl.DataFrame,
    free: pl.DataFrame,
    rate: pl.DataFrame,
    clock: pl.DataFrame,
    prep: Prepared,
) -> pl.Series:
    """Per hold (lock order), on fifo locks: whether a contended acquisition whose contention came
    after the previous hold's inferred release (with nobody else queued) most likely found that
    hold still going on, a hand-off (null elsewhere).

    The previous hold's release is only an estimate (its holder has run the mean hold), and a
    contention with nobody queued proves the lock held. On microsecond text a wait shorter than
    the printed microsecond shows no spin in which to look for another holder, so this is where
    the question is asked: either the previous holder still held it, as likely as a section that
    has run r (its holder's running since the hold began) runs on (hold_statistics.still_held),
    and nobody tried the lock meanwhile (a try would have contended); or it was released and
    taken anew, uncontended, by a free-running sibling trying at the lock's rate. (An unseen
    holder found from spin starts a new hold on a fifo lock, as before.)
    """
    same = (pl.col("lid") == pl.col("lid").shift(1)).fill_null(False)
    # a wait with others queued may have stolen a free lock past them: no evidence the lock was held
    alone = waits.filter(pl.col("end_ord").is_not_null() & (pl.col("queued") == 1)).select(
        pl.col("end_ord").alias("start_ord"), pl.col("start").alias("c")
    )
    h = (
        holds.select(
            "lid",
            "start",
            "start_ord",
            pl.when(same).then(pl.col("start").shift(1)).alias("h0"),
            pl.when(same).then(pl.col("end").shift(1)).alias("g0"),
            pl.when(same).then(pl.col("vid").shift(1)).alias("prev_vid"),
            prep.lock_attr("vm_id"),
            (prep.lock_attr("lock_kind") == "fifo").alias("fifo"),
        )
        .join(alone, on="start_ord", how="left", maintain_order="left")
        .join(rate.select("lid", "rate"), on="lid", how="left", maintain_order="left")
        .join(figures.select("lid", "hold", "median"), on="lid", how="left", maintain_order="left")
        .with_columns(
            (pl.col("fifo") & (pl.col("g0") < pl.col("c")) & pl.col("start_ord").is_not_null())
            .fill_null(False)
            .alias("asked")
        )
        .with_columns(
            pl.when("asked").then(pl.col(c)).otherwise(pl.col("start")).alias(c) for c in ("h0", "g0", "c")
        )
    )
    ran = ran_between(h, clock, prep, vid="prev_vid", t0="h0", t1="c").fill_null(0)
    p_take = _take_chance(h, free, prep, "g0", "c")
    p_held = still_held(pl.lit(ran), pl.col("median"), pl.col("hold"))
    went_on = p_held * (1 - p_take) > (1 - p_held) * p_take
    return h.select(pl.when(pl.col("fifo")).then(pl.col("asked") & went_on)).to_series()


def _take_chance(rows: pl.DataFrame, free: pl.DataFrame, prep: Prepared, t0: str, t1: str) -> pl.Expr:
    """Per row (with vm_id and the lock's `rate`): how likely a free-running sibling took the lock
    uncontended between t0 and t1, trying it at its rate: 1 - exp(-rate x their running time)."""
    a0, a1 = areas_at(rows, free, prep, t0, t1)
    return 1 - (-pl.col("rate").fill_null(1.0 / FALLBACK_TRY_INTERVAL_NS) * pl.lit(a1 - a0)).exp()
