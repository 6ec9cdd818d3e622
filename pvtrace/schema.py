"""The canonical event schema and the derived-table schemas, as documented data.

Every producer (simulator, ingesters) writes events in EVENT_SCHEMA and every
analysis reads only that. Column docs live next to the dtypes so that the
reference in docs/schema.md can be generated from this module and never drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pvtrace.errors import SchemaError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    """One documented column of a table."""

    name: str
    dtype: pl.DataType
    doc: str


# Canonical event kinds. Order here is also the tie-break priority inside one
# nanosecond for inputs without a meaningful emission order (METRICS.md):
# release < kick < preempt/halt < wake < run < contend < acquire. Kinds that
# take no part in that rule follow.
KINDS: tuple[str, ...] = (
    "lock_release",  # a vCPU releases a lock it held
    "pv_kick",  # a vCPU kicks a halted vCPU (KVM_HC_KICK_CPU); target = kicked vCPU
    "vcpu_preempt",  # a vCPU's thread leaves its pCPU while runnable
    "pv_halt",  # a lock waiter enters the pv slow-path halt (marks why the vCPU halts next)
    "vcpu_halt",  # a vCPU blocks voluntarily (HLT exit, pv halt, idle)
    "vcpu_wake",  # a halted vCPU becomes runnable (not yet on a pCPU)
    "vcpu_run",  # a vCPU's thread starts running on pcpu
    "lock_contend",  # a vCPU starts waiting for a lock (contention_begin)
    "lock_acquire",  # a vCPU acquires a lock (ends its wait, if any)
    "vm_exit",  # a VM exit; reason = normalized exit reason
    "vm_entry",  # a VM entry (back into guest mode)
    "yield_to",  # a directed yield from vcpu to target
    "ple_window",  # PLE window update; value = new window
    "lost_events",  # the producer lost events just before ts on cpu; value = count (null: unknown)
    "task_switch",  # a scheduler switch between tasks that are not vCPU threads
    "task_wakeup",  # a wake-up of a task that is not a vCPU thread
    "other",  # any other tracepoint, kept by name (event) with its raw payload (args)
)
KIND = pl.Enum(list(KINDS))
STATE_KINDS = ("vcpu_run", "vcpu_preempt", "vcpu_halt", "vcpu_wake")
LOCK_EVENT_KINDS = ("lock_contend", "lock_acquire", "lock_release")
EXIT_KINDS = ("vm_exit", "vm_entry")
KIND_PRIORITY: dict[str, int] = {k: i for i, k in enumerate(KINDS)}

ORIGINS: tuple[str, ...] = ("sim", "host", "guest")
ORIGIN = pl.Enum(list(ORIGINS))

EVENT_COLUMNS: tuple[Column, ...] = (
    Column("ts", pl.Int64(), "Time in ns on the host timeline (guest events are shifted onto it)."),
    Column("seq", pl.Int64(), "Emission order inside the input; canonical order is (ts, seq)."),
    Column(
        "vm",
        pl.Categorical(),
        "VM id (simulator name, or the QEMU process id as text); null when not about a VM.",
    ),
    Column("vcpu", pl.Int32(), "vCPU index inside vm (= guest CPU number); null when not about a vCPU."),
    Column("pcpu", pl.Int32(), "Host CPU the event happened on; null when unknown (guest-side events)."),
    Column("kind", KIND, "Canonical event kind (see KINDS)."),
    Column("lock", pl.UInt64(), "Lock address, an opaque id unique within vm; null when not a lock event."),
    Column(
        "reason",
        pl.Categorical(),
        "Qualifier: normalized exit reason (PAUSE, HLT, ...) for vm_exit, lock flags (SPIN, SPIN|WRITE) for lock_contend, prev_state for switches.",
    ),
    Column("target", pl.Int32(), "Kicked or yielded-to vCPU index (same vm); null otherwise."),
    Column(
        "value",
        pl.Int64(),
        "Extra number: lost-event count, hypercall nr, PLE window, ...; vm_exit: the hypercall nr,"
        " else 1 where the exit found the guest in user mode (kvm_exit's rip in a 64-bit user space).",
    ),
    Column("origin", ORIGIN, "Who saw the event: sim (simulator), host or guest kernel."),
    Column(
        "tid",
        pl.Int32(),
        "Thread id that emitted the event (host thread for host events); null in simulator output.",
    ),
    Column(
        "event",
        pl.Categorical(),
        "Source tracepoint name as printed (kvm_exit, contention_begin, ...); simulator: the kind.",
    ),
    Column("args", pl.String(), "Raw payload text, kept only for events of kind other (null otherwise)."),
)
EVENT_SCHEMA = pl.Schema({c.name: c.dtype for c in EVENT_COLUMNS})

# Lock kinds (METRICS.md): fifo locks hand over in queue order, unfair ones do not.
LOCK_KINDS: tuple[str, ...] = ("fifo", "unfair", "unknown")

# vCPU states of the interval tables.
VCPU_STATES: tuple[str, ...] = ("running", "preempted", "halted", "unknown")
VCPU_STATE = pl.Enum(list(VCPU_STATES))

LHP_INCIDENT_COLUMNS: tuple[Column, ...] = (
    Column("vm", pl.String(), "VM of the lock."),
    Column("lock", pl.UInt64(), "Lock address."),
    Column("holder", pl.Int32(), "vCPU holding the lock while not running."),
    Column("holder_state", pl.String(), "preempted or halted."),
    Column("start", pl.Int64(), "ns: holder stops running while holding (or the hold starts)."),
    Column("end", pl.Int64(), "ns: holder runs again or releases (or trace end)."),
    Column("dur", pl.Int64(), "end - start, ns."),
    Column("n_waiters", pl.Int64(), "Distinct vCPUs that spun on the lock during the incident."),
    Column(
        "waste_ns", pl.Int64(), "Those waiters' running time inside the incident while waiting on the lock."
    ),
    Column("harmful", pl.Boolean(), "At least one waiter spun."),
    Column("truncated", pl.Boolean(), "Still open at the end of the trace."),
    Column(
        "holder_guessed",
        pl.Boolean(),
        "The trace shows no take by the holder: it is the likeliest of the siblings that could have "
        "taken the lock unseen (docs/metrics.md, Unseen holder). False where a take or a kick shows it.",
    ),
)
LWP_INCIDENT_COLUMNS: tuple[Column, ...] = (
    Column("vm", pl.String(), "VM of the lock."),
    Column("lock", pl.UInt64(), "Lock address."),
    Column("next_owner", pl.Int32(), "vCPU that acquired next (the next in line at the release)."),
    Column("next_owner_state", pl.String(), "preempted or halted, at the release."),
    Column("start", pl.Int64(), "ns: the release."),
    Column("end", pl.Int64(), "ns: the next acquisition (or trace end)."),
    Column("dur", pl.Int64(), "end - start, ns."),
    Column("pcpu_wait_ns", pl.Int64(), "From max(release, next owner's wake-up) to its next run."),
    Column("n_waiters", pl.Int64(), "Distinct other vCPUs that spun on the lock during the gap."),
    Column("waste_ns", pl.Int64(), "Those waiters' running time inside the gap while waiting on the lock."),
    Column("harmful", pl.Boolean(), "At least one other waiter spun."),
    Column("truncated", pl.Boolean(), "Still open at the end of the trace."),
)
CONVOY_COLUMNS: tuple[Column, ...] = (
    Column("vm", pl.String(), "VM of the lock."),
    Column("lock", pl.UInt64(), "Lock address."),
    Column("start", pl.Int64(), "ns: the release before the first hand-off."),
    Column("end", pl.Int64(), "ns: the last hand-off's acquisition."),
    Column("length", pl.Int64(), "Number of consecutive hand-offs (>= 2)."),
    Column("peak_waiters", pl.Int64(), "Most vCPUs waiting on the lock at once during the convoy."),
    Column(
        "cause",
        pl.String(),
        "lhp, lwp or none: the incident open on the lock at the release before the first hand-off.",
    ),
)


def schema_of(columns: tuple[Column, ...]) -> pl.Schema:
    """The polars schema of a documented column tuple."""
    return pl.Schema({c.name: c.dtype for c in columns})


LHP_INCIDENT_SCHEMA = schema_of(LHP_INCIDENT_COLUMNS)
LWP_INCIDENT_SCHEMA = schema_of(LWP_INCIDENT_COLUMNS)
CONVOY_SCHEMA = schema_of(CONVOY_COLUMNS)


def empty_events() -> pl.DataFrame:
    """An events table with no rows."""
    return pl.DataFrame(schema=EVENT_SCHEMA)


def conform_events(df: pl.DataFrame) -> pl.DataFrame:
    """Add missing nullable columns and cast to EVENT_SCHEMA, in schema order.

    Producers build only the columns they know; this fills the rest with nulls.
    ts and kind are mandatory.
    """
    missing_required = [c for c in ("ts", "kind") if c not in df.columns]
    if missing_required:
        raise SchemaError(f"events table lacks required column(s): {', '.join(missing_required)}")
    extra = [c for c in df.columns if c not in EVENT_SCHEMA]
    if extra:
        raise SchemaError(f"events table has unknown column(s): {', '.join(extra)}")
    exprs = []
    for name, dtype in EVENT_SCHEMA.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype))
        elif name == "seq":
            exprs.append(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    try:
        return df.select(exprs)
    except pl.exceptions.PolarsError:  # a value of some column does not cast: say which
        for name, dtype in EVENT_SCHEMA.items():
            if name in df.columns:
                try:
                    df.select(pl.col(name).cast(dtype))
                except pl.exceptions.PolarsError as exc:
                    raise SchemaError(f"column {name}: {str(exc).splitlines()[0]}") from None
        raise


def validate_events(df: pl.DataFrame) -> None:
    """Raise SchemaError unless df has exactly EVENT_SCHEMA and sane values."""
    if df.schema != EVENT_SCHEMA:
        got = dict(df.schema)
        diffs = [
            f"{n}: expected {t}, got {got.get(n, 'missing')}"
            for n, t in EVENT_SCHEMA.items()
            if got.get(n) != t
        ]
        diffs += [f"{n}: unexpected column" for n in got if n not in EVENT_SCHEMA]
        raise SchemaError("events do not match the canonical schema: " + "; ".join(diffs))
    if df.height and df["ts"].null_count():
        raise SchemaError("events have null timestamps")


def markdown_table(columns: tuple[Column, ...]) -> str:
    """A Markdown table of documented columns (the reference docs are generated from it)."""
    rows = ["| column | type | meaning |", "| --- | --- | --- |"]
    for c in columns:
        dtype = "Enum" if isinstance(c.dtype, pl.Enum) else str(c.dtype)
        doc = c.doc.replace("|", "\\|")
        rows.append(f"| `{c.name}` | {dtype} | {doc} |")
    return "\n".join(rows)
