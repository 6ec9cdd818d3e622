"""Lock kind from the trace: does a lock hand itself over in arrival order (fifo) or not (unfair)?

LWP waste and convoy boundaries depend on the kind (docs/metrics.md), and text
traces do not say it. The evidence is the order of contended acquisitions:
whenever a waiter takes the lock while another waiter is still queued (a
hand-off with a choice), a fifo lock gives it to the one that started waiting
first; an unfair lock (test-and-set) to whichever spinner wins the race. A
waiter that takes the lock while one that began waiting strictly earlier (by
timestamp, so waits begun in the same printed microsecond never count as
overtaken) is still queued has overtaken it.

Kind per lock: with fewer than MIN_HANDOFFS hand-offs the lock is `undecided`
(kept as kind `unknown`: too little evidence to be right); otherwise `fifo` when
at least FIFO_MIN of them were in arrival order, `unfair` when at most
UNFAIR_MAX were, else `undecided`. Thresholds and misclassification rates:
docs/accuracy.md, Lock kind.

A VM of two vCPUs rarely queues two waiters (in real qspinlock traces the releaser
re-queues before the head prints its contention_end, which x86 prints only after the
MCS hand-over: an in-order "choice" that is the fifo lock's own). There the other
evidence is what the other vCPU does while a waiter is queued
and not running (preempted or halted): no third vCPU can hold the lock then, so
on a fifo lock each of its tries queues behind the waiter (a contention is
seen), and on an unfair lock each finds the lock free and takes it unseen
(queue_jumps). `fifo` when it was seen contending JUMP_MIN times or more;
`unfair` when it never was although its contention rate predicts JUMP_MIN tries
or more (it tries at least that often: a try contends only when the lock is held).
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import (
    coverage_integral,
    dense_sums,
    lookup,
    same_as_previous,
    sort_by_key_time,
)
from pvtrace.analyze.likely_holder import free_running_clock, span_area
from pvtrace.analyze.locks import queued_at_end
from pvtrace.analyze.prepare import LOCK_KIND, Prepared
from pvtrace.analyze.vcpu_states import VcpuStates

I64, F64, STR = pl.Int64(), pl.Float64(), pl.String()

MIN_HANDOFFS = 20
FIFO_MIN = 0.97
UNFAIR_MAX = 0.9
# Two-vCPU VMs (no hand-off ever has a choice): tries by the other vCPU while a waiter is queued
# and stopped, expected or seen, needed to decide from them.
JUMP_MIN = 5

# Where each lock's kind came from.
FROM_VM = "its VM's locks"
SOURCES = ("--lock-kind", "trace metadata", "inferred", FROM_VM)


def order_evidence(
    waits: pl.DataFrame,
    pieces: pl.DataFrame | None,
    ord_size: int,
    t_start: int,
    entry_slack: pl.Expr | int = 0,
) -> pl.DataFrame:
    """Per lock (lid): n_handoffs and n_in_order (see hand_offs)."""
    h = hand_offs(waits, pieces, ord_size, t_start, entry_slack)
    return h.group_by("lid").agg(
        pl.len().cast(I64).alias("n_handoffs"), pl.col("in_order").sum().cast(I64).alias("n_in_order")
    )


def hand_offs(
    waits: pl.DataFrame,
    pieces: pl.DataFrame | None,
    ord_size: int,
    t_start: int,
    entry_slack: pl.Expr | int = 0,
) -> pl.DataFrame:
    """The hand-offs with a choice: lid, wid, in_order, one row per contended acquisition that
    another waiter could have had instead.

    The queue head at an acquisition is the open wait that began first. The acquirer is in
    order when it is the head (or began waiting in the same printed instant). With vCPU
    states (pieces: wid, lid, start, end, state), an acquisition counts only when it was a
    choice: the head's when another queued waiter spun since the lock's previous
    acquisition (an unfair lock goes to whoever spins while it is free), another's when the
    head was spinning at that moment (a queued lock that lets a newcomer take it while its
    head is not spinning, pv qspinlock's lock stealing, is still fifo for the head). Without states
    every acquisition with another waiter queued counts, and an overtaken head can be such
    a steal, so only fifo can be decided (classify(..., states=False)).
    waits: wid, lid, start, start_ord, end_ord, truncated, queued (locks.waits; computed here when
    absent, as for another set of waits: queued_at_end counts the waits given). t_start: where the
    trace (or the time window analyzed) begins, the previous acquisition of a lock's first one as far as it can tell
    (so that a trace cut at a quiet point gives the same hand-offs as the whole). entry_slack (per
    lid: Prepared.entry_slack): a head counts as spinning when the lock went to another only if its
    run began longer ago than that.
    """
    if "queued" not in waits.columns:  # (waits of another set than locks.waits gave)
        waits = waits.with_columns(queued_at_end(waits))
    w = (
        waits.select(
            "wid",
            "lid",
            "start",
            "start_ord",
            "queued",
            pl.when(pl.col("truncated"))
            .then(pl.lit(ord_size, I64))
            .otherwise(pl.col("end_ord"))
            .alias("acq"),
            pl.when(~pl.col("truncated")).then(pl.col("end")).alias("acq_ts"),
        ).pipe(sort_by_key_time, "lid", "start_ord")  # ords are unique: one packed sort
    )
    # (lock, prefix max of acq within the lock) packed: a running max of the packed (lock, acq)
    # is the same, as every position of a lock lies above the previous locks'
    size = ord_size + 1
    k_sorted = w.select((pl.col("lid") * size + pl.col("acq")).cum_max().alias("k"))["k"]
    acq = w.filter(pl.col("acq_ts").is_not_null())
    # head = the first wait (in start order) not done before this acquisition: prefix max >= acq
    head_row = k_sorted.search_sorted(acq.select(pl.col("lid") * size + pl.col("acq"))["lid"], side="left")
    heads = w.select(pl.col("wid").alias("head"), pl.col("start").alias("head_start"))[head_row]
    acq = pl.concat([acq, heads], how="horizontal").with_columns(
        ((pl.col("head") == pl.col("wid")) | (pl.col("head_start") == pl.col("start"))).alias("in_order"),
        (pl.col("acq_ts") - 1).alias("t"),
    )
    # the previous (contended) acquisition of the lock, whoever else was queued: since then, a
    # running waiter could have taken it
    acq = sort_by_key_time(acq, "lid", "acq").with_columns(
        pl.when(same_as_previous("lid")).then(pl.col("acq_ts").shift(1)).fill_null(t_start).alias("prev_ts")
    )
    acq = acq.filter(pl.col("queued") >= 2)  # another waiter was queued at the acquisition
    if pieces is None:
        return acq.select("lid", "wid", "in_order")
    spin = pieces.lazy().filter(pl.col("state") == "running").select("wid", "lid", "start", "end").collect()
    # spin on the lock, integrated over time: I(x) = integral up to x of the number of spinners
    to_acq, to_prev = coverage_integral(spin, acq, key="lid", at=("acq_ts", "prev_ts"))
    acq = acq.with_columns(to_acq.alias("spin_to_acq_ts"), to_prev.alias("spin_to_prev_ts"))
    # each waiter's own spin in that span: waits are rows of one table (wid: its row number), so
    # each piece finds its acquisition by a gather and the sums are a bincount, not joins
    n = int(max(spin["wid"].max() or 0, acq["wid"].max() or 0)) + 1
    span = [
        pl.repeat(None, n, dtype=I64, eager=True).scatter(acq["wid"], acq[c]) for c in ("prev_ts", "acq_ts")
    ]
    since, until = (pl.lit(s).gather("wid") for s in span)
    own = spin.filter(until.is_not_null()).select(
        "wid", (pl.min_horizontal("end", until) - pl.max_horizontal("start", since)).clip(0).alias("own")
    )
    acq = acq.with_columns(
        (
            pl.col("spin_to_acq_ts")
            - pl.col("spin_to_prev_ts")
            - pl.lit(dense_sums(own, "wid", n)["own"]).gather("wid")
        ).alias("others")
    )
    # the head running at the acquisition (an overtaken head that was not is a steal)
    # (its last spin piece begun by then: one as-of lookup on packed (wait, time) positions)
    # spinning already for longer than the entry slack: a head that resumed within it (printed in
    # the same microsecond as the acquisition, or still entering the guest) may have come back
    # after the lock was taken, as a steal allows
    spin = spin.with_columns(pl.col("start").alias("s0"))
    acq = lookup(acq, spin, by="head", on="t", values=["end", "s0"], table_key="wid", table_on="start")
    head_running = ((pl.col("end") > pl.col("t")) & (pl.col("s0") <= pl.col("t") - entry_slack)).fill_null(
        False
    )
    keep = pl.when(pl.col("in_order")).then(pl.col("others") > 0).otherwise(head_running)
    return acq.filter(keep).select("lid", "wid", "in_order")


def queue_jumps(
    prep: Prepared, waits: pl.DataFrame, pieces: pl.DataFrame, states: VcpuStates
) -> pl.DataFrame:
    """Per lock of a two-vCPU VM: jump_tries (how many tries of the lock the other vCPU, running
    and waiting for no lock, would make while a waiter of it was queued and not running, at the
    lock's contention rate) and jump_seen (its contentions for the lock begun then)."""
    empty = pl.DataFrame(schema={"lid": I64, "jump_tries": F64, "jump_seen": I64})
    if prep.stops_to_a_tick:  # a try inside a stop placed to a tick may be the waiter's own turn
        return empty
    pair = prep.vcpus.group_by("vm").len().filter(pl.col("len") == 2).select("vm")
    lids = prep.locks.join(pair, on="vm").select("lid", "vm_id")
    if lids.height == 0:
        return empty
    w = waits.filter(~pl.col("excluded")).join(lids.select("lid"), on="lid")
    stopped = (
        pieces.join(lids, on="lid")
        .filter(pl.col("state").is_in(["preempted", "halted"]))
        .select("lid", "vid", "vm_id", "start", "end")
    )
    if w.height == 0 or stopped.height == 0:
        return empty
    free = free_running_clock(waits, states, prep)
    stopped = stopped.with_columns(pl.lit(span_area(stopped, free, prep, "start", "end")).alias("area"))
    # the contention rate: contentions per free-running vCPU time of the VM over the whole trace
    # (Int64 literals: a bare int broadcast is Int32 when it fits, and a window from 0 to past
    # 2^31 ns then mixes Int32 and Int64 where the two times are stacked)
    whole = pl.DataFrame({"vm_id": free["vm_id"].unique()}).with_columns(
        pl.col("vm_id").cast(free.schema["vm_id"]),
        pl.lit(prep.window.t_start, I64).alias("t0"),
        pl.lit(prep.window.t_end, I64).alias("t1"),
    )
    whole = whole.with_columns(pl.lit(span_area(whole, free, prep, "t0", "t1")).alias("vm_area"))
    rate = (
        w.group_by("lid")
        .len("n")
        .join(lids, on="lid")
        .join(whole.select("vm_id", "vm_area"), on="vm_id")
        .select("lid", (pl.col("n") / pl.col("vm_area")).alias("rate"))
    )
    # contentions by the other vCPU begun inside a stopped piece of a waiter
    inside = lookup(
        w.select("lid", "vid", "start"),
        sort_by_key_time(
            stopped.select(
                pl.col("lid").alias("key"), pl.col("start").alias("p0"), "end", pl.col("vid").alias("pv")
            ),
            "key",
            "p0",
        ),
        by="lid",
        on="start",
        table_on="p0",
        values=["end", "pv"],
    ).filter((pl.col("start") < pl.col("end")) & (pl.col("vid") != pl.col("pv")))
    tries = (
        stopped.join(rate, on="lid")
        .group_by("lid")
        .agg((pl.col("area") * pl.col("rate")).sum().alias("jump_tries"))
    )
    seen = inside.group_by("lid").len("jump_seen")
    return (
        lids.select("lid")
        .join(tries, on="lid", how="left")
        .join(seen, on="lid", how="left")
        .select("lid", pl.col("jump_tries").fill_null(0.0), pl.col("jump_seen").fill_null(0).cast(I64))
    )


def classify(evidence: pl.DataFrame, *, states: bool) -> pl.DataFrame:
    """evidence (n_handoffs, n_in_order, jump_tries, jump_seen) with `in_order_frac` and `inferred`
    (fifo, unfair, undecided); the queue jumps decide only where the order does not. Without vCPU
    states (states=False) an overtaken head may have been a steal: never unfair (and there are no
    queue jumps)."""
    frac = pl.col("n_in_order") / pl.col("n_handoffs")
    unfair_max = UNFAIR_MAX if states else -1.0
    return evidence.with_columns(
        pl.when(pl.col("n_handoffs") > 0).then(frac).alias("in_order_frac"),
        pl.when(pl.col("n_handoffs") < MIN_HANDOFFS)
        .then(pl.lit("undecided"))
        .when(frac >= FIFO_MIN)
        .then(pl.lit("fifo"))
        .when(frac <= unfair_max)
        .then(pl.lit("unfair"))
        .otherwise(pl.lit("undecided"))
        .alias("inferred"),
    ).with_columns(
        pl.when(pl.col("inferred") != "undecided")
        .then(pl.col("inferred"))
        .when(pl.col("jump_seen") >= JUMP_MIN)
        .then(pl.lit("fifo"))
        .when((pl.col("jump_seen") == 0) & (pl.col("jump_tries") >= JUMP_MIN))
        .then(pl.lit("unfair"))
        .otherwise(pl.col("inferred"))
        .alias("inferred")
    )


def infer_lock_kinds(
    prep: Prepared,
    waits: pl.DataFrame,
    pieces: pl.DataFrame | None,
    states: VcpuStates | None = None,
    *,
    override: bool,
) -> pl.DataFrame:
    """Set prep.locks.lock_kind where it is unknown from the trace's own order evidence; return the
    per-lock table: lid, lock_kind, source, n_handoffs, n_in_order, in_order_frac, inferred.

    override: the kind was given by --lock-kind (kept, and so is the evidence); pieces: the
    waits split by waiter state (None without vCPU states).
    """
    analyzed = waits.filter(~pl.col("excluded"))
    if analyzed.height < waits.height:  # waits.queued counts the excluded waits too
        analyzed = analyzed.drop("queued")
    evidence = order_evidence(analyzed, pieces, prep.ord_size, prep.window.t_start, prep.entry_slack())
    jumps = (
        queue_jumps(prep, waits, pieces, states)
        if pieces is not None and states is not None
        else pl.DataFrame(schema={"lid": I64, "jump_tries": F64, "jump_seen": I64})
    )
    ev = classify(
        prep.locks.select("lid")
        .join(evidence, on="lid", how="left")
        .join(jumps, on="lid", how="left")
        .with_columns(
            pl.col("n_handoffs", "n_in_order", "jump_seen").fill_null(0), pl.col("jump_tries").fill_null(0.0)
        ),
        states=pieces is not None,
    )
    known = prep.locks.select("lid", "vm_id", pl.col("lock_kind").alias("given"))
    out = _with_vm_kind(
        known.join(ev, on="lid", how="left", maintain_order="left"), states=pieces is not None
    )
    from_vm = (pl.col("inferred") == "undecided") & (pl.col("vm_kind") != "undecided")
    out = out.with_columns(
        pl.when(pl.col("given") != "unknown")
        .then(pl.col("given").cast(STR))
        .when(from_vm)
        .then(pl.col("vm_kind"))
        .when(pl.col("inferred") == "undecided")
        .then(pl.lit("unknown"))
        .otherwise(pl.col("inferred"))
        .cast(LOCK_KIND)
        .alias("lock_kind"),
        pl.when(pl.lit(override))
        .then(pl.lit("--lock-kind"))
        .when(pl.col("given") != "unknown")
        .then(pl.lit("trace metadata"))
        .when(from_vm)
        .then(pl.lit(FROM_VM))
        .otherwise(pl.lit("inferred"))
        .alias("source"),
    ).drop("vm_id", "vm_kind")
    prep.locks = prep.locks.with_columns(out["lock_kind"])
    return out.drop("given")


def _with_vm_kind(locks: pl.DataFrame, *, states: bool) -> pl.DataFrame:
    """Per lock, vm_kind: what its VM's locks say together (their hand-offs and queue jumps summed,
    classified by the single lock's rules), undecided where one of them was found the other kind.

    One guest kernel's spinlocks share one algorithm, so where a lock has too little evidence of
    its own the others' say its kind: without it, LWP and convoys on most locks of a short or
    calm trace were left out, and spin behind a preempted queue head read as an unseen
    holder's (docs/metrics.md, Lock kind)."""
    pooled = locks.group_by("vm_id").agg(
        pl.col("n_handoffs", "n_in_order", "jump_seen", "jump_tries").sum(),
        (pl.col("inferred") == "fifo").any().alias("_fifo"),
        (pl.col("inferred") == "unfair").any().alias("_unfair"),
    )
    pooled = classify(pooled, states=states).select(
        "vm_id",
        pl.when((pl.col("inferred") == "fifo") & ~pl.col("_unfair"))
        .then(pl.lit("fifo"))
        .when((pl.col("inferred") == "unfair") & ~pl.col("_fifo"))
        .then(pl.lit("unfair"))
        .otherwise(pl.lit("undecided"))
        .alias("vm_kind"),
    )
    return locks.join(pooled, on="vm_id", how="left", maintain_order="left")


def lock_kinds_table(kinds: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """The lock_kinds result table: vm, lock, kind (fifo, unfair or undecided), source and evidence."""
    return (
        kinds.join(prep.locks.select("lid", "vm", "lock"), on="lid", how="left")
        .select(
            "vm",
            "lock",
            pl.when(pl.col("lock_kind") == "unknown")
            .then(pl.lit("undecided"))
            .otherwise(pl.col("lock_kind").cast(STR))
            .alias("kind"),
            "source",
            "n_handoffs",
            "n_in_order",
            (100.0 * pl.col("in_order_frac")).round(2).alias("in_order_pct"),
            pl.col("jump_tries").round(1),
            "jump_seen",
        )
        .pipe(in_handoff_order)
    )


def in_handoff_order(table: pl.DataFrame) -> pl.DataFrame:
    """lock_kinds' rows as reported: the locks with most hand-offs (the best evidence) first."""
    return table.sort("n_handoffs", "vm", "lock", descending=[True, False, False], maintain_order=True)


def kind_summary(table: pl.DataFrame) -> dict:
    """For the summary: how many locks of each kind, where the kinds came from, and the rule."""
    counts = {k: int(table.filter(pl.col("kind") == k).height) for k in ("fifo", "unfair", "undecided")}
    sources = sorted(set(table["source"].to_list()))
    return {
        **counts,
        "source": ", ".join(sources) if sources else "no locks",
        "rule": (
            f"inferred per lock from the order of contended acquisitions: fifo when >= {FIFO_MIN:.0%} of "
            f"at least {MIN_HANDOFFS} hand-offs went to the earliest waiter, unfair when <= "
            f"{UNFAIR_MAX:.0%}, else undecided; in a two-vCPU VM, fifo when the other vCPU was seen "
            f"contending >= {JUMP_MIN} times while a waiter was queued and stopped, unfair when it never "
            f"was though it would have tried >= {JUMP_MIN} times; a lock these leave undecided takes its VM's "
            "kind, the same rules over all the VM's locks' hand-offs and queue jumps summed, unless one of "
            "them was found the other kind (--lock-kind overrides)"
        ),
    }
