"""Normalizer throughput and memory: raw host records (a realistic KVM mix) -> canonical events.

    python benchmarks/bench_normalize.py            # 4M raw rows
    python benchmarks/bench_normalize.py --quick    # 500k rows

The raw frame is generated once into benchmarks/.data/ (no text parsing:
bench_ingest.py measures that and the whole load()), then normalize() runs 3
times, each in its own subprocess that first reads the frame: peak memory is
that process's ru_maxrss, reported with the peak after reading the frame, so
the difference is what normalize() itself needs. Prints the median rows/s.
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

import numpy as np
import polars as pl

DATA = Path(__file__).resolve().parent / ".data"
N_PCPUS = 16
N_VMS = 4
N_VCPUS = 4
MIX = {
    "kvm_exit": 0.33,
    "kvm_entry": 0.33,
    "sched_switch": 0.12,
    "sched_wakeup": 0.06,
    "kvm_hypercall": 0.04,
    "kvm_vcpu_wakeup": 0.04,
    "kvm_msr": 0.08,
}
REASONS = ["PAUSE_INSTRUCTION", "HLT", "EXTERNAL_INTERRUPT", "VMCALL", "EPT_VIOLATION", "MSR_WRITE"]


def raw_frame(n: int, seed: int = 1) -> pl.DataFrame:
    """n raw rows in RAW_SCHEMA with payloads as a 6.x host prints them."""
    from pvtrace.ingest.raw import conform_raw

    rng = np.random.default_rng(seed)
    events = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    vm = rng.integers(0, N_VMS, n)
    vcpu = rng.integers(0, N_VCPUS, n)
    qemu = 1000 * (vm + 1)
    tid = qemu + 1 + vcpu
    other_vcpu = rng.integers(0, N_VCPUS, n)
    df = pl.DataFrame(
        {
            "event": events,
            "vcpu": vcpu,
            "tid": tid,
            "tgid": qemu,
            "other": qemu + 1 + other_vcpu,
            "other_vcpu": other_vcpu,
            "cpu": rng.integers(0, N_PCPUS, n),
            "ts": np.cumsum(rng.integers(0, 2000, n)) + 10**12,
            "reason": rng.choice(REASONS, size=n),
            "state": rng.choice(["R", "R+", "S"], size=n),
        }
    )
    vcpu_s, comm = pl.col("vcpu").cast(pl.String), pl.lit("CPU ") + pl.col("vcpu").cast(pl.String) + "/KVM"
    other_comm = pl.lit("CPU ") + pl.col("other_vcpu").cast(pl.String) + "/KVM"
    payload = (
        pl.when(pl.col("event") == "kvm_exit")
        .then(
            pl.lit("vcpu ") + vcpu_s + " reason " + pl.col("reason") + " rip 0xffffffff8106a2b1 info1 "
            "0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000"
        )
        .when(pl.col("event") == "kvm_entry")
        .then(pl.lit("vcpu ") + vcpu_s + ", rip 0xffffffff8106a2b1")
        .when(pl.col("event") == "sched_switch")
        .then(
            pl.lit("prev_comm=") + comm + " prev_pid=" + pl.col("tid").cast(pl.String) + " prev_prio=120 prev_state="
            + pl.col("state") + " ==> next_comm=" + other_comm + " next_pid=" + pl.col("other").cast(pl.String)
            + " next_prio=120"
        )
        .when(pl.col("event") == "sched_wakeup")
        .then(pl.lit("comm=") + other_comm + " pid=" + pl.col("other").cast(pl.String) + " prio=120 target_cpu=003")
        .when(pl.col("event") == "kvm_hypercall")
        .then(pl.lit("nr 0x5 a0 0x0 a1 0x") + pl.col("other_vcpu").cast(pl.String) + " a2 0x0 a3 0x0")
        .when(pl.col("event") == "kvm_vcpu_wakeup")
        .then(pl.lit("wait time 25150 ns, polling valid"))
        .otherwise(pl.lit("msr_write 3a = 0x40005"))
    )  # fmt: skip
    cols = [pl.int_range(1, n + 1).alias("line"), comm.alias("comm"), "tid", "tgid", "cpu", "ts", "event"]
    return conform_raw(df.select(*cols, payload.alias("payload")))


def data_path(n: int) -> Path:
    path = DATA / f"normalize-raw-{n}.parquet"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        raw_frame(n).write_parquet(path)
    return path


def one_run(n: int) -> None:
    from pvtrace.ingest.normalize import normalize

    raw = pl.read_parquet(data_path(n))
    before_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    events, _ = normalize(raw)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {
        "seconds": dt,
        "cpu_seconds": cpu,
        "rows": raw.height,
        "events": events.height,
        "before_mib": before_mib,
        "peak_mib": peak_mib,
    }
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one_run(args.one)
        return
    n = args.rows or (500_000 if args.quick else 4_000_000)
    mib = data_path(n).stat().st_size / 2**20
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout))
    secs = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    print(
        f"normalize: {n:,} raw rows -> {runs[0]['events']:,} events, median {secs:.2f} s "
        f"({n / secs / 1e6:.2f} M rows/s; runs {each} s; {cpu:.2f} CPU-s = {n / cpu / 1e6:.2f} M rows per "
        "CPU-second, the figure that does not depend on what else runs on the machine), "
        f"peak {max(r['peak_mib'] for r in runs):.0f} MiB, of which {max(r['before_mib'] for r in runs):.0f} MiB "
        f"before normalize (reading the frame; {mib:.0f} MiB as Parquet)"
    )


if __name__ == "__main__":
    main()
