"""perf kvm stat and perf lock contention tables, real ones and every documented variant."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from pvtrace.errors import FormatError
from pvtrace.ingest.problems import Problems
from pvtrace.ingest.summary_tables import (
    KVM_STAT_SCHEMA,
    LOCK_CONTENTION_SCHEMA,
    read_perf_kvm_stat,
    read_perf_lock_contention,
)

UNIT = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def cells_ns(line: str) -> list[int]:
    """Every `value unit` cell of a line, in ns (an independent reading for the checks)."""
    return [round(float(v) * UNIT[u]) for v, u in re.findall(r"([\d.]+)\s*(ns|us|ms|s)\b", line)]


@pytest.fixture(scope="module")
def public(real_traces: Path) -> Path:
    return real_traces / "public"


def test_kvm_stat_live_two_tables(public: Path) -> None:
    path = public / "perf-kvm-stat-live_x86-vmx-two-tables_kvm-list-2019-10-15.txt"
    text = path.read_text()
    table = read_perf_kvm_stat(text, str(path))
    assert table.schema == KVM_STAT_SCHEMA
    assert table.group_by("block").len().sort("block")["len"].to_list() == [11, 8]
    rows = [line for line in text.splitlines() if re.match(r"^\s*\S+\s+\d+\s", line)]
    assert table["key"].to_list() == [r.split()[0] for r in rows]
    assert table["n_samples"].to_list() == [int(r.split()[1]) for r in rows]
    assert table.select("min_ns", "max_ns", "avg_ns").rows() == [tuple(cells_ns(r)) for r in rows]
    hlt = table.row(0, named=True)  # `0.43us 901000.66us`: the wide max runs into the min column
    assert (hlt["min_ns"], hlt["max_ns"], hlt["avg_ns"], hlt["stddev_pct"]) == (
        430,
        901_000_660,
        310_880,
        8.46,
    )
    reasons = dict(zip(table["key"], table["reason"], strict=False))
    assert reasons["VMCALL"] == "HYPERCALL" and reasons["PAUSE_INSTRUCTION"] == "PAUSE"
    assert reasons["PENDING_INTERRUPT"] == "INTERRUPT_WINDOW" and reasons["MSR_WRITE"] == "MSR_WRITE"
    for block in (0, 1):
        pct = table.filter(pl.col("block") == block)["samples_pct"].sum()
        assert abs(pct - 100) < 0.1


def test_kvm_stat_arm64_vcpu_filter(public: Path) -> None:
    table = read_perf_kvm_stat(
        (public / "perf-kvm-stat-report_arm64-vcpu-filter_kvmarm-2022-11-05.txt").read_text()
    )
    assert table.select("scope", "key", "reason", "n_samples").rows() == [
        ("all VMs, VCPU 27", "SYS64", "SYS64", 808),
        ("all VMs, VCPU 27", "WFx", "WFX", 10),
        ("all VMs, VCPU 27", "IRQ", "EXTERNAL_INTERRUPT", 2),
    ]
    assert set(table["block_samples"]) == {820} and set(table["block_time_ns"]) == {3_068_280}
    assert table["n_samples"].sum() == 820


def test_kvm_stat_arm64_vmexit_and_trap(public: Path) -> None:
    table = read_perf_kvm_stat(
        (public / "perf-kvm-stat-report_arm64-vmexit-and-trap_kvmarm-2019-06-12.txt").read_text()
    )
    assert table.select("block", "key_kind", "key").rows() == [
        (0, "VM-EXIT", "TRAP"),
        (0, "VM-EXIT", "IRQ"),
        (1, "TRAP-EVENT", "WFx"),
        (1, "TRAP-EVENT", "SYS64"),
        (1, "TRAP-EVENT", "DABT_LOW"),
        (1, "TRAP-EVENT", "IABT_LOW"),
    ]
    totals = (
        table.group_by("block").agg(pl.col("block_samples").first(), pl.col("n_samples").sum()).sort("block")
    )
    assert totals.select("block_samples").to_series().to_list() == [659950, 640934]
    assert totals["n_samples"].to_list() == [659950, 640934]
    assert table.filter(pl.col("key") == "IABT_LOW")["min_ns"].item() == 12_597_760


def test_kvm_stat_histogram_style(public: Path) -> None:
    path = public / "perf-kvm-stat-report_hist-style-ns-columns_riscv_kvm-list-2024-04-22.txt"
    text = path.read_text()
    table = read_perf_kvm_stat(text, str(path))
    rows = [line.split() for line in text.splitlines()[1:] if line.strip()]
    assert table.height == len(rows) == 8
    assert table["key_kind"].unique().to_list() == ["Event name"]
    assert table.select("key", "n_samples", "total_ns", "max_ns", "min_ns", "avg_ns").rows() == [
        (r[0], int(r[1]), int(r[3]), int(r[5]), int(r[6]), int(r[7])) for r in rows
    ]
    assert table["stddev_pct"].null_count() == 8


LIVE = """15:52:35.709821

Analyze events for all VMs, all VCPUs:

             VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time

               pause      20011    80.00%    10.00%      0.40us123456.78us      4.99us ( +-   3.02% )
                 hlt       5003    20.00%    90.00%      0.51us 48211.09us   1042.77us ( +-   2.11% )

Total Samples:25014, Total events handled time:5738123.00us.

15:52:36.710102

Analyze events for pid(s) 4242, all VCPUs:

             VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time

             UD excp          1   100.00%   100.00%      2.00us      2.00us      2.00us ( +-   0.00% )
"""


def test_kvm_stat_live_refreshes_amd_names_and_full_fusion() -> None:
    live = LIVE.replace(
        "Avg time\n\n               pause", "Avg time \n\n               pause"
    )  # trailing blank
    assert "Avg time \n" in live
    table = read_perf_kvm_stat(live)
    assert table.select("block", "time", "scope", "key", "reason").rows() == [
        (0, "15:52:35.709821", "all VMs, all VCPUs", "pause", "PAUSE"),
        (0, "15:52:35.709821", "all VMs, all VCPUs", "hlt", "HLT"),
        (1, "15:52:36.710102", "pid(s) 4242, all VCPUs", "UD excp", "UD_EXCP"),
    ]
    assert table.row(0, named=True)["max_ns"] == 123_456_780  # no blank at all between min and max
    assert table.filter(pl.col("block") == 0)["block_time_ns"].to_list() == [5_738_123_000] * 2
    assert table.filter(pl.col("block") == 1)["block_samples"].to_list() == [None]


def test_kvm_stat_bad_row_and_no_table() -> None:
    bad = LIVE.replace("      5003 ", "      50x3 ")
    with pytest.raises(FormatError) as exc:
        read_perf_kvm_stat(bad, "live.txt")
    assert exc.value.path == "live.txt" and exc.value.line == 8
    problems = Problems("live.txt")
    table = read_perf_kvm_stat(bad, "live.txt", problems)
    assert table.height == 2 and problems.counts == {"malformed_line": 1}
    with pytest.raises(FormatError, match="no perf kvm stat table"):
        read_perf_kvm_stat("hello\nworld\n", "x.txt")


@pytest.mark.parametrize(
    ("name", "mode", "n_rows"),
    [
        ("perf-lock-contention_bpf_type-caller_x86_lkml-2022-07-29.txt", "type caller", 10),
        ("perf-lock-contention_bpf_type-caller_aarch64-6.1_lkml-2024-03-21.txt", "type caller", 11),
        ("perf-lock-contention_bpf_per-thread-pid-comm_lkml-2022-12.txt", "pid comm", 5),
    ],
)
def test_lock_contention_real(public: Path, name: str, mode: str, n_rows: int) -> None:
    text = (public / name).read_text()
    table = read_perf_lock_contention(text, name)
    assert table.schema == LOCK_CONTENTION_SCHEMA
    assert table.height == n_rows and set(table["mode"]) == {mode}
    rows = [line for line in text.splitlines() if re.match(r"^\s*\d+\s+[\d.]+\s*(?:ns|us|ms|s)\b", line)]
    assert table["n_contended"].to_list() == [int(r.split()[0]) for r in rows]
    assert table.select("total_wait_ns", "max_wait_ns", "avg_wait_ns").rows() == [
        tuple(cells_ns(r)) for r in rows
    ]
    if mode == "type caller":
        assert table["type"].to_list() == [re.split(r"\s+", r.strip())[-2] for r in rows]
        assert table["caller"].to_list() == [r.split()[-1] for r in rows]
    else:
        assert table["pid"].to_list() == [int(r.split()[-2]) for r in rows]
        assert table["comm"].to_list() == [r.split()[-1] for r in rows]


def test_lock_contention_units_per_cell(public: Path) -> None:
    table = read_perf_lock_contention(
        (public / "perf-lock-contention_bpf_type-caller_aarch64-6.1_lkml-2024-03-21.txt").read_text()
    )
    assert table.row(0)[2:5] == (6, 6_030_000_000, 6_030_000_000)
    assert table.filter(pl.col("type") == "rwsem:W").select("total_wait_ns").item() == 702_630


ADDRESS_VERBOSE = """ contended   total wait     max wait     avg wait            address   symbol

         2      1.95 us      1.77 us       975 ns   ffff9d45717b2808   &task_struct (mutex)
                        0xffffffff9a23f4b5  _raw_read_lock_irqsave+0x45
                        0xffffffff9a1ca8a0  mutex_lock+0x10
         1      1.18 us      1.18 us      1.18 us   ffffffff88d17c90   pack_mutex (mutex)

=== output for debug===

bad: 10, total: 14
bad rate: 71.43 %
"""


def test_lock_contention_address_mode_with_callstacks() -> None:
    table = read_perf_lock_contention(ADDRESS_VERBOSE)
    assert table.select("mode", "n_contended", "avg_wait_ns", "address", "symbol", "type").rows() == [
        ("address symbol", 2, 975, 0xFFFF9D45717B2808, "&task_struct", "mutex"),
        ("address symbol", 1, 1180, 0xFFFFFFFF88D17C90, "pack_mutex", "mutex"),
    ]
    assert table["callstack"].to_list() == [
        "0xffffffff9a23f4b5 _raw_read_lock_irqsave+0x45\n0xffffffff9a1ca8a0 mutex_lock+0x10",
        None,
    ]


def test_lock_contention_csv_and_thread_names_with_spaces() -> None:
    csv = "contended,total wait,max wait,avg wait,type,caller\n88,2310000,310120,26250,spinlock,kvm_mmu_page_fault+0x3a1\n"
    table = read_perf_lock_contention(csv)
    assert table.select("n_contended", "total_wait_ns", "type", "caller").rows() == [
        (88, 2_310_000, "spinlock", "kvm_mmu_page_fault+0x3a1")
    ]
    threads = " contended   total wait     max wait     avg wait          pid   comm\n\n         4     12.00 us      5.00 us      3.00 us         2046   CPU 0/KVM\n"
    assert read_perf_lock_contention(threads).select("pid", "comm").rows() == [(2046, "CPU 0/KVM")]


def test_lock_contention_bad_input() -> None:
    with pytest.raises(FormatError, match="no perf lock contention table"):
        read_perf_lock_contention("nothing here\n", "x.txt")
    bad = ADDRESS_VERBOSE.replace("         1      1.18 us", "         1      1.18 qq")
    with pytest.raises(FormatError) as exc:
        read_perf_lock_contention(bad, "l.txt")
    assert exc.value.line == 6


def test_kvm_stat_ioport_keys() -> None:
    text = (
        "Analyze events for all VMs, all VCPUs:\n\n"
        "      IO Port Access    Samples  Samples%     Time%    Min Time    Max Time         Avg time\n\n"
        "         0x3f8:POUT       1234    90.00%    80.00%      1.00us     10.00us      2.00us ( +-   1.00% )\n"
        "          0x70:PIN        137    10.00%    20.00%      3.50us     40.00us      5.00us ( +-   2.00% )\n"
    )
    table = read_perf_kvm_stat(text)
    assert table.select("key_kind", "key", "reason", "n_samples", "avg_ns").rows() == [
        ("IO Port Access", "0x3f8:POUT", "0x3f8:POUT", 1234, 2000),
        ("IO Port Access", "0x70:PIN", "0x70:PIN", 137, 5000),
    ]
