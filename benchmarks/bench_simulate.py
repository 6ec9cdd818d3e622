"""Simulator throughput and memory: events/s of `pvtrace generate`, and peak RSS.

    python benchmarks/bench_simulate.py            # 5 runs per case
    python benchmarks/bench_simulate.py --runs 3 --quick

Each run is a fresh subprocess (its ru_maxrss is the peak memory). Two modes:
`engine` runs the simulation with events decoded into canonical batches and
dropped; `parquet` streams them to a Parquet file as `pvtrace generate` does.
The median over runs is reported as events per wall second and per CPU second
(on a shared machine wall time also counts other processes' load). A last pair
of runs shows that peak memory does not grow with the run's length.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    # mostly uncontended compute / lock / unlock: the engine's bulk path
    "low-contention": (
        "default",
        {
            "host": {"pcpus": 4},
            "vm": {"count": 2, "vcpus": 4, "ops": 100_000, "compute_ns": 100_000, "locks": 64},
            "hypervisor": {"ple": False},
        },
    ),
    # ticket collapse under 2x overcommit with PLE and directed yield: the contended paths
    "overcommit-2x": ("overcommit-2x", {"vm": {"ops": 20_000}}),
    # hot locks, LHP, LWP, convoys
    "lhp-demo": ("lhp-demo", {"run": {"duration_ns": 3_000_000_000}}),
}
QUICK = {
    "low-contention": {"vm": {"ops": 25_000}},
    "overcommit-2x": {"vm": {"ops": 5_000}},
    "lhp-demo": {"run": {"duration_ns": 800_000_000}},
}


def scenario(case: str, quick: bool):
    from pvtrace.simulate.scenario import Scenario, load_preset

    preset, changes = CASES[case]
    s = Scenario() if preset == "default" else load_preset(preset)
    s = s.replace(**changes)
    return s.replace(**QUICK[case]) if quick else s


def child(case: str, mode: str, quick: bool, duration_ns: int | None) -> None:
    """One run; prints a JSON line."""
    from pvtrace.simulate.run import simulate, simulate_to_parquet

    s = scenario(case, quick)
    if duration_ns is not None:
        s = s.replace(run={"duration_ns": duration_ns})
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "engine":
        run = simulate(s, lambda batch: None)
    else:
        with tempfile.TemporaryDirectory() as d:
            run = simulate_to_parquet(s, Path(d) / "run.parquet")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"events": run.n_events, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak_mib}
        )
    )


def spawn(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def python_speed() -> float:
    """Seconds a fixed pure-Python loop takes here now (to compare machines and load)."""
    start = time.perf_counter()
    x = 0
    for i in range(3_000_000):
        x += i
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        case, mode, quick = a.child[0], a.child[1], a.child[2] == "1"
        child(case, mode, quick, int(a.child[3]) if len(a.child) > 3 else None)
        return
    print(
        f"python loop reference: {python_speed():.3f} s for 3M additions (about 0.1 s on an idle modern core)"
    )
    print(f"{'case':16} {'mode':8} {'events':>10} {'ev/s wall':>12} {'ev/s cpu':>12} {'peak MiB':>9}")
    for case in CASES:
        for mode in ("engine", "parquet"):
            runs = [spawn(case, mode, "1" if a.quick else "0") for _ in range(a.runs)]
            ev = runs[0]["events"]
            wall = statistics.median(ev / r["seconds"] for r in runs)
            cpu = statistics.median(ev / r["cpu_seconds"] for r in runs)
            peak = max(r["peak_mib"] for r in runs)
            print(f"{case:16} {mode:8} {ev:>10,} {wall:>12,.0f} {cpu:>12,.0f} {peak:>9.0f}", flush=True)
    print("memory vs run length (lhp-demo to Parquet, one run each):")
    for seconds in (4, 16):
        r = spawn("lhp-demo", "parquet", "0", str(seconds * 1_000_000_000))
        print(f"  {seconds} s simulated: {r['events']:>10,} events, peak {r['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
