"""Start-up: `pvtrace --version` against `python -c "import polars"`, and `pvtrace analyze` of the sample.

    python benchmarks/bench_startup.py             # 7 rounds
    python benchmarks/bench_startup.py --rounds 15

Each command runs as a fresh process; the kinds alternate round by round, and the table quotes
medians of wall time, so a loaded machine slows baseline and pvtrace alike. Targets (issue 16):
`--version` <= 1.5x the polars import, the sample's analysis <= 1 s.

The project's bytecode is cached in a scratch directory (PYTHONPYCACHEPREFIX), as an installed
package has its .pyc files; without a cache (PYTHONDONTWRITEBYTECODE) every run compiles some 50
modules first, about 0.17 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample-traces" / "guest-futex.txt.xz"
TICKS = REPO / "sample-traces" / "guest-ticks.txt.xz"

CASES = {
    "python -c 'import polars'": [sys.executable, "-c", "import polars"],
    "pvtrace --version": [sys.executable, "-m", "pvtrace", "--version"],
    "pvtrace analyze (guest-futex)": [sys.executable, "-m", "pvtrace", "analyze", str(SAMPLE)],
    "pvtrace analyze (guest-ticks)": [sys.executable, "-m", "pvtrace", "analyze", str(TICKS)],
}


def _wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (median of these)")
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 3
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="pvtrace-pycache-") as cache:
        env["PYTHONPYCACHEPREFIX"] = cache
        for argv in CASES.values():  # warm the bytecode cache and the page cache
            _wall(argv, env)
        times: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.rounds):
            for name, argv in CASES.items():
                times[name].append(_wall(argv, env))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["python -c 'import polars'"]
    print(f"median of {args.rounds} alternating rounds, fresh processes")
    for name, t in med.items():
        print(f"{name:30s} {t:6.3f} s  {t / base:4.2f}x import polars   (min {min(times[name]):.3f} s)")
    version = med["pvtrace --version"] / base
    print(
        f"--version: {version:.2f}x the polars import (target <= 1.5x): {'met' if version <= 1.5 else 'MISSED'}"
    )
    for name in ("guest-futex", "guest-ticks"):
        sample = med[f"pvtrace analyze ({name})"]
        print(f"analyze of {name}: {sample:.2f} s (target <= 1 s): {'met' if sample <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
