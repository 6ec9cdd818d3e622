"""Run every benchmark, one after another: `python benchmarks/run_all.py [--quick]`.

Each script prints its own throughput table; this only sequences them so one
command measures the whole pipeline (start-up, simulate, render, ingest, normalize,
analyze, report, record inventory).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("startup", "simulate", "render", "ingest", "normalize", "analyze", "report", "record", "fleet")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="each benchmark's small variant")
    ap.add_argument("--only", default=",".join(ORDER), help="comma-separated subset of: " + ", ".join(ORDER))
    args = ap.parse_args()
    failed = []
    for name in args.only.split(","):
        script = HERE / f"bench_{name}.py"
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
