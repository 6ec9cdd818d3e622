"""normalize(): what each raw record means, host side and guest side."""

from __future__ import annotations

import polars as pl
import pytest
from raw_rows import raw_from_lines, row

from pvtrace.errors import UsageError
from pvtrace.ingest.normalize import normalize
from pvtrace.schema import EVENT_SCHEMA, validate_events


def sw(prev: str, prev_pid: int, state: str, nxt: str, next_pid: int) -> str:
    return (
        f"prev_comm={prev} prev_pid={prev_pid} prev_prio=120 prev_state={state} ==> "
        f"next_comm={nxt} next_pid={next_pid} next_prio=120"
    )


def run(lines: list[str], **kw) -> tuple[pl.DataFrame, dict]:
    events, info = normalize(raw_from_lines(lines), **kw)
    validate_events(events)
    return events.with_columns(
        pl.col(pl.Categorical).cast(pl.String), pl.col("kind", "origin").cast(pl.String)
    ), info


def rows_of(events: pl.DataFrame, *cols: str) -> list[tuple]:
    return events.select(cols).rows()


# ---------------------------------------------------------------------- host


HOST = [
    row("sched_switch", sw("swapper/2", 0, "R", "CPU 0/KVM", 1001), comm="<idle>", tid=0, cpu=2, ts=100),
    row("kvm_entry", "vcpu 0, rip 0xffffffff81b3c9a2", comm="CPU 0/KVM", tid=1001, cpu=2, ts=110),
    row("kvm_exit", "vcpu 0 reason PAUSE_INSTRUCTION rip 0x1 info1 0x0 info2 0x0", comm="CPU 0/KVM", tid=1001, cpu=2, ts=120),
    row("sched_switch", sw("CPU 0/KVM", 1001, "R+", "CPU 1/KVM", 1002), comm="CPU 0/KVM", tid=1001, cpu=2, ts=130),
    row("sched_switch", sw("CPU 1/KVM", 1002, "S", "kworker/2:1", 77), comm="CPU 1/KVM", tid=1002, cpu=2, ts=140),
    row("sched_switch", sw("kworker/2:1", 77, "D", "swapper/2", 0), comm="kworker/2:1", tid=77, cpu=2, ts=150),
    row("sched_waking", "comm=CPU 1/KVM pid=1002 prio=120 target_cpu=003", comm="kworker/3:0", tid=78, cpu=3, ts=160),
    row("sched_wakeup", "comm=CPU 1/KVM pid=1002 prio=120 target_cpu=003", comm="kworker/3:0", tid=78, cpu=3, ts=161),
    row("sched_wakeup", "comm=kworker/2:1 pid=77 prio=120 target_cpu=002", comm="<idle>", tid=0, cpu=2, ts=170),
]  # fmt: skip


def test_host_sched_switch_and_wakeups() -> None:
    ev, info = run(HOST)
    assert info["side"] == "host" and info["origin"] == "host"
    got = rows_of(
        ev.filter(pl.col("event").str.starts_with("sched")),
        "ts",
        "kind",
        "vcpu",
        "pcpu",
        "tid",
        "reason",
        "value",
    )
    assert got == [
        (100, "vcpu_run", 0, 2, 1001, None, None),
        (130, "vcpu_preempt", 0, 2, 1001, "R+", None),  # prev out ...
        (130, "vcpu_run", 1, 2, 1002, None, None),  # ... then next in, from the same line
        (140, "vcpu_halt", 1, 2, 1002, "S", None),
        (150, "task_switch", None, 2, 77, "D", 0),  # neither is a vCPU: value = next pid
        (160, "other", None, 3, 78, None, None),  # sched_waking doubled by sched_wakeup
        (161, "vcpu_wake", 1, 3, 1002, None, None),  # the woken thread, not the waker; pcpu = target
        (170, "task_wakeup", None, 2, 77, None, None),
    ]
    out_in = ev.filter(pl.col("ts") == 130)["seq"].to_list()
    assert out_in[1] == out_in[0] + 1
    assert ev["seq"].is_sorted() and ev["ts"].is_sorted()


def test_host_vm_exit_entry_on_the_thread() -> None:
    ev, _ = run(HOST)
    got = rows_of(
        ev.filter(pl.col("event").str.starts_with("kvm")), "kind", "vm", "vcpu", "pcpu", "tid", "reason"
    )
    vm = ev.filter(pl.col("kind") == "vm_exit")["vm"][0]
    assert got == [("vm_entry", vm, 0, 2, 1001, None), ("vm_exit", vm, 0, 2, 1001, "PAUSE")]
    assert vm is not None and vm == ev.filter(pl.col("tid") == 1002)["vm"][0]


def test_vm_is_the_tgid_when_printed() -> None:
    lines = [
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=1001, tgid=1000, cpu=0, ts=1),
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=2001, tgid=2000, cpu=1, ts=2),
    ]
    ev, info = run(lines)
    assert rows_of(ev, "vm", "vcpu") == [("1000", 0), ("2000", 0)]
    assert {r["tid"]: r["pid"] for r in info["vcpu_map"]} == {1001: 1000, 2001: 2000}
    assert all("tgid" in r["how"] for r in info["vcpu_map"])


def test_waking_counts_when_no_wakeup_was_recorded() -> None:
    lines = [
        row("sched_switch", sw("CPU 0/KVM", 1001, "S", "swapper/0", 0), comm="CPU 0/KVM", tid=1001, ts=1),
        row("sched_waking", "comm=CPU 0/KVM pid=1001 prio=120 target_cpu=001", comm="x", tid=5, ts=2),
        row(
            "sched_wakeup", "comm=CPU 0/KVM pid=1001 prio=120 success=0 target_cpu=001", comm="x", tid=5, ts=3
        ),
    ]
    ev, _ = run(lines[:2])
    assert rows_of(ev, "kind", "tid", "pcpu") == [("vcpu_halt", 1001, 0), ("vcpu_wake", 1001, 1)]
    ev, _ = run([lines[0], lines[2]])  # success=0: the task was already awake
    assert rows_of(ev, "kind") == [("vcpu_halt",), ("other",)]


def test_hypercall_targets_are_apic_ids() -> None:
    # topology with APIC-id gaps: index 3 has APIC id 4
    lines = [
        row("kvm_entry", f"vcpu {apic}", comm=f"CPU {idx}/KVM", tid=1001 + idx, tgid=1000, ts=idx)
        for idx, apic in enumerate([0, 1, 2, 4])
    ] + [
        row(
            "kvm_hypercall",
            "nr 0x5 a0 0x0 a1 0x4 a2 0x0 a3 0x0",
            comm="CPU 0/KVM",
            tid=1001,
            tgid=1000,
            ts=10,
        ),
        row(
            "kvm_hypercall",
            "nr 0xb a0 0x2 a1 0x0 a2 0x0 a3 0x0",
            comm="CPU 1/KVM",
            tid=1002,
            tgid=1000,
            ts=11,
        ),
        row(
            "kvm_hypercall",
            "nr 0xa a0 0x1 a1 0x0 a2 0x0 a3 0x0",
            comm="CPU 1/KVM",
            tid=1002,
            tgid=1000,
            ts=12,
        ),
    ]
    ev, info = run(lines)
    got = rows_of(ev.filter(pl.col("event") == "kvm_hypercall"), "kind", "vm", "vcpu", "target", "value")
    assert got == [
        ("pv_kick", "1000", 0, 3, 5),
        ("yield_to", "1000", 1, 2, 11),
        ("other", "1000", 1, None, 10),
    ]
    assert ev.filter(pl.col("kind") == "other")["args"][0].startswith("nr 0xa")
    assert any("APIC id" in n for n in info["notes"])


def test_hypercall_exit_carries_the_hypercall_number() -> None:
    lines = [
        row("kvm_exit", "vcpu 0 reason VMCALL rip 0x1 info1 0x0", comm="CPU 0/KVM", tid=11, ts=1),
        row("kvm_exit", "vcpu 1 reason HLT rip 0x1 info1 0x0", comm="CPU 1/KVM", tid=12, ts=2),
        row("kvm_hypercall", "nr 0x5 a0 0x0 a1 0x1 a2 0x0 a3 0x0", comm="CPU 0/KVM", tid=11, ts=3),
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=11, ts=4),
        row("kvm_exit", "vcpu 0 reason VMCALL rip 0x1 info1 0x0", comm="CPU 0/KVM", tid=11, ts=5),
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=11, ts=6),  # no kvm_hypercall line: unknown nr
    ]
    ev, _ = run(lines)
    assert rows_of(ev.filter(pl.col("kind") == "vm_exit"), "vcpu", "reason", "value") == [
        (0, "HYPERCALL", 5),
        (1, "HLT", None),
        (0, "HYPERCALL", None),
    ]


def test_hypercall_without_a_map_assumes_apic_id_is_index() -> None:
    lines = [
        row("kvm_hypercall", "nr 0x5 a0 0x0 a1 0x1 a2 0x0 a3 0x0", comm="kvm_pv_test", tid=9, ts=1),
        row("kvm_hypercall", "nr 0xb a0 0x0 a1 0x0 a2 0x0 a3 0x0", comm="kvm_pv_test", tid=9, ts=2),
    ]
    ev, _ = run(lines)
    assert rows_of(ev, "kind", "vm", "vcpu", "target") == [
        ("pv_kick", None, None, 1),
        ("yield_to", None, None, 0),
    ]


def test_ple_window_and_vcpu_wakeup() -> None:
    lines = [
        row("kvm_ple_window_update", "vcpu 1 old 4096 new 8192 (growed)", comm="CPU 1/KVM", tid=1002, ts=1),
        row("kvm_ple_window", "vcpu 1: ple_window 4096 (shrink 8192)", comm="CPU 1/KVM", tid=1002, ts=2),
        row("kvm_vcpu_wakeup", "wait time 25150 ns, polling valid", comm="CPU 1/KVM", tid=1002, ts=3),
    ]
    ev, _ = run(lines)
    assert rows_of(ev, "kind", "vcpu", "value", "reason") == [
        ("ple_window", 1, 8192, None),  # value = the new window (the direction follows from the values)
        ("ple_window", 1, 4096, None),
        ("other", 1, 25150, "wait"),
    ]
    assert ev["args"].to_list() == [None, None, "wait time 25150 ns, polling valid"]


def test_user_map_names_vms_and_overrides() -> None:
    vmap = pl.DataFrame({"tid": [1001, 1002], "pid": [1000, 1000], "vm": ["vm0", "vm0"], "vcpu": [0, 1]})
    lines = [
        row("sched_switch", sw("swapper/0", 0, "R", "CPU 0/KVM", 1001), comm="<idle>", tid=0, ts=1),
        row(
            "sched_switch",
            sw("CPU 0/KVM", 1001, "R+", "qemu-system-x86", 1002),
            comm="CPU 0/KVM",
            tid=1001,
            ts=2,
        ),
    ]
    ev, info = run(lines, vcpu_map=vmap)
    # thread 1002 is a vCPU only according to the map (its name says nothing)
    assert rows_of(ev, "kind", "vm", "vcpu") == [
        ("vcpu_run", "vm0", 0),
        ("vcpu_preempt", "vm0", 0),
        ("vcpu_run", "vm0", 1),
    ]
    assert {r["how"] for r in info["vcpu_map"]} == {"map file"}


def test_host_side_lock_events_are_host_kernel_locks() -> None:
    lines = [
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=1001, ts=1),
        row("contention_begin", "0xffff888 (flags=SPIN)", comm="CPU 0/KVM", tid=1001, ts=2),
    ]
    ev, _ = run(lines)
    assert rows_of(ev, "kind", "origin") == [("vm_entry", "host"), ("other", "host")]


def test_lost_markers_host() -> None:
    lines = [
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=1001, cpu=1, ts=10),
        row("lost_events", "1234", cpu=3, ts=20),
        row("lost_events", "", cpu=2, ts=30),
        row("buffer_started", "", cpu=4, ts=40),
    ]
    ev, _ = run(lines)
    assert rows_of(ev.filter(pl.col("kind") == "lost_events"), "pcpu", "vcpu", "vm", "value", "origin") == [
        (3, None, None, 1234, "host"),
        (2, None, None, None, "host"),
        (4, None, None, None, "host"),
    ]


# --------------------------------------------------------------------- guest

GUEST = [
    row("contention_begin", "00000000e264149b (flags=SPIN)", comm="contend", tid=23065, cpu=1, ts=1000),
    row("contention_end", "00000000e264149b (ret=0)", comm="contend", tid=23065, cpu=1, ts=1001),
    row("contention_begin", "0xffff888 (flags=SPIN|WRITE)", comm="contend", tid=23064, cpu=0, ts=1002),
    row("contention_begin", "0xffff999 (flags=)", comm="contend", tid=23064, cpu=0, ts=1003),
    row("contention_end", "0xffff888 (ret=-4)", comm="contend", tid=23064, cpu=0, ts=1004),
    row("sched_switch", "contend:23064 [120] R ==> rcu_preempt:15 [120]", comm="contend", tid=23064, cpu=0, ts=1005),
    row("lost_events", "21895", cpu=0, ts=1006),
    row("tracing_mark_write", "pvlab workload start", comm="sh", tid=5, cpu=1, ts=1007),
]  # fmt: skip


def test_guest_lock_events() -> None:
    ev, info = run(GUEST)
    assert info["side"] == "guest"
    got = rows_of(ev, "kind", "vm", "vcpu", "pcpu", "lock", "reason", "value", "tid")
    assert got == [
        ("lock_contend", "guest", 1, None, 0xE264149B, "SPIN", None, 23065),
        ("lock_acquire", "guest", 1, None, 0xE264149B, None, 0, 23065),
        ("lock_contend", "guest", 0, None, 0xFFFF888, "SPIN|WRITE", None, 23064),
        ("lock_contend", "guest", 0, None, 0xFFFF999, None, None, 23064),
        ("lock_acquire", "guest", 0, None, 0xFFFF888, None, -4, 23064),
        ("task_switch", "guest", 0, None, None, "R", 15, 23064),
        ("lost_events", "guest", 0, None, None, None, 21895, None),
        ("other", "guest", 1, None, None, None, None, 5),
    ]
    assert info["unknown_events"] == {"tracing_mark_write": 1}
    assert ev["args"][-1] == "pvlab workload start"


def test_guest_vm_name_option() -> None:
    ev, info = run(GUEST, vm_name="db1")
    assert set(ev["vm"].to_list()) == {"db1"}
    assert info["vms"] == {"db1": {"n_vcpus": 2, "side": "guest"}}


def test_lockdep_events() -> None:
    lines = [
        # uncontended: acquire ... release
        row("lock_acquire", "0xffff01 &rq->lock", comm="a", tid=1, cpu=0, ts=1),
        row("lock_release", "0xffff01 &rq->lock", comm="a", tid=1, cpu=0, ts=2),
        # contended: acquire (the attempt) -> contended -> acquired
        row("lock_acquire", "0xffff02 try read &mm->mmap_lock", comm="b", tid=2, cpu=1, ts=3),
        row("lock_contended", "0xffff02 &mm->mmap_lock", comm="b", tid=2, cpu=1, ts=4),
        row("lock_acquired", "0xffff02 &mm->mmap_lock", comm="b", tid=2, cpu=1, ts=5),
        row("lock_release", "0xffff02 &mm->mmap_lock", comm="b", tid=2, cpu=1, ts=6),
        # old kernels: no address
        row("lock_acquire", "&old->lock", comm="c", tid=3, cpu=0, ts=7),
    ]
    ev, _ = run(lines)
    got = rows_of(ev, "kind", "lock", "reason", "value")
    old = got[-1][1]
    assert got == [
        ("lock_acquire", 0xFFFF01, "&rq->lock", 0),
        ("lock_release", 0xFFFF01, "&rq->lock", 0),
        ("other", None, None, None),
        ("lock_contend", 0xFFFF02, "&mm->mmap_lock", 0),
        ("lock_acquire", 0xFFFF02, "&mm->mmap_lock", 0),
        ("lock_release", 0xFFFF02, "&mm->mmap_lock", 0),
        ("lock_acquire", old, "&old->lock", 0),
    ]
    assert old is not None


def test_lockdep_is_left_aside_when_contention_events_exist() -> None:
    lines = [
        row("contention_begin", "0xffff888 (flags=SPIN)", tid=1, ts=1),
        row("lock_contended", "0xffff01 &rq->lock", tid=1, ts=2),
        row("contention_end", "0xffff888 (ret=0)", tid=1, ts=3),
        row("lock_acquired", "0xffff01 &rq->lock", tid=1, ts=4),
    ]
    ev, _ = run(lines)
    assert rows_of(ev, "kind") == [("lock_contend",), ("other",), ("lock_acquire",), ("other",)]


# ------------------------------------------------------------ sides, merged


def merged_lines(guest_source: str = "trace-vm1.dat") -> list[str]:
    return [
        row("sched_switch", "swapper/2:0 [120] R ==> CPU 0/KVM:2046 [120]", comm="<idle>", tid=0, cpu=2, ts=1000, source="host.dat"),
        row("kvm_entry", "vcpu 0 rip 0xffffffff81b3c9a2", comm="CPU 0/KVM", tid=2046, cpu=2, ts=1100, source="host.dat"),
        row("contention_begin", "0xffff (flags=SPIN)", comm="contend", tid=23065, cpu=0, ts=1150, source=guest_source),
        row("kvm_exit", "reason EXIT_PAUSE rip 0xffffffff8106a2b1 info 0 0", comm="CPU 0/KVM", tid=2046, cpu=2, ts=1200, source="host.dat"),
        row("contention_end", "0xffff (ret=0)", comm="contend", tid=23065, cpu=0, ts=1450, source=guest_source),
        row("lost_events", "7", cpu=0, ts=1500, source=guest_source),
        row("lost_events", "9", cpu=2, ts=1500, source="host.dat"),
    ]  # fmt: skip


def test_merged_report_sides_and_vm_names() -> None:
    ev, info = run(merged_lines())
    assert info["sides"] == {
        "host.dat": {"side": "host", "how": "kvm events present"},
        "trace-vm1.dat": {"side": "guest", "how": "no kvm events or vCPU threads"},
    }
    assert info["side"] == "mixed" and info["view"] == "merged"
    assert info["guest_vm_names"] == {"trace-vm1.dat": "vm1"}
    # one VM on each side: the host's guessed VM takes the guest's name, so both sides join
    assert set(ev["vm"].drop_nulls().to_list()) == {"vm1"}
    assert rows_of(ev, "kind", "origin", "vcpu", "pcpu") == [
        ("vcpu_run", "host", 0, 2),
        ("vm_entry", "host", 0, 2),
        ("lock_contend", "guest", 0, None),
        ("vm_exit", "host", 0, 2),
        ("lock_acquire", "guest", 0, None),
        ("lost_events", "guest", 0, None),
        ("lost_events", "host", None, 2),
    ]
    assert info["clock"]["synchronized"] is True
    assert info["vms"] == {"vm1": {"n_vcpus": 1, "side": "both"}}


def test_explicit_side_and_side_per_source() -> None:
    _, info = run(merged_lines(), side="host")
    assert {v["side"] for v in info["sides"].values()} == {"host"}
    _, info = run(merged_lines(), side={"host.dat": "host", "trace-vm1.dat": "guest"})
    assert info["sides"]["trace-vm1.dat"] == {"side": "guest", "how": "given"}
    with pytest.raises(UsageError):
        normalize(raw_from_lines(merged_lines()), side="hypervisor")


def test_guest_offset_and_unsynchronized_clocks() -> None:
    shift = 99_000_000
    lines = []
    for line in merged_lines():
        cells = line.split("\t")
        if cells[0] != "host.dat":
            cells[5] = str(int(cells[5]) + shift)
        lines.append("\t".join(cells))
    _, info = run(lines)
    assert info["clock"]["synchronized"] is False
    assert any("not known to be aligned" in n for n in info["notes"])
    ev, info = run(lines, guest_offset_ns=-shift)
    assert info["clock"]["synchronized"] is True
    assert info["clock"]["mode"] == "given by the user"
    assert info["clock"]["guest_offset_ns"] == {"vm1": -shift}
    assert ev.filter(pl.col("origin") == "guest")["ts"].to_list() == [1150, 1450, 1500]


def test_offsets_per_guest_vm_from_separate_files() -> None:
    # pvtrace's own renders: host `run.txt`, guests `run-<vm>.txt`, each guest on its own clock
    lines = [
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=11, ts=1000, source="run.txt"),
        row("contention_begin", "0xff (flags=SPIN)", tid=5, ts=51_000, source="run-web.txt"),
        row("contention_begin", "0xff (flags=SPIN)", tid=6, ts=71_000, source="run-db.txt"),
        row("kvm_exit", "vcpu 0 reason HLT rip 0x1 info1 0x0", comm="CPU 0/KVM", tid=11, ts=2000, source="run.txt"),
    ]  # fmt: skip
    ev, info = run(lines, guest_offset_ns={"web": -50_000, "db": -70_000})
    assert info["guest_vm_names"] == {"run-db.txt": "db", "run-web.txt": "web"}
    assert info["clock"]["guest_offset_ns"] == {"db": -70_000, "web": -50_000}
    assert info["clock"]["synchronized"] is True
    assert rows_of(ev, "ts", "vm", "origin") == [
        (1000, "guess-11", "host"),  # two guest VMs: the host's guessed VM keeps its name
        (1000, "web", "guest"),
        (1000, "db", "guest"),
        (2000, "guess-11", "host"),
    ]


def test_kvm_write_tsc_offset_aligns_tsc_clocks() -> None:
    # both sides on the TSC: guest_tsc = host_tsc + offset
    offset = 5_000_000_000
    lines = [
        row("kvm_write_tsc_offset", f"vcpu=0 prev=0 next={offset}", comm="CPU 0/KVM", tid=11, ts=900, source="host.dat"),
        row("kvm_entry", "vcpu 0", comm="CPU 0/KVM", tid=11, ts=1000, source="host.dat"),
        row("contention_begin", "0xff (flags=SPIN)", tid=5, ts=1100 + offset, source="trace-g.dat"),
        row("kvm_exit", "vcpu 0 reason HLT rip 0x1 info1 0x0", comm="CPU 0/KVM", tid=11, ts=1200, source="host.dat"),
    ]  # fmt: skip
    ev, info = run(lines)
    assert info["clock"]["mode"].startswith("kvm_write_tsc_offset")
    assert info["clock"]["guest_offset_ns"] == {"g": -offset}
    assert rows_of(ev, "kind", "ts")[1:] == [("vm_entry", 1000), ("lock_contend", 1100), ("vm_exit", 1200)]


def test_untimed_records_keep_file_order() -> None:
    lines = [
        row("kvm_hypercall", "nr 0x0 a0 0x0 a1 0x0 a2 0x0 a3 0x0", comm="t", tid=1, ts=0).replace(
            "\t0\tkvm", "\t-\tkvm"
        ),
        row("kvm_hypercall", "nr 0x5 a0 0x0 a1 0x0 a2 0x0 a3 0x0", comm="t", tid=1, ts=0).replace(
            "\t0\tkvm", "\t-\tkvm"
        ),
    ]
    ev, info = run(lines)
    assert rows_of(ev, "ts", "seq", "kind") == [(0, 0, "other"), (0, 1, "pv_kick")]
    assert info["clock"]["untimed_records"] == 2


def test_empty_input() -> None:
    events, info = normalize(raw_from_lines([]))
    assert events.schema == EVENT_SCHEMA and events.height == 0
    assert info["side"] == "none"


def test_unknown_and_unparsed_are_counted_and_kept() -> None:
    lines = [
        row("kvm_exit", "something new entirely", comm="CPU 0/KVM", tid=11, ts=1),
        row("kvm_msr", "msr_read 3a = 0x0", comm="CPU 0/KVM", tid=11, ts=2),
        row("sched_switch", "garbled", comm="x", tid=3, ts=3),
    ]
    ev, info = run(lines)
    assert info["unparsed_payloads"] == {"kvm_exit": 1, "sched_switch": 1}
    assert info["unknown_events"] == {"kvm_msr": 1}
    assert rows_of(ev, "kind", "reason") == [("vm_exit", None), ("other", None), ("other", None)]
    assert ev["args"].to_list() == [None, "msr_read 3a = 0x0", "garbled"]


@pytest.mark.parametrize(
    ("sources", "hosts", "vm_name", "expected"),
    [
        (["trace-vm0.dat"], ["host.dat"], None, {"trace-vm0.dat": "vm0"}),
        (
            ["trace-db.dat", "trace-web.dat"],
            ["trace.dat"],
            None,
            {"trace-db.dat": "db", "trace-web.dat": "web"},
        ),
        (["run-vm1.txt.xz"], ["run.txt.xz"], None, {"run-vm1.txt.xz": "vm1"}),
        (["/tmp/x/h-ftrace-vm0.txt"], ["/tmp/x/h-ftrace.txt"], None, {"/tmp/x/h-ftrace-vm0.txt": "vm0"}),
        (["pvlab"], [], None, {"pvlab": "guest"}),  # a trace-cmd instance prefix is not a VM name
        ([""], [], "db1", {"": "db1"}),
        (["guest-a.txt"], ["host.txt"], None, {"guest-a.txt": "guest-a"}),
        (
            ["out-guest-vm0.txt", "out-guest-vm1.txt"],
            [],
            None,
            {"out-guest-vm0.txt": "vm0", "out-guest-vm1.txt": "vm1"},
        ),
        (["a.txt", "b.txt"], [], None, {"a.txt": "a", "b.txt": "b"}),
    ],
)
def test_guest_vm_names(sources: list[str], hosts: list[str], vm_name: str | None, expected: dict) -> None:
    from pvtrace.ingest.normalize import guest_vm_names

    assert guest_vm_names(sources, vm_name, hosts) == expected


def test_guest_named_from_a_sibling_input_without_records() -> None:
    lines = [row("contention_begin", "0xff (flags=SPIN)", tid=5, ts=1, source="run-vm1.txt")]
    _, info = run(lines, inputs=["run-vm0.txt", "run-vm1.txt"])
    assert info["guest_vm_names"] == {"run-vm1.txt": "vm1"}
    _, info = run(lines)
    assert info["guest_vm_names"] == {"run-vm1.txt": "guest"}  # alone, the name says nothing sure


def test_chunks_of_a_merged_input_agree() -> None:
    """Chunks agree with the whole input once the first chunk has seen both sides.

    (VM names are settled in the first chunk: were it to hold host lines only, the
    host VM would keep its guessed name instead of taking the guest's.)
    """
    lines = merged_lines()
    whole, info = run(lines)
    parts, carry = [], None
    for a, b in ((0, 3), (3, 4), (4, 7)):
        chunk, cinfo = normalize(raw_from_lines(lines[a:b]), carry=carry)
        carry = cinfo["carry"]
        parts.append(chunk)
    chunked = pl.concat(parts).with_columns(
        pl.col(pl.Categorical).cast(pl.String), pl.col("kind", "origin").cast(pl.String)
    )
    assert chunked.drop("seq").equals(whole.drop("seq"))
    assert cinfo["guest_vm_names"] == info["guest_vm_names"]
    assert cinfo["clock"]["guest_offset_ns"] == info["clock"]["guest_offset_ns"] == {"vm1": 0}
