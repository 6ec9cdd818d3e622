"""Every real trace in ../shared/real-traces, through load(): kinds, vCPU maps and reasons.

Expected numbers are computed here from the file text with plain regexes (or
taken from PROVENANCE.md / captures.json), independently of the ingester.
"""

from __future__ import annotations

import json
import lzma
import re
from collections import Counter
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from pvtrace.ingest.load import load
from pvtrace.trace import Trace


@cache
def _load(path: Path) -> Trace:
    return load([path])


def events_of(path: Path) -> pl.DataFrame:
    ev = _load(path).events
    return ev.with_columns(pl.col(pl.Categorical).cast(pl.String), pl.col("kind", "origin").cast(pl.String))


def text_of(path: Path) -> str:
    return lzma.decompress(path.read_bytes()).decode() if path.suffix == ".xz" else path.read_text()


def kinds(ev: pl.DataFrame) -> dict[str, int]:
    return dict(Counter(ev["kind"].to_list()))


@pytest.fixture(scope="module")
def public(real_traces: Path) -> Path:
    return real_traces / "public"


def vcpu_map(path: Path) -> dict[int, tuple[str, int]]:
    return {r["tid"]: (r["vm"], r["vcpu"]) for r in _load(path).meta.vcpu_map}


def exits_by_reason(text: str) -> Counter:
    return Counter(re.findall(r"kvm_exit: +(?:vcpu \d+ )?reason (\S+) rip", text))


def test_l1_nested_vmx_host(public: Path) -> None:
    path = public / "ftrace-5flag_kvm-host-L1-nested-vmx_lkml-2023-03-30.txt"
    ev, text = events_of(path), text_of(path)
    # the two vCPU threads both named qemu-system-x86: vcpu 0 and 1 of one VM (from kvm_exit/kvm_entry)
    vmap = vcpu_map(path)
    assert {tid: v for tid, (_, v) in vmap.items()} == {8396: 0, 8397: 1}
    assert vmap[8396][0] == vmap[8397][0]
    assert kinds(ev) == {"vm_exit": 13, "vm_entry": 12, "other": 78 - 25}
    got = Counter(ev.filter(pl.col("kind") == "vm_exit")["reason"].to_list())
    assert got == exits_by_reason(text)  # all VMX names outside the synonym table stay as printed
    assert got["EXTERNAL_INTERRUPT"] == 4
    kvm = ev.filter(pl.col("kind").is_in(["vm_exit", "vm_entry"]))
    assert (kvm["vcpu"] == kvm["tid"] - 8396).all()
    expected_pcpu = {int(t): int(c) for t, c in re.findall(r"qemu-system-x86-(\d+)\s+\[(\d+)\]", text)}
    assert all(expected_pcpu[t] == p for t, p in kvm.select("tid", "pcpu").rows())
    # kvm_msr, kvm_cr ... emitted on a vCPU thread are kept (as other) with that vCPU
    other = ev.filter(pl.col("kind") == "other")
    assert other["vcpu"].null_count() == 0 and other["args"].null_count() == 0


def test_svm_npf_with_vcpu_in_kvm_exit(public: Path) -> None:
    path = public / "ftrace-4flag_kvm-host-svm-unknown-comm_vcpu-in-kvm_exit_stable-list-2020-04.txt"
    ev = events_of(path)
    exits = ev.filter(pl.col("kind") == "vm_exit")
    assert exits.select("tid", "vcpu", "reason").sort("tid").rows() == [
        (35787, 1, "NPF"),
        (35788, 2, "NPF"),
        (35789, 3, "NPF"),
    ]
    assert len({vm for vm, _ in vcpu_map(path).values()}) == 1
    assert kinds(ev) == {"vm_exit": 3, "other": 15}


def test_noplugin_vmx_new_format(public: Path) -> None:
    path = public / "tracecmd-report-noplugin_kvm-host-vmx-newfmt_kvm-list-2022-01-20.txt"
    ev = events_of(path)
    assert ev.filter(pl.col("kind").is_in(["vm_exit", "vm_entry"])).select(
        "kind", "tid", "vcpu", "pcpu", "reason"
    ).rows() == [
        ("vm_entry", 1637698, 0, 19, None),
        ("vm_exit", 1637698, 0, 19, "EXCEPTION_NMI"),
    ]


def test_old_formats_vcpu_from_kvm_entry(public: Path) -> None:
    path = public / "tracecmd-report_kvm-host-nested-oldfmt_kernel-5.1-5.2_kvm-list-2019-07-08.txt"
    ev, text = events_of(path), text_of(path)
    # old kvm_exit has no vcpu: the thread's `kvm_entry: vcpu 3` maps it
    assert vcpu_map(path)[6660][1] == 3
    exits = ev.filter(pl.col("kind") == "vm_exit")
    assert exits["vcpu"].to_list() == [3, 3] and exits["reason"].to_list() == ["IO_INSTRUCTION"] * 2
    assert kinds(ev)["vm_entry"] == text.count("kvm_entry:")
    assert ev.filter(pl.col("event") == "kvm_nested_vmexit")["kind"].unique().to_list() == ["other"]


def test_vcpu_thread_names_with_hotplug(public: Path) -> None:
    path = public / "ftrace-7flag_kvm-host-vcpu-threads-kvm_msr_qemu-devel-2025-06-09.txt"
    text = text_of(path)
    expected = {int(t): int(n) for n, t in re.findall(r"CPU (\d+)/KVM-(\d+)", text)}
    vmap = vcpu_map(path)
    assert (
        {tid: v for tid, (_, v) in vmap.items()}
        == expected
        == {16856: 0, 16857: 1, 16858: 2, 16859: 3, 17500: 4}
    )
    assert len({vm for vm, _ in vmap.values()}) == 1
    ev = events_of(path)
    assert kinds(ev) == {"other": 18}
    assert (ev["vcpu"] == ev["tid"].replace({17500: 16860}) - 16856).all()


def test_vcpu_thread_sched_events(public: Path) -> None:
    path = public / "ftrace-per_cpu-4flag_kvm-host-vcpu-thread-sched_fangying-blog.txt"
    ev = events_of(path)
    vcpu = ev.filter(pl.col("kind").str.starts_with("vcpu_"))
    assert vcpu.select("ts", "kind", "vcpu", "pcpu", "tid", "reason").rows() == [
        (158158084267000, "vcpu_run", 0, 2, 2046, None),
        (158158084281000, "vcpu_halt", 0, 2, 2046, "S"),
        (158158085265000, "vcpu_wake", 0, 2, 2046, None),  # success=1 target_cpu=002
        (158158085266000, "vcpu_run", 0, 2, 2046, None),
        (158158085281000, "vcpu_halt", 0, 2, 2046, "S"),
        (158158086265000, "vcpu_wake", 0, 2, 2046, None),
    ]
    assert kinds(ev)["other"] == 2  # sched_stat_runtime


def test_kick_and_yield_hypercalls(public: Path) -> None:
    path = public / "abbreviated-comm-pid_kvm_hypercall-nr-kick-yield_kvm-list-2022.txt"
    ev = events_of(path)
    text = text_of(path)
    nrs = [int(n, 16) for n in re.findall(r"nr 0x([0-9a-f]+)", text)]
    assert ev["value"].to_list() == nrs
    assert ev.select("kind", "target").rows() == [
        ("other", None),
        ("other", None),
        ("other", None),
        ("pv_kick", 0),  # nr 0x5: a1 = APIC id 0
        ("other", None),  # nr 0xa SEND_IPI
        ("yield_to", 0),  # nr 0xb: a0 = APIC id 0
    ]
    assert _load(path).meta.clock.get("untimed_records") == 6


def test_halt_poll_lines_are_kept(public: Path) -> None:
    path = public / "kvm_halt_poll_ns-lines_ns-timestamps_kvm-list-2023-11-02.txt"
    ev = events_of(path)
    assert kinds(ev) == {"other": 12}
    assert _load(path).meta.extra["sides"][""]["side"] == "host"


def test_perf_callchain_contention(public: Path) -> None:
    path = public / "perf-script_lock-contention_begin-callchains_powerpc_stable-6.6-review.txt"
    ev = events_of(path)
    assert ev.select("kind", "lock", "reason", "vcpu", "tid").rows() == [
        ("lock_contend", 0xC00000C80904EF00, "SPIN", 1, 3409),
        ("lock_contend", 0xC00000C80904EF00, "SPIN", 5, 3408),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "ftrace-dump-latency-fmt_kvm-guest-rcutorture_linux-next-2024-10-06.txt",
        "ftrace-dump-latency-fmt_kvm-guest-rcutorture_linux-next-2024-10-08.txt",
    ],
)
def test_guest_dumps_with_lost_lines(public: Path, name: str) -> None:
    path = public / name
    ev, text = events_of(path), text_of(path)
    lost = [(int(c), int(n)) for c, n in re.findall(r"CPU:(\d+) \[LOST (\d+) EVENTS\]", text)]
    got = ev.filter(pl.col("kind") == "lost_events")
    assert sorted(got.select("vcpu", "value").rows()) == sorted(lost)
    assert kinds(ev)["task_switch"] == text.count("sched_switch:")
    assert kinds(ev)["task_wakeup"] == text.count("sched_wakeup:")
    assert set(ev["origin"]) == {"guest"} and ev["pcpu"].null_count() == ev.height


def test_plugin_sched_switch_state_and_comm_with_colon(public: Path) -> None:
    path = public / "tracecmd3.1.6-report_two-inputs-prefixed_ts-offset_trappy-dat.txt"
    ev, text = events_of(path), text_of(path)
    sw = ev.filter(pl.col("event") == "sched_switch")
    assert sw.height == len(re.findall(r"sched_switch:", text))
    assert (sw["kind"] == "task_switch").all()
    states = Counter(re.findall(r"sched_switch: +.*?:\d+ \[-?\d+\] (\S+) ==>", text))
    assert Counter(sw["reason"].to_list()) == states
    # `rs:main Q:Reg` is split at the last colon
    rs = re.findall(r"rs:main Q:Reg:(\d+) \[\d+\] \S+ ==>", text)
    assert rs and set(sw.filter(pl.col("tid") == int(rs[0]))["kind"]) == {"task_switch"}


def test_raw_numeric_prev_state(public: Path) -> None:
    ev = events_of(public / "tracecmd-report-raw-v6_sched-switch_trappy.txt")
    assert ev.select("kind", "reason", "tid", "value").rows() == [
        ("task_switch", "R+", 4734, 18),  # prev_state=1024: the 3.x preempt bit
        ("task_switch", "S", 18, 4732),
        ("task_switch", "S", 4730, 4729),
    ]


def test_every_public_trace_normalizes(public: Path) -> None:
    """Each public trace file gives events whose tracepoint counts match its text."""
    for path in sorted(public.glob("*.txt")):
        if path.name.startswith(("perf-kvm-stat", "perf-lock-contention")):
            continue  # summary tables: tests/ingest/test_summary_tables.py
        trace = _load(path)
        counts = trace.meta.extra["events_by_tracepoint"]
        assert sum(counts.values()) > 0, path.name
        assert trace.meta.extra["unparsed_payloads"] == {}, path.name
        ev = trace.events
        # one event per record, plus one for each sched_switch that moves a vCPU both out and in
        n_both = ev.filter(pl.col("kind") == "vcpu_run").join(
            ev.filter(pl.col("kind").is_in(["vcpu_preempt", "vcpu_halt"])), on=["ts", "pcpu"], how="semi"
        )
        assert ev.height == sum(counts.values()) + n_both.height, path.name


# ------------------------------------------------------------- local guest captures


def _captures(real: Path) -> list[dict]:
    return json.loads((real / "local" / "captures.json").read_text())["captures"]


CAPTURES = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "real-traces" / "local" / "captures.json"
).resolve()
NAMES = [c["file"] for c in json.loads(CAPTURES.read_text())["captures"]] if CAPTURES.is_file() else []


@pytest.mark.parametrize("name", NAMES or ["(none)"])
def test_guest_captures_match_their_stats(real_traces: Path, name: str) -> None:
    capture = {c["file"]: c for c in _captures(real_traces)}.get(name)
    if capture is None:
        pytest.skip("no local captures")
    stats = capture["stats"]
    ev = events_of(real_traces / "local" / name)
    contend = ev.filter(pl.col("kind") == "lock_contend")
    assert contend.height == stats["events"].get("contention_begin", 0)
    assert kinds(ev).get("lock_acquire", 0) == stats["events"].get("contention_end", 0)
    assert dict(Counter(contend["reason"].to_list())) == stats["contention_begin_flags"]
    assert contend["lock"].n_unique() == stats["distinct_spin_locks"]
    counted = ev.filter((pl.col("kind") == "lost_events") & pl.col("value").is_not_null())
    assert counted.height == stats["lost_lines"]
    assert (counted["value"].sum() or 0) == stats["lost_events_reported"]
    assert kinds(ev).get("task_switch", 0) == stats["events"].get("sched_switch", 0)
    # sched_waking doubled by sched_wakeup: one task_wakeup per wake-up
    assert kinds(ev).get("task_wakeup", 0) == stats["events"].get("sched_wakeup", 0)
    assert set(ev["origin"]) == {"guest"} and set(ev["vm"]) == {"guest"}
    assert set(ev["vcpu"].drop_nulls()) <= {0, 1} and ev["pcpu"].null_count() == ev.height
