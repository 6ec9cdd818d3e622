"""Typed fields out of event payload text, one vectorized parser per event family.

Each parser takes the payload column as a polars expression and returns a
struct expression with typed fields (null where the payload did not match any
known shape). A family's shapes differ by kernel version and by whether a
libtraceevent plugin printed the event (formats.md sections 2.3 and 5), so every
parser tries all known shapes and coalesces them field by field; the shape is
decided per line, never per file.
"""

from __future__ import annotations

import polars as pl

# TASK_REPORT letters of the kernel >= 4.14 (`S D T t X Z P I`); older kernels
# used other bits above 8, and a lone high bit meant "preempted" (R+), which is
# how numeric `prev_state=1024` (trace-cmd -R on a 3.x kernel) must read.
_STATE_BITS: tuple[tuple[int, str], ...] = (
    (1, "S"),
    (2, "D"),
    (4, "T"),
    (8, "t"),
    (16, "X"),
    (32, "Z"),
    (64, "P"),
    (128, "I"),
)

# lock:contention_begin flag bits (include/trace/events/lock.h, LCB_F_*).
_LOCK_FLAG_BITS: tuple[tuple[int, str], ...] = (
    (1, "SPIN"),
    (2, "READ"),
    (4, "WRITE"),
    (8, "RT"),
    (16, "PERCPU"),
    (32, "MUTEX"),
)


def _groups(payload: pl.Expr, pattern: str) -> pl.Expr:
    return payload.str.extract_groups(pattern)


def _int(e: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return e.str.to_integer(base=10, dtype=dtype, strict=False)


def _hex(e: pl.Expr, dtype: pl.DataType = pl.Int64()) -> pl.Expr:
    """Hex text with or without 0x, as an integer (null when not hex)."""
    return e.str.strip_prefix("0x").str.to_integer(base=16, dtype=dtype, strict=False)


def _number(e: pl.Expr, dtype: pl.DataType = pl.Int64()) -> pl.Expr:
    """Decimal, or hex when written with 0x."""
    return pl.when(e.str.starts_with("0x")).then(_hex(e, dtype)).otherwise(_int(e, dtype))


def _flag_names(n: pl.Expr, bits: tuple[tuple[int, str], ...]) -> pl.Expr:
    return pl.concat_str(
        [pl.when((n & bit) != 0).then(pl.lit(name)) for bit, name in bits],
        separator="|",
        ignore_nulls=True,
    )


def task_state(state: pl.Expr) -> pl.Expr:
    """prev_state as letters: letters are kept, numbers (raw forms) are decoded.

    0 -> R; a lone bit >= 256 -> R+ (the preempt mark of every kernel
    generation); otherwise the `|`-joined letters of the low bits.
    """
    n = _number(state)
    lone_high = (n >= 256) & ((n & (n - 1)) == 0)
    decoded = (
        pl.when(n == 0)
        .then(pl.lit("R"))
        .when(lone_high)
        .then(pl.lit("R+"))
        .otherwise(_flag_names(n, _STATE_BITS))
    )
    return pl.when(n.is_not_null()).then(decoded).otherwise(state)


def sched_switch(payload: pl.Expr) -> pl.Expr:
    """prev_comm, prev_pid, prev_state, next_comm, next_pid of a sched_switch.

    Kernel form (`prev_comm=... ==> next_comm=...`), raw form (`trace-cmd -R`:
    no `==>`, numeric state) and plugin form (`comm:pid [prio] S ==>
    comm:pid [prio]`, comm split at the last colon before the pid).
    """
    kernel = _groups(
        payload,
        r"prev_comm=(?P<prev_comm>.*) prev_pid=(?P<prev_pid>-?\d+) prev_prio=\S+ "
        r"prev_state=(?P<prev_state>\S*)(?: ==>)? next_comm=(?P<next_comm>.*) "
        r"next_pid=(?P<next_pid>-?\d+)",
    )
    plugin = _groups(
        payload,
        r"^\s*(?P<prev_comm>.*):(?P<prev_pid>-?\d+) \[-?\d+\] (?P<prev_state>\S+) ==> "
        r"(?P<next_comm>.*):(?P<next_pid>-?\d+) \[-?\d+\]",
    )
    fields = ("prev_comm", "prev_pid", "prev_state", "next_comm", "next_pid")
    merged = {f: pl.coalesce(kernel.struct.field(f), plugin.struct.field(f)) for f in fields}
    return pl.struct(
        merged["prev_comm"].alias("prev_comm"),
        _int(merged["prev_pid"], pl.Int32()).alias("prev_pid"),
        task_state(merged["prev_state"]).alias("prev_state"),
        merged["next_comm"].alias("next_comm"),
        _int(merged["next_pid"], pl.Int32()).alias("next_pid"),
    )


def sched_wakeup(payload: pl.Expr) -> pl.Expr:
    """woken_comm, pid, target_cpu, success of sched_wakeup / sched_wakeup_new / sched_waking.

    Kernel form (`comm=... pid=... prio=... [success=1] target_cpu=004 [state=W]`)
    and plugin form (`comm:pid [prio] [success=1] CPU:004`).
    """
    kernel = _groups(
        payload,
        r"comm=(?P<comm>.*) pid=(?P<pid>-?\d+) prio=-?\d+(?: success=(?P<success>\d+))?"
        r"(?: target_cpu=(?P<target_cpu>\d+))?",
    )
    plugin = _groups(
        payload,
        r"^\s*(?P<comm>.*):(?P<pid>-?\d+) \[-?\d+\](?: success=(?P<success>\d+))?(?: CPU:(?P<target_cpu>\d+))?",
    )
    m = {
        f: pl.coalesce(kernel.struct.field(f), plugin.struct.field(f))
        for f in ("comm", "pid", "success", "target_cpu")
    }
    return pl.struct(
        m["comm"].alias("woken_comm"),
        _int(m["pid"], pl.Int32()).alias("pid"),
        _int(m["target_cpu"], pl.Int32()).alias("target_cpu"),
        _int(m["success"], pl.Int8()).alias("success"),
    )


def kvm_exit(payload: pl.Expr) -> pl.Expr:
    """vcpu (the KVM vcpu id, when printed), reason text, and the numeric form.

    x86 text: `[vcpu N ]reason R rip 0x...` (the reason is everything between
    `reason ` and ` rip 0x`: SVM names contain spaces, VMX reasons may carry flag
    words). arm64: `TRAP: HSR_EC: 0x0001 (WFx), PC: ...` gives reason_class.
    Raw (`trace-cmd -R`): `exit_reason=N ... isa=I ... vcpu_id=V` gives
    reason_code and isa (1 VMX, 2 SVM).
    """
    x86 = _groups(payload, r"^\s*(?:vcpu (?P<vcpu>\d+) )?reason (?P<reason>.+?) rip 0x")
    arm = _groups(payload, r"^\s*(?P<kind>[A-Z_]+): [EH]SR_EC: 0x[0-9a-fA-F]+ \((?P<cls>[^)]*)\)")
    code = payload.str.extract(r"exit_reason=(\d+)", 1)
    isa = payload.str.extract(r"\bisa=(\d+)", 1)
    raw_vcpu = payload.str.extract(r"\bvcpu_id=(\d+)", 1)
    return pl.struct(
        _int(pl.coalesce(x86.struct.field("vcpu"), raw_vcpu), pl.Int32()).alias("vcpu"),
        x86.struct.field("reason").alias("reason"),
        arm.struct.field("kind").alias("arm_kind"),
        arm.struct.field("cls").alias("arm_class"),
        _int(code, pl.Int64()).alias("reason_code"),
        _int(isa, pl.Int8()).alias("isa"),
    )


def kvm_entry(payload: pl.Expr) -> pl.Expr:
    """vcpu id of kvm_entry: `vcpu 0`, `vcpu 0, rip 0x...`, plugin ` vcpu 0 rip ...`, raw `vcpu_id=0`."""
    return pl.struct(
        _int(payload.str.extract(r"\bvcpu(?:_id=| )(\d+)", 1), pl.Int32()).alias("vcpu"),
    )


def kvm_hypercall(payload: pl.Expr) -> pl.Expr:
    """nr, a0, a1 of `nr 0x5 a0 0x0 a1 0x3 a2 0x0 a3 0x0` (also `nr=0x5 a0=...`)."""
    g = _groups(
        payload,
        r"\bnr[ =](?P<nr>(?:0x)?[0-9a-fA-F]+) a0[ =](?P<a0>(?:0x)?[0-9a-fA-F]+) "
        r"a1[ =](?P<a1>(?:0x)?[0-9a-fA-F]+)",
    )
    return pl.struct(
        _hex(g.struct.field("nr")).alias("nr"),
        _hex(g.struct.field("a0")).alias("a0"),
        _hex(g.struct.field("a1")).alias("a1"),
    )


def kvm_vcpu_wakeup(payload: pl.Expr) -> pl.Expr:
    """how (wait or poll) and time_ns of `wait time 25150 ns, polling valid`."""
    g = _groups(payload, r"(?P<how>wait|poll) time (?P<ns>-?\d+) ns")
    return pl.struct(
        g.struct.field("how").alias("how"),
        _int(g.struct.field("ns"), pl.Int64()).alias("time_ns"),
    )


def kvm_ple_window(payload: pl.Expr) -> pl.Expr:
    """vcpu, new window and direction of both PLE window events.

    kvm_ple_window_update: `vcpu 1 old 4096 new 8192 (growed)`;
    older kvm_ple_window: `vcpu 1: ple_window 8192 (grow 4096)`.
    """
    new = _groups(payload, r"vcpu (?P<vcpu>\d+) old (?P<old>\d+) new (?P<new>\d+)(?: \((?P<dir>\w+)\))?")
    old = _groups(payload, r"vcpu (?P<vcpu>\d+): ple_window (?P<new>\d+)(?: \((?P<dir>\w+))?")
    direction = pl.coalesce(new.struct.field("dir"), old.struct.field("dir"))
    return pl.struct(
        _int(pl.coalesce(new.struct.field("vcpu"), old.struct.field("vcpu")), pl.Int32()).alias("vcpu"),
        _int(pl.coalesce(new.struct.field("new"), old.struct.field("new")), pl.Int64()).alias("window"),
        # growed/shrinked (sic) and grow/shrink read as one word each
        direction.str.replace(r"^(grow|shrink)(?:ed|ked)$", "$1").alias("direction"),
    )


def lock_contention(payload: pl.Expr) -> pl.Expr:
    """lock (address as UInt64), flags text and ret of lock:contention_begin/end.

    Addresses are real (`0xffff...`) or hashed (`00000000e264149b`, no 0x).
    Flags are `|`-joined names, empty when 0 (`(flags=)`), or a number in raw form.
    """
    g = _groups(
        payload, r"^\s*(?P<addr>(?:0x)?[0-9a-fA-F]+) \((?:flags=(?P<flags>[^)]*)|ret=(?P<ret>-?\d+))\)"
    )
    flags = g.struct.field("flags")
    flag_num = _number(flags)
    flags_text = pl.when(flag_num.is_not_null()).then(_flag_names(flag_num, _LOCK_FLAG_BITS)).otherwise(flags)
    return pl.struct(
        _hex(g.struct.field("addr"), pl.UInt64()).alias("lock"),
        pl.when(flags_text == "").then(None).otherwise(flags_text).alias("flags"),
        _int(g.struct.field("ret"), pl.Int64()).alias("ret"),
    )


def lockdep(payload: pl.Expr) -> pl.Expr:
    """lock, name, try/read bits of lockdep lock_acquire/acquired/contended/release.

    `0xffff8d2a40a1e2a8 try read &mm->mmap_lock`; older kernels print only the
    name (`&rq->lock`), and old lock_acquired appends ` holdtime: N`. Without an
    address the lock id is the name's rank among the lock names in the frame
    (an opaque id either way, stable for a given input).
    """
    g = _groups(
        payload,
        r"^\s*(?:(?P<addr>0x[0-9a-fA-F]+|[0-9a-fA-F]{8,16}) )?(?P<try>try )?(?P<read>read )?(?P<name>.*?)"
        r"(?: holdtime: \d+)?\s*$",
    )
    name = g.struct.field("name")
    addr = _hex(g.struct.field("addr"), pl.UInt64())
    bits = pl.when(g.struct.field("try").is_not_null()).then(1).otherwise(0) + pl.when(
        g.struct.field("read").is_not_null()
    ).then(2).otherwise(0)
    return pl.struct(
        pl.coalesce(addr, name.rank("dense").cast(pl.UInt64())).alias("lock"),
        name.alias("name"),
        bits.cast(pl.Int64()).alias("bits"),
        addr.is_not_null().alias("has_address"),
    )


def kvm_write_tsc_offset(payload: pl.Expr) -> pl.Expr:
    """vcpu and the new TSC offset (printed unsigned; read as two's complement)."""
    g = _groups(payload, r"vcpu=(?P<vcpu>\d+) prev=(?P<prev>\d+) next=(?P<next>\d+)")
    nxt = _int(g.struct.field("next"), pl.UInt64())
    return pl.struct(
        _int(g.struct.field("vcpu"), pl.Int32()).alias("vcpu"),
        nxt.reinterpret(signed=True).alias("offset"),
    )


def lost_count(payload: pl.Expr) -> pl.Expr:
    """The lost-event count of a lost_events row (null when the line gave none)."""
    return _int(payload.str.extract(r"(\d+)", 1), pl.Int64())
