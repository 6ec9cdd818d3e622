"""Accuracy on what users have: rendered text analyzed with default options, against the truth of
the same window. Shared by test_text_accuracy.py (small runs in CI) and the command that writes
the tables of docs/accuracy.md ("On rendered text"):

    python tests/analyze/text_accuracy.py > /tmp/text-accuracy.md          # text table, offsets table
    python tests/analyze/text_accuracy.py --kinds > /tmp/lock-kinds.md     # lock kind table
    python tests/analyze/text_accuracy.py --long > /tmp/long.md            # 1 s runs, ns and us text
    python tests/analyze/text_accuracy.py --offsets-long > /tmp/offsets.md # clock offsets on 1 s runs
    python tests/analyze/text_accuracy.py --presets > /tmp/presets.md      # the bundled presets

Every figure is computed from runs: the simulator's truth (cut to the text's window,
pvtrace.simulate.truth_window) and the analysis of the files `pvtrace generate` would write.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from pvtrace.analyze import analyze
from pvtrace.analyze.accuracy import incident_counts, pooled, relative_error, scores_of
from pvtrace.ingest.clock_estimate import estimate_offsets
from pvtrace.ingest.load import load
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario, load_preset, preset_names
from pvtrace.simulate.truth_window import cut_truth
from pvtrace.simulate.views import select_view

ALGORITHMS = ("tas", "virt-tas", "ticket", "qspinlock", "pv-ticket", "pv-qspinlock")
FORMATS = ("ftrace", "trace-cmd", "perf")
# 4 pCPUs, 2 guests of 4 vCPUs (2x overcommit); PLE off and on; a busy workload (few locks, short
# critical sections) and a calm one.
WORKLOADS: dict[str, dict] = {
    "busy": {
        "vm": {"locks": 2, "lock_skew": 1.0, "compute_ns": 20_000, "hold_ns": 2_000, "hold_dist": "lognormal"}
    },
    "calm": {"vm": {"locks": 4, "compute_ns": 50_000, "hold_ns": 5_000, "hold_dist": "exp"}},
}
LHP_KEY = ["vm", "holder"]  # ftrace hashes lock addresses (%p): match incidents by VM and holder


def scenario(workload: str, algorithm: str, ple: bool, duration_ns: int) -> Scenario:
    s = {k: dict(v) for k, v in WORKLOADS[workload].items()}
    s["vm"].update(vcpus=4, count=2)
    return Scenario().replace(
        lock={"algorithm": algorithm},
        host={"pcpus": 4},
        hypervisor={"ple": ple},
        run={"duration_ns": duration_ns},
        **s,
    )


def _text_files(trace, fmt: str, view: str, where: Path) -> list[Path]:
    files = write_rendered(trace, fmt, view, where / f"run-{fmt}-{view}.txt")
    return [f for f in files if f.suffix == ".txt" and f.stat().st_size]


def text_run(trace, fmt: str, where: Path) -> dict:
    """Merged text of one run in one format, analyzed with defaults, against the truth of its window."""
    files = _text_files(trace, fmt, "merged", where)
    loaded = load(files)
    a = analyze(loaded)
    true_kind = {vm: info.lock_kind for vm, info in trace.meta.vms.items()}
    # the same text with the lock kind given (--lock-kind): what the inference gets once the kind is known
    given_a = analyze(loaded, lock_kind=next(iter(true_kind.values())))
    given = given_a.summary.totals
    s = a.summary
    t0, t1 = s.extra["t_start"], s.extra["t_end"]
    truth = cut_truth(trace, t0, t1 + 1)  # the text's window includes its last event
    tt, found = truth.totals, s.totals
    kinds = a.table("lock_kinds").filter(pl.col("n_handoffs") >= 20)
    right = kinds.filter(pl.col("kind") == pl.col("vm").replace_strict(true_kind, default=None)).height
    wrong = kinds.filter(
        (pl.col("kind") != "undecided")
        & (pl.col("kind") != pl.col("vm").replace_strict(true_kind, default=None))
    ).height
    waste_found = (
        found["waste_lhp_ns"] + found["waste_lwp_ns"]
        if "waste_lhp_ns" in found and "waste_lwp_ns" in found
        else None
    )
    return {
        "spin": (found.get("spin_ns"), tt["spin_ns"]),
        "waste": (waste_found, tt["waste_lhp_ns"] + tt["waste_lwp_ns"]),
        "convoys": (found.get("n_convoys"), tt["n_convoys"]),
        "waste_given": (
            given["waste_lhp_ns"] + given["waste_lwp_ns"],
            tt["waste_lhp_ns"] + tt["waste_lwp_ns"],
        ),
        "convoys_given": (given["n_convoys"], tt["n_convoys"]),
        "partial": bool(s.extra.get("partial")),
        "convoys_partial": "n_convoys" in (s.extra.get("partial") or {}),
        "lhp": incident_counts(
            a.table("lhp_incidents").filter(pl.col("harmful")),
            truth.lhp_incidents.filter(pl.col("harmful")),
            LHP_KEY,
        )
        if "n_lhp_harmful" in found
        else None,
        "lhp_given": incident_counts(
            given_a.table("lhp_incidents").filter(pl.col("harmful")),
            truth.lhp_incidents.filter(pl.col("harmful")),
            LHP_KEY,
        ),
        "kinds": (right, wrong, kinds.height),
        "synchronized": (s.extra.get("clock") or {}).get("synchronized", True),
    }


def run_case(
    workload: str,
    algorithm: str,
    ple: bool,
    seeds: tuple[int, ...],
    duration_ns: int,
    formats: tuple[str, ...] = FORMATS,
) -> dict:
    """Every format's merged-text figures of one case, pooled over seeds."""
    return scenario_runs(scenario(workload, algorithm, ple, duration_ns), seeds, formats)


def scenario_runs(s: Scenario, seeds: tuple[int, ...], formats: tuple[str, ...] = FORMATS) -> dict:
    """Every format's merged-text figures of one scenario: {format: one text_run per seed}."""
    out: dict = {}
    for seed in seeds:
        trace, _ = simulate_trace(s, seed=seed)
        with tempfile.TemporaryDirectory(prefix="pvtrace-acc-") as tmp:
            for fmt in formats:
                out.setdefault(fmt, []).append(text_run(trace, fmt, Path(tmp)))
    return out


def figures(runs: list[dict]) -> dict:
    """Pooled figures of one (case, format): errors of sums over runs, LHP precision/recall, kinds."""

    def err(key: str) -> float | None:
        if any(r[key][0] is None for r in runs):
            return None
        return relative_error(sum(r[key][0] for r in runs), sum(r[key][1] for r in runs))

    lhp = [r["lhp"] for r in runs if r["lhp"] is not None]
    scores = scores_of(pooled(lhp)) if lhp else None
    return {
        "spin_err": err("spin"),
        "waste_err": err("waste"),
        "convoy_err": err("convoys"),
        "waste_given_err": err("waste_given"),
        "convoy_given_err": err("convoys_given"),
        "partial": any(r["partial"] for r in runs),
        "convoys_partial": any(r["convoys_partial"] for r in runs),
        "lhp": scores,
        "lhp_given": scores_of(pooled([r["lhp_given"] for r in runs])),
        "kinds_right": sum(r["kinds"][0] for r in runs),
        "kinds_wrong": sum(r["kinds"][1] for r in runs),
        "kinds_n": sum(r["kinds"][2] for r in runs),
        "synchronized": all(r["synchronized"] for r in runs),
    }


def offset_errors(seeds: tuple[int, ...], fmt: str, duration_ns: int, drift_ppm: float = 0.0) -> list[dict]:
    """The offset estimator on merged text (no offsets file), random offsets; with drift_ppm, vm0's
    guest clock runs fast by that much and vm1's slow (rendered so: the printer cuts the drifting
    clock's digits, as a kernel would)."""
    rng = np.random.default_rng(7)
    rows = []
    for seed in seeds:
        offsets = tuple(int(x) for x in -rng.integers(1_000_000_000, 100_000_000_000, size=2))
        s = replace(scenario("busy", "ticket", True, duration_ns))
        s = s.replace(vm={"clock_offsets_ns": offsets})
        trace, _ = simulate_trace(s, seed=seed)
        drifts = {"vm0": drift_ppm, "vm1": -drift_ppm}
        trace.meta.clock["guest_drift_ppm"] = drifts  # guest = host - offset + ppm * 1e-6 * host
        with tempfile.TemporaryDirectory(prefix="pvtrace-clk-") as tmp:
            if fmt == "trace-cmd":  # a merged report is on the host clock: host and guest reports apart
                files = _text_files(trace, fmt, "host", Path(tmp)) + _text_files(
                    trace, fmt, "guest", Path(tmp)
                )
            else:
                files = _text_files(trace, fmt, "merged", Path(tmp))
            ev = load(files, guest_offset_ns={"vm0": 0, "vm1": 0}).events  # guests kept on their clocks
        guest = ev.filter(pl.col("origin") == "guest").select(pl.col("vm").cast(pl.String), "vcpu", "ts")
        host = ev.filter(pl.col("origin") == "host").select(
            pl.col("vm").cast(pl.String), "vcpu", "kind", "ts"
        )
        for vm, est in estimate_offsets(host, guest).items():
            true = dict(zip(("vm0", "vm1"), offsets, strict=True))[vm]
            p = drifts[vm] / 1e6
            ok = not isinstance(est, str)
            # the true line: host = (guest + offset) / (1 + p); its offset at the estimate's instant
            true_at = (est.at_ns + true) / (1 + p) - est.at_ns if ok else None
            rows.append(
                {
                    "seed": seed,
                    "vm": vm,
                    "error_ns": round(est.offset_ns - true_at) if ok else None,
                    "uncertainty_ns": est.uncertainty_ns if ok else None,
                    "drift_error_ppm": est.drift_ppm - p / (1 + p) * 1e6 if ok else None,
                    "drift_uncertainty_ppm": est.drift_uncertainty_ppm if ok else None,
                    "span_uncertainty_ns": est.span_uncertainty_ns if ok else None,
                    "why": None if ok else est,
                }
            )
    return rows


def _pct(x: float | None) -> str:
    return "unavailable" if x is None else f"{100 * x:+.1f}%"


def _lhp_cells(lhp: dict | None) -> str:
    """precision | recall | found / true | of a case's harmful LHP incidents."""
    if not lhp:
        return "unavailable | unavailable | - | "
    return (
        f"{100 * lhp['precision']:.1f}% | {100 * lhp['recall']:.1f}% | {lhp['n_found']} / {lhp['n_true']} | "
    )


def _flagged(err: float | None, partial: bool) -> str:
    """An error cell, marked where a run's summary said the figure is partial (waste: any partial;
    convoys: n_convoys listed, locks of undecided kind whose convoys are not counted)."""
    return _pct(err) + (" (partial)" if partial and err is not None else "")


def markdown(seeds: tuple[int, ...], duration_ns: int, workloads: tuple[str, ...] = tuple(WORKLOADS)) -> str:
    lines = [
        "| workload | PLE | lock | format | spin | waste (LHP+LWP) | LHP precision | LHP recall | harmful LHP found / true "
        "| convoys | waste, kind given | convoys, kind given "
        "| lock kind right / decided wrong / locks with >= 20 hand-offs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in workloads:
        for ple in (False, True):
            for algo in ALGORITHMS:
                runs = run_case(workload, algo, ple, seeds, duration_ns)
                for fmt in FORMATS:
                    f = figures(runs[fmt])
                    lines.append(
                        f"| {workload} | {'on' if ple else 'off'} | {algo} | {fmt} | {_pct(f['spin_err'])} | "
                        f"{_flagged(f['waste_err'], f['partial'])} | "
                        + _lhp_cells(f["lhp"])
                        + f"{_flagged(f['convoy_err'], f['convoys_partial'])} | {_pct(f['waste_given_err'])} | {_pct(f['convoy_given_err'])} | "
                        + f"{f['kinds_right']} / {f['kinds_wrong']} / {f['kinds_n']} |"
                    )
                print(f"done {workload} ple={ple} {algo}", file=sys.stderr)
    return "\n".join(lines)


def offsets_markdown(
    seeds: tuple[int, ...],
    duration_ns: int,
    formats: tuple[str, ...] = FORMATS,
    drifts: tuple[float, ...] = (0.0, 1.0, 10.0),
) -> str:
    lines = [
        "| format | drift | estimates | max abs error | median abs error | max uncertainty "
        "| error within its uncertainty | drift within its uncertainty | max drift uncertainty "
        "| max span uncertainty | not settled |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fmt in formats:
        for drift in drifts:
            rows = [r for r in offset_errors(seeds, fmt, duration_ns, drift) if r["error_ns"] is not None]
            errs = [abs(r["error_ns"]) for r in rows]
            covered = sum(abs(r["error_ns"]) <= r["uncertainty_ns"] for r in rows)
            drift_covered = sum(abs(r["drift_error_ppm"]) <= r["drift_uncertainty_ppm"] + 1e-9 for r in rows)
            cells = (
                f"{max(errs):,} ns | {int(np.median(errs)):,} ns | {max(r['uncertainty_ns'] for r in rows):,} ns | "
                f"{covered} of {len(rows)} | {drift_covered} of {len(rows)} | "
                f"{max(r['drift_uncertainty_ppm'] for r in rows):.1f} ppm | "
                f"{max(r['span_uncertainty_ns'] for r in rows):,} ns | "
                if rows
                else "- | - | - | - | - | - | - | "
            )
            total = 2 * len(seeds)
            lines.append(f"| {fmt} | {drift:g} ppm | {len(rows)} of {total} | {cells}{total - len(rows)} |")
    return "\n".join(lines)


# Contention levels of the lock kind measurement (4 pCPUs, 4-vCPU guests, 1 or 2 guests).
KIND_LEVELS: dict[str, dict] = {
    "low": {"vm": {"vcpus": 4, "locks": 8, "compute_ns": 200_000, "hold_ns": 2_000}},
    "medium": {"vm": {"vcpus": 4, "locks": 4, "compute_ns": 50_000, "hold_ns": 5_000, "hold_dist": "exp"}},
    "high": {
        "vm": {
            "vcpus": 4,
            "locks": 2,
            "lock_skew": 1.0,
            "compute_ns": 20_000,
            "hold_ns": 2_000,
            "hold_dist": "lognormal",
        }
    },
}


def lock_kind_rows(seeds: tuple[int, ...], duration_ns: int) -> pl.DataFrame:
    """Inferred kind of every lock (merged view, kind metadata ignored) against the algorithm's."""
    rows = []
    for level, base in KIND_LEVELS.items():
        for count in (1, 2):
            for ple in (False, True):
                for algo in ALGORITHMS:
                    for seed in seeds:
                        s = {k: dict(v) for k, v in base.items()}
                        s["vm"]["count"] = count
                        sc = Scenario().replace(
                            lock={"algorithm": algo},
                            host={"pcpus": 4},
                            hypervisor={"ple": ple},
                            run={"duration_ns": duration_ns},
                            **s,
                        )
                        trace, _ = simulate_trace(sc, seed=seed)
                        kinds = analyze(select_view(trace, "merged"), lock_kind="unknown").table("lock_kinds")
                        truth = trace.meta.vms["vm0"].lock_kind
                        rows += [
                            {"level": level, "guests": count, "ple": ple, "algo": algo, "truth": truth, **r}
                            for r in kinds.select("kind", "n_handoffs", "in_order_pct").iter_rows(named=True)
                        ]
    return pl.DataFrame(rows, infer_schema_length=None)


def lock_kind_markdown(seeds: tuple[int, ...], duration_ns: int) -> str:
    df = lock_kind_rows(seeds, duration_ns)
    lines = [
        "| algorithm | true kind | locks with >= 20 hand-offs | right | undecided | wrong | locks with < 20 "
        "| their VM's kind: right | wrong | undecided | in-order % (min-max, >= 20) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algo in ALGORITHMS:
        d = df.filter(pl.col("algo") == algo)
        big = d.filter(pl.col("n_handoffs") >= 20)
        small = d.filter(pl.col("n_handoffs") < 20)
        right = big.filter(pl.col("kind") == pl.col("truth")).height
        und = big.filter(pl.col("kind") == "undecided").height
        wrong = big.height - right - und
        rng = f"{big['in_order_pct'].min():.1f}-{big['in_order_pct'].max():.1f}" if big.height else "-"
        s_right = small.filter(pl.col("kind") == pl.col("truth")).height
        s_und = small.filter(pl.col("kind") == "undecided").height
        lines.append(
            f"| {algo} | {d['truth'][0]} | {big.height} | {right} | {und} | {wrong} | {small.height} "
            f"| {s_right} | {small.height - s_right - s_und} | {s_und} | {rng} |"
        )
    return "\n".join(lines)


def long_markdown(
    seeds: tuple[int, ...], duration_ns: int, formats: tuple[str, ...] = ("trace-cmd", "ftrace")
) -> str:
    """Longer runs, where most locks see 20 hand-offs: the targets with default options, as a trace
    of a second or more gives them, on nanosecond (trace-cmd) and microsecond (ftrace) text."""
    lines = [
        "| workload | PLE | lock | format | spin | waste (LHP+LWP) | LHP precision | LHP recall "
        "| harmful LHP found / true | convoys | lock kind right / decided wrong / locks with >= 20 hand-offs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_algorithm: dict[tuple[str, str], list[dict]] = {}
    for workload in WORKLOADS:
        for ple in (False, True):
            for algo in ALGORITHMS:
                runs = run_case(workload, algo, ple, seeds, duration_ns, formats)
                for fmt in formats:
                    f = figures(runs[fmt])
                    lines.append(
                        f"| {workload} | {'on' if ple else 'off'} | {algo} | {fmt} | {_pct(f['spin_err'])} | "
                        + f"{_flagged(f['waste_err'], f['partial'])} | "
                        + _lhp_cells(f["lhp"])
                        + f"{_flagged(f['convoy_err'], f['convoys_partial'])} | {f['kinds_right']} / {f['kinds_wrong']} / {f['kinds_n']} |"
                    )
                    per_algorithm.setdefault((algo, fmt), []).extend(r["lhp"] for r in runs[fmt] if r["lhp"])
                print(f"done {workload} ple={ple} {algo}", file=sys.stderr)
    return "\n".join(lines) + "\n\n" + pooled_markdown(per_algorithm)


def presets_markdown(seeds: tuple[int, ...], formats: tuple[str, ...] = ("trace-cmd", "ftrace")) -> str:
    """The bundled presets (their own shapes, workloads and hypervisor settings), each with its own
    lock algorithm and with every other, as `pvtrace generate --preset P [--lock L]` writes them."""
    lines = [
        "| preset | lock | format | spin | waste (LHP+LWP) | LHP precision | LHP recall "
        "| harmful LHP found / true | LHP, kind given: precision / recall | convoys "
        "| lock kind right / decided wrong / locks with >= 20 hand-offs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_algorithm: dict[tuple[str, str], list[dict]] = {}
    for name in preset_names():
        base = load_preset(name)
        own = base.lock.algorithm
        for algo in (own, *(a for a in ALGORITHMS if a != own)):
            runs = scenario_runs(base.replace(lock={"algorithm": algo}), seeds, formats)
            for fmt in formats:
                f = figures(runs[fmt])
                given = f["lhp_given"]
                lines.append(
                    f"| {name} | {algo}{' (preset)' if algo == own else ''} | {fmt} | {_pct(f['spin_err'])} | "
                    + f"{_flagged(f['waste_err'], f['partial'])} | "
                    + _lhp_cells(f["lhp"])
                    + (
                        f"{100 * given['precision']:.1f}% / {100 * given['recall']:.1f}% | "
                        if given
                        else "- | "
                    )
                    + f"{_flagged(f['convoy_err'], f['convoys_partial'])} | {f['kinds_right']} / {f['kinds_wrong']} / {f['kinds_n']} |"
                )
                per_algorithm.setdefault((algo, fmt), []).extend(r["lhp"] for r in runs[fmt] if r["lhp"])
            print(f"done {name} {algo}", file=sys.stderr)
    return "\n".join(lines) + "\n\n" + pooled_markdown(per_algorithm)


def pooled_markdown(per_algorithm: dict[tuple[str, str], list[dict]]) -> str:
    """Harmful LHP precision and recall per lock algorithm and format, every case's incidents
    together (workloads, PLE on and off, seeds): the acceptance's "for every lock algorithm" read
    over the suite, beside the per-case table that is the stricter reading. Each with its 95%
    Wilson interval: a hundred incidents pin a proportion near 95% to about +-4 points, so two
    seeds' figures move by a few points from one pair of seeds to the next."""
    lines = [
        "| lock | format | LHP precision (95% interval) | LHP recall (95% interval) | harmful LHP found / true |",
        "|---|---|---|---|---|",
    ]
    for (algo, fmt), counts in per_algorithm.items():
        c = pooled(counts)
        lines.append(
            f"| {algo} | {fmt} | {_share(c['found_matched'], c['n_found'])} | "
            f"{_share(c['true_matched'], c['n_true'])} | {c['n_found']} / {c['n_true']} |"
        )
    return "\n".join(lines)


def _share(k: int, n: int) -> str:
    """k of n as a percentage with its 95% Wilson score interval."""
    if n == 0:
        return "-"
    z = 1.96
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * p:.1f}% ({100 * (centre - half):.1f}-{100 * (centre + half):.1f})"


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--kinds"]:
        print(lock_kind_markdown((1, 2, 3), 100_000_000))
    elif args == ["--long"]:
        print(long_markdown((1, 2), 1_000_000_000))
    elif args == ["--offsets"]:
        print(offsets_markdown(tuple(range(1, 11)), 100_000_000))
    elif args == ["--offsets-long"]:  # 1 s runs: drift shows (perf prints as ftrace does)
        print(offsets_markdown(tuple(range(1, 6)), 1_000_000_000, ("ftrace", "trace-cmd"), (0.0, 10.0)))
    elif args == ["--presets"]:
        print(presets_markdown((101, 202, 303, 404, 505, 606)))
    elif args[:1] == ["--workload"]:  # one workload's rows (to run workloads side by side)
        print(markdown((1, 2), 100_000_000, tuple(args[1:])))
    else:
        print(markdown((1, 2), 100_000_000))
        print()
        print(offsets_markdown(tuple(range(1, 11)), 100_000_000))
