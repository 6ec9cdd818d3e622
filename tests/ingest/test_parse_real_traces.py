"""Every file in ../shared/real-traces ingests, and its records by tracepoint are exactly right.

For each file the counts the parser gives are compared with (1) counts made here by an
independent, deliberately simple line-by-line regex count of the decompressed text, and
(2) the numbers published next to the files (PROVENANCE.md, transcribed below, and
local/captures.json, read as is). Summary tables (perf kvm stat, perf lock contention)
go through load() to the NORMALIZE readers; their row counts are checked the same way.
Skips with a clear reason when ../shared is absent.
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pvtrace.ingest.load import load, read_raw
from pvtrace.ingest.raw import BUFFER_STARTED, KERNEL_STACK, LOST_EVENTS

# Counts by tracepoint as published in public/PROVENANCE.md ("Events (count)" / "Notes" columns).
PROVENANCE: dict[str, dict[str, int]] = {
    "ftrace-5flag_kvm-host-L1-nested-vmx_lkml-2023-03-30.txt": {
        "kvm_mmu_paging_element": 19,
        "kvm_tdp_mmu_spte_changed": 14,
        "kvm_exit": 13,
        "kvm_entry": 12,
        "kvm_mmu_pagetable_walk": 5,
        "kvm_mmu_prepare_zap_page": 4,
        "kvm_msr": 3,
        "kvm_cr": 3,
        "kvm_mmu_walker_error": 2,
        "kvm_inj_exception": 1,
        "kvm_emulate_insn": 1,
        "kvm_cpuid": 1,
    },
    "ftrace-7flag_kvm-host-vcpu-threads-kvm_msr_qemu-devel-2025-06-09.txt": {"kvm_msr": 18},
    "tracecmd-report-noplugin_kvm-host-vmx-newfmt_kvm-list-2022-01-20.txt": {
        "kvm_entry": 1,
        "kvm_exit": 1,
        "kvm_emulate_insn": 1,
        "kvm_inj_exception": 1,
    },
    "tracecmd-report_kvm-host-nested-oldfmt_kernel-5.1-5.2_kvm-list-2019-07-08.txt": {
        "kvm_fpu": 4,
        "kvm_nested_vmexit": 3,
        "kvm_userspace_exit": 2,
        "kvm_pio": 2,
        "kvm_mmu_get_page": 2,
        "kvm_exit": 2,
        "kvm_entry": 2,
    },
    "ftrace-4flag_kvm-host-svm-unknown-comm_vcpu-in-kvm_exit_stable-list-2020-04.txt": {
        "kvm_emulate_insn": 6,
        "kvm_userspace_exit": 3,
        "kvm_page_fault": 3,
        "kvm_fpu": 3,
        "kvm_exit": 3,
    },
    "ftrace-per_cpu-4flag_kvm-host-vcpu-thread-sched_fangying-blog.txt": {
        "sched_switch": 4,
        "sched_wakeup": 2,
        "sched_stat_runtime": 2,
    },
    "kvm_halt_poll_ns-lines_ns-timestamps_kvm-list-2023-11-02.txt": {"kvm_halt_poll_ns": 12},
    "abbreviated-comm-pid_kvm_hypercall-nr-kick-yield_kvm-list-2022.txt": {"kvm_hypercall": 6},
    "ftrace-dump-latency-fmt_kvm-guest-rcutorture_linux-next-2024-10-06.txt": {
        "sched_switch": 1132,
        "sched_wakeup": 540,
        "function": 101,
        LOST_EVENTS: 16,
    },
    "ftrace-dump-latency-fmt_kvm-guest-rcutorture_linux-next-2024-10-08.txt": {
        "sched_switch": 292,
        "sched_wakeup": 133,
        "sched_pi_setprio": 5,
        "function": 15,
        LOST_EVENTS: 4,
    },
    "perf-script_lock-contention_begin-callchains_powerpc_stable-6.6-review.txt": {
        "lock:contention_begin": 2
    },
    "perf-script_sched-events_noplugin-R+_lkml-2024-02.txt": {
        "sched:sched_switch": 5,
        "sched:sched_stat_runtime": 2,
        "sched:sched_waking": 1,
    },
    "perf-script_plugin-sched_switch_powerpc-vpa-dtl_lkml-2025.txt": {
        "sched:sched_switch": 2,
        "sched:sched_stat_runtime": 1,
        "sched:sched_migrate_task": 1,
        "vpa-dtl": 2,
    },
    "tracecmd-report-v6_arm-thermal_trappy-doc.txt": {
        "cdev_update": 201,
        "thermal_power_cpu_limit": 134,
        "thermal_power_cpu_get_power": 134,
        "thermal_temperature": 67,
        "thermal_power_devfreq_limit": 67,
        "thermal_power_devfreq_get_power": 67,
        "thermal_power_allocator_pid": 67,
        "thermal_power_allocator": 67,
    },
    "tracecmd-report-v6_sched-stat_trappy.txt": {
        "sched_stat_runtime": 21,
        "sched_stat_wait": 13,
        "sched_stat_sleep": 12,
        "sched_process_wait": 3,
        "sched_process_exit": 2,
    },
    "tracecmd-report-raw-v6_sched-switch_trappy.txt": {"sched_switch": 3},
    "ftrace-4flag_no-header_chrome_trappy.txt": {"cpu_idle": 9, "sched_switch": 1},
    "ftrace-tgid-4flag_android-systrace_trappy.txt": {
        "sched_wakeup": 4,
        "sched_switch": 4,
        "tracing_mark_write": 2,
    },
    "ftrace-tgid-4flag_android-surfaceflinger_trappy.txt": {
        "sched_switch": 715,
        "cpu_idle": 621,
        "sched_wakeup": 421,
        "sugov_set_iowait_boost": 366,
        "tracing_mark_write": 160,
        "cpu_frequency": 104,
        "clock_set_rate": 88,
        "sched_blocked_reason": 31,
    },
    "ftrace-4flag_android-legacy-systrace_trappy.txt": {
        "sched_load_avg_cpu": 5,
        "sched_switch": 3,
        "sched_load_avg_task": 3,
        "sched_wakeup": 2,
        "sched_contrib_scale_f": 2,
    },
    "ftrace-5flag-full-header-irqs-off-BH_tasklet-events_lkml.txt": {"tasklet_entry": 2, "tasklet_exit": 2},
    "tracecmd3.1.6-report_default-plugins_arm-sched_trappy-dat.txt": {"sched_switch": 755, "bprint": 2},
    "tracecmd3.1.6-report_default_arm-idle_trappy-dat.txt": {
        "sched_switch": 23,
        "cpu_idle": 17,
        "sched_migrate_task": 3,
    },
}
# Summary tables: rows as published ("Rows 11 + 8", "8 rows", ...).
SUMMARY_ROWS = {
    "perf-kvm-stat-live_x86-vmx-two-tables_kvm-list-2019-10-15.txt": ("perf-kvm-stat", 11 + 8),
    "perf-kvm-stat-report_arm64-vcpu-filter_kvmarm-2022-11-05.txt": ("perf-kvm-stat", 3),
    "perf-kvm-stat-report_arm64-vmexit-and-trap_kvmarm-2019-06-12.txt": ("perf-kvm-stat", 2 + 4),
    "perf-kvm-stat-report_hist-style-ns-columns_riscv_kvm-list-2024-04-22.txt": ("perf-kvm-stat", 8),
    "perf-lock-contention_bpf_type-caller_aarch64-6.1_lkml-2024-03-21.txt": ("perf-lock-contention", 11),
    "perf-lock-contention_bpf_type-caller_x86_lkml-2022-07-29.txt": ("perf-lock-contention", 10),
    "perf-lock-contention_bpf_per-thread-pid-comm_lkml-2022-12.txt": ("perf-lock-contention", 5),
}
SIDE_FILES = {"PROVENANCE.md", "README.md", "captures.json", "capture-env.txt"}


def _files(sub: str) -> list[str]:
    here = Path(__file__).resolve().parents[2] / ".." / "shared" / "real-traces" / sub
    return sorted(p.name for p in here.iterdir() if p.name not in SIDE_FILES) if here.is_dir() else []


def _text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    return data.decode("utf-8", errors="replace")


# --- the independent count -------------------------------------------------------------------------
# One regex per line family, written from formats.md, sharing no code with the parser, run over the
# whole text at once (re.findall in C is fast enough for the 70 MB captures).
_TS_EVENT = re.compile(r"(?:\d+\.\d+|\d+us.|^\s*\d+): +((?:[\w-]+:)?[\w-]+):(?: |$)", re.M)
_NO_TS = re.compile(r"^\s*\S.*-\d+: ([\w-]+): ", re.M)
_FUNCTION = re.compile(r"\d+us.: \S+ <-\S+\s*$", re.M)
_LOST = re.compile(r"CPU:\d+ \[LOST (?:\d+ )?EVENTS\]")
_BUFFER = re.compile(r"^#+ CPU \d+ buffer started #+", re.M)


def independent_counts(text: str) -> Counter:
    counts = Counter(_TS_EVENT.findall(text))
    if not counts:
        counts.update(_NO_TS.findall(text))  # trimmed excerpts: `comm-pid: event: ...`
    if " <-" in text:
        counts["function"] += len(_FUNCTION.findall(text))
    if "buffer started" in text:
        counts[BUFFER_STARTED] += len(_BUFFER.findall(text))
    counts[KERNEL_STACK] += text.count(": <stack trace>")
    counts[LOST_EVENTS] += len(_LOST.findall(text))
    return +counts


def parsed_counts(raw: pl.DataFrame) -> Counter:
    names = raw.select(
        pl.when(pl.col("system").is_not_null())
        .then(pl.concat_str([pl.col("system").cast(pl.String), pl.lit(":"), pl.col("event").cast(pl.String)]))
        .otherwise(pl.col("event").cast(pl.String))
        .alias("name")
    )
    return Counter(dict(names.group_by("name").len().iter_rows()))


@pytest.mark.parametrize("name", _files("public"))
def test_public_file(real_traces: Path, name: str) -> None:
    path = real_traces / "public" / name
    if name in SUMMARY_ROWS:
        kind, n_rows = SUMMARY_ROWS[name]
        trace = load([path])
        assert trace.events.height == 0
        assert trace.meta.format == kind
        assert len(trace.meta.extra["summary_tables"][kind]) == n_rows
        return
    raw, info, _ = read_raw(path)
    got = parsed_counts(raw)
    assert got == independent_counts(_text(path))
    if name in PROVENANCE:
        assert {k: got[k] for k in PROVENANCE[name]} == PROVENANCE[name]
    # a file that ends without a newline keeps its last record, and says it may be cut
    cut = {"last_line_cut": 1} if not path.read_bytes().endswith(b"\n") else {}
    assert info.problems.counts == cut, info.problems.to_dict()
    trace = load([path])  # and the whole pipeline takes it
    assert trace.meta.extra["events_by_tracepoint"] == {k.split(":")[-1]: v for k, v in got.items()}


def _captures(real_traces: Path) -> dict[str, dict]:
    doc = json.loads((real_traces / "local" / "captures.json").read_text())
    return {c["file"]: c for c in doc["captures"]}


@pytest.mark.parametrize("name", [n for n in _files("local") if n.endswith(".txt.xz")])
def test_local_file(real_traces: Path, name: str) -> None:
    path = real_traces / "local" / name
    cap = _captures(real_traces)[name]["stats"]
    raw, info, _ = read_raw(path)
    got = parsed_counts(raw)
    assert got == independent_counts(_text(path))
    events = {
        k.split(":")[-1]: v for k, v in got.items() if k not in (LOST_EVENTS, BUFFER_STARTED, KERNEL_STACK)
    }
    assert events == cap["events"]
    assert sum(events.values()) == cap["events_total"]
    assert info.stats["lost_lines"] == cap["lost_lines"]
    assert info.stats["lost_events_reported"] == cap["lost_events_reported"]
    assert got[KERNEL_STACK] == cap["stack_trace_blocks"]
    frames = info.stats["stack_frames"] + info.stats["callchain_frames"]
    assert frames == cap["stack_frame_lines"]
    assert info.problems.total == 0, info.problems.to_dict()


def test_local_lost_markers_take_the_next_time_on_their_cpu(real_traces: Path) -> None:
    raw, _, _ = read_raw(real_traces / "local" / "guest-pvqspinlock-futex-lossy-tracepipe.txt.xz")
    lost = raw.filter(pl.col("event") == LOST_EVENTS)
    assert lost.height == 84 and lost["ts"].null_count() == 0
    nxt = raw.filter(pl.col("event") != LOST_EVENTS).sort("line")
    for row in lost.head(5).iter_rows(named=True):
        after = nxt.filter((pl.col("line") > row["line"]) & (pl.col("cpu") == row["cpu"])).head(1)
        assert after["ts"][0] == row["ts"]


def test_stack_traces_are_attached(real_traces: Path) -> None:
    raw, _, _ = read_raw(real_traces / "local" / "guest-pvqspinlock-mix-stacktrace-ftrace.txt.xz")
    stacks = raw.filter(pl.col("event") == KERNEL_STACK)
    frames = stacks["payload"].str.count_matches("\n") + 1
    assert int(frames.sum()) == 97615
    # the top of the stacks: the slow path, as the capture README says (9666 of 9667 blocks)
    assert stacks["payload"].str.contains("__pv_queued_spin_lock_slowpath").sum() == 9666


def test_dat_gives_the_same_events_as_its_report_twin(real_traces: Path) -> None:
    if shutil.which("trace-cmd") is None:
        pytest.skip("trace-cmd is not installed (apt-get install trace-cmd)")
    dat, _, v_dat = read_raw(real_traces / "local" / "guest-pvqspinlock-futex-tracecmd.dat.xz")
    txt, _, v_txt = read_raw(real_traces / "local" / "guest-pvqspinlock-futex-tracecmd.txt.xz")
    assert (v_dat.format, v_txt.format) == ("dat", "trace-cmd")
    assert dat.height == txt.height == 268902
    # the .dat is read with ns timestamps (report -t); the twin was printed in us, rounded
    assert ((dat["ts"] + 500) // 1000).to_list() == (txt["ts"] // 1000).to_list()
    cols = ["line", "source", "comm", "tid", "cpu", "event", "payload"]
    assert dat.select(cols).equals(txt.select(cols))
