"""Value sanity of raw records, one vectorized pass per batch before normalization.

Parsing accepts any line that has the shape of a record; this pass checks its values. Values
no kernel prints (a CPU id past NR_CPUS, a pid past PID_MAX_LIMIT, a negative or absurd
timestamp) are counted problems and the record is dropped (fatal with --strict). On one CPU
time only goes forward: a record earlier than the one before it on its CPU (time going
backwards) or more than MAX_GAP_NS later (an implausible jump) is dropped and replaced by a
lost-events marker, so the analyzer treats the span around it as unknown, like events the
ring buffer lost, instead of sorting the record somewhere it never was. An exact copy of the
record before it on its CPU (a duplicated line) is dropped. Every kind is counted with its
first lines (ingest's problems, analyze's skipped lines).

A number too large for its column (a CPU id or pid past int32, a timestamp past int64 ns) is
caught earlier, on the printed text (`overflow_kind`), under the same kinds: a cast would make it
null, and a null CPU or timestamp would pass for a line that printed none.
"""

from __future__ import annotations

import polars as pl

from pvtrace.ingest.problems import Problems
from pvtrace.ingest.raw import BUFFER_STARTED, LOST_EVENTS

MAX_CPUS = 8192  # the kernel's largest NR_CPUS
PID_MAX = 4_194_304  # PID_MAX_LIMIT on 64-bit
MAX_TS_NS = 1 << 62  # 146 years: past it a timestamp is an overflow, not a clock
MAX_GAP_NS = 3600 * 1_000_000_000  # an hour without a record on a CPU, mid-trace: a corrupt timestamp

_INT32_MAX = (1 << 31) - 1
_INT64_MAX = (1 << 63) - 1
MAX_NS_SECS = _INT64_MAX // 1_000_000_000  # `secs.frac` from here on overflows int64 ns

_KEY = ["source", "cpu"]
_SAME = ["tid", "tgid", "ts", "event", "payload"]


def _past(col: str, limit: int) -> pl.Expr:
    """A printed integer of `col` (regex group text) that does not fit below limit."""
    s = pl.col(col).str.strip_chars()
    value = s.cast(pl.Int64, strict=False)
    return s.str.contains(r"^-?\d+$") & (value.is_null() | (value.abs() > limit))


def overflow_kind() -> pl.Expr:
    """The problem kind of a parsed line whose number overflows its column (null: none).

    Evaluated on the regex groups of record lines, as text (cpu, tid, tgid, secs, frac, us).
    """
    ts = (
        (_past("secs", MAX_NS_SECS - 1) & pl.col("frac").is_not_null())  # secs.frac in ns
        | _past("secs", _INT64_MAX)  # a raw counter
        | _past("us", _INT64_MAX // 1000)  # latency format
    )
    return (
        pl.when(_past("cpu", _INT32_MAX).fill_null(False))
        .then(pl.lit("cpu_out_of_range"))
        .when((_past("tid", _INT32_MAX) | _past("tgid", _INT32_MAX)).fill_null(False))
        .then(pl.lit("pid_out_of_range"))
        .when(ts.fill_null(False))
        .then(pl.lit("timestamp_out_of_range"))
    )


class Sanity:
    """Checks the raw batches of one input in file order (the last record of each CPU carries over)."""

    def __init__(self, problems: Problems):
        self.problems = problems
        self._last: pl.DataFrame | None = None  # the last timed record per (source, cpu)

    def check(self, raw: pl.DataFrame) -> pl.DataFrame:
        """The batch without insane records; lost-events markers where time broke on a CPU."""
        if raw.height == 0:
            return raw
        text = pl.format(
            "{}: {} (cpu={} pid={} ts={})",
            *[pl.col(c).cast(pl.String).fill_null("-") for c in ("event", "payload", "cpu", "tid", "ts")],
        )
        record = ~pl.col("event").is_in([LOST_EVENTS, BUFFER_STARTED])
        bad_value = {
            "cpu_out_of_range": (pl.col("cpu") < 0) | (pl.col("cpu") >= MAX_CPUS),
            # (only the upper bound: the parser reads `Thread-2-4433` as tid -4433, a parse quirk of a
            # valid line, not a corrupt value)
            "pid_out_of_range": (pl.col("tid") > PID_MAX) | (pl.col("tgid") > PID_MAX),
            "timestamp_out_of_range": (pl.col("ts") < 0) | (pl.col("ts") > MAX_TS_NS),
        }
        flags = raw.with_columns(
            [(record & cond).fill_null(False).alias(kind) for kind, cond in bad_value.items()]
        )
        any_bad = pl.any_horizontal(list(bad_value))
        for kind in bad_value:
            self._count(flags.filter(pl.col(kind)), kind, text)
        raw = flags.filter(~any_bad).drop(list(bad_value))
        return self._time_order(raw, record, text)

    def _time_order(self, raw: pl.DataFrame, record: pl.Expr, text: pl.Expr) -> pl.DataFrame:
        timed = record & pl.col("ts").is_not_null() & pl.col("cpu").is_not_null()
        cols = raw.columns
        rows = raw.with_row_index("_i")
        seq = rows.filter(timed).select("_i", *_KEY, *_SAME)
        if self._last is not None:
            seq = pl.concat(
                [self._last.with_columns(pl.lit(None, pl.UInt32).alias("_i")), seq], how="diagonal_relaxed"
            )
        prev = [pl.col(c).shift(1).over(_KEY) for c in _SAME]
        prev_ts = pl.col("ts").shift(1).over(_KEY)
        same = pl.all_horizontal(
            [(pl.col(c) == p) | (pl.col(c).is_null() & p.is_null()) for c, p in zip(_SAME, prev, strict=True)]
        )
        # One outlier must not condemn its successor: after a record that jumped ahead (or fell
        # back), the next one is judged against the record before the outlier.
        prev2_ts = pl.col("ts").shift(2).over(_KEY)
        prev_jumped = ((prev_ts - prev2_ts) > MAX_GAP_NS).fill_null(False)
        prev_fell = (prev_ts < prev2_ts).fill_null(False)
        back_of_prev = (pl.col("ts") < prev_ts).fill_null(False)
        ahead_of_prev = ((pl.col("ts") - prev_ts) > MAX_GAP_NS).fill_null(False)
        in_line_with_prev2 = (
            (pl.col("ts") >= prev2_ts) & ((pl.col("ts") - prev2_ts) <= MAX_GAP_NS)
        ).fill_null(False)
        judged = seq.with_columns(
            dup=same & prev_ts.is_not_null(),
            back=back_of_prev & ~(prev_jumped & in_line_with_prev2),
            jump=ahead_of_prev & ~(prev_fell & in_line_with_prev2),
        ).filter(pl.col("_i").is_not_null())
        # the last good record of each CPU carries over to the next batch
        good = judged.filter(~pl.col("dup") & ~pl.col("back") & ~pl.col("jump"))
        last = good.group_by(_KEY, maintain_order=True).last().select(*_KEY, *_SAME)
        self._last = (
            last
            if self._last is None
            else pl.concat([self._last, last]).group_by(_KEY, maintain_order=True).last()
        )
        bad = judged.filter(pl.col("dup") | pl.col("back") | pl.col("jump"))
        if bad.height == 0:
            return raw
        out = rows.join(bad.select("_i", "dup", "back", "jump"), on="_i", how="left")
        for kind, col in (("duplicate_record", "dup"), ("time_backwards", "back"), ("time_jump", "jump")):
            self._count(out.filter(pl.col(col).fill_null(False)), kind, text)
        broken = (pl.col("back") | pl.col("jump")).fill_null(False)
        # A broken record becomes a lost-events marker (no count) at the time of the next good record
        # on its CPU (else the last good one): the span around it is then unknown, as for lost events.
        good_ts = pl.when(broken | pl.col("dup").fill_null(False) | ~timed).then(None).otherwise(pl.col("ts"))
        near = good_ts.backward_fill().over(_KEY).fill_null(good_ts.forward_fill().over(_KEY))
        marker = out.with_columns(
            pl.when(broken)
            .then(pl.lit(LOST_EVENTS))
            .otherwise(pl.col("event").cast(pl.String))
            .cast(raw.schema["event"])
            .alias("event"),
            pl.when(broken).then(near).otherwise(pl.col("ts")).alias("ts"),
            pl.when(broken).then(pl.lit("")).otherwise(pl.col("payload")).alias("payload"),
        )
        return marker.filter(~pl.col("dup").fill_null(False)).select(cols)

    def _count(self, rows: pl.DataFrame, kind: str, text: pl.Expr) -> None:
        if rows.height:
            self.problems.add_rows(kind, rows.select("line", text.alias("text")))
