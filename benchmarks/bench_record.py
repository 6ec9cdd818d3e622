"""Throughput and memory of the end-of-capture inventory (`pvtrace record` counts every line it wrote),
and the cost of a live guest capture to the traced workload.

    python benchmarks/bench_record.py            # 2M-line guest ftrace text (~190 MB)
    python benchmarks/bench_record.py --quick    # 300k lines
    python benchmarks/bench_record.py --overhead # live, as root in a VM with tracefs: workload slowdown

--overhead runs `contend` (../shared/tools/contend.c, built into benchmarks/.data) untraced, under
`record --guest --no-ticks` and under `record --guest` (scheduler ticks + steal samples every
100 ms), interleaved, and reports the workload's median iterations/s in each, the slowdown against
untraced, and the events/s each capture wrote (all, ticks, steal markers).

The text mimics a guest capture (contention_begin/end pairs, sched_switch, stack
traces) and is generated once into benchmarks/.data/. inventory() runs 3 times,
each in its own subprocess (peak memory = its ru_maxrss); the median wall time is
reported as lines/s and MB/s.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"

HEADER = "# tracer: nop\n#\n# entries-in-buffer/entries-written: {n}/{n}   #P:2\n#\n"
BLOCK = (
    "         contend-{pid}    [00{cpu}] ...1.   {s}.{us:06d}: contention_begin: 00000000257c4328 (flags=SPIN)\n"
    "         contend-{pid}    [00{cpu}] ...1.   {s}.{us1:06d}: <stack trace>\n"
    " => trace_event_raw_event_contention_begin\n"
    " => __pv_queued_spin_lock_slowpath\n"
    " => _raw_spin_lock\n"
    "         contend-{pid}    [00{cpu}] ...1.   {s}.{us2:06d}: contention_end: 00000000257c4328 (ret=0)\n"
    "         contend-{pid}    [00{cpu}] d..2.   {s}.{us2:06d}: sched_switch: prev_comm=contend prev_pid={pid} "
    "prev_prio=120 prev_state=R+ ==> next_comm=contend next_pid={pid2} next_prio=120\n"
)
LINES_PER_BLOCK = 7


def make_text(path: Path, n_lines: int) -> None:
    n_blocks = n_lines // LINES_PER_BLOCK
    with path.open("w") as f:
        f.write(HEADER.format(n=n_blocks * 4))
        for i in range(n_blocks):
            us = (i * 3) % 1_000_000
            f.write(
                BLOCK.format(
                    pid=9000 + i % 8,
                    pid2=9000 + (i + 1) % 8,
                    cpu=i % 2,
                    s=100 + i * 3 // 1_000_000,
                    us=us,
                    us1=min(us + 1, 999_999),
                    us2=min(us + 2, 999_999),
                )
            )


def run_once(path: Path) -> dict:
    code = (
        "import json, resource, time\n"
        "from pathlib import Path\n"
        "from pvtrace.record.inventory import inventory\n"
        "t = time.perf_counter()\n"
        f"inv = inventory(Path({str(path)!r}))\n"
        "wall = time.perf_counter() - t\n"
        "print(json.dumps({'wall_s': wall, 'n_events': inv.n_events, 'n_stacks': inv.n_stacks,"
        " 'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


CONTEND_SRC = Path(__file__).resolve().parents[2] / "shared" / "tools" / "contend.c"
WORKLOAD = ("futexwait", "4", "0.5")


def _contend() -> Path | None:
    exe = DATA / "contend"
    if not exe.exists():
        if not CONTEND_SRC.exists():
            return None
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(exe), str(CONTEND_SRC)], check=True)
    return exe


def _iterations(out: Path) -> float:
    fields = dict(f.split("=", 1) for f in out.read_text().split() if "=" in f)
    return int(fields["iterations"]) / float(fields["seconds"])


def _one(exe: Path, variant: str, tmp: Path) -> dict:
    from pvtrace.record.capture import CaptureRequest, record

    stem = variant.replace(" ", "-").replace("+", "-")
    out = tmp / f"{stem}.out"
    cmd = f"{shlex.quote(str(exe))} {' '.join(WORKLOAD)} > {shlex.quote(str(out))}"
    if variant == "untraced":
        subprocess.run(["sh", "-c", cmd], check=True)
        return {"it_s": _iterations(out)}
    req = CaptureRequest(
        mode="guest",
        output=tmp / f"{stem}.txt",
        command=["sh", "-c", cmd],
        stacktrace=False,
        trace_dat=False,
        ticks=variant == "ticks+steal",
        force=True,
    )
    res = record(req)
    wall = res.wall_ns / 1e9
    counts = res.inventory.counts
    return {
        "it_s": _iterations(out),
        "events_s": res.inventory.n_events / wall,
        "ticks_s": counts.get("local_timer_entry", 0) / wall,
        "markers_s": counts.get("tracing_mark_write", 0) / wall,
    }


def overhead(reps: int) -> None:
    import os
    import tempfile

    exe = _contend()
    if exe is None or os.geteuid() != 0:
        print("overhead: not measured (needs root in a guest with tracefs, and ../shared/tools/contend.c)")
        return
    variants = ("untraced", "no ticks", "ticks+steal")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            for v in variants:  # interleaved: load drifts hit every variant alike
                runs[v].append(_one(exe, v, Path(tmp)))
    base = statistics.median(r["it_s"] for r in runs["untraced"])
    print(f"workload: contend {' '.join(WORKLOAD)}, {reps} runs per variant, interleaved")
    for v in variants:
        it_s = statistics.median(r["it_s"] for r in runs[v])
        line = f"{v:>12}: {it_s / 1e3:8.1f} k iterations/s (slowdown {100 * (1 - it_s / base):+.1f}%)"
        if v != "untraced":
            med = {k: statistics.median(r[k] for r in runs[v]) for k in ("events_s", "ticks_s", "markers_s")}
            line += (
                f"; {med['events_s'] / 1e3:.1f} k events/s, of which ticks {med['ticks_s']:.0f}/s, "
                f"steal markers {med['markers_s']:.1f}/s"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300k lines instead of 2M")
    parser.add_argument("--overhead", action="store_true", help="live capture cost to the workload instead")
    parser.add_argument("--reps", type=int, default=7, help="--overhead: runs per variant")
    args = parser.parse_args()
    if args.overhead:
        DATA.mkdir(exist_ok=True)
        overhead(args.reps)
        return
    n_lines = 300_000 if args.quick else 2_000_000
    DATA.mkdir(exist_ok=True)
    path = DATA / f"record-guest-{n_lines}.txt"
    if not path.exists():
        t = time.perf_counter()
        make_text(path, n_lines)
        print(f"generated {path} in {time.perf_counter() - t:.1f} s")
    size_mb = path.stat().st_size / 1e6
    runs = [run_once(path) for _ in range(3)]
    wall = statistics.median(r["wall_s"] for r in runs)
    rss = max(r["rss_mb"] for r in runs)
    print(
        f"input: {n_lines:,} lines, {size_mb:.0f} MB ({runs[0]['n_events']:,} events, {runs[0]['n_stacks']:,} stacks)"
    )
    print(
        f"inventory: median {wall:.2f} s of 3 -> {n_lines / wall / 1e6:.2f} M lines/s, {size_mb / wall:.0f} MB/s; "
        f"peak RSS {rss:.0f} MB (process incl. imports)"
    )


if __name__ == "__main__":
    main()
