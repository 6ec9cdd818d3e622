"""Raw rows made ready for the normalizer's rules: plain types, parsed by payload family, emitted.

The rules of ingest.host_events and ingest.guest_events read the rows of a parser family (the
events that share a payload parser, ingest.aliases) with their typed fields, and emit working
event rows: the canonical columns plus the raw row and a sub-index that fix the emission order.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pvtrace.ingest import aliases, payloads
from pvtrace.ingest.aliases import ALIASES
from pvtrace.schema import EVENT_SCHEMA

WAKEUPS = ("sched_wakeup", "sched_wakeup_new")
LOST = ("lost_events", "buffer_started")

# Working columns of emitted events: the canonical ones (final types: narrow
# rows) plus the raw row and a sub-index that fix the emission order.
OUT: dict[str, pl.DataType] = {"row": pl.Int64(), "sub": pl.Int8(), **dict(EVENT_SCHEMA)}


def emit(df: pl.DataFrame, **cols: Any) -> pl.DataFrame:
    """Select the working event columns from df; unspecified ones are null (sub 0, args null)."""
    defaults: dict[str, Any] = {
        "row": pl.col("row"),
        "sub": pl.lit(0),
        "ts": pl.col("ts"),
        "event": pl.col("event"),
    }
    exprs = []
    for name, dtype in OUT.items():
        value = cols.get(name, defaults.get(name))
        if value is None:
            expr = pl.lit(None, dtype=dtype)
        elif isinstance(value, pl.Expr):
            expr = value
        else:
            expr = pl.lit(value)
        exprs.append(expr.cast(dtype).alias(name))
    return df.select(exprs)


def prepare(raw: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Plain column types, file-order row index, system prefixes stripped, timestamps filled.

    Rows without a timestamp (trimmed excerpts; lost markers at the end of a CPU)
    take the previous row's time in the same input (else the next, else 0); the
    count of such record rows is returned for the clock report.
    """
    cols = {
        "source": pl.String(),
        "comm": pl.String(),
        "tid": pl.Int32(),
        "tgid": pl.Int32(),
        "cpu": pl.Int32(),
        "ts": pl.Int64(),
        "system": pl.String(),
        "event": pl.Categorical(),
        "payload": pl.String(),
    }
    frame = raw.select(
        [
            pl.col(c).cast(t).alias(c) if c in raw.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in cols.items()
        ]
    ).with_row_index("row")
    frame = frame.with_columns(
        pl.col("row").cast(pl.Int64),
        pl.col("source").fill_null("").alias("src"),
        pl.col("payload").fill_null(""),
    )
    qualified = [e for e in frame["event"].unique().drop_nulls().to_list() if ":" in e]
    if qualified:  # `sched:sched_switch` -> sched_switch
        renamed = pl.col("event").cast(pl.String).replace({e: e.split(":", 1)[1] for e in qualified})
        frame = frame.with_columns(renamed.cast(pl.Categorical))
    n_untimed = frame.select((pl.col("ts").is_null() & ~pl.col("event").is_in(LOST)).sum()).item()
    if frame["ts"].null_count():
        frame = frame.with_columns(pl.col("ts").forward_fill().backward_fill().over("src").fill_null(0))
    return frame, n_untimed


# Parser groups (alias families): events that share a payload parser, parsed once per side.
HOST_GROUPS = aliases.families("host")
GUEST_GROUPS = aliases.families("guest")
GROUPS = {**HOST_GROUPS, **GUEST_GROUPS}
# A field that is null exactly when a group's payload matched no known shape.
_KEY_FIELD: dict[str, str] = {
    "switch": "prev_pid", "wake": "pid", "exit": "norm_reason", "entry": "vcpu", "hypercall": "nr",
    "vcpu_wakeup": "time_ns", "ple": "window", "tsc": "offset", "contention": "lock", "lockdep": "name",
}  # fmt: skip


_EMPTY_PARSED: dict[tuple, pl.DataFrame] = {}


def parse_groups(frame: pl.DataFrame, groups: dict[str, tuple[str, ...]]) -> dict[str, pl.DataFrame]:
    """Rows of each parser group with their payload fields added."""
    cols = [c for c in ("row", "src", "tid", "cpu", "ts", "event", "payload", "vm") if c in frame.columns]
    parsed = {}
    for group in groups:
        events = GROUPS[group]
        parser = ALIASES[events[0]].parser
        assert parser is not None
        # each group copies only its own rows (event is Categorical: the filter is cheap)
        rows = frame.select(cols).filter(pl.col("event").is_in(list(events)))
        if rows.height:
            # a copy of the group's payload text, contiguous: parser ops on text scattered through
            # the whole batch's buffers ran 1.5-3x slower on frames read back from Parquet (about
            # even on the text parser's own frames, whose buffers are already in line order)
            parsed[group] = parser(rows.with_columns(pl.concat_str([pl.col("payload"), pl.lit("")])))
            continue
        # no row of this group: the parser's empty answer only gives the columns, and it costs a
        # few ms of per-expression overhead (the same for every chunk of a trace): kept once
        key = (group, tuple(rows.schema.items()))
        if key not in _EMPTY_PARSED:
            _EMPTY_PARSED[key] = parser(rows)
        parsed[group] = _EMPTY_PARSED[key]
    if "exit" in parsed:
        # few distinct reasons: normalize each once
        keys = ["reason", "arm_kind", "arm_class", "reason_code", "isa"]
        reasons = (
            parsed["exit"]
            .select(keys)
            .unique()
            .with_columns(
                pl.coalesce(
                    aliases.exit_reason(pl.col("reason")),
                    aliases.exit_reason_arm64(pl.col("arm_kind"), pl.col("arm_class")),
                    aliases.exit_reason_code(pl.col("reason_code"), pl.col("isa")),
                )
                .cast(pl.Categorical)
                .alias("norm_reason")
            )
        )
        if reasons["reason"].null_count() == 0:  # x86 text only (the usual): one key, a lookup
            norm = pl.col("reason").replace_strict(reasons["reason"], reasons["norm_reason"], default=None)
            parsed["exit"] = parsed["exit"].with_columns(norm.alias("norm_reason"))
        else:
            parsed["exit"] = parsed["exit"].join(reasons, on=keys, how="left", nulls_equal=True)
    return parsed


def unparsed(parsed: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(row, event) of the rows whose payload matched no known shape."""
    frames = [
        df.filter(pl.col(_KEY_FIELD[g]).is_null()).select("row", "event")
        for g, df in parsed.items()
        if df[_KEY_FIELD[g]].null_count()  # most groups parse every row: no filter then
    ]
    return pl.concat(frames) if frames else pl.DataFrame(schema={"row": pl.Int64, "event": pl.Categorical})


def other(df: pl.DataFrame, **cols: Any) -> pl.DataFrame:
    return emit(df, kind="other", args=pl.col("payload"), **cols)


def lost(frame: pl.DataFrame, origin: str, **cols: Any) -> pl.DataFrame:
    rows = frame.filter(pl.col("event").is_in(LOST))
    count = payloads.lost_count(pl.col("payload"))
    value = pl.when(pl.col("event") == "lost_events").then(count)
    return emit(rows, kind="lost_events", value=value, origin=origin, **cols)


def counted_wakes(with_wakeup: list[str]) -> pl.Expr:
    """True for the wake-up rows that count: sched_wakeup(_new), or sched_waking when
    the same input recorded no sched_wakeup (with_wakeup: the sources that did); never success=0."""
    counts = pl.col("event").is_in(WAKEUPS) | ~pl.col("src").is_in(with_wakeup)
    return pl.col("pid").is_not_null() & counts & (pl.col("success").is_null() | (pl.col("success") != 0))
