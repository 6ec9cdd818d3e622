"""Fleet and sweep throughput on Dask: traces/s and cells/s with 1 and 2 workers against a plain
in-process loop, and the client's peak memory against the number of traces.

    python benchmarks/bench_fleet.py            # 1,000 traces (~50k events each), a 500-cell sweep
    python benchmarks/bench_fleet.py --quick    # 100 traces, 100 cells

Traces: 8 distinct simulator captures of ~50k events (parquet, and ftrace, trace-cmd and perf
text of the merged view: a host file plus a guest file per VM, grouped by a manifest), each
hard-linked into as many trace folders as asked (distinct paths: distinct traces). The loop
runs pvtrace's own analysis of each trace in this process, writing nothing; the fleet runs
`pvtrace fleet analyze MANIFEST --scheduler ADDR` as a client subprocess against a
LocalCluster of 1, then 2 worker processes started here, so the client's ru_maxrss is its own
(workers are not its children). Goals: 2 workers >= 1.7x 1 worker; 1 worker <= 10% slower than
the loop; client peak flat from 100 to 1,000 traces. The sweep does the same with cells.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("parquet", "ftrace", "trace-cmd", "perf")

GRID = """
[sweep]
preset = "seed-table"
seeds = {seeds}

[vm]
count = [1, 2]
ops = 200

[lock]
algorithm = ["ticket", "pv-ticket"]
spin_threshold_ns = {{ from = 10_000, to = 50_000, step = 10_000 }}

[hypervisor]
kick_latency_ns = [1_000, 2_000, 3_000, 4_000, 5_000]
"""


def make_pool(folder: Path, ops: int) -> list[list[Path]]:
    """8 captures (4 formats x 2 seeds), each a list of files."""
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    scenario = load_preset("seed-table").replace(vm={"count": 2, "ops": ops})
    pool = []
    for seed in (1, 2):
        trace, _ = simulate_trace(scenario, seed=seed)
        for fmt in FORMATS:
            d = folder / f"{fmt}-{seed}"
            d.mkdir(parents=True)
            view = "full" if fmt == "parquet" else "merged"
            files = write_rendered(trace, fmt, view, d / ("cap.parquet" if fmt == "parquet" else "cap.txt"))
            pool.append(sorted(files))
    return pool


def make_fleet(folder: Path, pool: list[list[Path]], n: int) -> Path:
    """n trace folders of hard links, and their manifest (path, trace, format, host)."""
    rows = ["path,trace,format,host"]
    for i in range(n):
        src = pool[i % len(pool)]
        d = folder / f"t{i:04d}"
        d.mkdir(parents=True)
        for f in src[0].parent.iterdir():
            os.link(f, d / f.name)
        fmt = src[0].parent.name.rsplit("-", 1)[0]
        rows += [
            f"t{i:04d}/{f.name},t{i:04d},{fmt},h{i % 20}"
            for f in src
            if not f.name.endswith(".csv") and f.stat().st_size
        ]
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def loop_traces(manifest: Path) -> tuple[float, float]:
    """The plain loop: every trace analyzed in this process, one after another."""
    from pvtrace.fleet.inputs import expand_inputs
    from pvtrace.fleet.tasks import run_analysis

    options = {"format": "auto", "lock_kind": None, "strict": False}
    traces = expand_inputs([str(manifest)], options)
    t0, c0 = time.perf_counter(), time.process_time()
    for t in traces:
        run_analysis([Path(f) for f in t.files], options, ["ingest"])
    return time.perf_counter() - t0, time.process_time() - c0


def loop_cells(grid_path: Path) -> tuple[float, float]:
    from pvtrace.fleet.cells import run_cell
    from pvtrace.fleet.grid import load_grid

    grid = load_grid(grid_path)
    cells = grid.cells()
    t0, c0 = time.perf_counter(), time.process_time()
    for c in cells:
        run_cell(c, grid.analyze, grid.view)
    return time.perf_counter() - t0, time.process_time() - c0


def client_run(args: list[str], address: str) -> tuple[float, float, float]:
    """Run a pvtrace client subprocess against the cluster: (wall s, its peak RSS MiB, its CPU s)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pvtrace", *args, "--scheduler", address, "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"client failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def on_cluster(n_workers: int, runs: list[tuple[list[str], Path]]) -> list[tuple[float, float, float]]:
    """Start a LocalCluster of n workers, run each client command (its output folder emptied first):
    (wall s, client peak RSS MiB, CPU s of client + workers + scheduler) per run."""
    from pvtrace.fleet.cluster import open_client

    out = []
    with open_client(None, n_workers) as client:
        address = client.scheduler.address
        for args, out_dir in runs:
            shutil.rmtree(out_dir, ignore_errors=True)
            before, here = sum(client.run(_cpu_s).values()), time.process_time()
            wall, rss, client_cpu = client_run([*args, "-o", str(out_dir)], address)
            cpu = sum(client.run(_cpu_s).values()) - before + time.process_time() - here + client_cpu
            out.append((wall, rss, cpu))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 traces, 100 cells")
    ap.add_argument("--traces", type=int, help="traces (default 1000; quick 100)")
    ap.add_argument("--seeds", type=int, help="sweep seeds: 100 cells per seed (default 5; quick 1)")
    ap.add_argument("--ops", type=int, default=2500, help="guest ops per VM (2 VMs: about 50k events)")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument(
        "--memory-only",
        action="store_true",
        help="only the client peak RSS for n/10 and n traces (2 workers)",
    )
    args = ap.parse_args()
    n = args.traces or (100 if args.quick else 1000)
    seeds = args.seeds or (1 if args.quick else 5)
    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="pvtrace-bench-fleet-"))
    try:
        pool = make_pool(work / "pool", args.ops)
        manifest = make_fleet(work / "fleet", pool, n)
        small = make_fleet(work / "fleet-small", pool, max(1, n // 10))
        events = "~50k" if args.ops == 2500 else f"ops {args.ops}"
        print(f"{n} traces ({events} events, {', '.join(FORMATS)}), cores {os.cpu_count()}", flush=True)
        if args.memory_only:
            runs = [(["fleet", "analyze", str(m)], work / f"mem{i}") for i, m in enumerate((small, manifest))]
            (_, rss_small, _), (_, rss, _) = on_cluster(2, runs)
            print(f"client peak RSS: {max(1, n // 10)} traces {rss_small:.0f} MiB, {n} traces {rss:.0f} MiB")
            return 0
        results = {}
        loop_s, loop_cpu = loop_traces(manifest)
        fleet = ["fleet", "analyze", str(manifest)]
        one = on_cluster(1, [(fleet, work / "out1")])[0]
        two, two_small = on_cluster(
            2, [(fleet, work / "out2"), (["fleet", "analyze", str(small)], work / "out3")]
        )
        results["traces"] = (n, loop_s, one[0], two[0], loop_cpu, one[2], two[2])
        mem = (two_small[1], two[1], max(1, n // 10))
        if not args.skip_sweep:
            grid = work / "grid.toml"
            grid.write_text(GRID.format(seeds=seeds))
            cells = 100 * seeds
            loop_c, loop_c_cpu = loop_cells(grid)
            sweep = ["sweep", "run", str(grid)]
            one_c = on_cluster(1, [(sweep, work / "sw1")])[0]
            two_c = on_cluster(2, [(sweep, work / "sw2")])[0]
            results["cells"] = (cells, loop_c, one_c[0], two_c[0], loop_c_cpu, one_c[2], two_c[2])
        print(f"\nload average {os.getloadavg()[0]:.1f} (wall times mean little far above 1-2 on 2 cores)")
        print(
            f"{'work':6} {'n':>5} {'loop s':>7} {'1w s':>7} {'2w s':>7} {'loop/s':>7} {'1w/s':>6} {'2w/s':>6} "
            f"{'2w/1w':>6} {'1w-loop':>8} | {'cpu loop':>8} {'1w':>7} {'2w':>7} {'cpu 1w-loop':>11}"
        )
        for what, (k, lp, w1, w2, clp, c1, c2) in results.items():
            print(
                f"{what:6} {k:>5} {lp:>7.1f} {w1:>7.1f} {w2:>7.1f} {k / lp:>7.2f} {k / w1:>6.2f} {k / w2:>6.2f} "
                f"{w1 / w2:>5.2f}x {100 * (w1 - lp) / lp:>+7.1f}% | {clp:>8.1f} {c1:>7.1f} {c2:>7.1f} "
                f"{100 * (c1 - clp) / clp:>+10.1f}%"
            )
        print(
            f"\nclient peak RSS: {mem[2]} traces {mem[0]:.0f} MiB, {n} traces {mem[1]:.0f} MiB "
            f"(ratio {mem[1] / mem[0]:.2f})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
