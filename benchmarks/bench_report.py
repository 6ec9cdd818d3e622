"""Report size and browser load time for a 10M-event trace.

    python benchmarks/bench_report.py             # simulate (cached) a >= 10M-event run, analyze, report
    python benchmarks/bench_report.py --quick     # a ~1.4M-event run
    python benchmarks/bench_report.py --synthetic # a hand-made Analysis of 10M-event scale (no simulator)

The run (pv-ticket guests with PLE, yield-to-holder, a background host task; 3 VMs x 4
vCPUs on 4 pCPUs) is simulated once and cached under benchmarks/.data/. The benchmark
analyzes it, writes the report page (default timeline window, then the whole trace as
the window), and opens each page in headless chromium (no network) 3 times: the median
time from navigation start to the moment every chart has rendered (the page records
it with performance.now()) is the load time; chromium's launch-to-DOM-dump wall time
and an empty page's are printed next to it (the browser's own start-up cost). On a
shared machine quote medians and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / ".data"
sys.path.insert(0, str(ROOT / "tests" / "report"))

from chromium import check_page, chromium_path, count_specs  # noqa: E402
from scenarios import pv_ple_run  # noqa: E402

LIMIT_MB = 5.0
LIMIT_S = 5.0


def simulated(duration_ns: int) -> Path:
    from pvtrace.simulate.run import simulate_to_parquet

    path = DATA / f"report-bench-{duration_ns}.parquet"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        simulate_to_parquet(pv_ple_run(duration_ns), path, seed=7)
        print(f"simulated {path.name} in {time.perf_counter() - t:.1f} s")
    return path


def load(args: argparse.Namespace):
    """(trace, analysis, what) for the chosen input."""
    if args.synthetic:
        from report_fakes import ten_million_event_scale

        trace, analysis = ten_million_event_scale()
        return trace, analysis, "synthetic analysis of 10M-event scale"
    from pvtrace.analyze import analyze
    from pvtrace.trace import read_trace

    trace = read_trace(simulated(1_000_000_000 if args.quick else 7_500_000_000))
    t = time.perf_counter()
    analysis = analyze(trace)
    print(f"analyzed {trace.events.height:,} events in {time.perf_counter() - t:.1f} s")
    return trace, analysis, f"simulator run of {trace.events.height:,} events"


def load_time(page: Path, repeats: int) -> tuple[float, float, list[str]]:
    """Medians of chromium's launch-to-DOM-dump wall time and of the page's own navigation-to-rendered time (s)."""
    walls, renders, problems = [], [], []
    for _ in range(repeats):
        result = check_page(page)
        walls.append(result.wall_s)
        renders.append(float(result.status.get("data-render-ms", "nan")) / 1e3)
        problems = result.problems(count_specs(page))
    return statistics.median(walls), statistics.median(renders), problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 1 s simulated run (~1.4M events)")
    parser.add_argument(
        "--synthetic", action="store_true", help="a hand-made analysis instead of the simulator"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from pvtrace.report import write_report

    trace, analysis, what = load(args)
    print(
        what + "; tables: " + ", ".join(f"{k} {v.height:,}" for k, v in analysis.tables.items() if v.height)
    )
    DATA.mkdir(parents=True, exist_ok=True)
    pages = []
    for label, window in (("default window", None), ("whole trace", ":")):
        path = DATA / f"report-bench-{'whole' if window else 'default'}.html"
        t = time.perf_counter()
        write_report(trace, analysis, path, window=window, force=True)
        print(f"{label}: wrote {path.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - t:.2f} s")
        pages.append((label, path))

    if chromium_path() is None:
        print("chromium not installed: load times not measured")
        return
    empty = DATA / "report-bench-empty.html"
    empty.write_text(
        '<!DOCTYPE html><html><body><div id="pvtrace-status" data-state="done"></div></body></html>'
    )
    base = statistics.median(check_page(empty).wall_s for _ in range(args.repeats))
    print(f"chromium launch to DOM dump of an empty page, median of {args.repeats}: {base:.2f} s")
    ok = True
    for label, path in pages:
        size_mb = path.stat().st_size / 1e6
        wall, rendered, problems = load_time(path, args.repeats)
        verdict = "OK" if size_mb < LIMIT_MB and rendered < LIMIT_S and not problems else "FAIL"
        ok &= verdict == "OK"
        print(
            f"{label}: {size_mb:.2f} MB; every chart rendered {rendered:.2f} s after navigation start "
            f"(median of {args.repeats}); chromium launch to rendered DOM {wall:.2f} s [{verdict}]"
        )
        for p in problems:
            print(f"  problem: {p}")
    loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"targets: page < {LIMIT_MB} MB, rendered < {LIMIT_S} s: {'met' if ok else 'NOT met'} (load average {loadavg})"
    )


if __name__ == "__main__":
    main()
