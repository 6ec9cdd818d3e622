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


def yields_in_waits(stretches: pl.DataFrame, period: int) -> tuple[dict, str | None]:
    """The two tests and, when waiters stop inside their waits more often than the host's other
    stops explain (either test below SIGNIFICANCE / 2) by enough to hide more than SPIN_TOLERANCE
    of the apparent spin (the running time inside waits), why spin cannot be told from the yields."""
    tests = stop_rates(stretches, period)
    found = {
        name: t
        for name, t in tests.items()
        if t["p"] < SIGNIFICANCE / len(HIDES) and t["hidden_ns"] > SPIN_TOLERANCE * t["spin_ns"]
    }
    shown = {name: {**t, "p": round(t["p"], 6)} for name, t in tests.items()}
    if not found:
        return shown, None
    name, t = max(found.items(), key=lambda kv: kv[1]["hidden_ns"])
    what = "times" if name == "all" else "times for less than two ticks"
    hz = 1_000_000_000 // period
    return shown, (
        f"the vCPUs stop {t['in_waits']} {what} inside lock waits where their running time there explains "
        f"{t['expected']:.1f} (p = {t['p']:.2g}): the host yields spinning waiters (PLE), mostly for less than "
        f"a tick (HZ={hz}), which leaves no trace; the yields hide about {t['hidden_ns'] / 1e6:.1f} ms of the "
        f"{t['spin_ns'] / 1e6:.1f} ms the waiters seem to spin, so spin cannot be told from them"
    )
