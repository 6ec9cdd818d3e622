"""How close each fidelity level gets to the simulator's ground truth: the cases and figures.

Shared by test_accuracy.py (each figure must not get worse) and by the command that
writes docs/accuracy.md:

    python tests/analyze/accuracy_cases.py > docs/accuracy.md
"""

from __future__ import annotations

import sys
from functools import cache
from itertools import count

import polars as pl

from pvtrace.analyze import analyze
from pvtrace.analyze.accuracy import harmful_lhp_counts, pooled, relative_error, scores_of
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario
from pvtrace.simulate.views import select_view

ALGORITHMS = ("tas", "ticket", "pv-ticket", "pv-qspinlock")
OVERCOMMITS = (2, 3)

# Two workloads on 4 pCPUs with 4-vCPU guests (2x = 2 guests, 3x = 3 guests):
SCENARIOS: dict[str, dict] = {
    # no PLE, 4 locks, exponential 5 us critical sections, 50 us of work between them
    "no-ple": {
        "vm": {"vcpus": 4, "locks": 4, "compute_ns": 50_000, "hold_ns": 5_000, "hold_dist": "exp"},
        "hypervisor": {"ple": False},
        "run": {"duration_ns": 1_000_000_000},
    },
    # PLE on (KVM defaults), 2 locks, one of them hot, lognormal 2 us sections, 20 us of work
    "ple": {
        "vm": {
            "vcpus": 4,
            "locks": 2,
            "lock_skew": 1.0,
            "compute_ns": 20_000,
            "hold_ns": 2_000,
            "hold_dist": "lognormal",
        },
        "run": {"duration_ns": 250_000_000},
    },
}
# The sample: each case pools runs of consecutive seeds from FIRST_SEED: at least MIN_RUNS, more
# until they hold TARGET_INCIDENTS true harmful LHP incidents (one incident is then at most 1% of
# recall), unless the runs already total EVENT_BUDGET simulated events (the test's time bound).
# Stopping depends on the ground truth only, never on the analyzer's results.
FIRST_SEED = 21
MIN_RUNS = 1
TARGET_INCIDENTS = 100
EVENT_BUDGET = 350_000


def scenario(name: str, algorithm: str, overcommit: int) -> Scenario:
    s = {k: dict(v) for k, v in SCENARIOS[name].items()}
    s.setdefault("host", {})["pcpus"] = 4
    s["vm"]["count"] = overcommit
    return Scenario().replace(lock={"algorithm": algorithm}, **s)


def _err(found: int | None, true: int) -> float | None:
    e = relative_error(found, true)
    return None if e is None else round(e, 4)


# Merged-view totals compared with the ground truth's, summed over a case's runs.
MERGED_TOTALS = ("waste_lhp_ns", "waste_lwp_ns", "spin_ns", "n_lwp", "n_convoys")


def _without_ticks(trace):
    """A guest view as a capture without the guest's ticks and steal samples gives it (the
    guest-inferred level has its own section: guest_accuracy_cases.py)."""
    return type(trace)(trace.events.filter(pl.col("kind") != "other"), trace.meta)


def _run(name: str, algorithm: str, overcommit: int, seed: int) -> dict:
    """One run: its merged-view incident counts and totals against the truth's; the host and
    guest figures for the case's first run."""
    trace, truth = simulate_trace(scenario(name, algorithm, overcommit), seed=seed)
    t = truth.summary.totals
    merged = analyze(select_view(trace, "merged"))
    m = merged.summary.totals
    out: dict = {
        "seed": seed,
        "n_events": trace.events.height,
        "lhp": harmful_lhp_counts(merged.table("lhp_incidents"), truth.lhp_incidents),
        "found": {k: m.get(k) for k in MERGED_TOTALS},
        "true": {k: t[k] for k in MERGED_TOTALS},
    }
    if seed == FIRST_SEED:
        host = analyze(select_view(trace, "host")).summary
        guest = analyze(_without_ticks(select_view(trace, "guest")))
        wait_true = t["spin_ns"] + t["wait_halted_ns"] + t["wait_preempted_ns"]
        out["single"] = {
            "host_spin_err": _err(host.totals.get("spin_ns"), t["spin_ns"]),
            "host_spin_waste_err": _err(
                host.extra.get("spin_waste_ns"), t["waste_lhp_ns"] + t["waste_lwp_ns"]
            ),
            "host_n_pause_exits_err": _err(host.totals.get("n_pause_exits"), t["n_pause_exits"]),
            "guest_n_contended_err": _err(guest.summary.totals.get("n_contended"), t["n_contended"]),
            "guest_wait_err": _err(guest.summary.extra["wait_ns"], wait_true),
            "guest_spin_share_of_wait": round(t["spin_ns"] / wait_true, 4) if wait_true else None,
        }
    return out


@cache
def runs(name: str, algorithm: str, overcommit: int) -> tuple[dict, ...]:
    """The runs of one case (see FIRST_SEED ... EVENT_BUDGET)."""
    done: list[dict] = []
    for seed in count(FIRST_SEED):
        done.append(_run(name, algorithm, overcommit, seed))
        n_true = sum(r["lhp"]["n_true"] for r in done)
        n_events = sum(r["n_events"] for r in done)
        if len(done) >= MIN_RUNS and (n_true >= TARGET_INCIDENTS or n_events >= EVENT_BUDGET):
            return tuple(done)
    raise AssertionError("unreachable")


@cache
def figures(name: str, algorithm: str, overcommit: int) -> dict[str, float | int | None]:
    """Every accuracy figure of one case (None: the level cannot give it). Merged-view figures
    pool all the case's runs; host-only and guest-only figures are those of its first run."""
    rs = runs(name, algorithm, overcommit)
    lhp = scores_of(pooled([r["lhp"] for r in rs]))

    def total(side: str, *keys: str) -> int | None:
        values = [r[side][k] for r in rs for k in keys]
        return None if any(v is None for v in values) else sum(values)

    def err(*keys: str) -> float | None:
        return _err(total("found", *keys), total("true", *keys))

    out: dict[str, float | int | None] = {
        "n_runs": len(rs),
        "first_seed": rs[0]["seed"],
        "n_events": sum(r["n_events"] for r in rs),
        "merged_n_lhp_harmful_true": lhp["n_true"],
        "merged_lhp_precision": round(lhp["precision"], 4),
        "merged_lhp_recall": round(lhp["recall"], 4),
        # found incidents over true ones: precision counts each found fragment of one true incident
        # as a hit, so only the count shows an incident cut into pieces
        "merged_n_lhp_harmful_err": _err(lhp["n_found"], lhp["n_true"]),
        "merged_waste_err": err("waste_lhp_ns", "waste_lwp_ns"),
        "merged_waste_lhp_err": err("waste_lhp_ns"),
        "merged_waste_lwp_err": err("waste_lwp_ns"),
        "merged_spin_err": err("spin_ns"),
        "merged_n_lwp_err": err("n_lwp"),
        "merged_n_convoys_err": err("n_convoys"),
    }
    out.update(rs[0]["single"])
    return out


def _fmt(v: float | int | None, pct: bool = True) -> str:
    if v is None:
        return "unavailable"
    if isinstance(v, int) or not pct:
        return str(v)
    return f"{100 * v:+.1f}%"


def lhp_target(algorithm: str) -> float:
    """The harmful-LHP precision and recall target: 95% for tas and ticket, 90% for the pv locks."""
    return 0.95 if algorithm in ("tas", "ticket") else 0.90


def cases() -> list[tuple[str, str, int]]:
    return [(name, algo, oc) for name in SCENARIOS for algo in ALGORITHMS for oc in OVERCOMMITS]


def measured(case: tuple[str, str, int]) -> bool:
    """Whether the case's sample holds enough true incidents to measure the LHP target."""
    return figures(*case)["merged_n_lhp_harmful_true"] >= TARGET_INCIDENTS


# The extended sample (docs only, `--extended`): for the cases whose test sample stays under
# TARGET_INCIDENTS, merged-view runs of seeds EXTENDED_FIRST_SEED, ... (disjoint from the test's
# and from the seeds the inference rules were developed on, 101-120) until TARGET_INCIDENTS true
# incidents or EXTENDED_MAX_RUNS runs.
EXTENDED_FIRST_SEED = 1001
EXTENDED_MAX_RUNS = 40


def extended(name: str, algorithm: str, overcommit: int) -> dict[str, float | int | None]:
    counts: list[dict[str, int]] = []
    found = true = 0
    for seed in range(EXTENDED_FIRST_SEED, EXTENDED_FIRST_SEED + EXTENDED_MAX_RUNS):
        trace, truth = simulate_trace(scenario(name, algorithm, overcommit), seed=seed)
        merged = analyze(select_view(trace, "merged"))
        counts.append(harmful_lhp_counts(merged.table("lhp_incidents"), truth.lhp_incidents))
        m, t = merged.summary.totals, truth.summary.totals
        found += m["waste_lhp_ns"] + m["waste_lwp_ns"]
        true += t["waste_lhp_ns"] + t["waste_lwp_ns"]
        if sum(c["n_true"] for c in counts) >= TARGET_INCIDENTS:
            break
    lhp = scores_of(pooled(counts))
    return {
        "n_runs": len(counts),
        "n_true": lhp["n_true"],
        "precision": round(lhp["precision"], 4),
        "recall": round(lhp["recall"], 4),
        "waste_err": _err(found, true),
    }


# Convoys over more runs (docs only, `--extended`): the no-ple tas cases' test sample is one run
# of 1 s (about 80-180 true convoys), whose convoy error misses 10 % on seed 21; seeds
# FIRST_SEED .. FIRST_SEED + SPREAD_RUNS - 1 show the spread between runs and the pooled error.
SPREAD_CASES = (("no-ple", "tas", 2), ("no-ple", "tas", 3))
SPREAD_RUNS = 8


def convoy_spread(name: str, algorithm: str, overcommit: int) -> dict:
    found, true = [], []
    for seed in range(FIRST_SEED, FIRST_SEED + SPREAD_RUNS):
        r = _run(name, algorithm, overcommit, seed)
        found.append(r["found"]["n_convoys"])
        true.append(r["true"]["n_convoys"])
    errs = [_err(f, t) for f, t in zip(found, true, strict=True)]
    return {"n_true": sum(true), "pooled": _err(sum(found), sum(true)), "min": min(errs), "max": max(errs)}


def _seeds(f: dict) -> str:
    first, n = f["first_seed"], f["n_runs"]
    return str(first) if n == 1 else f"{first}-{first + n - 1}"


def report(with_extended: bool = False) -> str:
    """docs/accuracy.md (with_extended: also the extended sample, which takes minutes)."""
    lines = [
        "# Accuracy of each fidelity level against simulated ground truth",
        "",
        "Generated by `python tests/analyze/accuracy_cases.py --extended > docs/accuracy.md`;",
        "`tests/analyze/test_accuracy.py` recomputes every figure except the extended sample's and",
        "fails if one gets worse.",
        "",
        "Each case is a scenario on 4 pCPUs with 4-vCPU guests: 2x overcommit = 2 guests, 3x = 3",
        "guests. Two workloads (tests/analyze/accuracy_cases.py, SCENARIOS):",
        "- **no-ple**: PLE off, 4 locks, critical sections exponential with mean 5 us, 50 us of",
        "  work between them, 1 s per run;",
        "- **ple**: PLE on (4096-cycle window, KVM directed yield), 2 locks of which one is hot,",
        "  lognormal 2 us critical sections, 20 us of work, 0.25 s per run.",
        "",
        f"**The sample.** A case pools simulator runs of consecutive seeds from {FIRST_SEED}, adding runs",
        f"until they hold at least {TARGET_INCIDENTS} true harmful LHP incidents (one incident is then at",
        f"most 1% of recall) or total {EVENT_BUDGET:,} simulated events (the bound that keeps the test",
        "near 20 s on a 2-core machine). The stopping rule reads the ground truth only, never the analyzer's",
        "results. Precision and recall count matched incidents over all runs of a case; errors are",
        "(analyzer's sum over the runs - truth's sum) / truth's sum. Earlier versions of this page",
        "used the one run of seed 21 per case (2 to 116 true incidents); the workloads are unchanged.",
        "",
        "The analyzer sees each run through the views a real capture would give",
        "(pvtrace.simulate.views.select_view): **merged** (host scheduler + kvm events and guest",
        "`lock:contention_*`; holders inferred), **host** only and **guest** only. LHP precision/recall",
        "match harmful incidents by VM, lock, holder and overlapping time.",
        "",
        "## Merged view (inferred holders)",
        "",
        "Waits and vCPU states are seen; holders are inferred (pvtrace/analyze/holders.py, rules in",
        "docs/metrics.md, Inferred holders): a contended acquirer holds until the next acquisition, its",
        "pv kick, or having run the mean hold (kept through a preemption that comes before 3x the",
        "median hold, unless the lock changes hands first, or the siblings then run for more than 3",
        "expected tries of it with nobody contending); on a fifo lock it holds at least while its",
        "queued successor runs without taking the lock. Spin on a lock these holds leave free (on a",
        "fifo lock: the queue head's spin only) had an unseen holder: the vCPU that kicks a waiter,",
        "else the most likely sibling (it ran after the lock's last seen acquisition, took the lock",
        "while running and nobody tried the lock",
        "while it was away; it did not run much longer than a hold inside the spin; directed yields",
        "to it count for it). Hold statistics and the attempt rate come from the trace itself.",
        "",
        "| workload | lock | overcommit | runs (seeds) | harmful LHP (true) | precision | recall | harmful LHP count "
        "| spin waste | LHP waste | LWP waste | n_lwp | n_convoys |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases():
        name, algo, oc = case
        f = figures(*case)
        mark = "" if measured(case) else " \\*"
        lines.append(
            f"| {name} | {algo} | {oc}x | {f['n_runs']} ({_seeds(f)}) | {f['merged_n_lhp_harmful_true']}{mark} | "
            f"{100 * f['merged_lhp_precision']:.1f}% | {100 * f['merged_lhp_recall']:.1f}% | "
            f"{_fmt(f['merged_n_lhp_harmful_err'])} | "
            f"{_fmt(f['merged_waste_err'])} | {_fmt(f['merged_waste_lhp_err'])} | "
            f"{_fmt(f['merged_waste_lwp_err'])} | {_fmt(f['merged_n_lwp_err'])} | {_fmt(f['merged_n_convoys_err'])} |"
        )
    short, waste_short = [], []
    for case in cases():
        name, algo, oc = case
        f = figures(*case)
        target = lhp_target(algo)
        low = [k for k in ("precision", "recall") if f[f"merged_lhp_{k}"] < target]
        if low and measured(case):
            short.append(
                f"{name}/{algo}/{oc}x ({', '.join(low)} under {100 * target:.0f}%, "
                f"{f['merged_n_lhp_harmful_true']} true incidents)"
            )
        if abs(f["merged_waste_err"]) > 0.05:
            waste_short.append(f"{name}/{algo}/{oc}x")
    unmeasured = [f"{n}/{a}/{o}x" for n, a, o in cases() if not measured((n, a, o))]
    lines += [
        "",
        "Targets: harmful-LHP precision and recall >= 95% for tas and ticket, >= 90% for the pv locks;",
        "spin waste within 5%. "
        + (
            "Spin waste: every case meets it. "
            if not waste_short
            else "Spin waste misses in " + ", ".join(waste_short) + ". "
        )
        + (
            f"Precision and recall: every case with {TARGET_INCIDENTS} or more true incidents meets them."
            if not short
            else "Precision and recall miss in: " + "; ".join(short) + "."
        ),
        "",
        f"\\* Fewer than {TARGET_INCIDENTS} true incidents within the event bound, so one incident moves",
        "precision or recall by 100/n points: these figures cannot show whether a 95% (90%) target",
        "is met, and the test checks only that they do not get worse. On the ple workload, PLE with",
        "directed yield cures much of the LHP (some 20-30 harmful incidents per 250 ms run), and the",
        "event bound stops the sample after a few runs. The extended sample below",
        f"measures these cases ({', '.join(unmeasured)}) on more runs once, when this page is generated.",
        "",
    ]
    if with_extended:
        lines += [
            "### Extended sample (not rerun by the test)",
            "",
            f"Merged view only, seeds {EXTENDED_FIRST_SEED} onward until {TARGET_INCIDENTS} true incidents or",
            f"{EXTENDED_MAX_RUNS} runs; generated with `--extended` (several minutes). The inference rules were",
            "developed on seeds 21-28, 101-120 and 201-240. One rule (a holder that waits for the lock",
            "again has released it) was added after a first extended run showed 94.2% precision for",
            "ple/ticket/2x; its cases were studied on seeds 201-240, not on these. The unseen holders'",
            "joint choice per free gap and the weight of a directed yield were developed on guest text",
            "of lhp-demo (seeds 1-6) and 1 s calm text runs (seeds 1-2), and checked on the test's seeds.",
            "Session 8's rules (a stop followed by silence is not held through; an unseen holder ran after",
            "the lock's last seen acquisition) were found on this sample's ple/ticket/2x runs (seeds 1001",
            "and 1005), so that row is not an independent check of them; the other rows are.",
            "",
            "| workload | lock | overcommit | runs | harmful LHP (true) | precision | recall | spin waste |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, algo, oc in cases():
            if measured((name, algo, oc)):
                continue
            e = extended(name, algo, oc)
            lines.append(
                f"| {name} | {algo} | {oc}x | {e['n_runs']} | {e['n_true']} | {100 * e['precision']:.1f}% | "
                f"{100 * e['recall']:.1f}% | {_fmt(e['waste_err'])} |"
            )
        lines += [
            "",
            f"Convoys over more runs: the no-ple tas rows above are one run each (seed {FIRST_SEED}),",
            "whose convoy count misses 10%. The same cases over seeds",
            f"{FIRST_SEED}-{FIRST_SEED + SPREAD_RUNS - 1} (the test's seeds; 1 s runs) give the",
            "spread between runs and the pooled error:",
            "",
            "| workload | lock | overcommit | runs | convoys (true) | pooled error | per-run errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, algo, oc in SPREAD_CASES:
            c = convoy_spread(name, algo, oc)
            lines.append(
                f"| {name} | {algo} | {oc}x | {SPREAD_RUNS} | {c['n_true']} | {_fmt(c['pooled'])} | "
                f"{_fmt(c['min'])} to {_fmt(c['max'])} |"
            )
        lines.append("")
    lines += [
        "Spin totals (`spin_ns`, `wait_halted_ns`, `wait_preempted_ns`) and `n_contended` are exact",
        "at this level (waits and vCPU states are both seen). `n_lhp` is unavailable: an incident",
        "no waiter saw leaves no trace without lock acquire/release events. Convoys end at",
        "uncontended acquisitions, which are invisible unless an unseen holder is inferred: on fifo",
        "locks every queue head that spins on a seemingly free lock reveals one. On tas locks a take",
        "while the waiters are preempted leaves no trace, so a free stretch between holds in which the",
        "free-running siblings most likely tried the lock (at the attempt rate) ends the run of",
        "hand-offs, and an unseen holder whose spin the previous holder more likely explains, still",
        "holding, does not (docs/metrics.md, Unseen takes). Without that rule, tas convoys came out",
        "+27% and +78% without PLE and -24% and -26% with it.",
        "",
        "The host-only and guest-only figures below are those of each case's first run (seed",
        f"{FIRST_SEED}).",
        "",
        "## Host-only view",
        "",
        "Spin is estimated from PAUSE exits: one PLE window of spin per exit (the window from",
        "`kvm_ple_window_update`, else KVM's 4096 cycles, at an assumed 3 GHz); spin waste (LHP and",
        "LWP together, `extra.spin_waste_ns`) is that spin at exits while another vCPU of the guest",
        "was preempted. Spin shorter than a window ends without an exit and is missed, so spin is",
        "underestimated; at 2x-3x overcommit some sibling is nearly always preempted, so waste is",
        "overestimated. `waste_lhp_ns`/`waste_lwp_ns` are unavailable. Without PLE the host sees",
        "no spinning at all.",
        "",
        "| workload | lock | overcommit | spin | spin waste | pause exits |",
        "|---|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        for algo in ALGORITHMS:
            for oc in OVERCOMMITS:
                f = figures(name, algo, oc)
                lines.append(
                    f"| {name} | {algo} | {oc}x | {_fmt(f['host_spin_err'])} | {_fmt(f['host_spin_waste_err'])} | "
                    f"{_fmt(f['host_n_pause_exits_err'])} |"
                )
    lines += [
        "",
        "## Guest-only view",
        "",
        "A guest capture without the scheduler ticks (`record --guest --no-ticks`, perf). Waits per",
        "lock are exact (contention count, wait times and their percentiles); how much of",
        "a wait was spin, halt or preemption is not knowable from inside the guest, so spin and",
        "waste are unavailable. The last column shows how far `wait` is from `spin`.",
        "",
        "| workload | lock | overcommit | n_contended | total wait | spin / wait (truth) |",
        "|---|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        for algo in ALGORITHMS:
            for oc in OVERCOMMITS:
                f = figures(name, algo, oc)
                share = f["guest_spin_share_of_wait"]
                lines.append(
                    f"| {name} | {algo} | {oc}x | {_fmt(f['guest_n_contended_err'])} | {_fmt(f['guest_wait_err'])} | "
                    f"{'-' if share is None else f'{100 * share:.1f}%'} |"
                )
    from guest_accuracy_cases import section

    return "\n".join(lines) + "\n\n" + section()


# The figures test_accuracy.py records per case: the sample (exact), scores (higher is better)
# and errors (closer to 0 is better).
SAMPLE_KEYS = ("n_runs", "merged_n_lhp_harmful_true")
SCORE_KEYS = ("merged_lhp_precision", "merged_lhp_recall")
ERROR_KEYS = (
    "merged_n_lhp_harmful_err",
    "merged_waste_err",
    "merged_n_convoys_err",
    "host_spin_err",
    "host_spin_waste_err",
    "guest_n_contended_err",
    "guest_wait_err",
)
RECORDED_KEYS = SAMPLE_KEYS + SCORE_KEYS + ERROR_KEYS


def recorded() -> str:
    """The RECORDED table of test_accuracy.py, as Python source, from the figures of every case."""
    lines = ["RECORDED = {"]
    for case in sorted(cases()):
        f = figures(*case)
        lines.append(f"    {case!r}: {{")
        lines += [f"        {k!r}: {f[k]!r}," for k in RECORDED_KEYS]
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines).replace("'", '"') + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--recorded"]:
        sys.stdout.write(recorded())
    else:
        sys.stdout.write(report(with_extended="--extended" in sys.argv[1:]))
