"""The guest's own evidence of preemption, as `pvtrace record --guest` captures it.

Two signals, shared by the recorder (writes them), the simulator (renders them)
and the analyzer (reads them):

- the scheduler tick: a running, non-idle guest CPU takes its local APIC timer
  interrupt (`irq_vectors:local_timer_entry`) every 1/HZ; a preempted or halted
  vCPU takes none, and one that resumes after missing a tick takes it at once;
- steal samples: every guest CPU's steal counter from `/proc/stat` (8th value,
  in USER_HZ units), written into the trace through `trace_marker` as one line
  `pvtrace-steal user_hz=100 pv_spinlocks=1 cpu0=12 cpu1=7` at the start, every
  STEAL_INTERVAL_NS and at the end. `pv_spinlocks` (1 or 0, optional) says whether the
  guest kernel's spinlocks are paravirt: their waiters halt, which no tick shows.
"""

from __future__ import annotations

import polars as pl

TICK_EVENTS: tuple[str, ...] = ("local_timer_entry",)
TICK_VECTOR_ARGS = "vector=236"  # LOCAL_TIMER_VECTOR on x86
MARKER_EVENTS: tuple[str, ...] = ("tracing_mark_write", "print")  # ftrace text / trace-cmd report
STEAL_TAG = "pvtrace-steal"
STEAL_INTERVAL_NS = 100_000_000
USER_HZ = 100
HZ_CHOICES: tuple[int, ...] = (100, 250, 300, 1000)  # CONFIG_HZ values a guest kernel can have


def steal_marker(user_hz: int, ticks: dict[int, int], pv_spinlocks: bool | None = None) -> str:
    """The marker text of one steal sample: per-CPU steal in USER_HZ units."""
    cpus = " ".join(f"cpu{c}={t}" for c, t in sorted(ticks.items()))
    pv = "" if pv_spinlocks is None else f" pv_spinlocks={int(pv_spinlocks)}"
    return f"{STEAL_TAG} user_hz={user_hz}{pv} {cpus}"


def parse_steal_markers(events: pl.DataFrame) -> pl.DataFrame:
    """Steal samples of marker events (columns vm, ts, args): one row per (vm, ts, cpu) with
    `steal_ns` (the counter in ns, USER_HZ resolution) and `unit_ns` (one USER_HZ tick)."""
    body = pl.col("args").str.extract(rf"{STEAL_TAG} user_hz=(\d+)(?: pv_spinlocks=\d)?((?: cpu\d+=\d+)+)", 2)
    hz = pl.col("args").str.extract(rf"{STEAL_TAG} user_hz=(\d+)", 1).cast(pl.Int64)
    rows = (
        events.select("vm", "ts", hz.alias("user_hz"), body.alias("body"))
        .filter(pl.col("body").is_not_null() & (pl.col("user_hz") > 0))
        .with_columns(pl.col("body").str.extract_all(r"cpu\d+=\d+"))
        .explode("body")
        .select(
            "vm",
            "ts",
            pl.col("body").str.extract(r"cpu(\d+)=", 1).cast(pl.Int32).alias("vcpu"),
            (
                pl.col("body").str.extract(r"=(\d+)", 1).cast(pl.Int64) * 1_000_000_000 // pl.col("user_hz")
            ).alias("steal_ns"),
            (1_000_000_000 // pl.col("user_hz")).alias("unit_ns"),
        )
    )
    return rows.sort("vm", "vcpu", "ts")


def pv_spinlocks_of(markers: pl.DataFrame) -> bool | None:
    """Whether the steal samples (marker events, column args) say the guest's spinlocks are paravirt;
    None when none says."""
    said = markers.select(pl.col("args").str.extract(rf"{STEAL_TAG} user_hz=\d+ pv_spinlocks=(\d)", 1))
    said = said.to_series().drop_nulls()
    return None if said.is_empty() else bool((said == "1").any())
