"""analyze_parquet() of two checkouts against the floor, fresh processes alternating, medians.

    python benchmarks/alternate_analyze.py --base /work/main benchmarks/.data/analyze-10000000.parquet
    python benchmarks/alternate_analyze.py --base /work/main --rounds 7 INPUT.parquet

Each round runs the floor (read + one packed sort, bench_analyze.py), the base checkout and this
file's own checkout, each in a fresh process as bench_analyze.py's `file` mode does, so that the
machine's load falls on all three alike. Prints per run and then, per code, the median wall and
CPU time, the ratio to the floor, the steps, the peak; and the median of each round's own ratio
this / base (the steadier figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_analyze import CHILD

HERE = Path(__file__).resolve().parent.parent


def run(checkout: Path, path: str, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, path, mode], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="a pvtrace Parquet file")
    ap.add_argument("--base", type=Path, required=True, help="the other checkout (e.g. /work/main)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    codes = {"floor": (HERE, "floor"), "base": (args.base, "file"), "this": (HERE, "file")}
    runs: dict[str, list[dict]] = {name: [] for name in codes}
    for i in range(args.rounds):
        for name, (checkout, mode) in codes.items():
            r = run(checkout, args.input, mode)
            runs[name].append(r)
            print(
                f"round {i}: {name:5s} {r['read_s'] + r['analyze_s']:6.2f} s (cpu {r['cpu_s']:5.2f} s), "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    wall = {n: [r["read_s"] + r["analyze_s"] for r in rs] for n, rs in runs.items()}
    cpu = {n: [r["cpu_s"] for r in rs] for n, rs in runs.items()}
    floor = statistics.median(wall["floor"])
    for name, rs in runs.items():
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        peak = max(r["maxrss_kb"] for r in rs) / 2**20
        print(f"{name:5s} wall {w:5.2f} s  cpu {c:5.2f} s  {w / floor:4.2f}x the floor  peak {peak:.2f} GiB")
        if rs[0]["steps"]:
            steps = {s: round(statistics.median(r["steps"][s] for r in rs), 3) for s in rs[0]["steps"]}
            print(f"      steps: {steps}")
    for label, t in (("wall", wall), ("cpu", cpu)):
        each = [a / b for a, b in zip(t["this"], t["base"], strict=True)]
        print(
            f"this / base, {label}: median {statistics.median(each):.3f} "
            f"(rounds: {', '.join(f'{x:.2f}' for x in each)})"
        )


if __name__ == "__main__":
    main()
