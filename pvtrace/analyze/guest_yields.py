"""Whether the host yields this guest's spinning waiters (PLE), from the guest's own ticks.

A host stops a vCPU when its slice ends or a wakeup outranks it, whatever the guest runs: per
unit of running time, stops come as often inside lock waits as outside them. Pause-loop exiting
adds stops that only a spinning waiter takes: the CPU exits after a few thousand cycles of PAUSE
and KVM's directed yield gives the waiter's pCPU away, for microseconds up to a host slice
(kvm_vcpu_on_spin, yield_to). Most of these yields are shorter than a tick and leave no trace,
so their time would count as spin; the few that span a grid tick show as gaps inside waits, more
of them than the running time inside waits explains. A one-sided Poisson test on that count
against the rate outside waits tells such a guest; the level then gives no spin, nor what rests
on it (docs/metrics.md).

Too few waits for that count to tell (a few gaps in a short capture), the yields still show
where they hand a pCPU over: a directed yield runs the preempted holder at the instant the
waiter stops, so the holder resumes (its late tick) and releases the lock while its waiter
is stopped, and the waiter takes the lock only when it runs again, tens of microseconds
later. A waiter that spins takes it within what is left of the holder's critical section,
which the trace's plain waits measure (alone on the lock, both running). A binomial test on
how many handoffs after a resume come later than nearly all plain waits tells that the
waiters stop inside their waits.
"""

from __future__ import annotations

import math

import polars as pl

# split over the two tests; a false alarm withholds spin, a miss reports it several times too high
SIGNIFICANCE = 0.05
# and the yields the excess stands for must hide more than this share of the apparent spin
SPIN_TOLERANCE = 0.10
# What one excess gap inside waits stands for, in ticks: a stop shorter than a tick spans one with
# probability (its length / the tick), so each short gap seen stands for a tick of such yields, most of
# them unseen; any gap is placed at the middle of [its event, the missed tick] while a yield comes at
# the event, off by at most half a tick.
HIDES = {"all": 0.5, "short": 1.0}
# A waiter's plain waits (alone on the lock, running throughout, nobody resuming) measure what is left
# of a running holder's critical section; a handoff after the holder resumed later than this quantile
# of them is late. Without yields, LATE_SHARE of handoffs may come that late (twice the nominal share:
# a preemption falls more often in a long critical section, so resumed holders have more left).
PLAIN_QUANTILE = 0.9
LATE_SHARE = 0.2
MIN_PLAIN = 20  # fewer plain waits than this give no quantile to judge by


def tail_at_least(n: int, mu: float) -> float:
    """P(N >= n) for N ~ Poisson(mu), in log space: below the mean as one minus the terms under n,
    above it as the sum of the (falling) terms from n up, so neither side cancels to below zero."""
    if n <= 0:
        return 1.0
    if mu <= 0:
        return 0.0

    def term(i: int) -> float:
        return math.exp(i * math.log(mu) - mu - math.lgamma(i + 1))

    if n <= mu:
        return max(0.0, 1.0 - math.fsum(term(i) for i in range(n)))
    total, i = 0.0, n
    while (t := term(i)) > 1e-17 * total and t > 0.0:
        total += t
        i += 1
    return min(total, 1.0)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(K >= k) for K ~ Binomial(n, p), its terms in log space (no overflow for large n)."""
    if k <= 0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)

    def term(i: int) -> float:
        return math.exp(
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        )

    return min(1.0, math.fsum(term(i) for i in range(k, n + 1)))


def _lock_events(events: pl.DataFrame) -> pl.DataFrame:
    """Lock contends and acquisitions (vm, vcpu, lock, ts, kind, wait_ts: the contend before an
    acquisition, contended) with `open`: the lock's waiters after each event (an acquisition whose
    wait began before the capture counts for none)."""
    lock = events.filter(
        pl.col("kind").is_in(["lock_contend", "lock_acquire"]) & pl.col("lock").is_not_null()
    )
    lock = lock.select(pl.col("vm").cast(pl.String), "vcpu", "lock", "ts", "kind").sort(
        "ts", maintain_order=True
    )
    mine = ("vm", "vcpu", "lock")
    contended = (pl.col("kind") == "lock_acquire") & (pl.col("kind").shift(1).over(mine) == "lock_contend")
    lock = lock.with_columns(
        pl.when(contended).then(pl.col("ts").shift(1).over(mine)).alias("wait_ts"),
    )
    step = (
        pl.when(pl.col("kind") == "lock_contend")
        .then(1)
        .when(pl.col("wait_ts").is_not_null())
        .then(-1)
        .otherwise(0)
    )
    return lock.with_columns(step.cum_sum().over("vm", "lock").alias("open"))


def late_handoffs(gaps: pl.DataFrame, events: pl.DataFrame, period: int) -> dict | None:
    """Handoffs after a resume: a waiter alone on its lock at another vCPU's resume inside its wait
    (that gap's end: its late tick), with no gap of its own since, takes the lock within a tick of
    it. How many, how many later than the PLAIN_QUANTILE of the plain waits (alone when they began,
    running, no resume inside, under a tick), and the binomial tail of that count against
    LATE_SHARE. None without MIN_PLAIN plain waits or without handoffs. `gaps`: vm, vcpu,
    start_lo, end, tail."""
    lock = _lock_events(events)
    mine = ("vm", "vcpu", "lock")
    waits = lock.with_columns(pl.col("open").shift(1).over(mine).alias("open_at_wait")).filter(
        pl.col("wait_ts").is_not_null()
    )
    gaps = gaps.with_columns(pl.col("vm").cast(pl.String))
    resumes = gaps.filter(~pl.col("tail")).select(
        "vm", pl.col("vcpu").alias("resumed"), pl.col("end").alias("at")
    )
    own = gaps.select("vm", "vcpu", pl.col("start_lo").alias("own_lo"), pl.col("end").alias("own_end"))
    asof = {"strategy": "backward", "check_sortedness": False}
    waits = (
        waits.sort("ts")
        .join_asof(resumes.sort("at"), left_on="ts", right_on="at", by="vm", **asof)  # the last resume
        .join_asof(own.sort("own_lo"), left_on="ts", right_on="own_lo", by=["vm", "vcpu"], **asof)
    )
    resumed_inside = pl.col("at").is_not_null() & (pl.col("at") > pl.col("wait_ts"))
    own_gap = pl.col("own_end").is_not_null() & (pl.col("own_lo") < pl.col("ts"))
    plain = waits.filter(
        (pl.col("open_at_wait") == 1)
        & (pl.col("ts") - pl.col("wait_ts") < period)
        & ~resumed_inside
        & ~(own_gap & (pl.col("own_end") > pl.col("wait_ts")))
    )
    if plain.height < MIN_PLAIN:
        return None
    late_ns = int((plain["ts"] - plain["wait_ts"]).quantile(PLAIN_QUANTILE, interpolation="higher"))
    handoffs = waits.filter(
        resumed_inside
        & (pl.col("resumed") != pl.col("vcpu"))
        & (pl.col("ts") - pl.col("at") < period)
        & ~(own_gap & (pl.col("own_end") > pl.col("at")))
    )
    # alone on the lock at the resume: its waiters then, as the lock's events up to that instant count them
    at_resume = lock.select("vm", "lock", pl.col("ts").alias("ev_ts"), pl.col("open").alias("open_at_resume"))
    handoffs = handoffs.sort("at").join_asof(
        at_resume.sort("ev_ts"), left_on="at", right_on="ev_ts", by=["vm", "lock"], **asof
    )
    handoffs = handoffs.filter(pl.col("open_at_resume") == 1)
    if not handoffs.height:
        return None
    late = int((handoffs["ts"] - handoffs["at"] > late_ns).sum())
    n = handoffs.height
    return {"handoffs": n, "late": late, "late_ns": late_ns, "p": binomial_tail(late, n, LATE_SHARE)}


def _tested(busy: pl.DataFrame, gaps: str, period: int) -> dict | None:
    rows = {r["waiting"]: r for r in busy.iter_rows(named=True)}
    inside, outside = rows.get(True), rows.get(False)
    if inside is None or outside is None or not outside[gaps] or not outside["running_ns"]:
        return None
    expected = outside[gaps] / outside["running_ns"] * inside["running_ns"]
    return {
        "in_waits": int(inside[gaps]),
        "expected": round(expected, 2),
        "p": tail_at_least(int(inside[gaps]), expected),
        "hidden_ns": round(max(inside[gaps] - expected, 0.0) * HIDES[gaps] * period),
        "spin_ns": int(inside["running_ns"]),
    }


def stop_rates(stretches: pl.DataFrame, period: int) -> dict[str, dict]:
    """Gaps inside lock waits against the count the rate outside them predicts for the running time
    inside: every gap ("all"), and those that miss one tick only ("short": the vCPU was back within
    two ticks, as a yielded waiter mostly is, while a slice's end mostly keeps it out longer).
    `stretches` has ts, next, g1 (the first grid tick after ts), missed, waiting and idle; a stop in
    [ts, g1) leaves a gap starting at ts, so that span (or up to the next event) is each stretch's
    running time at risk. A test is left out when nothing outside waits gives its rate."""
    exposure = (pl.min_horizontal("next", "g1") - pl.col("ts")).clip(lower_bound=0)
    short = pl.col("missed") & (pl.col("next") - pl.col("g1") < period)
    busy = (
        stretches.filter(~pl.col("idle"))
        .group_by("waiting")
        .agg(
            exposure.sum().alias("running_ns"),
            pl.col("missed").sum().alias("all"),
            short.sum().alias("short"),
        )
    )
    tests = {name: _tested(busy, name, period) for name in HIDES}
    return {name: t for name, t in tests.items() if t is not None}


def yields_in_waits(
    stretches: pl.DataFrame, period: int, handoffs: dict | None = None
) -> tuple[dict, str | None]:
    """The two tests (and the late handoffs, `late_handoffs`) and, when waiters stop inside their
    waits more often than the host's other stops explain (either test below SIGNIFICANCE / 2) by
    enough to hide more than SPIN_TOLERANCE of the apparent spin (the running time inside waits), or
    when more handoffs after a resume come late than LATE_SHARE explains (below SIGNIFICANCE), why
    spin cannot be told from the yields."""
    tests = stop_rates(stretches, period)
    found = {
        name: t
        for name, t in tests.items()
        if t["p"] < SIGNIFICANCE / len(HIDES) and t["hidden_ns"] > SPIN_TOLERANCE * t["spin_ns"]
    }
    shown = {name: {**t, "p": round(t["p"], 6)} for name, t in tests.items()}
    hz = 1_000_000_000 // period
    if handoffs is not None:
        shown["handoffs"] = {**handoffs, "p": round(handoffs["p"], 6)}
    if not found:
        if handoffs is None or handoffs["p"] >= SIGNIFICANCE:
            return shown, None
        h = handoffs
        return shown, (
            f"{h['late']} of {h['handoffs']} lock handoffs after a holder resumed came more than "
            f"{h['late_ns'] / 1000:g} us after it, longer than {100 * PLAIN_QUANTILE:g}% of the plain waits "
            f"(p = {h['p']:.2g} against {100 * LATE_SHARE:g}%): the waiter was stopped when its holder resumed, "
            "as the host's directed yield (PLE) stops a spinning waiter to run the holder; those stops mostly "
            f"last less than a tick (HZ={hz}) and leave no trace, so spin cannot be told from them"
        )
    name, t = max(found.items(), key=lambda kv: kv[1]["hidden_ns"])
    what = "times" if name == "all" else "times for less than two ticks"
    return shown, (
        f"the vCPUs stop {t['in_waits']} {what} inside lock waits where their running time there explains "
        f"{t['expected']:.1f} (p = {t['p']:.2g}): the host yields spinning waiters (PLE), mostly for less than "
        f"a tick (HZ={hz}), which leaves no trace; the yields hide about {t['hidden_ns'] / 1e6:.1f} ms of the "
        f"{t['spin_ns'] / 1e6:.1f} ms the waiters seem to spin, so spin cannot be told from them"
    )
