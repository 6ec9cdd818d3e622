"""pvtrace against its peers, LISA and trappy, on the same ftrace text.

    python benchmarks/bench_peers.py                 # 100 MB, 3 alternating rounds
    python benchmarks/bench_peers.py --size-mb 20 --rounds 1

The input is bench_ingest's generated host trace (a busy KVM host's event mix) without the
trace-flags column (`comm-pid [cpu] ts: event: fields`, trace-cmd report's default layout), the
one layout both peers read: trappy's line pattern takes at most four flag characters (it reads
no line of the 5-flag layout of kernels >= 5.x), and LISA's text parser wants no digit between
`[cpu]` and the timestamp (it reads no line with a preempt count such as `d..2`).
Each peer is installed from PyPI into its own venv under benchmarks/.data/peers/ (created on the
first run; `--no-install` uses what is there) and runs in a fresh process:
- pvtrace: ingest_to_parquet (parse, normalize to canonical typed events, write Parquet);
- trappy: FTrace over sched_switch and sched_wakeup (its cache off), one pandas DataFrame per
  event: trappy reads only `key=value` payloads and fails on the KVM and lock events' text;
- LISA: Trace with its human-readable text parser (HRTxtTraceParser) over the eight events, each
  event's DataFrame built; the KVM events come out as one untyped `__positional` text column.
Printed: wall time, peak memory, rows, and the ratios in wall time and in time per typed row
(a row whose fields came out as typed columns). A peer that cannot be installed or run here is
reported with the reason, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import DATA, generate

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = DATA / "peers"
EVENTS = (
    "sched_switch",
    "sched_wakeup",
    "kvm_exit",
    "kvm_entry",
    "kvm_hypercall",
    "kvm_vcpu_wakeup",
    "contention_begin",
    "contention_end",
)
# trappy reads `key=value` payloads only: on kvm_exit (`vcpu 2 reason MSR_WRITE rip ...`), kvm_entry,
# kvm_hypercall, kvm_vcpu_wakeup and contention_* lines its parser raises TrappyParseError and the
# whole FTrace fails, so it is given the two events it can read (it still reads every line).
TRAPPY_EVENTS = ("sched_switch", "sched_wakeup")
# lisa-linux 3.1.0 declares no upper bounds, and on today's releases it fails to import: it uses
# np.NaN (gone in NumPy 2), and it imports nest_asyncio without requiring it; pyarrow >= 18 needs
# NumPy 2. These pins are what makes it import on Python 3.11.
PACKAGES = {
    "trappy": ["trappy"],
    "lisa": ["lisa-linux", "numpy<2", "pyarrow<18", "pandas<2.3", "nest_asyncio"],
}

# Each runner prints one JSON line: seconds, rows (records read), typed_rows, peak_bytes.
# peak: the largest of the process and its children (LISA parses in a pool of worker processes).
# The process's own peak is VmHWM, not RUSAGE_SELF: Linux keeps the pre-exec high-water mark in
# ru_maxrss across exec, so every runner reported the benchmark parent's RSS (the same 0.64 GiB).
_PEAK = (
    "import re, resource\n"
    "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "peak = 1024 * max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)
RUNNERS = {
    "pvtrace": (
        "import sys, time, json, tempfile\n"
        "from pathlib import Path\n"
        "import polars as pl\n"
        "from pvtrace.ingest.load import ingest_to_parquet\n"
        "out = Path(tempfile.mkdtemp()) / 'out.parquet'\n"
        "t = time.perf_counter()\n"
        "ingest_to_parquet([Path(sys.argv[1])], out)\n"
        "s = time.perf_counter() - t\n"
        "rows = pl.scan_parquet(out).select(pl.len()).collect().item()\n"
        "typed = pl.scan_parquet(out).filter(pl.col('kind') != 'other').select(pl.len()).collect().item()\n"
        + _PEAK
        + "print(json.dumps({'seconds': s, 'rows': rows, 'typed_rows': typed, 'peak_bytes': peak}))\n"
    ),
    "trappy": (
        "import sys, time, json, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import trappy\n"
        f"events = {TRAPPY_EVENTS!r}\n"
        "trappy.FTrace.disable_cache = True\n"
        "t = time.perf_counter()\n"
        "tr = trappy.FTrace(sys.argv[1], normalize_time=False, scope='custom', events=list(events))\n"
        "frames = [getattr(tr, ev).data_frame for ev in events]\n"
        "s = time.perf_counter() - t\n"
        "base = {'__comm', '__pid', '__cpu', '__line'}\n"
        "rows = sum(len(df) for df in frames)\n"
        "typed = sum(len(df) for df in frames if set(df.columns) - base)\n"
        + _PEAK
        + "print(json.dumps({'seconds': s, 'rows': rows, 'typed_rows': typed, 'peak_bytes': peak}))\n"
    ),
    "lisa": (
        "import sys, time, json, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from lisa.trace import Trace, HRTxtTraceParser\n"
        f"events = {EVENTS!r}\n"
        "t = time.perf_counter()\n"
        "tr = Trace(sys.argv[1], events=list(events), parser=HRTxtTraceParser.from_txt_file,\n"
        "           strict_events=False, normalize_time=False, enable_swap=False)\n"
        "frames = []\n"
        "for ev in events:\n"
        "    try:\n"
        "        frames.append(tr.df_event(ev))\n"
        "    except Exception:\n"
        "        pass\n"
        "s = time.perf_counter() - t\n"
        "rows = sum(len(df) for df in frames)\n"
        "base = {'__comm', '__pid', '__cpu', '__positional', '__timestamp'}\n"
        "typed = sum(len(df) for df in frames if set(df.columns) - base)\n"
        + _PEAK
        + "print(json.dumps({'seconds': s, 'rows': rows, 'typed_rows': typed, 'peak_bytes': peak}))\n"
    ),
}


def flagless_copy(size_bytes: int) -> Path:
    """bench_ingest's host trace of about size_bytes, rewritten without the trace-flags column."""
    src = DATA / f"host-{size_bytes / 1e9:g}GB.txt"
    dst = DATA / f"host-{size_bytes / 1e9:g}GB-noflags.txt"
    if dst.exists():
        return dst
    generate(src, size_bytes)
    tmp = dst.with_suffix(".partial")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        for block in iter(lambda: fin.read(1 << 24), b""):
            fout.write(block.replace(b"] d..2. ", b"] "))
    tmp.replace(dst)
    return dst


def python_of(peer: str, install: bool, venvs: Path) -> tuple[str | None, str]:
    """The interpreter to run a peer with, or None and why it cannot run here."""
    if peer == "pvtrace":
        return sys.executable, ""
    env_dir = venvs / peer
    python = env_dir / "bin" / "python"
    if not python.exists():
        if not install:
            return None, f"no venv at {env_dir} (run without --no-install)"
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    check = subprocess.run([str(python), "-c", f"import {peer}"], capture_output=True, text=True)
    if check.returncode != 0 and install:
        print(f"installing {' '.join(PACKAGES[peer])} into {env_dir} ...", flush=True)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PACKAGES[peer]], capture_output=True, text=True
        )
        if pip.returncode != 0:
            lines = [line for line in pip.stderr.splitlines() if line.strip() and "WARNING" not in line]
            return None, f"pip install {' '.join(PACKAGES[peer])} failed: {' | '.join(lines[-3:])}"
        check = subprocess.run([str(python), "-c", f"import {peer}"], capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"import {peer} fails after install: {last}"
    return str(python), ""


def run(peer: str, python: str, path: Path, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) if peer == "pvtrace" else ""}
    try:
        done = subprocess.run(
            [python, "-c", RUNNERS[peer], str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=path.parent,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed: {last[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=100, help="input size (default 100 MB)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    ap.add_argument("--quick", action="store_true", help="20 MB, one round")
    ap.add_argument("--no-install", action="store_true", help="do not create venvs or pip install")
    ap.add_argument(
        "--venv-dir", type=Path, default=PEERS_DIR, help="where the peers' venvs live (one per peer)"
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds one peer run may take")
    args = ap.parse_args()
    if args.quick:
        args.size_mb, args.rounds = 20, 1
    path = flagless_copy(int(args.size_mb * 1e6))
    mb = path.stat().st_size / 1e6
    print(f"input: {path} ({mb:.0f} MB, no trace-flags column)", flush=True)
    pythons: dict[str, str] = {}
    for peer in ("pvtrace", "trappy", "lisa"):
        python, why = python_of(peer, install=not args.no_install, venvs=args.venv_dir)
        if python is None:
            print(f"{peer}: cannot run here: {why}", flush=True)
        else:
            pythons[peer] = python
    results: dict[str, list[dict]] = {peer: [] for peer in pythons}
    for _ in range(args.rounds):
        for peer, python in pythons.items():
            got = run(peer, python, path, args.timeout)
            results[peer].append(got)
            print(f"  {peer}: {got}", flush=True)
    med: dict[str, dict] = {}
    for peer, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"{peer}: {runs[-1]['error']}")
            continue
        med[peer] = {
            "seconds": statistics.median(r["seconds"] for r in ok),
            "rows": ok[0]["rows"],
            "typed_rows": ok[0]["typed_rows"],
            "peak_gib": max(r["peak_bytes"] for r in ok) / 2**30,
        }
    print(f"\nmedian of {args.rounds} alternating rounds, {mb:.0f} MB")
    for peer, m in med.items():
        per_row = m["seconds"] / m["typed_rows"] * 1e9 if m["typed_rows"] else float("nan")
        print(
            f"{peer:8s} {m['seconds']:8.2f} s  {mb / m['seconds']:7.1f} MB/s  peak {m['peak_gib']:.2f} GiB  "
            f"rows {m['rows']:>10,}  typed {m['typed_rows']:>10,}  {per_row:8.0f} ns per typed row"
        )
    if "pvtrace" in med:
        ours = med["pvtrace"]
        for peer in ("trappy", "lisa"):
            if peer not in med:
                continue
            m = med[peer]
            wall = m["seconds"] / ours["seconds"]
            per_row = (
                (m["seconds"] / m["typed_rows"]) / (ours["seconds"] / ours["typed_rows"])
                if m["typed_rows"]
                else float("inf")
            )
            print(f"pvtrace vs {peer}: {wall:.1f}x in wall time, {per_row:.1f}x per typed row (goal >= 10x)")


if __name__ == "__main__":
    main()
