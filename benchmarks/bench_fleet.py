"""Fleet and sweep throughput on Dask: traces/s and cells/s with 1 and 2 workers against a plain
in-process loop, and the client's peak memory against the number of traces.

    python benchmarks/bench_fleet.py            # 1,000 traces (~50k events each), a 500-cell sweep
    python benchmarks/bench_fleet.py --quick    # 100 traces, 100 cells
    python benchmarks/bench_fleet.py --traces 200 --rounds 3 --skip-sweep   # overhead, alternated

Traces: 8 distinct simulator captures of about 50k events (--ops 800: 55k-98k events in
Parquet, 33k-65k lines of text): parquet, and ftrace, trace-cmd and perf text of the merged
view (a host file plus a guest file per VM, grouped by a manifest), each
hard-linked into as many trace folders as asked (distinct paths: distinct traces); they are
generated once and kept under --cache (default /tmp/pvtrace-bench-fleet).

Every contender is a fresh process doing the same per-trace work (ingest, analyze, write the
trace's part folder) into an empty folder: the loop is `analyze_trace` called in turn in one
process; the fleet is `pvtrace fleet analyze MANIFEST --scheduler ADDR` as a client process
against a LocalCluster of 1, then 2 worker processes started here (so the client's ru_maxrss is
its own). CPU is the client's plus the workers' plus this process's (scheduler and nannies);
the loop's is its own. With --rounds R the contenders alternate R times and medians are shown.
Goals: 2 workers >= 1.7x 1 worker; 1 worker <= 10% over the loop; client peak flat from 100 to
1,000 traces. The sweep does the same with cells (`cell_task`, each cell's row written; the
sweep runs several cells per task, pvtrace.fleet.batches).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("parquet", "ftrace", "trace-cmd", "perf")
OPTIONS = {"format": "auto", "lock_kind": None, "strict": False}
WORST = 10  # `pvtrace fleet analyze`'s default --worst

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
    """8 captures (4 formats x 2 seeds), each a list of files; kept when already there."""
    from pvtrace.simulate.render import write_rendered
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    done = folder / ".done"
    if done.is_file():
        return [[Path(f) for f in line.split("\t")] for line in done.read_text().splitlines()]
    shutil.rmtree(folder, ignore_errors=True)
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
    done.write_text("\n".join("\t".join(map(str, files)) for files in pool) + "\n")
    return pool


def pool_size(pool: list[list[Path]]) -> str:
    """The captures' sizes: events of the Parquet ones, lines of the text ones (all files)."""
    import polars as pl

    events = [
        pl.scan_parquet(f[0]).select(pl.len()).collect().item() for f in pool if f[0].suffix == ".parquet"
    ]
    lines = [sum(len(p.read_bytes().splitlines()) for p in f if p.suffix == ".txt") for f in pool]
    lines = [n for n in lines if n]
    return f"parquet {min(events):,}-{max(events):,} events, text {min(lines):,}-{max(lines):,} lines"


def make_fleet(folder: Path, pool: list[list[Path]], n: int) -> Path:
    """n trace folders of hard links, and their manifest (path, trace, format, host); kept when
    already there."""
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    shutil.rmtree(folder, ignore_errors=True)
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
    manifest.with_suffix(".tmp").write_text("\n".join(rows) + "\n")
    manifest.with_suffix(".tmp").rename(manifest)
    return manifest


def loop_traces(manifest: str, out: str) -> None:
    """The plain loop (run in a fresh child): list the traces, then ingest, analyze and write each
    trace's part in turn, exactly the fleet task's work."""
    from pvtrace.fleet import store
    from pvtrace.fleet.inputs import expand_inputs
    from pvtrace.fleet.tasks import analyze_trace

    traces = expand_inputs([manifest], OPTIONS)
    store.prepare(Path(out), {"options": OPTIONS, "worst_incidents": WORST, "n_traces": len(traces)})
    for t in traces:
        if analyze_trace(t, out, OPTIONS, WORST)["status"] != "done":
            raise SystemExit(f"{t.name} failed")


def loop_cells(grid_path: str, out: str) -> None:
    """The plain loop for a sweep: every cell simulated, analyzed and written in turn."""
    from pvtrace.fleet.cells import cell_task
    from pvtrace.fleet.grid import load_grid
    from pvtrace.fleet.sweep import prepare, write_results

    grid = load_grid(Path(grid_path))
    cells = grid.cells()
    prepare(Path(out), grid)
    for c in cells:
        if cell_task(c, out, grid.analyze, grid.view)["status"] != "done":
            raise SystemExit(f"cell {c.index} failed")
    write_results(Path(out), cells)


def child(args: list[str]) -> tuple[float, float, float]:
    """Run a child process to its end: (wall s, its peak RSS MiB, its CPU s)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def run_loop(kind: str, source: Path, out: Path) -> tuple[float, float, float]:
    shutil.rmtree(out, ignore_errors=True)
    return child([__file__, f"--loop-{kind}", str(source), str(out)])


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def on_cluster(n_workers: int, runs: list[tuple[list[str], Path]]) -> list[tuple[float, ...]]:
    """Start a LocalCluster of n workers, run each client command (its output folder emptied first):
    (wall s, client peak RSS MiB, CPU s of client + workers + scheduler and nannies, and those
    three CPU figures apart) per run."""
    from pvtrace.fleet.cluster import open_client

    out = []
    with open_client(None, n_workers) as client:
        address = client.scheduler.address
        for args, out_dir in runs:
            shutil.rmtree(out_dir, ignore_errors=True)
            before, here = sum(client.run(_cpu_s).values()), time.process_time()
            wall, rss, client_cpu = child(
                ["-m", "pvtrace", *args, "-o", str(out_dir), "--scheduler", address, "-q"]
            )
            workers = sum(client.run(_cpu_s).values()) - before
            cluster = time.process_time() - here
            out.append((wall, rss, workers + cluster + client_cpu, client_cpu, workers, cluster))
    return out


def measure(kind: str, source: Path, cmd: list[str], work: Path, rounds: int) -> dict[str, list[tuple]]:
    """Loop, 1 worker, 2 workers, in turn, `rounds` times: (wall, rss, cpu) per contender and round."""
    got: dict[str, list[tuple]] = {"loop": [], "1w": [], "2w": []}
    for r in range(rounds):
        got["loop"].append(run_loop(kind, source, work / "loop"))
        got["1w"] += on_cluster(1, [(cmd, work / "one")])
        got["2w"] += on_cluster(2, [(cmd, work / "two")])
        print(
            f"  {kind} round {r + 1}: "
            + ", ".join(f"{k} {v[-1][0]:.1f} s (cpu {v[-1][2]:.1f} s)" for k, v in got.items())
            + f"; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return got


def table(results: dict[str, tuple[int, dict[str, list[tuple]]]]) -> None:
    print(
        f"{'work':6} {'n':>5} {'loop s':>7} {'1w s':>7} {'2w s':>7} {'loop/s':>7} {'1w/s':>6} {'2w/s':>6} "
        f"{'2w/1w':>6} {'1w-loop':>8} | {'cpu loop':>8} {'1w':>7} {'2w':>7} {'cpu 1w-loop':>11}"
    )
    for what, (k, got) in results.items():
        lp, w1, w2 = (statistics.median(x[0] for x in got[c]) for c in ("loop", "1w", "2w"))
        clp, c1, c2 = (statistics.median(x[2] for x in got[c]) for c in ("loop", "1w", "2w"))
        print(
            f"{what:6} {k:>5} {lp:>7.1f} {w1:>7.1f} {w2:>7.1f} {k / lp:>7.2f} {k / w1:>6.2f} {k / w2:>6.2f} "
            f"{w1 / w2:>5.2f}x {100 * (w1 - lp) / lp:>+7.1f}% | {clp:>8.1f} {c1:>7.1f} {c2:>7.1f} "
            f"{100 * (c1 - clp) / clp:>+10.1f}%"
        )
        for c in ("1w", "2w"):
            client, workers, cluster = (statistics.median(x[i] for x in got[c]) for i in (3, 4, 5))
            print(
                f"       {c} CPU: client {client:.1f} s, workers {workers:.1f} s, scheduler and nannies "
                f"{cluster:.1f} s; loop {clp:.1f} s"
            )
        if len(got["loop"]) > 1:
            # a round's three runs share its load: their ratios drift less than ratios of medians
            over = statistics.median(a[0] / b[0] for a, b in zip(got["1w"], got["loop"], strict=True))
            speedup = statistics.median(a[0] / b[0] for a, b in zip(got["1w"], got["2w"], strict=True))
            print(
                f"       per round, median: 1w {100 * (over - 1):+.1f}% over the loop, 2w/1w {speedup:.2f}x"
            )


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] in ("--loop-traces", "--loop-cells"):
        sys.path.insert(0, str(REPO))
        import pvtrace  # first: its allocator settings precede polars

        (loop_traces if sys.argv[1] == "--loop-traces" else loop_cells)(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 traces, 100 cells")
    ap.add_argument("--traces", type=int, help="traces (default 1000; quick 100)")
    ap.add_argument("--seeds", type=int, help="sweep seeds: 100 cells per seed (default 5; quick 1)")
    ap.add_argument("--ops", type=int, default=800, help="guest ops per VM (2 VMs: about 50k events)")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of loop, 1 and 2 workers")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pvtrace-bench-fleet"), help="generated inputs")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-traces", action="store_true")
    ap.add_argument(
        "--memory-only",
        action="store_true",
        help="only the client peak RSS for n/10 and n traces (2 workers)",
    )
    args = ap.parse_args()
    n = args.traces or (100 if args.quick else 1000)
    seeds = args.seeds or (1 if args.quick else 5)
    sys.path.insert(0, str(REPO))
    import pvtrace  # noqa: F401  first: its allocator settings precede polars

    cache = args.cache / f"ops{args.ops}"
    pool = make_pool(cache / "pool", args.ops)
    manifest = make_fleet(cache / f"fleet-{n}", pool, n)
    small = make_fleet(cache / f"fleet-{max(1, n // 10)}", pool, max(1, n // 10))
    work = Path(tempfile.mkdtemp(prefix="pvtrace-bench-fleet-"))
    try:
        print(f"{n} traces ({pool_size(pool)}; {', '.join(FORMATS)}), cores {os.cpu_count()}", flush=True)
        mem_runs = [(["fleet", "analyze", str(m)], work / f"mem{i}") for i, m in enumerate((small, manifest))]
        if args.memory_only:
            (_, rss_small, _), (_, rss, _) = on_cluster(2, mem_runs)
            print(f"client peak RSS: {max(1, n // 10)} traces {rss_small:.0f} MiB, {n} traces {rss:.0f} MiB")
            return 0
        load = [os.getloadavg()[0]]
        results = {}
        if not args.skip_traces:
            got = measure("traces", manifest, ["fleet", "analyze", str(manifest)], work, args.rounds)
            results["traces"] = (n, got)
            load.append(os.getloadavg()[0])
        if not args.skip_sweep:
            grid = work / "grid.toml"
            grid.write_text(GRID.format(seeds=seeds))
            results["cells"] = (
                100 * seeds,
                measure("cells", grid, ["sweep", "run", str(grid)], work, args.rounds),
            )
            load.append(os.getloadavg()[0])
        print(f"\nload average (1 min) at start and after each part: {', '.join(f'{x:.1f}' for x in load)}")
        table(results)
        if not args.skip_traces:
            rss_small = on_cluster(2, [mem_runs[0]])[0][1]
            rss = results["traces"][1]["2w"][0][1]
            print(
                f"\nclient peak RSS (2 workers): {max(1, n // 10)} traces {rss_small:.0f} MiB, "
                f"{n} traces {rss:.0f} MiB (ratio {rss / rss_small:.2f})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
