"""Throughput and memory of the end-of-capture inventory (`pvtrace record` counts every line it wrote).

    python benchmarks/bench_record.py            # 2M-line guest ftrace text (~190 MB)
    python benchmarks/bench_record.py --quick    # 300k lines

The text mimics a guest capture (contention_begin/end pairs, sched_switch, stack
traces) and is generated once into benchmarks/.data/. inventory() runs 3 times,
each in its own subprocess (peak memory = its ru_maxrss); the median wall time is
reported as lines/s and MB/s.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300k lines instead of 2M")
    args = parser.parse_args()
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
