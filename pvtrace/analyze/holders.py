"""Holder inference for traces without lock acquire/release events (the inferred level):
the rules, and the visible holds of rule 1 (rules 2-4 and the entry point, infer_holds, are in
hold_inference.py).

Guest contention events show who acquired a lock after waiting (contention_end)
but neither releases nor uncontended acquisitions. Building on the rules of
METRICS.md, Fidelity (measured in docs/accuracy.md; the rules in docs/metrics.md,
Inferred holders):
1. A contended acquirer holds the lock from its acquisition until the first of:
   the lock's next acquisition; a pv kick it sends (the unlocker kicks the next
   waiter; the release is at the HYPERCALL exit carrying it); the moment it has
   *run* the mean hold; its own next contention for the lock (a waiter does not
   hold it); and, looking ahead, the moment it stops running if the lock changes
   hands before it runs again (a vCPU that is not running cannot release), or
   if the stop began in guest user mode (kvm_exit's rip: no spinlock is held
   there). A holder that stops before it has run `3 x` the median hold keeps
   the lock through the stop (it is preempted while holding), and so does one
   that a waiter of the lock yields to while it is stopped, if it had run less
   than a long (p95) hold. On a fifo lock the hold also lasts while its queued
   successor runs without taking the lock (the head of a fifo queue takes a free
   lock at once; nobody takes it uncontended while anyone is queued).
2. Spin on a lock these holds leave free (an "episode") had an unseen holder that
   took the lock uncontended. On a fifo lock only the queue head's spin counts
   (a waiter queued behind a head that is not running spins on a lock that may be
   free: lock-waiter preemption), and not that of a next owner fixed at a visible
   release. The holder is the vCPU that kicks a waiter of
   the lock; else the sibling most likely to have held it (_likely_holders):
   it took the lock while running and nobody tried the lock while it was away
   before the episode (tries are seen on a held lock; the attempt rate comes from
   the trace), it did not run much longer than a hold inside the episode (a
   running holder releases), it was running when a spinner took the lock at the
   episode's end, and a directed yield to it by a waiter is evidence it holds.
   Its hold ends at the latest when it next waits for the lock itself.
3. At the inferred level, spin on a free fifo lock with no next owner takes the
   earliest waiter still queued as next owner (fifo locks hand over to it).
4. On an unfair lock each hold says whether an uncontended take nobody saw most
   likely came between the lock's previous hold and it (`unseen_take`): such a
   take ends a convoy (_unseen_takes).
Hold statistics come from clean hand-offs: consecutive acquisitions of one lock
where the second acquirer was already waiting and both kept running in between
(hold_statistics.py: per VM with enough of them, else published typical critical sections).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pvtrace.analyze.hold_statistics import lock_figures, typical_hold
from pvtrace.analyze.intervals import (
    lookup,
    sort_by_key,
    sort_by_key_time,
)
from pvtrace.analyze.locks import HOLD_COLUMNS, lock_order
from pvtrace.analyze.prepare import ENTRY_NS, Prepared
from pvtrace.analyze.running_clock import ran_between, run_bound_end
from pvtrace.analyze.vcpu_states import VcpuStates

I64 = pl.Int64()


def _release_key(prep: Prepared, ts: pl.Series) -> pl.Series:
    """The canonical position of a release inferred at time ts: just before the first event at or after ts.

    Binary searches for times in order share their cache lines: sorting them first, then putting
    the answers back in place, is about 3x faster than searching in the holds' order.
    """
    if ts.null_count() or ts.is_sorted():
        return prep.event_ts.search_sorted(ts, side="left").cast(I64)
    order = ts.arg_sort()
    at = np.empty(ts.len(), dtype=np.int64)
    at[order.to_numpy()] = prep.event_ts.search_sorted(ts.gather(order), side="left").to_numpy()
    return pl.Series(ts.name, at, dtype=I64)


def waiting_at(
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


def visible_holds(
    prep: Prepared,
    waits: pl.DataFrame,
    states: VcpuStates,
    clock: pl.DataFrame,
    yields: pl.DataFrame,
    quits: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Holds of the contended acquirers, ended by the rules of step 1.

    A holder that keeps running releases once it has run the mean hold (the estimate that
    keeps waste totals unbiased); one that stops before it has run `3 x` the median hold (or
    a long hold, if a waiter of the lock yields to it while it is stopped) is taken to hold the
    lock through the stop, unless the lock changes hands before it runs again. On fifo locks
    `_queued_successor` then extends holds that the next acquirer's running proves.

    `quits`: quit_stops(), the stops no holder makes. Also returns every lock's hold figures
    (hold_statistics.lock_figures) and the acquisitions held through a stop, with what
    `silent_stops.release_silent_stops` needs to weigh the silence after the stop once the attempt
    rate is known.
    """
    acq = (
        waits.filter(pl.col("end_ord").is_not_null())
        .select(
            "lid",
            "vid",
            pl.col("end").alias("ts"),
            pl.col("end_ord").alias("ord"),
            pl.col("start_ord").alias("contend_ord"),
            pl.col("start").alias("contend_ts"),
        )
        .pipe(sort_by_key_time, "lid", "ord")
    )
    same = (pl.col("lid") == pl.col("lid").shift(-1)).fill_null(False)
    acq = acq.with_columns(
        pl.when(same).then(pl.col("ts").shift(-1)).alias("next_ts"),
        pl.when(same).then(pl.col("ord").shift(-1)).alias("next_ord"),
        pl.when(same).then(pl.col("contend_ord").shift(-1)).alias("next_contend_ord"),
        pl.when(same).then(pl.col("contend_ts").shift(-1)).alias("next_contend_ts"),
        pl.when(same).then(pl.col("vid").shift(-1)).alias("next_vid"),
    )
    figures = lock_figures(typical_hold(acq, states, prep), prep)
    acq = acq.join(figures.drop("median"), on="lid", how="left", maintain_order="left")
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
        values=["kick_ts"],
        direction="forward",
        strict=True,
    ).drop("_row")
    # Its own next wait for the lock: a vCPU that waits for a lock does not hold it.
    lv = prep.lock_vcpu_key()
    acq = lookup(
        acq.with_columns(lv.alias("_lv")),
        sort_by_key(  # waits come in start order
            waits.select(
                lv.alias("key"), pl.col("start_ord").alias("own_ord"), pl.col("start").alias("own_ts")
            ),
            "key",
            then="own_ord",
        ),
        by="_lv",
        on="ord",
        table_on="own_ord",
        values=["own_ord", "own_ts"],
        direction="forward",
        strict=True,
    ).drop("_row", "_lv")
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
        values=["run_ord"],
        direction="forward",
        strict=True,
    ).drop("_row")
    handed = (
        pl.col("next_ord").is_not_null()
        & (pl.col("stop_ord") < pl.col("next_ord"))
        & (pl.col("run_ord").is_null() | (pl.col("run_ord") > pl.col("next_ord")))
    ).fill_null(False)
    # Its first stop that no holder makes (guest user mode; halted or spinning, a PAUSE exit, outside
    # a traced wait: like a waiter, it holds none) ends the hold at the latest, after it resumed
    # from a stop it held the lock through too. (Spinning on a traced lock M, it may hold this one:
    # nested.) If it is the first stop, the lock was not held through it.
    acq = lookup(
        acq,
        quits,
        by="vid",
        on="ord",
        table_on="q_ord",
        values=["q_ord", "q_ts"],
        direction="forward",
        strict=True,
    ).drop("_row")
    quit_first = (pl.col("q_ord") == pl.col("stop_ord")).fill_null(False)
    acq = acq.with_columns(
        ran_between(acq, clock, prep, vid="vid", t0="ts", t1="stop_ts").alias("ran_to_stop"),
        pl.when(handed | quit_first).then(pl.col("stop_ts")).alias("ahead_ts"),
    )
    # A waiter of the lock that yields to it while it is stopped says it is in the kernel holding it.
    boosts = (
        acq.select("lid", "vid", "ord", "stop_ts", "next_ts")
        .join(yields.rename({"target": "vid"}), on=["lid", "vid"])
        .filter(
            (pl.col("y_ts") > pl.col("stop_ts"))
            & (pl.col("next_ts").is_null() | (pl.col("y_ts") <= pl.col("next_ts")))
        )
        .select("lid", "ord", pl.lit(True).alias("boosted"))
        .unique()
    )
    acq = acq.join(boosts, on=["lid", "ord"], how="left", maintain_order="left")
    boosted = pl.col("boosted").fill_null(False) & (pl.col("ran_to_stop") < pl.col("tail")).fill_null(False)
    through = ((pl.col("ran_to_stop") < pl.col("bound")).fill_null(False) | boosted) & ~handed & ~quit_first
    # Held through the stop, it releases after it runs again, and a resumed vCPU runs guest code
    # ENTRY_NS after its thread does.
    run_for = (
        pl.when(through).then(pl.max_horizontal("hold", pl.col("ran_to_stop") + ENTRY_NS)).otherwise("hold")
    )
    acq = _ended(acq.with_columns(run_for.alias("_run_for"), through.alias("_through")), waits, clock, prep)
    return _hold_rows(acq), figures, acq.filter(pl.col("_through"))


def quit_stops(changes: pl.DataFrame, waits: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The stops no spinlock holder makes (key = vid, q_ord, q_ts; sorted by key, q_ord): in guest
    user mode, or halted or spinning (a PAUSE exit) outside a traced wait (the kernel halts holding
    a spinlock only in a pv wait for another; a spinner outside a wait waits for an IPI's
    acknowledgement). A hold ends at its holder's first such stop: one preempted in the kernel that
    resumes and then halts released the lock before the halt, not at the lock's next acquisition."""
    stops = changes.filter(pl.col("state") != "running")
    idle = (pl.col("state") == "halted") | pl.col("spinning")
    in_wait = waiting_at(stops, waits, prep, vid="vid", ord_col="ord").is_not_null()
    return stops.filter(pl.col("user") | (idle & ~pl.lit(in_wait))).select(
        pl.col("vid").alias("key"), pl.col("ord").alias("q_ord"), pl.col("ts").alias("q_ts")
    )


def _ended(acq: pl.DataFrame, waits: pl.DataFrame, clock: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The acquisitions with their hold's end (and truncated), from the running time each holder
    is given (`_run_for`) and the other bounds of step 1."""
    t1 = prep.window.t_end
    acq = acq.with_columns(
        run_bound_end(
            acq.select("vid", pl.col("ts").alias("start"), pl.col("_run_for").alias("bound")), clock, prep
        ).alias("ran_ts")
    )
    end = pl.min_horizontal("next_ts", "kick_ts", "ran_ts", "ahead_ts", "own_ts", "q_ts")
    acq = _queued_successor(acq.with_columns(end.alias("end")), waits, clock, prep)
    return acq.with_columns(
        pl.col("end").fill_null(t1).clip(None, t1).alias("end"), pl.col("end").is_null().alias("truncated")
    )


def _hold_rows(acq: pl.DataFrame) -> pl.DataFrame:
    return acq.select(
        "lid",
        "vid",
        pl.col("ts").alias("start"),
        "end",
        pl.col("ord").alias("start_ord"),
        "truncated",
        "hold",
        "bound",
        "tail",
        "residual",
    )


def _in_order(waits: pl.DataFrame) -> pl.DataFrame:
    """Per closed wait (end_ord as next_ord): whether every wait of its lock that began before it
    had ended by its acquisition (it took the lock from the head of the queue, as on a strict fifo lock)."""
    w = sort_by_key(
        waits.select("lid", "start_ord", pl.col("end_ord").fill_null(2**62).alias("_e")),
        "lid",
        then="start_ord",
    )
    before = pl.col("_e").cum_max().shift(1).over("lid")
    return w.select(
        pl.col("_e").alias("next_ord"), (before.is_null() | (before < pl.col("_e"))).alias("in_order")
    )


def _queued_successor(
    acq: pl.DataFrame, waits: pl.DataFrame, clock: pl.DataFrame, prep: Prepared
) -> pl.DataFrame:
    """Fifo locks: a hold lasts while its successor, queued behind it, runs without taking the lock.

    On a fifo lock nobody takes the lock uncontended while a waiter is queued, and the waiter at
    the head takes it the moment it is free if it is running. So once the next acquirer Y is at
    the head behind holder X (Y queued before X's acquisition; or queued later while X, which had
    run less than a long hold and did not wait for the lock again, plausibly still held it), X
    holds at every instant Y runs before its acquisition: X's hold lasts at least to the end of
    Y's last running stretch before it (Y's acquisition itself if Y was running just before), and
    if X is not running then, until it runs again (a vCPU must run to release).
    """
    fifo = prep.locks.filter(pl.col("lock_kind") == "fifo")["lid"]
    if fifo.len() == 0 or acq.height == 0:
        return acq
    a = acq.with_row_index("_i").join(_in_order(waits), on="next_ord", how="left", maintain_order="left")
    a = a.filter(
        pl.col("next_vid").is_not_null()
        & pl.col("in_order").fill_null(False)
        & pl.col("lid").is_in(fifo.implode())
    )
    if a.height == 0:
        return acq
    a = a.with_columns(
        ran_between(a, clock, prep, vid="vid", t0="ts", t1="next_contend_ts").alias("ran_to_queue")
    )
    certain = pl.col("next_contend_ord") < pl.col("ord")
    plausible = (
        (pl.col("ran_to_queue") < pl.col("tail"))
        & (pl.col("stop_ts").is_null() | (pl.col("stop_ts") > pl.col("next_contend_ts")))
        & (pl.col("own_ord").is_null() | (pl.col("own_ord") > pl.col("next_contend_ord")))
    )
    a = a.filter((certain | plausible).fill_null(False)).with_columns(
        pl.max_horizontal("ts", "next_contend_ts").alias("_lo")
    )
    running = clock.filter(pl.col("running")).select(pl.col("vid").alias("key"), "start", "end")
    # Y's last running stretch that began before its acquisition.
    a = lookup(
        a,
        running.rename({"start": "y_start", "end": "y_end"}),
        by="next_vid",
        on="next_ts",
        table_on="y_start",
        values=["y_start", "y_end"],
        strict=True,
    ).drop("_row")
    # A vCPU runs guest code about a microsecond after its thread resumes (vcpu_load, kvm_entry,
    # VMRESUME), and printed to the microsecond the resume and the acquisition may swap: Y taking
    # the lock within that (prep.entry_slack) after it resumed took it as soon as it could, which
    # proves nothing about when X released.
    at_resume = pl.col("next_ts") - pl.col("y_start") < prep.entry_slack()
    a = a.with_columns(pl.min_horizontal("y_end", "next_ts").alias("y_last")).filter(
        (pl.col("y_last") > pl.col("_lo"))
        & (pl.col("kick_ts").is_null() | (pl.col("kick_ts") >= pl.col("y_last")))
        & ~at_resume.fill_null(False)
    )
    # X's first running stretch that ends after it: X releases no earlier than the stretch's start.
    a = lookup(
        a,
        running.rename({"start": "x_start", "end": "x_end"}),
        by="vid",
        on="y_last",
        table_on="x_end",
        values=["x_start"],
        direction="forward",
        strict=True,
    ).drop("_row")
    a = a.with_columns(pl.max_horizontal("y_last", "x_start").alias("_floor")).filter(
        (pl.col("_floor") <= pl.col("next_ts"))
        & (pl.col("own_ts").is_null() | (pl.col("_floor") <= pl.col("own_ts")))
    )
    ext = a.select("_i", "_floor")
    return (
        acq.with_row_index("_i")
        .join(ext, on="_i", how="left", maintain_order="left")
        .with_columns(pl.max_horizontal("end", "_floor").alias("end"))
        .drop("_i", "_floor")
    )


def finish_holds(holds: pl.DataFrame, prep: Prepared, done: pl.DataFrame | None = None) -> pl.DataFrame:
    """Holds in the locks module's layout (HOLD_COLUMNS), inferred, with canonical keys; `done`:
    holds already finished, merged in (their keys are not searched for again)."""
    key = _release_key(prep, holds["end"])
    h = holds.with_columns(
        pl.when(pl.col("start_ord").is_not_null())
        .then(pl.col("start_ord") * 2)
        .otherwise(_release_key(prep, holds["start"]) * 2 - 1)
        .alias("sort_key"),
        pl.lit(True).alias("inferred"),
    )
    # A release at the hold's own timestamp (a hold shorter than the text's microsecond) still
    # follows its acquisition: "just before the first event at that time" would put it first
    # and leave the lock held from then on.
    h = h.with_columns(
        pl.when(pl.col("truncated"))
        .then(None)
        .otherwise(pl.max_horizontal(pl.lit(key), pl.col("start_ord") + 1))
        .alias("end_ord"),
        pl.when(pl.col("truncated"))
        .then(None)
        .otherwise(pl.max_horizontal(pl.lit(key) * 2 - 1, pl.col("sort_key") + 1))
        .alias("end_key"),
    )
    if done is not None:
        h = pl.concat([done.drop("hid"), h.select(done.drop("hid").columns)])
    h = h.sort(lock_order(prep))
    # On a lock printed to the microsecond, a release inferred at the instant the next holder's
    # acquisition is seen falls just before that acquisition, not before every event of its
    # timestamp: a contention printed in the same microsecond (the lock was held then: it was
    # contended) came before the release, a hand-off. (To the nanosecond, a contention at the very
    # instant of its acquisition took a lock already free: a steal past a queue, no hand-off.)
    then = (pl.col("lid") == pl.col("lid").shift(-1)) & (pl.col("end") == pl.col("start").shift(-1))
    at_next = (
        then & prep.coarse_lock() & (pl.col("end_key") % 2 == 1) & pl.col("start_ord").shift(-1).is_not_null()
    ).fill_null(False)
    h = h.with_columns(
        pl.when(at_next).then(pl.col("start_ord").shift(-1)).otherwise(pl.col("end_ord")).alias("end_ord"),
        pl.when(at_next).then(pl.col("sort_key").shift(-1) - 1).otherwise(pl.col("end_key")).alias("end_key"),
    )
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
        values=["x_ts"],
        strict=True,
    )
    return k.with_columns(pl.coalesce("x_ts", "ts").alias("released")).drop("x_ts", "_row")
