"""Which sibling holds a lock that nobody was seen taking (rule 2 of holders.py): each candidate's
likelihood from the free-running time it would have let pass without anyone trying the lock, its
own running inside the episode, and directed yields to it; one holder per free gap.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.guest_mode import kernel_share
from pvtrace.analyze.hold_statistics import FALLBACK_TRY_INTERVAL_NS, I64
from pvtrace.analyze.intervals import (
    changes_to_partition,
    cum_sum_within,
    lookup,
    same_as_next,
    sort_by_key,
    sort_by_key_time,
    split,
)
from pvtrace.analyze.prepare import Prepared
from pvtrace.analyze.running_clock import clock_at, ran_between, run_bound_end
from pvtrace.analyze.vcpu_states import VcpuStates

# Log-likelihood against an unseen holder of an unfair lock changing between two episodes of
# one free gap (freed and retaken uncontended while its waiter was not spinning).
SWITCH_EVIDENCE = 3.0
# Log-likelihood a directed yield to a candidate adds. kvm_vcpu_on_spin boosts a preempted sibling
# in kernel mode, which a preempted holder always is; a sibling that holds nothing is in kernel
# mode about one time in five (the system share of a compute-bound guest), so the yield makes the
# target about 5 times likelier to be the holder than before: ln 5. (It was 3.0, "the target
# holds some lock", which made every boosted sibling the holder: calm runs with PLE showed
# 2 us incidents of siblings preempted while computing.)
YIELD_EVIDENCE = 1.6
# Where kvm_exit prints the guest's mode, a preempted sibling's kernel-mode stop replaces the yield
# (which says no more than that: KVM boosts preempted siblings in kernel mode, holders or not).
# The share of kernel-mode stops is floored so a VM that seems always in the kernel adds nothing
# unbounded either way.
KERNEL_SHARE_MIN = 0.05


def free_running_clock(waits: pl.DataFrame, states: VcpuStates, prep: Prepared) -> pl.DataFrame:
    """Per VM, the step function n(t) = how many of its vCPUs run without waiting for a lock, and
    its integral: vm_id, t, n, area (integral of n from t_start to t). Sorted by vm_id, t."""
    w = prep.window
    running = states.partition.filter(pl.col("state") == "running").select(
        pl.col("key").alias("vid"), "start", "end"
    )
    # A wait that ended where it began (a steal: contended and taken at once) keeps nobody from
    # trying the lock; at equal times ends sort first (back-to-back waits), which would leave such
    # a wait open until its vCPU's next change.
    waits = waits.filter(pl.col("end") > pl.col("start"))
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


def span_area(points: pl.DataFrame, clock: pl.DataFrame, prep: Prepared, t0: str, t1: str) -> pl.Series:
    """The free-running area of each point's VM between times t0 and t1."""
    a0, a1 = areas_at(points, clock, prep, t0, t1)
    return a1 - a0


def areas_at(points: pl.DataFrame, clock: pl.DataFrame, prep: Prepared, *ts: str) -> list[pl.Series]:
    """The free-running area of each point's VM (vm_id) up to each of the times `ts`."""
    free = clock.select(
        pl.col("vm_id").alias("key"),
        pl.col("t").alias("bp"),
        pl.col("n").alias("rate"),
        pl.col("area").alias("cum"),
    )
    return [a.fill_null(0) for a in clock_at(points, free, by="vm_id", times=ts)]


def likely_holders(
    episodes: pl.DataFrame,
    waits: pl.DataFrame,
    states: VcpuStates,
    prep: Prepared,
    run_clock: pl.DataFrame,
    yields: pl.DataFrame,
    free: pl.DataFrame,
    rate: pl.DataFrame,
    quits: pl.DataFrame,
) -> pl.DataFrame:
    """The most likely unseen holder of each episode: lid, holder, start, end.

    Every sibling that waits for no lock during the episode, ran after the lock's last seen
    acquisition (`prev_acq`) and did not stop in guest user mode, spinning (a PAUSE exit) or halted
    since is a candidate: none of those holds a spinlock. The holder
    took the lock while running, before the episode, and nobody tried the lock since (a try would
    have been seen): a candidate that stopped running at `rho` before the episode began is unlikely in
    proportion to the free-running sibling time in (rho, e0) times the attempt rate (on an unfair
    lock, also in the time it is away after the episode until it runs again: the lock was free
    to take then). And a holder that runs releases within about a hold: a candidate that ran `r`
    inside the episode is unlikely as exp(-r / mean residual hold). A directed yield to it by a
    waiter of the lock during the episode adds YIELD_EVIDENCE. Where a waiter takes the lock at
    the episode's end, the holder released it then and was running; otherwise it must run again
    before the lock's next acquisition. The candidate of highest likelihood holds from e0 to the
    end of the episode (handed) or until it has run a mean hold past it, and no later than its first
    stop no holder makes (`quits`: holders.quit_stops).
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
    # (a) it waits for no lock during the episode, unless it queues for this lock again after
    # e0: it released first (the waiter at the head, preempted, did not take it at once).
    wt = sort_by_key(
        waits.select(pl.col("vid").alias("key"), pl.col("start").alias("w_start"), "end", "lid"),
        "key",
        then="w_start",
    )
    cand = (
        lookup(
            cand,
            wt.rename({"lid": "_w_lid"}),
            by="cand",
            on="e1",
            table_on="w_start",
            values=["w_start", "end", "_w_lid"],
            strict=True,
        )
        .drop("_row")
        .rename({"end": "_w_end", "w_start": "_w_start"})
    )
    requeued = (pl.col("_w_lid") == pl.col("lid")) & (pl.col("_w_start") > pl.col("e0"))
    cand = cand.filter(pl.col("_w_end").is_null() | (pl.col("_w_end") <= pl.col("e0")) | requeued)
    running = states.partition.filter(pl.col("state") == "running").select(
        pl.col("key"), pl.col("start").alias("r_start"), pl.col("end").alias("r_end")
    )
    # (b) when it last ran at or before e0.
    cand = lookup(cand, running, by="cand", on="e0", table_on="r_start", values=["r_end"]).drop("_row")
    # It took the lock after the lock's last seen acquisition, so it ran after it.
    cand = (
        cand.filter(pl.col("r_end").is_not_null())
        .with_columns(pl.min_horizontal("r_end", "e0").alias("rho"))
        .filter(pl.col("prev_acq").is_null() | (pl.col("rho") > pl.col("prev_acq")))
        .drop("r_end")
    )
    # Its first stop from then: one that began in guest user mode before e1 ends any spinlock hold;
    # one that began spinning (a PAUSE exit) found it waiting like a lock waiter, and one that
    # began halted found it idle (the kernel never halts holding a spinlock): neither holds one.
    stops = states.changes.filter(pl.col("state") != "running").select(
        pl.col("vid").alias("key"),
        pl.col("ts").alias("s_ts"),
        (pl.col("user") | pl.col("spinning") | (pl.col("state") == "halted")).alias("holds_none"),
        pl.col("state").alias("s_state"),
    )
    cand = lookup(
        cand,
        stops,
        by="cand",
        on="rho",
        table_on="s_ts",
        values=["s_ts", "holds_none", "s_state"],
        direction="forward",
    )
    cand = cand.filter(~(pl.col("holds_none") & (pl.col("s_ts") < pl.col("e1"))).fill_null(False))
    # A sibling preempted in the kernel before the episode, where the guest's mode is printed: as
    # likely to hold the lock as one seen running, divided by how often a preemption finds the
    # kernel (a halted one is idle or a pv waiter: no bonus).
    shares = kernel_share(states.changes, waits, prep)
    cand = (
        cand.join(shares, on="vm_id", how="left")
        .with_columns(
            pl.when(
                (pl.col("s_ts") == pl.col("rho"))
                & (pl.col("rho") < pl.col("e0"))
                & (pl.col("s_state") == "preempted")
            )
            .then(-pl.col("kernel_share").clip(KERNEL_SHARE_MIN, 1.0).log())
            .otherwise(0.0)
            .fill_null(0.0)
            .alias("kernel"),
            pl.col("kernel_share").is_not_null().alias("printed"),
        )
        .drop("_row", "s_ts", "holds_none", "s_state", "kernel_share")
    )
    # (c) running at the hand-over (resumed at that instant counts: the release lies within
    # the timestamps' resolution), or running again by the next acquisition.
    cand = lookup(
        cand,
        running,
        by="cand",
        on="e1",
        table_on="r_start",
        values=["r_end"],
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
    later = at_e1 | (pl.col("next_run") <= pl.col("g1")).fill_null(False) | (pl.col("g1") >= w.t_end)
    cand = cand.filter(pl.when(pl.col("handed")).then(at_e1).otherwise(later))
    if cand.height == 0:
        return empty
    # On an unfair lock, tries while the holder is away after the episode would be seen too.
    back = pl.when(at_e1).then(pl.col("e1")).otherwise(pl.min_horizontal("next_run", "g1"))
    cand = cand.join(prep.locks.select("lid", "lock_kind"), on="lid", how="left").with_columns(
        pl.when(pl.col("lock_kind") == "fifo").then(pl.col("e1")).otherwise(back).alias("back")
    )
    at_rho, at_e0, at_e1_, at_back = areas_at(cand, free, prep, "rho", "e0", "e1", "back")
    cand = cand.with_columns(
        ran_between(cand, run_clock, prep, vid="cand", t0="e0", t1="e1").alias("ran"),
        (at_e0 - at_rho).alias("absent_before"),
        (at_back - at_e1_).alias("absent_after"),
    )
    boosted = (
        cand.select("lid", "e0", "e1", "cand")
        .join(yields.rename({"target": "cand"}), on=["lid", "cand"])
        .filter(pl.col("y_ts").is_between(pl.col("e0"), pl.col("e1")))
        .select("lid", "e0", "cand", pl.lit(True).alias("boosted"))
        .unique()
    )
    cand = cand.join(boosted, on=["lid", "e0", "cand"], how="left").with_columns(
        _cost(pl.col("absent_before") + pl.col("absent_after"), pl.col("ran"), pl.col("boosted")).alias(
            "cost"
        )
    )
    # On an unfair lock the gap's joint holder gives way in an episode that another candidate
    # explains better by more than the two switches this takes (to it and back): a holder
    # preempted for milliseconds in one episode says little of who held the lock in another.
    gives_way = (pl.col("lock_kind") != "fifo") & (
        pl.col("cost") > pl.col("cost").min().over("lid", "e0") + 2 * SWITCH_EVIDENCE
    )
    best = (
        cand.join(_one_holder_per_gap(cand, run_clock, prep), on=["lid", "g0", "cand"], how="left")
        .with_columns((pl.col("_joint").fill_null(False) & ~gives_way).alias("_joint"))
        .sort("_joint", "cost", "cand", descending=[True, False, False])
        .group_by("lid", "e0", maintain_order=True)
        .first()
    )
    resumed_end = run_bound_end(
        best.select(pl.col("cand").alias("vid"), pl.col("e1").alias("start"), pl.col("hold").alias("bound")),
        run_clock,
        prep,
    )
    # ... and at most until it next waits for the lock itself.
    lv = prep.lock_vcpu_key("cand")
    best = lookup(
        best.with_columns(lv.alias("_lv")),
        waits.select(prep.lock_vcpu_key().alias("key"), pl.col("start").alias("own_ts")).pipe(
            sort_by_key, "key", then="own_ts"
        ),
        by="_lv",
        on="e0",
        table_on="own_ts",
        values=["own_ts"],
        direction="forward",
        strict=True,
    ).drop("_row", "_lv")
    # ... and no later than its first stop that no holder makes (halted, say, after it resumed).
    best = lookup(
        best,
        quits,
        by="cand",
        on="e0",
        table_on="q_ts",
        values=["q_ts"],
        direction="forward",
    ).drop("_row")
    cap = pl.min_horizontal(
        "g1",
        pl.col("next_e0").fill_null(pl.col("g1")),
        pl.col("own_ts").fill_null(pl.col("g1")),
        pl.col("q_ts").fill_null(pl.col("g1")),
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


def _cost(absent: pl.Expr, ran: pl.Expr, boosted: pl.Expr) -> pl.Expr:
    """A candidate's negative log-likelihood: nobody tried the lock while it was away holding it
    (rate x free-running sibling time), it ran without releasing (its running over the mean
    residual hold), less the evidence of a directed yield to it or of its stop in the kernel."""
    return (
        pl.col("rate") * absent
        + ran / pl.col("residual")
        - pl.when(boosted & ~pl.col("printed")).then(YIELD_EVIDENCE).otherwise(0.0)
        - pl.col("kernel")
    )


def _one_holder_per_gap(cand: pl.DataFrame, run_clock: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The candidate that best explains every episode of one free gap together (lid, g0, cand).

    A waiter that stops spinning (preempted, or yielding after a PAUSE exit) and spins again
    makes several episodes of one gap. On a fifo lock the holder cannot change in between (its
    release would hand the lock to the queued waiter, and the gap would end), so one candidate
    must explain them all; on an unfair lock it changes only if the lock was freed and taken
    uncontended meanwhile, which costs SWITCH_EVIDENCE per episode the candidate cannot explain.
    On a fifo lock each piece of evidence counts once: the silence before the first episode, the
    mode of its stop, a directed yield to it in any episode, and its running from the first
    episode's start to the last one's end, between episodes too (the lock stayed held then, or the
    queued waiter would have taken it at its next spin). Summing each episode's cost instead
    counted the silence again for every episode and left out the running between them. On an
    unfair lock the holder may release and retake it between episodes: the episodes' costs add.
    """
    # most gaps hold one episode: only the others are judged together
    n_ep = cand.group_by("lid", "g0").agg(pl.col("e0").n_unique().alias("n_ep")).filter(pl.col("n_ep") > 1)
    cand = cand.join(n_ep.select("lid", "g0"), on=["lid", "g0"], how="semi")
    first, last = pl.col("e0") == pl.col("e0").min(), pl.col("e0") == pl.col("e0").max()
    per = cand.group_by("lid", "g0", "cand").agg(
        pl.len().alias("n"),
        pl.col("e0").min(),
        pl.col("e1").filter(last).first(),
        pl.col("absent_before").filter(first).first(),
        pl.col("absent_after").filter(last).first(),
        pl.col("cost").sum().alias("summed"),
        pl.col("boosted").any(),
        pl.col("lock_kind", "rate", "residual", "printed").first(),
        pl.col("kernel").filter(first).first(),
    )
    missing = pl.col("n_ep") - pl.col("n")
    joint = per.join(n_ep, on=["lid", "g0"]).filter((pl.col("lock_kind") != "fifo") | (missing == 0))
    ran = ran_between(joint, run_clock, prep, vid="cand", t0="e0", t1="e1")
    once = _cost(pl.col("absent_before") + pl.col("absent_after"), pl.lit(ran), pl.col("boosted"))
    total = pl.when(pl.col("lock_kind") == "fifo").then(once).otherwise(pl.col("summed"))
    return (
        joint.with_columns((total + missing * SWITCH_EVIDENCE).alias("_total"))
        .sort("_total", "cand")
        .group_by("lid", "g0", maintain_order=True)
        .first()
        .select("lid", "g0", "cand", pl.lit(True).alias("_joint"))
    )
