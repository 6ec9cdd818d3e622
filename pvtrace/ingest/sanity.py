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
        self._last: pl.DataFrame | None = None  # the last good timed record per (source, cpu)

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
        flags = raw.select([(record & cond).fill_null(False).alias(kind) for kind, cond in bad_value.items()])
        if flags.select(pl.any_horizontal(pl.all().any())).item():  # rare: copy the batch only then
            flagged = pl.concat([raw, flags], how="horizontal")
            for kind in bad_value:
                self._count(flagged.filter(pl.col(kind)), kind, text)
            raw = flagged.filter(~pl.any_horizontal(list(bad_value))).drop(list(bad_value))
        return self._time_order(raw, record, text)

    def _time_order(self, raw: pl.DataFrame, record: pl.Expr, text: pl.Expr) -> pl.DataFrame:
        timed = record & pl.col("ts").is_not_null() & pl.col("cpu").is_not_null()
        judged, combined = self._judge(raw, timed)
        n_last = 0 if self._last is None else self._last.height
        # the last good record of each CPU (or the one carried in) carries over to the next batch
        broke = pl.col("back") | pl.col("jump") | pl.col("spike")
        keep = judged.filter((pl.col("_p") < n_last) | (~pl.col("dup") & ~broke))
        ends = keep.filter(pl.col("_key") != pl.col("_key").shift(-1).fill_null(-1))["_p"]
        self._last = combined[ends]
        bad = judged.filter((pl.col("_p") >= n_last) & (pl.col("dup") | broke))
        if bad.height == 0:
            return raw
        bad = bad.select((pl.col("_p") - n_last).cast(pl.UInt32).alias("_i"), "dup", "back", "jump", "spike")
        if not bad.select(broke.any()).item():
            # duplicates only (the usual case): drop them, without the whole-batch passes below
            dup = pl.repeat(False, raw.height, eager=True).scatter(bad["_i"], bad["dup"])
            self._count(raw.filter(dup), "duplicate_record", text)
            return raw.filter(~dup)
        cols = raw.columns
        out = raw.with_row_index("_i").join(bad, on="_i", how="left")
        for kind, col in (
            ("duplicate_record", "dup"),
            ("time_backwards", "back"),
            ("time_jump", "jump"),
            ("time_spike", "spike"),
        ):
            self._count(out.filter(pl.col(col).fill_null(False)), kind, text)
        broken = broke.fill_null(False)
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

    def _judge(self, raw: pl.DataFrame, timed: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Every timed record (after the carried ones) against the one before it on its CPU.

        One stable sort on a packed (source, cpu) key puts each CPU's records together in file
        order; shifts then see the previous record of the same CPU. Returns the judged rows in
        that order (_p: position in `combined`, the carried records followed by the batch; dup,
        back, jump) and `combined`. dup is null where a field is null on one side only (such a
        record is neither dropped nor carried over, as a null comparison decides nothing).
        """
        combined = raw.select(*_KEY, *_SAME)
        if self._last is not None:
            combined = pl.concat([self._last, combined], how="vertical_relaxed")
        n_last = 0 if self._last is None else self._last.height
        src = pl.col("source").to_physical().cast(pl.Int64).fill_null(-1) + 1
        key = src * (1 << 32) + (pl.col("cpu").cast(pl.Int64) & 0xFFFFFFFF)
        carried = pl.int_range(pl.len(), dtype=pl.Int64) < n_last
        seq = (
            combined.select(
                pl.int_range(pl.len(), dtype=pl.Int64).alias("_p"),
                key.alias("_key"),
                (carried | timed).alias("_timed"),
                "tid",
                "tgid",
                "ts",
                "event",
            )
            .filter(pl.col("_timed"))
            .drop("_timed")
            .sort("_key", maintain_order=True)
        )
        start = (pl.col("_key") != pl.col("_key").shift(1)).fill_null(True)
        start2 = (pl.col("_key") != pl.col("_key").shift(2)).fill_null(True)
        end = (pl.col("_key") != pl.col("_key").shift(-1)).fill_null(True)
        end2 = (pl.col("_key") != pl.col("_key").shift(-2)).fill_null(True)
        ts = pl.col("ts")
        prev_ts = pl.when(~start).then(ts.shift(1))
        next_ts = pl.when(~end).then(ts.shift(-1))
        next2_ts = pl.when(~end2).then(ts.shift(-2))
        # A record ahead of both neighbours, which are in order, is the one whose timestamp is
        # garbled (0.233769 read 5.233769), not the next one: when the record after the next is
        # behind it too (after a garbled dip, the records go on from the record before it), or,
        # with no record after the next, when the neighbours are much closer to each other than to it.
        behind_after = (next2_ts < ts).fill_null((next_ts - prev_ts) < (ts - next_ts) // 8)
        spike = ((next_ts < ts) & (next_ts >= prev_ts) & behind_after).fill_null(False)
        prev2_ts = pl.when(~start2).then(ts.shift(2))
        prev_jumped = ((prev_ts - prev2_ts) > MAX_GAP_NS).fill_null(False)
        prev_fell = (prev_ts < prev2_ts).fill_null(False)
        back_of_prev = (ts < prev_ts).fill_null(False)
        ahead_of_prev = ((ts - prev_ts) > MAX_GAP_NS).fill_null(False)
        in_line_with_prev2 = ((ts >= prev2_ts) & ((ts - prev2_ts) <= MAX_GAP_NS)).fill_null(False)
        # a duplicate has every field equal to the previous record's: only records at the same
        # time as the one before them are candidates, and only those compare payloads
        cheap = pl.all_horizontal([_same(c) for c in ("tid", "tgid", "ts", "event")])
        judged = (
            seq.with_columns(spike.alias("spike"))
            .with_columns(
                cheap.alias("_cheap"),
                pl.col("_p").shift(1).alias("_prev_p"),
                back=back_of_prev
                & ~(prev_jumped & in_line_with_prev2)
                & ~(~start & pl.col("spike").shift(1).fill_null(False)),
                jump=ahead_of_prev & ~(prev_fell & in_line_with_prev2),
            )
            .with_columns(pl.col("spike") & ~pl.col("jump"))  # (a jump of over an hour is a jump)
            .with_columns((~start & pl.col("_cheap").fill_null(True)).alias("_cand"))
        )
        cand = judged.with_row_index("_j").filter(pl.col("_cand")).select("_j", "_p", "_prev_p", "_cheap")
        judged = judged.drop("_cand", "_cheap", "_prev_p", "tid", "tgid", "ts", "event")
        if cand.height == 0:
            return judged.with_columns(pl.lit(False).alias("dup")), combined
        payload = combined["payload"]
        this, prev = payload.gather(cand["_p"]), payload.gather(cand["_prev_p"])
        same_payload = (this == prev) | (this.is_null() & prev.is_null())
        dup = cand.select(pl.all_horizontal(pl.col("_cheap"), same_payload)).to_series()
        # False where not a candidate: the few candidates' answers scattered in (no join of the batch)
        return judged.with_columns(
            pl.repeat(False, judged.height, eager=True).scatter(cand["_j"], dup).alias("dup")
        ), combined

    def _count(self, rows: pl.DataFrame, kind: str, text: pl.Expr) -> None:
        if rows.height:
            self.problems.add_rows(kind, rows.select("line", text.alias("text")))


def _same(col: str) -> pl.Expr:
    """col equals the previous row's (both null counts as equal; one null side is null)."""
    c, p = pl.col(col), pl.col(col).shift(1)
    return (c == p) | (c.is_null() & p.is_null())
