"""Typed fields out of event payload text, one vectorized parser per event family.

Each parser takes a frame with a `payload` column and returns it with typed
field columns added (null where the payload matched no known shape). A family's
shapes differ by kernel version and by whether a libtraceevent plugin printed the
event (formats.md sections 2.3 and 5), so every parser tries all known shapes and
coalesces them field by field: the shape is decided per line, never per file.

Speed matters here (every record of a multi-GB trace passes through): fields
are cut with literal searches and small single-capture regexes whose literal
prefix lets the regex engine skip ahead, never with one big many-capture regex
over the whole line, and intermediate columns are materialized once.
"""

from __future__ import annotations

import polars as pl

P = pl.col("payload")

# TASK_REPORT letters of kernels >= 4.14 (`S D T t X Z P I`); older kernels
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
        [pl.when((n & bit) != 0).then(pl.lit(name)) for bit, name in bits], separator="|", ignore_nulls=True
    )


def _between(start: pl.Expr, end: pl.Expr, skip: int) -> pl.Expr:
    """payload[start + skip : end] (null when either bound is missing)."""
    return pl.when(start.is_not_null() & end.is_not_null()).then(
        P.str.slice(start + skip, end - start - skip)
    )


def _upto(text: pl.Expr, end: pl.Expr) -> pl.Expr:
    """text[:end] (null when end is missing)."""
    return pl.when(end.is_not_null()).then(text.str.slice(0, end))


def _via_unique(df: pl.DataFrame, column: str, expr: pl.Expr, name: str) -> pl.DataFrame:
    """Add name = expr(column), evaluated once per distinct value (low-cardinality columns)."""
    keys = df.select(pl.col(column).unique()).with_columns(expr.alias(name))
    if keys.filter(pl.col(column).is_null() & pl.col(name).is_not_null()).height:
        return df.join(keys, on=column, how="left", nulls_equal=True, maintain_order="left")
    known = keys.filter(pl.col(column).is_not_null())  # null stays null: a lookup, no join
    return df.with_columns(
        pl.col(column).replace_strict(known[column], known[name], default=None).alias(name)
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


_SWITCH_KEYS = ("prev_pid", "prev_prio", "prev_state", "next_comm", "next_pid")


def sched_switch(df: pl.DataFrame) -> pl.DataFrame:
    """Add prev_comm, prev_pid, prev_state, next_comm, next_pid of sched_switch payloads.

    Kernel form (`prev_comm=... ==> next_comm=...`), raw form (`trace-cmd -R`:
    no `==>`, numeric state) and plugin form (`comm:pid [prio] S ==>
    comm:pid [prio]`, comm split at the last colon before the pid). Trailing
    extras (`Latency: ...` of trace-cmd -w) are ignored.
    """
    is_kernel = P.str.starts_with("prev_comm=")
    df = df.with_columns(is_kernel.alias("_kernel"))
    kernel = _switch_kernel(df.filter(pl.col("_kernel")).drop("_kernel"))
    plugin = _switch_plugin(df.filter(~pl.col("_kernel")).drop("_kernel"))
    df = pl.concat([kernel, plugin])
    df = _via_unique(df, "_prev_state", task_state(pl.col("_prev_state")), "prev_state")
    return df.with_columns(
        _int(pl.col("_prev_pid"), pl.Int32()).alias("prev_pid"),
        _int(pl.col("_next_pid"), pl.Int32()).alias("next_pid"),
    ).drop("_prev_pid", "_prev_state", "_next_pid")


def _switch_kernel(kernel: pl.DataFrame) -> pl.DataFrame:
    """The kernel (and raw) form's fields, as text."""
    find = {name: P.str.find(f" {name}=", literal=True) for name in _SWITCH_KEYS}
    kernel = kernel.with_columns(v.alias(f"_i_{k}") for k, v in find.items())
    i = {k: pl.col(f"_i_{k}") for k in _SWITCH_KEYS}
    kernel = kernel.with_columns(
        _between(pl.lit(0), i["prev_pid"], 10).alias("prev_comm"),
        _between(i["prev_pid"], i["prev_prio"], 10).alias("_prev_pid"),
        # the state ends at ` ==>` (text form) or at ` next_comm=` (raw form)
        _between(i["prev_state"], i["next_comm"], 12).str.strip_suffix(" ==>").alias("_prev_state"),
        _between(i["next_comm"], i["next_pid"], 11).alias("next_comm"),
        pl.when(i["next_pid"].is_not_null())
        .then(P.str.slice(i["next_pid"] + 10).str.extract(r"^(-?\d+)", 1))
        .alias("_next_pid"),
    ).drop(f"_i_{k}" for k in _SWITCH_KEYS)
    return kernel


def _switch_plugin(plugin: pl.DataFrame) -> pl.DataFrame:
    """The plugin form's fields, as text. Most traces have no such line: polars compiles each regex
    even for an empty column, which costs more than parsing a batch of lines, so they are skipped."""
    if plugin.height == 0:
        return plugin.with_columns(
            pl.lit(None, pl.String).alias(c)
            for c in ("prev_comm", "_prev_pid", "_prev_state", "next_comm", "_next_pid")
        )
    plugin = plugin.with_columns(P.str.find(" ==> ", literal=True).alias("_i_arrow"))
    plugin = plugin.with_columns(
        _upto(P, pl.col("_i_arrow")).alias("_left"),
        pl.when(pl.col("_i_arrow").is_not_null()).then(P.str.slice(pl.col("_i_arrow") + 5)).alias("_right"),
    )
    left, right = pl.col("_left"), pl.col("_right")
    plugin = plugin.with_columns(
        _upto(left, left.str.find(r":-?\d+ \[-?\d+\] \S+$")).alias("prev_comm"),
        left.str.extract(r":(-?\d+) \[-?\d+\] \S+$", 1).alias("_prev_pid"),
        left.str.extract(r"\] (\S+)$", 1).alias("_prev_state"),
        _upto(right, right.str.find(r":-?\d+ \[-?\d+\](?:\s|$)")).alias("next_comm"),
        right.str.extract(r":(-?\d+) \[-?\d+\](?:\s|$)", 1).alias("_next_pid"),
    ).drop("_i_arrow", "_left", "_right")
    return plugin


def sched_wakeup(df: pl.DataFrame) -> pl.DataFrame:
    """Add woken_comm, pid, target_cpu, success of sched_wakeup / sched_wakeup_new / sched_waking.

    Kernel form (`comm=... pid=... prio=... [success=1] target_cpu=004 [state=W]`)
    and plugin form (`comm:pid [prio] [success=1] CPU:004`).
    """
    kernel = P.str.starts_with("comm=")
    df = df.with_columns(P.str.find(" pid=", literal=True).alias("_i_pid"))
    plugin_pid = r":-?\d+ \[-?\d+\](?:\s|$)"
    comm = _between(pl.lit(0), pl.col("_i_pid"), 5)
    pid = P.str.extract(r" pid=(-?\d+) ", 1)
    if not df.select(kernel.all()).item():  # the plugin form's regexes only where it occurs
        comm = pl.when(kernel).then(comm).otherwise(_upto(P, P.str.find(plugin_pid)))
        pid = pl.when(kernel).then(pid).otherwise(P.str.extract(r":(-?\d+) \[-?\d+\](?:\s|$)", 1))
    return df.with_columns(
        comm.alias("woken_comm"),
        _int(pid, pl.Int32()).alias("pid"),
        _int(P.str.extract(r"(?:target_cpu=|CPU:)(\d+)", 1), pl.Int32()).alias("target_cpu"),
        _int(P.str.extract(r" success=(\d+)", 1), pl.Int8()).alias("success"),
    ).drop("_i_pid")


def kvm_exit(df: pl.DataFrame) -> pl.DataFrame:
    """Add vcpu (the KVM vcpu id, when printed) and the printed reason in its three shapes.

    x86 text: `[vcpu N ]reason R rip 0x...` (reason = everything between
    `reason ` and ` rip 0x`: SVM names contain spaces, VMX reasons may carry flag
    words). arm64: `TRAP: HSR_EC: 0x0001 (WFx), PC: ...` gives arm_kind and
    arm_class. Raw (`trace-cmd -R`): `exit_reason=N ... isa=I ... vcpu_id=V`
    gives reason_code and isa (1 VMX, 2 SVM). aliases.exit_reason* normalize them.
    """
    x86 = P.str.contains(" rip 0x", literal=True) & P.str.contains("reason ", literal=True)
    df = df.with_columns(x86.alias("_x86"))
    n_x86 = int(df["_x86"].sum())
    # a trace has one shape: the other's regexes are not even compiled (that costs more than a batch)
    text = df if n_x86 == df.height else df.filter(pl.col("_x86"))
    other = df.clear() if n_x86 == df.height else df.filter(~pl.col("_x86"))
    if text.height or not other.height:
        text = text.with_columns(
            P.str.find("reason ", literal=True).alias("_i_reason"),
            P.str.find(" rip 0x", literal=True).alias("_i_rip"),
        )
        text = text.with_columns(
            _int(P.str.extract(r"^\s*vcpu (\d+) ", 1), pl.Int32()).alias("vcpu"),
            _between(pl.col("_i_reason"), pl.col("_i_rip"), 7).alias("reason"),
            _guest_user(P.str.slice(pl.col("_i_rip") + 7).str.extract(r"^([0-9a-fA-F]+)", 1)),
            *(pl.lit(None, dtype=t).alias(c) for c, t in _EXIT_OTHER.items()),
        ).drop("_i_reason", "_i_rip")
    if other.height or not text.height:
        other = other.with_columns(
            _int(P.str.extract(r"\bvcpu_id=(\d+)", 1), pl.Int32()).alias("vcpu"),
            pl.lit(None, dtype=pl.String).alias("reason"),
            _guest_user(P.str.extract(r"\bguest_rip=0x([0-9a-fA-F]+)", 1)),
            P.str.extract(r"^\s*([A-Z_]+): [EH]SR_EC: ", 1).alias("arm_kind"),
            P.str.extract(r"[EH]SR_EC: 0x[0-9a-fA-F]+ \(([^)]*)\)", 1).alias("arm_class"),
            _int(P.str.extract(r"exit_reason=(\d+)", 1), pl.Int64()).alias("reason_code"),
            _int(P.str.extract(r"\bisa=(\d+)", 1), pl.Int8()).alias("isa"),
        )
    if not other.height:
        return text.drop("_x86")
    if not text.height:
        return other.drop("_x86")
    return pl.concat([text, other]).drop("_x86")


# A 64-bit guest's user space: rips above 4 GiB in the lower half. Kernel text is in the upper half;
# below 4 GiB a rip may be a 32-bit kernel, firmware or a non-PIE binary, so it says nothing.
_USER_LOW, _USER_HIGH = 1 << 32, 1 << 47


def _guest_user(rip_hex: pl.Expr) -> pl.Expr:
    """1 where kvm_exit's guest rip lies in a 64-bit guest's user space, else null (the exit found
    the guest in kernel mode, or nothing can be said)."""
    rip = rip_hex.str.to_integer(base=16, dtype=pl.UInt64(), strict=False)
    return (
        pl.when(rip.is_between(_USER_LOW, _USER_HIGH, closed="left"))
        .then(pl.lit(1, pl.Int64()))
        .alias("guest_user")
    )


_EXIT_OTHER = {"arm_kind": pl.String(), "arm_class": pl.String(), "reason_code": pl.Int64(), "isa": pl.Int8()}


def kvm_entry(df: pl.DataFrame) -> pl.DataFrame:
    """Add the vcpu id of kvm_entry: `vcpu 0`, `vcpu 0, rip 0x...`, plugin `vcpu 0 rip ...`, raw `vcpu_id=0`."""
    return df.with_columns(_int(P.str.extract(r"\bvcpu(?:_id=| )(\d+)", 1), pl.Int32()).alias("vcpu"))


def kvm_hypercall(df: pl.DataFrame) -> pl.DataFrame:
    """Add nr, a0, a1 of `nr 0x5 a0 0x0 a1 0x3 a2 0x0 a3 0x0` (also `nr=0x5 a0=...`)."""
    return df.with_columns(
        _hex(P.str.extract(rf"\b{name}[ =]((?:0x)?[0-9a-fA-F]+)", 1)).alias(name)
        for name in ("nr", "a0", "a1")
    )


def kvm_vcpu_wakeup(df: pl.DataFrame) -> pl.DataFrame:
    """Add how (wait or poll) and time_ns of `wait time 25150 ns, polling valid`."""
    return df.with_columns(
        P.str.extract(r"(wait|poll) time -?\d+ ns", 1).alias("how"),
        _int(P.str.extract(r"(?:wait|poll) time (-?\d+) ns", 1), pl.Int64()).alias("time_ns"),
    )


def kvm_ple_window(df: pl.DataFrame) -> pl.DataFrame:
    """Add vcpu, the new window and its direction, for both PLE window events.

    kvm_ple_window_update: `vcpu 1 old 4096 new 8192 (growed)`;
    older kvm_ple_window: `vcpu 1: ple_window 8192 (grow 4096)`.
    """
    return df.with_columns(
        _int(P.str.extract(r"\bvcpu (\d+)", 1), pl.Int32()).alias("vcpu"),
        _int(P.str.extract(r"(?: new |ple_window )(\d+)", 1), pl.Int64()).alias("window"),
        # growed/shrinked (sic) and grow/shrink read as one word each
        P.str.extract(r"\((grow|shrink)", 1).alias("direction"),
    )


def lock_contention(df: pl.DataFrame) -> pl.DataFrame:
    """Add lock (address as UInt64), flags text and ret of lock:contention_begin/end.

    Addresses are real (`0xffff...`) or hashed (`00000000e264149b`, no 0x).
    Flags are `|`-joined names, empty when 0 (`(flags=)`), or a number in raw form.
    """
    df = df.with_columns(
        _hex(P.str.extract(r"^\s*((?:0x)?[0-9a-fA-F]+) \((?:flags|ret)=", 1), pl.UInt64()).alias("lock"),
        P.str.extract(r"\(flags=([^)]*)\)", 1).alias("_flags"),
        _int(P.str.extract(r"\(ret=(-?\d+)\)", 1), pl.Int64()).alias("ret"),
    )
    flag_num = _number(pl.col("_flags"))
    text = (
        pl.when(flag_num.is_not_null())
        .then(_flag_names(flag_num, _LOCK_FLAG_BITS))
        .otherwise(pl.col("_flags"))
    )
    df = _via_unique(df, "_flags", pl.when(text == "").then(None).otherwise(text), "flags")
    return df.drop("_flags")


def lockdep(df: pl.DataFrame) -> pl.DataFrame:
    """Add lock, name, bits (1 try, 2 read) of lockdep lock_acquire/acquired/contended/release.

    `0xffff8d2a40a1e2a8 try read &mm->mmap_lock`; older kernels print only the
    name (`&rq->lock`), and old lock_acquired appends ` holdtime: N`. Without an
    address the lock id is the name's rank among the lock names in the frame
    (an opaque id either way, stable for a given input).
    """
    g = P.str.extract_groups(
        r"^\s*(?:(?P<addr>0x[0-9a-fA-F]+|[0-9a-fA-F]{8,16}) )?(?P<try>try )?(?P<read>read )?(?P<name>.*?)"
        r"(?: holdtime: \d+)?\s*$"
    )
    df = df.with_columns(g.alias("_g")).with_columns(
        pl.col("_g").struct.field("name").alias("name"),
        _hex(pl.col("_g").struct.field("addr"), pl.UInt64()).alias("_addr"),
        (
            pl.col("_g").struct.field("try").is_not_null().cast(pl.Int64)
            + 2 * pl.col("_g").struct.field("read").is_not_null().cast(pl.Int64)
        ).alias("bits"),
    )
    return df.with_columns(
        pl.coalesce("_addr", pl.col("name").rank("dense").cast(pl.UInt64())).alias("lock"),
        pl.col("_addr").is_not_null().alias("has_address"),
    ).drop("_g", "_addr")


def kvm_write_tsc_offset(df: pl.DataFrame) -> pl.DataFrame:
    """Add vcpu and the new TSC offset (printed unsigned; read as two's complement)."""
    return df.with_columns(
        _int(P.str.extract(r"vcpu=(\d+)", 1), pl.Int32()).alias("vcpu"),
        _int(P.str.extract(r" next=(\d+)", 1), pl.UInt64()).reinterpret(signed=True).alias("offset"),
    )


def lost_count(payload: pl.Expr) -> pl.Expr:
    """The lost-event count of a lost_events row (null when the line gave none)."""
    return _int(payload.str.extract(r"(\d+)", 1), pl.Int64())
