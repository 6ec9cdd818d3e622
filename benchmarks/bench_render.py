"""Rendering throughput and memory: a simulator run printed in every text format.

    python benchmarks/bench_render.py            # ~1.3M-event run (host + guest events)
    python benchmarks/bench_render.py --quick    # ~270k events

The run (pv-ticket guests with PLE, yield-to-holder, a background host task; 3 VMs x 4
vCPUs on 4 pCPUs) is simulated once and cached under benchmarks/.data/. Each renderer
then runs in its own subprocess (peak memory = its ru_maxrss), writing to a file, 3
times; the median wall time is reported as events/s (events of the full run), lines/s and
MB/s, next to the median CPU time (polars uses both cores; on a busy machine wall >> CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scenarios import pv_ple_run

DATA = Path(__file__).resolve().parent / ".data"

CASES = {
    "ftrace-host": ("to_ftrace", {"side": "host"}),
    "ftrace-guest-vm0": ("to_ftrace", {"side": "guest", "vm": "vm0"}),
    "trace-cmd-merged": ("to_trace_cmd_report", {"side": "merged"}),
    "perf-host": ("to_perf_script", {"side": "host"}),
}


def run_path(duration_ns: int) -> Path:
    return DATA / f"render-bench-{duration_ns}.parquet"


def simulate(duration_ns: int) -> Path:
    """Simulate the benchmark run once (cached)."""
    from pvtrace.simulate.run import simulate_to_parquet

    path = run_path(duration_ns)
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    simulate_to_parquet(pv_ple_run(duration_ns), path, seed=7)
    return path


def child(path: str, case: str) -> None:
    """One renderer on one run; prints a JSON line."""
    from pvtrace.simulate import render
    from pvtrace.trace import read_trace

    trace = read_trace(path)
    name, kwargs = CASES[case]
    out_path = DATA / f"out-{case}.txt"
    start, cpu_start = time.perf_counter(), time.process_time()
    with out_path.open("w") as out:
        lines = getattr(render, name)(trace, out, **kwargs)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "events": trace.events.height,
                "lines": lines,
                "bytes": out_path.stat().st_size,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_mib": peak_mib,
            }
        )
    )
    out_path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 0.2 s run instead of 1 s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("RUN", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    path = simulate(200_000_000 if args.quick else 1_000_000_000)
    print(f"run: {path.name}")
    print(
        f"{'case':<18} {'events':>9} {'lines':>9} {'MB':>7} {'median s':>9} {'cpu s':>7} {'Mevents/s':>10} {'Mlines/s':>9} {'MB/s':>7} {'peak MiB':>9}"
    )
    for case in CASES:
        results = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--child", str(path), case],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for _ in range(args.repeats)
        ]
        secs = statistics.median(r["seconds"] for r in results)
        cpu = statistics.median(r["cpu_seconds"] for r in results)
        r = results[0]
        peak = max(x["peak_mib"] for x in results)
        print(
            f"{case:<18} {r['events']:>9} {r['lines']:>9} {r['bytes'] / 1e6:>7.1f} {secs:>9.2f} {cpu:>7.2f} "
            f"{r['events'] / secs / 1e6:>10.2f} {r['lines'] / secs / 1e6:>9.2f} {r['bytes'] / 1e6 / secs:>7.1f} {peak:>9.0f}"
        )


if __name__ == "__main__":
    main()
