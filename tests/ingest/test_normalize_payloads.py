"""Payload shapes (formats.md sections 2.3 and 5) and exit-reason normalization."""

from __future__ import annotations

import polars as pl
import pytest

from pvtrace.ingest import aliases, payloads


def parse(parser, text: str) -> dict:
    return parser(pl.DataFrame({"payload": [text]})).row(0, named=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "prev_comm=qemu-kvm prev_pid=812 prev_prio=120 prev_state=R+ ==> next_comm=CPU 0/KVM next_pid=833 next_prio=120",
            ("qemu-kvm", 812, "R+", "CPU 0/KVM", 833),
        ),
        ("qemu-kvm:812 [120] R ==> CPU 0/KVM:833 [120]", ("qemu-kvm", 812, "R", "CPU 0/KVM", 833)),
        # plugin form: comm split at the last colon
        ("rs:main Q:Reg:238 [120] S ==> swapper/1:0 [120]", ("rs:main Q:Reg", 238, "S", "swapper/1", 0)),
        ("migration/0:18 [0] D|K ==> trace-cmd:23727 [120]", ("migration/0", 18, "D|K", "trace-cmd", 23727)),
        # trace-cmd -R raw form: no ==>, numeric state; 1024 on a 3.x kernel is the preempt bit (R+)
        (
            "prev_comm=trace-cmd prev_pid=4734 prev_prio=120 prev_state=1024 next_comm=migration/2 next_pid=18 next_prio=0",
            ("trace-cmd", 4734, "R+", "migration/2", 18),
        ),
        (
            "prev_comm=a prev_pid=1 prev_prio=120 prev_state=1 next_comm=b next_pid=2 next_prio=120",
            ("a", 1, "S", "b", 2),
        ),
        (
            "prev_comm=a prev_pid=1 prev_prio=120 prev_state=0 next_comm=b next_pid=2 next_prio=120",
            ("a", 1, "R", "b", 2),
        ),
        (
            "prev_comm=a prev_pid=1 prev_prio=120 prev_state=0x3 ==> next_comm=b next_pid=2 next_prio=120",
            ("a", 1, "S|D", "b", 2),
        ),
        (
            "prev_comm=a prev_pid=1 prev_prio=120 prev_state=0x100 ==> next_comm=b next_pid=2 next_prio=120",
            ("a", 1, "R+", "b", 2),
        ),
        # trace-cmd -w appends a latency
        (
            "prev_comm=a b prev_pid=1 prev_prio=120 prev_state=I ==> next_comm=c=d next_pid=2 next_prio=120 Latency: 85.751 usecs",
            ("a b", 1, "I", "c=d", 2),
        ),
        ("not a switch", (None, None, None, None, None)),
    ],
)
def test_sched_switch_shapes(text: str, expected: tuple) -> None:
    got = parse(payloads.sched_switch, text)
    assert (
        got["prev_comm"],
        got["prev_pid"],
        got["prev_state"],
        got["next_comm"],
        got["next_pid"],
    ) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("comm=CPU 0/KVM pid=833 prio=120 target_cpu=004", ("CPU 0/KVM", 833, 4, None)),
        ("comm=CPU 0/KVM pid=2046 prio=120 success=1 target_cpu=002", ("CPU 0/KVM", 2046, 2, 1)),
        ("comm=Binder_5 pid=679 prio=120 success=1 target_cpu=001 state=W", ("Binder_5", 679, 1, 1)),
        ("CPU 0/KVM:833 [120] CPU:004", ("CPU 0/KVM", 833, 4, None)),
        ("CPU 0/KVM:833 [120] success=0 CPU:004", ("CPU 0/KVM", 833, 4, 0)),
        ("memfd:sealed-91:2451 [120] CPU:001", ("memfd:sealed-91", 2451, 1, None)),
    ],
)
def test_sched_wakeup_shapes(text: str, expected: tuple) -> None:
    got = parse(payloads.sched_wakeup, text)
    assert (got["woken_comm"], got["pid"], got["target_cpu"], got["success"]) == expected


KVM_EXITS = [
    # (payload, kvm vcpu id, normalized reason)
    ("reason EXTERNAL_INTERRUPT rip 0xffffffff8106a2b1 info 0 800000fd", None, "EXTERNAL_INTERRUPT"),
    ("vcpu 3 reason npf rip 0xfd11d info 100000014 fd000", 3, "NPF"),
    (
        "vcpu 3 reason EPT_VIOLATION rip 0xffffffff8106a2b1 info1 0x0000000000000184 info2 0x0000000000000000 "
        "intr_info 0x00000000 error_code 0x00000000",
        3,
        "EPT_VIOLATION",
    ),
    (
        "vcpu 0 reason PAUSE_INSTRUCTION rip 0x1 info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0 "
        "requests 0x0000000000000000",
        0,
        "PAUSE",
    ),
    ("vcpu 1 reason pause rip 0x1 info1 0x0 info2 0x0", 1, "PAUSE"),
    ("reason EXIT_PAUSE rip 0x1 info 0 0", None, "PAUSE"),
    ("reason HLT rip 0xffffffff81c2b0c4 info 0 0", None, "HLT"),
    ("vcpu 2 reason hlt rip 0x1 info1 0x0", 2, "HLT"),
    ("reason EXIT_HLT rip 0x1 info 0 0", None, "HLT"),
    ("vcpu 0 reason VMCALL rip 0x1 info1 0x0", 0, "HYPERCALL"),
    ("vcpu 0 reason hypercall rip 0x1 info1 0x0", 0, "HYPERCALL"),
    ("reason EXIT_VMMCALL rip 0x1 info 0 0", None, "HYPERCALL"),
    ("vcpu 0 reason interrupt rip 0x1 info1 0x0", 0, "EXTERNAL_INTERRUPT"),
    ("reason EXIT_INTR rip 0x1 info 0 0", None, "EXTERNAL_INTERRUPT"),
    ("vcpu 5 reason PREEMPTION_TIMER rip 0x1 info1 0x0", 5, "PREEMPTION_TIMER"),
    ("reason EXIT_NPF rip 0x1 info 100000014 fd000", None, "NPF"),
    ("reason EXIT_IOIO rip 0x1 info 0 0", None, "IO"),
    ("vcpu 0 reason io rip 0x1 info1 0x0", 0, "IO"),
    # SVM names with a space, VMX flag words, unknown codes
    ("vcpu 0 reason UD excp rip 0x1 info1 0x0", 0, "UD_EXCP"),
    ("vcpu 1 reason INVALID_STATE FAILED_VMENTRY rip 0x0 info1 0x0", 1, "INVALID_STATE|FAILED_VMENTRY"),
    ("reason UNKNOWN (123) rip 0x1 info 0 0", None, "UNKNOWN_123"),
    ("vcpu 0 reason 0x45 rip 0x1 info1 0x0", 0, "UNKNOWN_69"),
    ("reason PENDING_INTERRUPT rip 0x1 info 0 0", None, "INTERRUPT_WINDOW"),
    # plugin symbol after the rip
    ("reason EXIT_MSR rip 0xffffffff8106a2b1 native_write_msr+0x4 info 1 0", None, "MSR"),
    # arm64
    ("TRAP: HSR_EC: 0x0001 (WFx), PC: 0xffff800010ab1234", None, "WFX"),
    ("TRAP: HSR_EC: 0x0016 (HVC64), PC: 0xffff800010ab1234", None, "HYPERCALL"),
    ("IRQ: HSR_EC: 0x0000 (UNKNOWN), PC: 0xffff800010ab1234", None, "EXTERNAL_INTERRUPT"),
    # trace-cmd -R raw fields: VMX (isa 1) and SVM (isa 2) codes
    ("exit_reason=40 guest_rip=0x1 isa=1 info1=0 info2=0 vcpu_id=2", 2, "PAUSE"),
    ("exit_reason=12 guest_rip=0x1 isa=1 info1=0 info2=0", None, "HLT"),
    ("exit_reason=2147483681 guest_rip=0x1 isa=1", None, "INVALID_STATE|FAILED_VMENTRY"),
    ("exit_reason=119 guest_rip=0x1 isa=2", None, "PAUSE"),
    ("exit_reason=1024 guest_rip=0x1 isa=2", None, "NPF"),
    ("exit_reason=999 guest_rip=0x1 isa=1", None, "UNKNOWN_999"),
]


@pytest.mark.parametrize(("text", "vcpu", "reason"), KVM_EXITS)
def test_kvm_exit_shapes_and_reasons(text: str, vcpu: int | None, reason: str) -> None:
    df = payloads.kvm_exit(pl.DataFrame({"payload": [text]}))
    got = df.select(
        pl.col("vcpu"),
        pl.coalesce(
            aliases.exit_reason(pl.col("reason")),
            aliases.exit_reason_arm64(pl.col("arm_kind"), pl.col("arm_class")),
            aliases.exit_reason_code(pl.col("reason_code"), pl.col("isa")),
        ).alias("reason"),
    ).row(0)
    assert got == (vcpu, reason)


@pytest.mark.parametrize(
    ("text", "user"),
    [
        # a 64-bit guest's user space (a PIE binary, a library): the exit found it in user mode
        ("reason EXTERNAL_INTERRUPT rip 0x55d4c3a1b2e0 info 0 800000ec", 1),
        ("vcpu 1 reason EXTERNAL_INTERRUPT rip 0x7f3a2c41d0a2 info1 0x0 info2 0x0", 1),
        ("exit_reason=1 guest_rip=0x7f3a2c41d0a2 isa=1 info1=0 info2=0 vcpu_id=0", 1),
        # kernel text, firmware, a 32-bit kernel or a non-PIE binary below 4 GiB: nothing said
        ("reason EXTERNAL_INTERRUPT rip 0xffffffff8106a2b1 info 0 800000fd", None),
        ("vcpu 3 reason npf rip 0xfd11d info 100000014 fd000", None),
        ("reason EXTERNAL_INTERRUPT rip 0xc10a2b31 info 0 800000ec", None),
        ("reason EXTERNAL_INTERRUPT rip 0x401a2c info 0 800000ec", None),
        ("TRAP: HSR_EC: 0x0001 (WFx), PC: 0x0000aaaad0c01234", None),
    ],
)
def test_kvm_exit_says_when_the_guest_was_in_user_mode(text: str, user: int | None) -> None:
    assert payloads.kvm_exit(pl.DataFrame({"payload": [text]}))["guest_user"][0] == user


@pytest.mark.parametrize(
    ("text", "vcpu"),
    [
        ("vcpu 0", 0),
        ("vcpu 3, rip 0xffffffff81c2b0c6", 3),
        ("vcpu 12, rip 0xffffffff81c2b0c6[immediate exit]", 12),
        ("vcpu 0, rip 0x1 inj 0x00000000 inj_error_code 0x00000000[immediate exit][guest]", 0),
        ("vcpu 0, rip 0x1 intr_info 0x00000000 error_code 0x00000000", 0),
        ("vcpu 7 rip 0xffffffff8113e0d2", 7),  # plugin (leading space stripped by the parser)
        ("vcpu_id=4 rip=0x1", 4),  # raw
        ("PC: 0xffff800010ab1234", None),  # arm64: no vcpu
    ],
)
def test_kvm_entry_shapes(text: str, vcpu: int | None) -> None:
    assert parse(payloads.kvm_entry, text)["vcpu"] == vcpu


def test_hypercall_numbers_are_hex() -> None:
    got = parse(payloads.kvm_hypercall, "nr 0xb a0 0x3 a1 0x0 a2 0x0 a3 0x0")
    assert (got["nr"], got["a0"], got["a1"]) == (11, 3, 0)
    assert parse(payloads.kvm_hypercall, "nr 0x5 a0 0x0 a1 0x1f a2 0x0 a3 0x0")["a1"] == 31


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vcpu 1 old 4096 new 8192 (growed)", (1, 8192, "grow")),
        ("vcpu 1 old 8192 new 4096 (shrinked)", (1, 4096, "shrink")),
        ("vcpu 2: ple_window 8192 (grow 4096)", (2, 8192, "grow")),
        ("vcpu 2: ple_window 4096 (shrink 8192)", (2, 4096, "shrink")),
    ],
)
def test_ple_window_shapes(text: str, expected: tuple) -> None:
    got = parse(payloads.kvm_ple_window, text)
    assert (got["vcpu"], got["window"], got["direction"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wait time 25150 ns, polling valid", ("wait", 25150)),
        ("poll time 3120 ns, polling invalid", ("poll", 3120)),
        ("wait time 77 ns", ("wait", 77)),
        ("wait time 25150 ns (max poll 200000 ns), polling valid", ("wait", 25150)),
    ],
)
def test_vcpu_wakeup_shapes(text: str, expected: tuple) -> None:
    got = parse(payloads.kvm_vcpu_wakeup, text)
    assert (got["how"], got["time_ns"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00000000e264149b (flags=SPIN)", (0xE264149B, "SPIN", None)),  # hashed pointer, no 0x
        ("0xffff8881044042c4 (flags=SPIN|WRITE)", (0xFFFF8881044042C4, "SPIN|WRITE", None)),
        ("0xffff8d2a41c3e0c0 (flags=)", (0xFFFF8D2A41C3E0C0, None, None)),  # flags 0
        ("0xff (flags=33)", (0xFF, "SPIN|MUTEX", None)),  # raw numeric flags
        ("0xffff8881044042c4 (ret=0)", (0xFFFF8881044042C4, None, 0)),
        ("000000002deb0d1a (ret=-4)", (0x2DEB0D1A, None, -4)),
    ],
)
def test_lock_contention_shapes(text: str, expected: tuple) -> None:
    got = parse(payloads.lock_contention, text)
    assert (got["lock"], got["flags"], got["ret"]) == expected


def test_lockdep_shapes() -> None:
    df = payloads.lockdep(
        pl.DataFrame(
            {
                "payload": [
                    "0xffff8d2a40a1e2a8 try read &mm->mmap_lock",
                    "0xffff8d2a40a1e2a8 &mm->mmap_lock",
                    "&rq->lock",
                    "&rq->lock holdtime: 33",
                    "ffff8d2a40a1e2a8 read rcu_read_lock",
                ]
            }
        )
    )
    assert df["name"].to_list() == [
        "&mm->mmap_lock",
        "&mm->mmap_lock",
        "&rq->lock",
        "&rq->lock",
        "rcu_read_lock",
    ]
    assert df["bits"].to_list() == [3, 0, 0, 0, 2]
    assert df["has_address"].to_list() == [True, True, False, False, True]
    locks = df["lock"].to_list()
    assert locks[0] == locks[1] == locks[4] == 0xFFFF8D2A40A1E2A8
    assert locks[2] == locks[3] is not None  # no address: one opaque id per name


def test_tsc_offset_is_signed() -> None:
    got = parse(payloads.kvm_write_tsc_offset, "vcpu=0 prev=0 next=18439928704022336791")
    assert got["vcpu"] == 0
    assert got["offset"] == 18439928704022336791 - 2**64


def test_alias_table_kinds_are_canonical() -> None:
    from pvtrace.schema import KINDS

    for name, alias in aliases.ALIASES.items():
        assert alias.kind is None or alias.kind in KINDS, name
        assert alias.side in ("host", "guest", "both"), name
