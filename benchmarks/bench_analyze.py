"""Analyzer throughput and memory on simulated events already in Parquet.

    python benchmarks/bench_analyze.py              # 10M-event throughput (median of 3) + 50M-event memory run
    python benchmarks/bench_analyze.py --quick      # 2M events, no 50M run
    python benchmarks/bench_analyze.py --events 20000000 --repeat 5 --big 0
    python benchmarks/bench_analyze.py --partitioned 20000000,50000000,100000000 --budget 2G --repeat 1
    python benchmarks/bench_analyze.py --one-vm 10000000 --budget 512M --repeat 3

The input is a busy simulator run (3 VMs of 4 vCPUs on 4 pCPUs, ticket locks, PLE on:
the event mix of heavy lock contention) tiled in time: copy i runs after copy i-1 with its
VMs renamed, so a trace of any size keeps a realistic mix and valid per-VM streams.
Each measurement runs in its own subprocess: a baseline (read the columns, one sort by vCPU
and time), a floor (read the columns, one sort of every event on a packed (vCPU, time) key:
less than any analysis that follows each vCPU's timeline can do), read + analyze() in
memory, analyze_parquet(), which decodes the file once, slice by slice, into per-concept
tables (what `pvtrace analyze` does for a Parquet input), and analyze_parquet() again as the
second run of one process (its memory pages are already mapped: on this machine, a
Firecracker guest, first touch of fresh memory costs several times what it costs on a bare
host).
Then the same run as a real host + guest trace shows it (no lock_acquire/release: holders
inferred), through analyze_parquet(). Throughput = events / wall time; peak memory = the
child's ru_maxrss. The 50M memory run uses analyze_parquet(). --partitioned measures
analyze_parquet() under a memory budget (a group of VMs at a time, analyze/partitioned.py)
at several sizes, and checks its tables against the whole analysis. --one-vm does the same on
one VM of 16 vCPUs (a `pvtrace generate` run tiled in time, the VM kept), which the budget cuts
into time windows (analyze/windows.py). Data goes to benchmarks/.data/ (gitignored) and is reused.
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

import polars as pl

DATA = Path(__file__).resolve().parent / ".data"
BASE_SECONDS = 0.25


def base_trace() -> Path:
    """The simulated run every benchmark input is tiled from."""
    from pvtrace.simulate.run import simulate_to_parquet
    from pvtrace.simulate.scenario import Scenario

    path = DATA / "analyze-base.parquet"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    scenario = Scenario().replace(
        host={"pcpus": 4},
        vm={
            "count": 3,
            "vcpus": 4,
            "locks": 2,
            "lock_skew": 1.0,
            "compute_ns": 20_000,
            "hold_ns": 2_000,
            "hold_dist": "lognormal",
        },
        lock={"algorithm": "ticket"},
        run={"duration_ns": int(BASE_SECONDS * 1e9)},
    )
    simulate_to_parquet(scenario, path, seed=7, force=True)
    return path


def merged_base() -> Path:
    """The base run as a real host + guest trace shows it: no lock_acquire/release, so the
    analysis infers holders (pvtrace/analyze/holders.py)."""
    from pvtrace.simulate.views import select_view
    from pvtrace.trace import read_trace, write_trace

    path = DATA / "analyze-merged-base.parquet"
    if not path.exists():
        write_trace(select_view(read_trace(base_trace()), "merged"), path, force=True)
    return path


def tiled(n_events: int, view: str = "full") -> Path:
    """A trace of at least n_events (of the full view): copies of the base run one after another,
    VMs renamed; `view` merged keeps only what a host + guest trace of it would show."""
    path = DATA / (f"analyze-{n_events}.parquet" if view == "full" else f"analyze-{view}-{n_events}.parquet")
    if path.exists():
        return path
    return _tile(base_trace() if view == "full" else merged_base(), base_trace(), path, n_events, rename=True)


# One VM of 16 vCPUs on as many pCPUs, no host noise, 2 ticket locks taken for 2 us every 50 us:
# its locks are often all free (quiet points to cut it at, analyze/quiet_points.py).
ONE_VM = (
    *("--preset", "seed-table", "--seed", "7", "--set", "vm.vcpus=16", "--set", "host.pcpus=16"),
    *("--set", "host.noise_tasks=0", "--set", "vm.locks=2", "--set", "vm.compute_ns=50000"),
    *("--set", "run.duration_ns=500000000"),
)


def one_vm(n_events: int) -> Path:
    """A trace of one VM with at least n_events: a `pvtrace generate` run tiled in time (the VM
    keeps its name, so it is one VM of n_events)."""
    path = DATA / f"analyze-one-vm-{n_events}.parquet"
    if path.exists():
        return path
    base = DATA / "analyze-one-vm-base.parquet"
    if not base.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pvtrace", "generate", *ONE_VM, "-o", str(base), "--force", "-q"]
        subprocess.run(cmd, check=True)
    return _tile(base, base, path, n_events, rename=False)


def _tile(src: Path, full: Path, path: Path, n_events: int, *, rename: bool) -> Path:
    """Copies of `src` one after another until the copies of `full` (its full view) would hold
    n_events; rename: each copy's VMs get the copy's number."""
    from pvtrace.trace import EventWriter, read_meta

    full_height = pl.scan_parquet(full).select(pl.len()).collect().item()
    meta = read_meta(src)
    base = pl.read_parquet(src)
    span = int(meta.t_end) + 1
    copies = -(-n_events // full_height)
    vms = {}
    with EventWriter(path, force=True) as w:
        for i in range(copies):
            vm = (pl.col("vm").cast(pl.String) + f"-{i}").cast(pl.Categorical()) if rename else pl.col("vm")
            w.write(base.with_columns(pl.col("ts") + i * span, pl.col("seq") + i * base.height, vm))
            vms.update({f"{name}-{i}" if rename else name: info for name, info in meta.vms.items()})
        meta.vms = vms
        meta.t_end = copies * span
        w.close(meta)
    return path


CHILD = """
import gc, json, resource, sys, time
import pvtrace  # first: it sets polars' allocator up, as `pvtrace analyze` runs it
import polars as pl
from pvtrace.analyze import analyze
from pvtrace.analyze.prepare import USED_COLUMNS
from pvtrace.analyze.run import analyze_parquet
from pvtrace.schema import conform_events
from pvtrace.trace import Trace, read_meta
path, mode = sys.argv[1], sys.argv[2]
steps, last = {}, [0.0]
def progress(step):
    now = time.perf_counter()
    steps[step] = now - last[0]
    last[0] = now
t0, c0 = time.perf_counter(), time.process_time()
if mode == "baseline":  # the machine's speed right now: read the same columns, one sort by vCPU and time
    events = pl.read_parquet(path, columns=list(USED_COLUMNS))
    n = events.height
    t1 = time.perf_counter()
    events.sort("vm", "vcpu", "ts").select(pl.col("ts").diff().over("vm", "vcpu").max())
elif mode == "floor":  # read, then one sort of every event by a packed (VM, vCPU, ts) key
    events = pl.read_parquet(path, columns=list(USED_COLUMNS))
    n = events.height
    t1 = time.perf_counter()
    t_min, span = events["ts"].min(), events["ts"].max() - events["ts"].min() + 1
    vcpu = pl.col("vm").to_physical().cast(pl.Int64) * 1024 + pl.col("vcpu").cast(pl.Int64).fill_null(1023)
    events.sort(vcpu * span + pl.col("ts") - t_min)
elif mode == "eager":  # read the columns the analysis uses, then analyze in memory
    events = conform_events(pl.read_parquet(path, columns=list(USED_COLUMNS)))
    t1 = last[0] = time.perf_counter()
    n = analyze(Trace(events=events, meta=read_meta(path)), progress=progress).summary.extra["n_events"]
elif mode == "parts":  # analyze_parquet() under a memory budget: a group of VMs at a time
    from pvtrace.analyze import windows
    from pvtrace.analyze.partitioned import parse_budget
    measure_windows = windows.measure_windows
    def counted(frame, vm, cuts, *rest):  # the windows of each VM cut into them
        steps[vm] = len(cuts) + 1
        return measure_windows(frame, vm, cuts, *rest)
    windows.measure_windows = counted
    n = analyze_parquet(path, memory_budget=parse_budget(sys.argv[3])).summary.extra["n_events"]
    t1 = t0
elif mode == "equal":  # the partitioned analysis against the whole one, table by table
    from polars.testing import assert_frame_equal
    from pvtrace.analyze.partitioned import TIME_ORDER, parse_budget
    whole = analyze_parquet(path, memory_budget=1 << 50)
    parts = analyze_parquet(path, memory_budget=parse_budget(sys.argv[3]))
    n, t1, differ = whole.summary.extra["n_events"], t0, []
    for name, table in whole.tables.items():
        try:
            assert_frame_equal(parts.tables[name], table, check_row_order=name not in TIME_ORDER)
        except AssertionError:
            differ.append(name)
    steps = {"summary_equal": parts.summary == whole.summary, "tables_differ": differ,
             "n_tables": len(whole.tables), "rows": sum(t.height for t in whole.tables.values())}
else:  # analyze_parquet: each concept read from the file on its own (bounded memory)
    if mode == "warm":  # a second run in the same process: the allocator reuses the first's pages
        analyze_parquet(path)
        gc.collect()  # its tables sit in reference cycles: free them before the timed run
        t0, c0 = time.perf_counter(), time.process_time()
    t1 = last[0] = t0
    n = analyze_parquet(path, progress=progress).summary.extra["n_events"]
t2 = time.perf_counter()
if steps and mode in ("eager", "file", "warm"):  # the tables built after the summary (context, perf)
    steps["after the summary"] = t2 - last[0]
print(json.dumps({"events": n, "read_s": t1 - t0, "analyze_s": t2 - t1, "cpu_s": time.process_time() - c0,
                  "steps": steps, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_child(path: Path, mode: str, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode, *extra], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000, help="events in the throughput input")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs (median reported)")
    ap.add_argument("--big", type=int, default=50_000_000, help="events in the memory run (0: skip)")
    ap.add_argument("--quick", action="store_true", help="2M events, 3 runs, no memory run")
    ap.add_argument(
        "--partitioned",
        default="",
        help="events of the memory-vs-size runs under --budget, comma-separated (20000000,50000000,...); "
        "only those runs, with the whole analysis alternating where it fits, and the table check at the first",
    )
    ap.add_argument(
        "--one-vm",
        type=int,
        default=0,
        help="events of one VM cut into time windows by --budget: the partitioned runs on it alone",
    )
    ap.add_argument("--budget", default="2G", help="memory budget of the partitioned runs")
    ap.add_argument("--whole-max", type=int, default=50_000_000, help="largest input also analyzed whole")
    args = ap.parse_args()
    if args.partitioned:
        partitioned_runs([int(x) for x in args.partitioned.split(",")], args)
        return
    if args.one_vm:
        partitioned_runs([args.one_vm], args, make=one_vm)
        return
    if args.quick:
        args.events, args.big = 2_000_000, 0
    t0 = time.perf_counter()
    src = tiled(args.events)
    print(
        f"input: {src} ({pl.scan_parquet(src).select(pl.len()).collect().item():,} events, "
        f"prepared in {time.perf_counter() - t0:.0f} s)"
    )
    # Baseline and analysis runs alternate, so the ratio holds up when other work loads the machine.
    labels = {
        "baseline": "baseline (read + sort)",
        "floor": "read + one packed sort",
        "eager": "read + analyze()",
        "file": "analyze_parquet()",
        "warm": "  the same, warm process",
    }
    runs: dict[str, list[dict]] = {mode: [] for mode in labels}
    for _ in range(args.repeat):
        for mode in labels:
            runs[mode].append(run_child(src, mode))
    total = {mode: statistics.median(r["read_s"] + r["analyze_s"] for r in rs) for mode, rs in runs.items()}
    for mode, label in labels.items():
        rs, n = runs[mode], runs[mode][0]["events"]
        cpu_s = statistics.median(r["cpu_s"] for r in rs)
        peak = max(r["maxrss_kb"] for r in rs) / 2**20
        print(
            f"  {label:24s} {n:,} events, median of {len(rs)}: {total[mode]:6.2f} s  "
            f"{n / total[mode] / 1e6:5.2f} M events/s (cpu {n / cpu_s / 1e6:5.2f})  peak {peak:.2f} GiB  "
            f"{total[mode] / total['baseline']:4.1f}x baseline"
        )
    eager = runs["eager"]
    analyze_s = statistics.median(r["analyze_s"] for r in eager)
    print(
        f"  {'  of which analyze()':24s} {analyze_s:6.2f} s  {n / analyze_s / 1e6:5.2f} M events/s; by step:"
    )
    for step in eager[0]["steps"]:
        print(f"      {step:22s} {statistics.median(r['steps'][step] for r in eager):6.3f} s")
    # Real kernels trace no lock_acquire/release: real traces are analyzed at the merged level.
    merged = tiled(args.events, view="merged")
    ms = [run_child(merged, "file") for _ in range(max(1, args.repeat // 2))]
    m_s = statistics.median(r["analyze_s"] for r in ms)
    m_n = ms[0]["events"]
    print(
        f"  {'merged view (inferred)':24s} {m_n:,} events (the same run as a host + guest trace shows it), "
        f"median of {len(ms)}: {m_s:6.2f} s  {m_n / m_s / 1e6:5.2f} M events/s  "
        f"({n / m_s / 1e6:5.2f} M full-view events/s)"
    )
    if args.big:
        big = tiled(args.big)
        r = run_child(big, "file")
        print(
            f"memory run, analyze_parquet() on {r['events']:,} events: {r['analyze_s']:.1f} s "
            f"({r['events'] / r['analyze_s'] / 1e6:.2f} M events/s), peak {r['maxrss_kb'] / 2**20:.2f} GiB "
            f"(limit 8 GiB)"
        )
    print(f"(benchmark process peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")


def partitioned_runs(sizes: list[int], args: argparse.Namespace, make=tiled) -> None:
    """Peak memory and speed of analyze_parquet() under a memory budget at each size (a group of VMs
    at a time, a VM bigger than a group a time window at a time), alternating with the whole
    analysis where it fits; then the tables of both compared on the first size. `make`: the input
    of a size."""

    def line(label: str, rs: list[dict]) -> dict:
        n = rs[0]["events"]
        wall = statistics.median(r["read_s"] + r["analyze_s"] for r in rs)
        cpu = statistics.median(r["cpu_s"] for r in rs)
        peak = max(r["maxrss_kb"] for r in rs) / 2**20
        print(
            f"  {label:28s} {n:>12,} events, median of {len(rs)}: {wall:7.2f} s  "
            f"{n / wall / 1e6:5.2f} M events/s (cpu {n / cpu / 1e6:5.2f})  peak {peak:5.2f} GiB",
            flush=True,
        )
        return {"wall": wall, "cpu": cpu, "peak": peak}

    print(
        f"partitioned analysis, budget {args.budget} (alternating with the whole analysis up to "
        f"{args.whole_max:,} events)"
    )
    for size in sizes:
        path = make(size)
        runs: dict[str, list[dict]] = {"parts": [], "file": []}
        whole = size <= args.whole_max
        for _ in range(args.repeat):
            runs["parts"].append(run_child(path, "parts", args.budget))
            if whole:
                runs["file"].append(run_child(path, "file"))
        p = line(f"budget {args.budget}", runs["parts"])
        if cut := {k: v for k, v in runs["parts"][0]["steps"].items() if isinstance(v, int)}:
            print(f"  {'':28s} in time windows: {', '.join(f'{vm} {n}' for vm, n in cut.items())}")
        if whole:
            w = line("whole (analyze_parquet)", runs["file"])
            print(
                f"  {'':28s} ratio partitioned/whole: wall {p['wall'] / w['wall']:.2f}, "
                f"cpu {p['cpu'] / w['cpu']:.2f}, peak {p['peak'] / w['peak']:.2f}"
            )
    r = run_child(make(sizes[0]), "equal", args.budget)
    s = r["steps"]
    print(
        f"tables on {r['events']:,} events: summary equal {s['summary_equal']}, "
        f"{s['n_tables'] - len(s['tables_differ'])}/{s['n_tables']} tables equal ({s['rows']:,} rows)"
        + (f", differ: {', '.join(s['tables_differ'])}" if s["tables_differ"] else "")
    )


if __name__ == "__main__":
    main()
