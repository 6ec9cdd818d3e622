"""The raw record frame: one row per trace record line, fields as printed, before normalization.

Every text parser (ftrace, trace-cmd report, perf script) produces this frame and the
normalizer maps it to canonical events. Keeping the printed fields (comm, payload)
untouched here means a parser bug and a mapping bug can never hide each other.
"""

from __future__ import annotations

import polars as pl

from pvtrace.schema import Column, schema_of

RAW_COLUMNS: tuple[Column, ...] = (
    Column("line", pl.Int64(), "1-based line number of the record in its (decompressed) input file."),
    Column(
        "source", pl.Categorical(), "Multi-input prefix (trace-cmd `-i a -i b`, `-B instance`); null if none."
    ),
    Column(
        "comm", pl.String(), "Task name as printed (may hold spaces, `<...>`); null when the line had none."
    ),
    Column("tid", pl.Int32(), "Kernel task id (ftrace pid, perf tid); null when the line had none."),
    Column("tgid", pl.Int32(), "Thread group id (TGID column, perf pid/tid); null if absent or `(-----)`."),
    Column("cpu", pl.Int32(), "CPU the record was written on; null when the line had none."),
    Column("flags", pl.String(), "irq-info / latency flag column (`d..2.`); null if absent."),
    Column(
        "ts",
        pl.Int64(),
        "Timestamp: ns for secs.frac clocks, the raw integer for counter clocks, ns since buffer start for "
        "latency format; null when the line had none.",
    ),
    Column(
        "system", pl.Categorical(), "Event system (`sched`, `kvm`) when printed (perf script); else null."
    ),
    Column("event", pl.Categorical(), "Event name without system; special: lost_events, buffer_started."),
    Column(
        "payload", pl.String(), "Text after `event: `, stripped; multi-line records joined with newlines."
    ),
)
RAW_SCHEMA = schema_of(RAW_COLUMNS)

LOST_EVENTS = "lost_events"
BUFFER_STARTED = "buffer_started"
KERNEL_STACK = "kernel_stack"
USER_STACK = "user_stack"
FUNCTION = "function"


def empty_raw() -> pl.DataFrame:
    """A raw frame with no rows."""
    return pl.DataFrame(schema=RAW_SCHEMA)


def conform_raw(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to RAW_SCHEMA in schema order, adding missing columns as nulls."""
    return df.select(
        [
            pl.col(name).cast(dtype) if name in df.columns else pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in RAW_SCHEMA.items()
        ]
    )
