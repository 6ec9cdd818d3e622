"""Ingest throughput and memory: a generated host ftrace text with a realistic KVM event mix.

    python benchmarks/bench_ingest.py            # 1 GB input, the acceptance figures
    python benchmarks/bench_ingest.py --quick    # 100 MB input
    python benchmarks/bench_ingest.py --size-gb 10 --only stream   # the 10 GB streaming run
    python benchmarks/bench_ingest.py --only lines,stream --baseline /tmp/main-tree   # old vs new

Measured in one run, each step in its own subprocess (peak memory = its ru_maxrss); the steps
alternate round by round (`--repeat` rounds, medians), so a loaded machine slows them alike:
- `wc -l` on the file (reading the bytes once);
- polars' line split of the file (`scan_lines`, streaming): the floor the issue measures ingest
  against (ingest should reach half its speed);
- a plain-Python `re` loop on a sample of the file (extrapolated MB/s);
- pvtrace's text parser to typed raw records (pvtrace.ingest.records), median of 3;
- pvtrace load() to canonical events (parse + normalize), median of 3;
- streaming conversion to Parquet (ingest_to_parquet), once.
With `--baseline DIR` (a checkout of other pvtrace code, e.g. `git archive main`), the pvtrace steps
also run with that code first on the import path, alternating with this tree's in every round, and
the ratios are printed in wall and CPU time: compare code versions only that way on a shared machine.
Data goes to benchmarks/.data/ (gitignored) and is reused when already there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

DATA = Path(__file__).resolve().parent / ".data"
N_PCPUS = 16
N_VMS = 4
N_VCPUS = 4
ROWS_PER_BATCH = 1_000_000

# Event mix of a busy KVM host under guest lock contention (fractions of records).
MIX = {
    "kvm_exit": 0.33,
    "kvm_entry": 0.33,
    "sched_switch": 0.12,
    "sched_wakeup": 0.06,
    "kvm_hypercall": 0.04,
    "kvm_vcpu_wakeup": 0.04,
    "contention_begin": 0.04,
    "contention_end": 0.04,
}
EXIT_REASONS = ["PAUSE_INSTRUCTION", "HLT", "EXTERNAL_INTERRUPT", "VMCALL", "EPT_VIOLATION", "MSR_WRITE"]


def _batch(rng: np.random.Generator, n: int, t0_us: int) -> tuple[pl.DataFrame, int]:
    """n record lines in tracefs layout (5 flags), timestamps increasing from t0_us."""
    names = list(MIX)
    kind = rng.choice(len(names), size=n, p=np.array(list(MIX.values())))
    vm = rng.integers(0, N_VMS, n)
    vcpu = rng.integers(0, N_VCPUS, n)
    qemu = 20000 + 1000 * vm
    tid = qemu + 1 + vcpu
    gaps = rng.exponential(0.4, n).astype(np.int64)  # us between records
    ts_us = t0_us + np.cumsum(gaps)
    df = pl.DataFrame(
        {
            "kind": pl.Series(np.array(names)[kind]),
            "vm": vm,
            "vcpu": vcpu,
            "tid": tid,
            "qemu": qemu,
            "cpu": rng.integers(0, N_PCPUS, n),
            "secs": ts_us // 1_000_000,
            "usecs": ts_us % 1_000_000,
            "reason": pl.Series(np.array(EXIT_REASONS)[rng.integers(0, len(EXIT_REASONS), n)]),
            "rip": rng.integers(0xFFFFFFFF81000000, 0xFFFFFFFF82000000, n, dtype=np.uint64),
            "other": rng.integers(100, 9000, n),
            "lock": rng.integers(0, 8, n),
        }
    )
    k = pl.col("kind")
    vcpu_comm = pl.format("CPU {}/KVM", pl.col("vcpu"))
    guest_task = pl.format("contend-{}", pl.col("other"))
    comm = (
        pl.when(k.is_in(["contention_begin", "contention_end"]))
        .then(pl.lit("kworker/u33:2"))
        .otherwise(vcpu_comm)
    )
    pid = (
        pl.when(k.is_in(["contention_begin", "contention_end"]))
        .then(pl.col("other"))
        .otherwise(pl.col("tid"))
    )
    hexrip = pl.col("rip").map_batches(
        lambda s: pl.Series([f"{v:x}" for v in s.to_list()]), return_dtype=pl.String
    )
    payload = (
        pl.when(k == "kvm_exit")
        .then(
            pl.format(
                "vcpu {} reason {} rip 0x{} info1 0x0000000000000000 info2 0x0000000000000000 "
                "intr_info 0x00000000 error_code 0x00000000",
                pl.col("vcpu"),
                pl.col("reason"),
                hexrip,
            )
        )
        .when(k == "kvm_entry")
        .then(pl.format("vcpu {}, rip 0x{}", pl.col("vcpu"), hexrip))
        .when(k == "sched_switch")
        .then(
            pl.format(
                "prev_comm={} prev_pid={} prev_prio=120 prev_state=R+ ==> next_comm={} next_pid={} next_prio=120",
                vcpu_comm,
                pl.col("tid"),
                guest_task,
                pl.col("other"),
            )
        )
        .when(k == "sched_wakeup")
        .then(
            pl.format(
                "comm={} pid={} prio=120 target_cpu={}",
                vcpu_comm,
                pl.col("tid"),
                pl.col("cpu").cast(pl.String).str.pad_start(3, "0"),
            )
        )
        .when(k == "kvm_hypercall")
        .then(pl.format("nr 0x5 a0 0x0 a1 0x{} a2 0x0 a3 0x0", (pl.col("vcpu") + 1) % N_VCPUS))
        .when(k == "kvm_vcpu_wakeup")
        .then(pl.format("wait time {} ns, polling valid", pl.col("other") * 37))
        .when(k == "contention_begin")
        .then(
            pl.format("00000000deadbe{} (flags=SPIN)", pl.col("lock").cast(pl.String).str.pad_start(2, "0"))
        )
        .otherwise(
            pl.format("00000000deadbe{} (ret=0)", pl.col("lock").cast(pl.String).str.pad_start(2, "0"))
        )
    )
    line = pl.concat_str(
        [
            comm.str.pad_start(16),
            pl.lit("-"),
            pid.cast(pl.String).str.pad_end(7),
            pl.lit(" ["),
            pl.col("cpu").cast(pl.String).str.pad_start(3, "0"),
            pl.lit("] d..2. "),
            pl.col("secs").cast(pl.String).str.pad_start(5),
            pl.lit("."),
            pl.col("usecs").cast(pl.String).str.pad_start(6, "0"),
            pl.lit(": "),
            k,
            pl.lit(": "),
            payload,
        ]
    )
    return df.select(line.alias("line")), int(ts_us[-1])


def generate(path: Path, size_bytes: int, seed: int = 1) -> None:
    """Write a host trace of about size_bytes (skipped when the file is already there)."""
    if path.exists() and path.stat().st_size >= size_bytes * 0.98:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".partial")
    t_us = 86_400_000_000  # start one day after boot
    header = (
        "# tracer: nop\n#\n# entries-in-buffer/entries-written: 0/0   #P:16\n#\n"
        "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n#              | |         |   |||||     |         |\n"
    )
    written = 0
    with open(tmp, "wb") as f:
        f.write(header.encode())
        rows = max(10_000, min(ROWS_PER_BATCH, size_bytes // 140))  # ~140 bytes per line
        while written < size_bytes:
            df, t_us = _batch(rng, rows, t_us)
            data = ("\n".join(df["line"].to_list()) + "\n").encode()
            f.write(data)
            written += len(data)
    tmp.replace(path)


# --- measured steps (each runs in a child process) -----------------------------------------------


def step_wc(path: Path) -> dict:
    t = time.perf_counter()
    out = subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True, check=True).stdout
    return {"seconds": time.perf_counter() - t, "rows": int(out.split()[0])}


PY_RE = re.compile(
    r"^\s*(.*)-(\d+)\s+(?:\(\s*([0-9-]+)\)\s+)?\[(\d+)\]\s+(?:([^\s\d]\S*)\s+)?(\d+)\.(\d+): ([^:\s]+): (.*)$"
)


def step_lines(path: Path) -> dict:
    """polars splitting the file into lines (the parser's first step, on every core)."""
    t = time.perf_counter()
    rows = pl.scan_lines(path, name="text").select(pl.len()).collect(engine="streaming").item()
    return {"seconds": time.perf_counter() - t, "rows": rows}


def step_python_re(path: Path, sample_bytes: int) -> dict:
    """A plain-Python loop with `re`, on the first sample_bytes of the file."""
    t = time.perf_counter()
    rows = []
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            n += len(line)
            m = PY_RE.match(line)
            if m:
                comm, tid, _tgid, cpu, flags, secs, frac, event, payload = m.groups()
                rows.append(
                    (
                        comm,
                        int(tid),
                        int(cpu),
                        flags,
                        int(secs) * 1_000_000_000 + int(frac) * 1000,
                        event,
                        payload.rstrip(),
                    )
                )
            if n >= sample_bytes:
                break
    return {"seconds": time.perf_counter() - t, "rows": len(rows), "bytes": n}


def step_parse(path: Path) -> dict:
    """Text -> typed raw records (RAW_SCHEMA), batch by batch as load() parses a plain file."""
    from pvtrace.ingest.ftrace import SPEC
    from pvtrace.ingest.problems import Problems
    from pvtrace.ingest.records import ParseInfo, ParseOptions
    from pvtrace.ingest.stream import iter_raw_chunks

    t = time.perf_counter()
    info = ParseInfo(path=str(path), format="ftrace", problems=Problems(str(path)))
    rows = sum(c.height for c in iter_raw_chunks(path, SPEC, ParseOptions(), info))
    return {"seconds": time.perf_counter() - t, "rows": rows, "problems": info.problems.total}


def step_generate(path: Path, size_bytes: int) -> dict:
    t = time.perf_counter()
    generate(path, size_bytes)
    return {"seconds": time.perf_counter() - t, "rows": 0}


def step_load(path: Path) -> dict:
    from pvtrace.ingest.load import load

    t = time.perf_counter()
    trace = load([path])
    return {"seconds": time.perf_counter() - t, "rows": trace.events.height}


def step_stream(path: Path) -> dict:
    from pvtrace.ingest.load import ingest_to_parquet

    out = path.with_suffix(".parquet")
    t = time.perf_counter()
    meta = ingest_to_parquet([path], out, force=True)
    rows = pl.scan_parquet(out).select(pl.len()).collect().item()
    return {
        "seconds": time.perf_counter() - t,
        "rows": rows,
        "out_bytes": out.stat().st_size,
        "format": meta.format,
    }


STEPS = {
    "generate": step_generate,
    "wc": step_wc,
    "lines": step_lines,
    "python_re": step_python_re,
    "parse": step_parse,
    "load": step_load,
    "stream": step_stream,
}


def child(step: str, path: Path, sample_bytes: int) -> None:
    fn = STEPS[step]
    result = fn(path, sample_bytes) if step in ("python_re", "generate") else fn(path)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    self_kb = usage.ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["peak_bytes"] = max(self_kb, kids_kb) * 1024
    print(json.dumps(result))


def run_child(step: str, path: Path, sample_bytes: int = 0, code: str | None = None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        step,
        "--file",
        str(path),
        "--sample-bytes",
        str(sample_bytes),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if code is not None:  # another pvtrace tree first on the import path (--baseline)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (code, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 MB input instead of 1 GB")
    ap.add_argument("--size-gb", type=float, default=None, help="input size in GB (default 1, --quick 0.1)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the timed pvtrace steps (median)")
    ap.add_argument(
        "--only", default="wc,lines,python_re,parse,load,stream", help="comma-separated steps to run"
    )
    ap.add_argument(
        "--baseline", help="another pvtrace tree: its parse/load/stream steps alternate with ours"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--sample-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.file), args.sample_bytes)
        return

    size_gb = args.size_gb if args.size_gb is not None else (0.1 if args.quick else 1.0)
    size = int(size_gb * 1e9)
    path = DATA / f"host-{size_gb:g}GB.txt"
    print(f"generating {path} ({size_gb:g} GB) ...", flush=True)
    t = time.perf_counter()
    run_child(
        "generate", path, size
    )  # in a child: this process stays small, so children's peaks are their own
    mb = path.stat().st_size / 1e6
    print(f"  {mb:.0f} MB ready in {time.perf_counter() - t:.1f}s", flush=True)

    steps = args.only.split(",")
    if args.baseline:  # the baseline's run of each pvtrace step goes just before ours
        base = [f"{s}@baseline" for s in steps if s in ("parse", "load", "stream")]
        steps = [x for s in steps for x in ((f"{s}@baseline", s) if f"{s}@baseline" in base else (s,))]
    got: dict[str, list[dict]] = {step: [] for step in steps}
    for _ in range(args.repeat):  # rounds: every step once per round, so the machine's drift hits all
        for step in steps:
            name, _, which = step.partition("@")
            if name == "python_re" and got[step]:
                continue  # the slow reference loop: once
            sample = min(size, 50_000_000) if name == "python_re" else 0
            got[step].append(run_child(name, path, sample, args.baseline if which else None))
    results: dict[str, dict] = {}
    for step in steps:
        runs = got[step]
        secs = statistics.median(r["seconds"] for r in runs)
        cpu = statistics.median(r["cpu_seconds"] for r in runs)
        nbytes = runs[0].get("bytes", path.stat().st_size)
        res = {
            **runs[0],
            "seconds": secs,
            "cpu_seconds": cpu,
            "mb_per_s": nbytes / 1e6 / secs,
            "mb_per_cpu_s": nbytes / 1e6 / cpu if cpu else None,
            "peak_gib": max(r["peak_bytes"] for r in runs) / 2**30,
        }
        res["all_seconds"] = [round(r["seconds"], 3) for r in runs]
        results[step] = res
        print(
            f"{step:15s} {res['mb_per_s']:8.1f} MB/s  median {secs:7.2f}s of {res['all_seconds']}  "
            f"cpu {cpu:6.2f}s  peak {res['peak_gib']:.2f} GiB  rows {res['rows']}",
            flush=True,
        )
    if "stream" in results and "lines" in results:
        ratio = results["stream"]["mb_per_s"] / results["lines"]["mb_per_s"]
        cpu_ratio = results["lines"]["cpu_seconds"] / results["stream"]["cpu_seconds"]
        print(
            f"stream / polars line split: {ratio:.2f} of its speed (target >= 0.5); in CPU time {cpu_ratio:.2f}"
        )
    for step in ("parse", "load", "stream"):
        if step in results and f"{step}@baseline" in results:
            new, old = results[step], results[f"{step}@baseline"]
            print(
                f"{step} vs baseline: {old['seconds'] / new['seconds']:.2f}x in wall time, "
                f"{old['cpu_seconds'] / new['cpu_seconds']:.2f}x in CPU time (medians, alternating)"
            )
    if "parse" in results:
        p = results["parse"]["mb_per_s"]
        if "wc" in results:
            print(f"parse / wc -l       : {p / results['wc']['mb_per_s']:.3f} of wc's speed")
        if "python_re" in results:
            print(f"parse / Python re   : {p / results['python_re']['mb_per_s']:.1f}x faster")
    print(f"load average at the end: {os.getloadavg()}")
    print(json.dumps({"file_mb": mb, **results}, indent=1))


if __name__ == "__main__":
    main()
