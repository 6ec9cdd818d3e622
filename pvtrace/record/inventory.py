"""What a captured ftrace text holds: events by tracepoint, reported losses, stack costs.

Read vectorized with polars (a capture is easily a million lines), and kept
independent of the ingester so `record` can always say what it wrote. The
coverage check turns those counts into "which analyses can this trace feed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pvtrace.guest_signals import STEAL_TAG
from pvtrace.record.events import Mode, analysis_needs

# comm-pid [(tgid)] [cpu] [irq-info] secs[.frac]: event[: payload]
_EVENT_LINE = (
    r"^\s*.*?-\d+\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S{4,5}\s+)?"
    r"(?P<sec>\d+)(?:\.(?P<frac>\d+))?:\s+(?P<event>[^:]+?)(?::\s|:$|$)"
)
_LOST_LINE = r"^CPU:\d+ \[LOST(?: (\d+))? EVENTS\]"
STACK_PSEUDO_EVENT = "<stack trace>"


@dataclass
class Inventory:
    """Counts read back from the written text."""

    counts: dict[str, int] = field(default_factory=dict)  # by event name as printed
    n_lost_lines: int = 0  # `CPU:N [LOST M EVENTS]` lines in the text
    n_lost_reported: int = 0  # the sum of their M (lines without a count add nothing)
    n_stacks: int = 0
    stack_cost_median_ns: int | None = None  # contention_begin -> its <stack trace> (inflates waits)
    n_steal_samples: int = 0  # pvtrace-steal markers kept (the ring buffer may have overwritten some)
    t_first_ns: int | None = None
    t_last_ns: int | None = None

    @property
    def n_events(self) -> int:
        return sum(n for name, n in self.counts.items() if name != STACK_PSEUDO_EVENT)


def inventory(path: Path) -> Inventory:
    """Count the events of an ftrace text file (uncompressed), streaming: memory stays small."""
    try:
        return _inventory(pl.scan_lines(path, glob=False))
    except pl.exceptions.ComputeError:  # not valid UTF-8 (a comm with odd bytes): replace them
        text = path.read_bytes().decode("utf-8", errors="replace")
        return _inventory(pl.LazyFrame({"line": text.splitlines()}, schema={"line": pl.String()}))


def _inventory(lines: pl.LazyFrame) -> Inventory:
    parsed = (
        lines.with_row_index("i")
        .select("i", pl.col("line").str.extract_groups(_EVENT_LINE).alias("g"))
        .unnest("g")
        .filter(pl.col("event").is_not_null())
        .with_columns(
            cpu=pl.col("cpu").cast(pl.Int32),
            ts=pl.col("sec").cast(pl.Int64) * 1_000_000_000
            + pl.col("frac").fill_null("").str.pad_end(9, "0").str.slice(0, 9).cast(pl.Int64),
        )
    )
    counts, span, lost, stacks, steal = pl.collect_all(
        [
            parsed.group_by("event").len().sort("event"),
            parsed.select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")),
            lines.filter(pl.col("line").str.contains(_LOST_LINE)).select(
                pl.col("line").str.extract(_LOST_LINE, 1).cast(pl.Int64).alias("n")
            ),
            parsed.filter(pl.col("event").is_in(["contention_begin", STACK_PSEUDO_EVENT])).select(
                "i", "cpu", "ts", "event"
            ),
            lines.filter(pl.col("line").str.contains(STEAL_TAG, literal=True)).select(pl.len()),
        ],
        engine="streaming",
    )
    inv = Inventory(
        counts=dict(zip(counts["event"].to_list(), counts["len"].to_list(), strict=True)),
        n_lost_lines=lost.height,
        n_lost_reported=int(lost["n"].sum() or 0),
        t_first_ns=span["first"][0],
        t_last_ns=span["last"][0],
        n_steal_samples=int(steal.item()),
    )
    inv.n_stacks = inv.counts.get(STACK_PSEUDO_EVENT, 0)
    if inv.n_stacks:
        inv.stack_cost_median_ns = _stack_cost_median(stacks)
    return inv


def _stack_cost_median(rows: pl.DataFrame) -> int | None:
    """Median time from a contention_begin to the stack trace its trigger took on that CPU."""
    pairs = (
        rows.sort("i")
        .with_columns(
            prev_event=pl.col("event").shift(1).over("cpu"),
            prev_ts=pl.col("ts").shift(1).over("cpu"),
        )
        .filter((pl.col("event") == STACK_PSEUDO_EVENT) & (pl.col("prev_event") == "contention_begin"))
    )
    if not pairs.height:
        return None
    return int((pairs["ts"] - pairs["prev_ts"]).median())


@dataclass(frozen=True)
class Coverage:
    """Whether a capture can feed one analysis, and why (not)."""

    analysis: str
    status: str  # "yes", "none seen", "missing", "unmapped", "needs other side"
    detail: str


def coverage(
    mode: Mode,
    counts: dict[str, int],
    enabled: list[str],
    n_vcpu_threads: int,
    pv_spinlocks: bool | None = None,
) -> list[Coverage]:
    """For each analysis: are its events in this trace (enabled, and seen)? pv_spinlocks: the guest
    uses paravirt spinlocks (what analyze then declines is said here too)."""
    enabled_names = {e.partition(":")[2] for e in enabled}
    out = []
    for need in analysis_needs(mode):
        missing, unseen, seen = [], [], []
        for wanted in need.events:
            alternatives = wanted.split("|")
            if not any(a in enabled_names for a in alternatives):
                missing.append(alternatives[0])
                continue
            n = sum(counts.get(a, 0) for a in alternatives)
            (seen if n else unseen).append(f"{alternatives[0]} {n}")
        if missing:
            status, detail = "missing", f"not captured: {', '.join(missing)}"
        elif unseen:
            status, detail = "none seen", f"enabled but none happened: {', '.join(unseen)}"
        elif need.vcpu_map and n_vcpu_threads == 0:
            status = "unmapped"
            detail = (
                f"{', '.join(seen)}; but no vCPU thread was found in /proc, so the ingester must "
                "tie threads to vCPUs from their names and kvm vcpu ids in the trace"
            )
        elif need.other_side:
            status, detail = "needs other side", f"also needs {need.other_side}"
        elif need.without_pv and pv_spinlocks:
            status, detail = "part", need.without_pv
        else:
            status, detail = "yes", ", ".join(seen)
        out.append(Coverage(need.analysis, status, detail))
    return out
