"""A Trace: canonical events plus what is known about where they came from.

The metadata travels with the events inside the Parquet file (key `pvtrace`,
JSON), so an ingested or simulated trace is analyzed the same way later.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pvtrace.errors import FormatError, SchemaError
from pvtrace.schema import (
    EVENT_SCHEMA,
    EXIT_KINDS,
    LOCK_EVENT_KINDS,
    SCHEMA_VERSION,
    STATE_KINDS,
    conform_events,
    validate_events,
)

if TYPE_CHECKING:  # pyarrow (and numpy with it) loads only where Arrow or Parquet is used
    import pyarrow as pa

META_KEY = "pvtrace"

# Parquet encoding of the event columns, chosen by measurement (benchmarks/README.md, Ingest): a
# dictionary only where values repeat (names, kinds, CPU and thread numbers; never ts, seq, lock
# addresses or values, whose dictionaries overflow and fall back to plain anyway), and min/max
# statistics only on numeric columns (readers prune row groups by ts; statistics of the string and
# Categorical columns cost 30 % of the writer's time and prune nothing, every row group holds every
# kind). 40 % less encoding time and 20-40 % smaller files than pyarrow's defaults, same values.
_DICTIONARY = ["vm", "vcpu", "pcpu", "kind", "reason", "target", "origin", "tid", "event", "args"]
_STATISTICS = ["ts", "seq", "vcpu", "pcpu", "lock", "target", "value", "tid"]


def _parquet_writer(path: Path, schema: pa.Schema):
    """A pyarrow ParquetWriter of event batches (zstd, the encoding above)."""
    import pyarrow.parquet as pq

    names = set(schema.names)
    return pq.ParquetWriter(
        path,
        schema,
        compression="zstd",
        use_dictionary=[c for c in _DICTIONARY if c in names],
        write_statistics=[c for c in _STATISTICS if c in names],
    )


@dataclass
class VmInfo:
    """What is known about one VM."""

    n_vcpus: int | None = None
    lock_kind: str = "unknown"  # fifo, unfair or unknown (METRICS.md)
    lock_algorithm: str | None = None  # e.g. ticket, pv-qspinlock, when known


@dataclass
class TraceMeta:
    """Facts about a trace that are not events.

    t_start/t_end bound the observed window (ns, host timeline); when None the
    first/last event is used. `vcpu_map` records how host threads were tied to
    (vm, vcpu) and `problems` what the ingester could not read.
    """

    source: list[str] = field(default_factory=list)
    format: str = "unknown"
    view: str = "full"  # what the producer could see: full, host, guest, merged; unknown (not pvtrace's)
    t_start: int | None = None
    t_end: int | None = None
    n_pcpus: int | None = None
    vms: dict[str, VmInfo] = field(default_factory=dict)
    vcpu_map: list[dict[str, Any]] = field(default_factory=list)
    clock: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TraceMeta:
        raw = json.loads(text)
        vms = {name: VmInfo(**info) for name, info in raw.pop("vms", {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(vms=vms, **{k: v for k, v in raw.items() if k in known})


@dataclass
class Trace:
    """Events in the canonical schema, sorted by (ts, seq), plus metadata."""

    events: pl.DataFrame
    meta: TraceMeta = field(default_factory=TraceMeta)

    def __post_init__(self) -> None:
        validate_events(self.events)

    @property
    def t_start(self) -> int | None:
        if self.meta.t_start is not None:
            return self.meta.t_start
        return self.events["ts"].min() if self.events.height else None

    @property
    def t_end(self) -> int | None:
        if self.meta.t_end is not None:
            return self.meta.t_end
        return self.events["ts"].max() if self.events.height else None


def check_writable(path: Path, force: bool) -> None:
    """Refuse to overwrite an existing file unless forced (and check the folder can take it)."""
    from pvtrace.outputs import OutputSet, current

    (current() or OutputSet(force=force)).plan(path, force=force)


class EventWriter:
    """Streams event batches to one Parquet file, metadata written at close.

    Memory stays bounded by the batch size, whatever the run length. The file is written under
    a unique temporary name (pvtrace.outputs) and takes its final name only when complete: at
    close when written alone, at the command's commit inside an OutputSet.
    """

    def __init__(self, path: Path | str, force: bool = False):
        from pvtrace.outputs import OutputSet, current

        self.path = Path(path)
        self._outputs = current()
        self._own = self._outputs is None
        if self._outputs is None:
            self._outputs = OutputSet(force=force)
        self._staged = self._outputs.stage(self.path, force=force)
        self._tmp = self._staged.tmp
        self._writer = None  # a pyarrow.parquet.ParquetWriter once the first batch comes
        self.n_rows = 0

    def write(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        table = batch.to_arrow()
        with self._errors():
            if self._writer is None:
                self._writer = _parquet_writer(self._tmp, table.schema)
            self._writer.write_table(table)
        self.n_rows += batch.height

    def close(self, meta: TraceMeta) -> None:
        with self._errors():
            if self._writer is None:
                self._writer = _parquet_writer(self._tmp, arrow_schema())
            self._writer.add_key_value_metadata({META_KEY: meta.to_json()})
            self._writer.close()
        self._staged.finish()
        if self._own:
            self._outputs.commit()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._staged.discard()

    def _errors(self):
        from pvtrace.outputs import write_errors

        return write_errors(self.path)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_trace(trace: Trace, path: Path | str, force: bool = False) -> None:
    """Write a whole trace to Parquet (atomically: a partial file never replaces a good one)."""
    with EventWriter(path, force=force) as w:
        w.write(trace.events)
        w.close(trace.meta)


def read_meta(path: Path | str) -> TraceMeta:
    """The metadata of a pvtrace Parquet file (defaults when absent)."""
    try:
        kv = pl.read_parquet_metadata(path)
    except Exception as exc:  # pyarrow/polars raise several types for junk
        raise FormatError(f"not a readable Parquet file ({exc.__class__.__name__})", str(path)) from None
    if META_KEY in kv:
        return TraceMeta.from_json(kv[META_KEY])
    # Not written by pvtrace: what its producer could see is not known (taking "full" would make
    # simulator lock events without releases look like the simulator's exact view).
    return TraceMeta(source=[str(path)], view="unknown")


def scan_events(path: Path | str) -> pl.LazyFrame:
    """Lazily scan a pvtrace Parquet file's events (for big traces)."""
    return pl.scan_parquet(path, glob=False)


def read_trace(path: Path | str) -> Trace:
    """Read a pvtrace Parquet file, checking it carries canonical events."""
    meta = read_meta(path)
    return Trace(events=read_events(path), meta=meta)


def read_events(path: Path | str, columns: list[str] | None = None) -> pl.DataFrame:
    """A Parquet file's events (all columns, or `columns`), cast to the canonical schema; a file
    that is no Parquet, or whose values do not cast, is a FormatError naming it."""
    try:
        events = pl.read_parquet(path, columns=columns, glob=False)
    except Exception as exc:
        raise FormatError(f"not a readable Parquet file ({exc.__class__.__name__})", str(path)) from None
    try:
        return conform_events(events)
    except SchemaError as exc:
        raise FormatError(f"Parquet file is not pvtrace events: {exc}", str(path)) from None


def arrow_schema() -> pa.Schema:
    """The Arrow schema of canonical events."""
    return pl.DataFrame(schema=EVENT_SCHEMA).to_arrow().schema


# The kinds whose (vm, vcpu) name a vCPU the analysis follows (analyze.prepare splits the same
# kinds), and those whose target names one.
VCPU_KINDS = (*STATE_KINDS, *LOCK_EVENT_KINDS, *EXIT_KINDS, "pv_kick", "yield_to", "pv_halt")
TARGET_KINDS = ("pv_kick", "yield_to")


def vcpu_counts(events: pl.DataFrame | pl.LazyFrame, meta: TraceMeta) -> dict[str, int]:
    """vCPUs per VM as `analyze` counts them: those the events name (acting, or kicked or yielded
    to), plus the metadata's declared ones only for a trace not ingested from files (a simulation
    declares its idle vCPUs) or a VM whose events name none. Never the metadata's highest index + 1
    beside the seen ones: a host trace whose exits show vCPUs 1-3 has 3."""
    ev, vm = events.lazy(), pl.col("vm").cast(pl.String)
    named = pl.col("vm").is_not_null()
    own = ev.filter(named & pl.col("vcpu").is_not_null() & pl.col("kind").is_in(VCPU_KINDS))
    hit = ev.filter(named & pl.col("target").is_not_null() & pl.col("kind").is_in(TARGET_KINDS))
    pairs = pl.concat(
        [
            own.select(vm, pl.col("vcpu").cast(pl.Int64)),
            hit.select(vm, pl.col("target").cast(pl.Int64).alias("vcpu")),
        ]
    ).unique()
    seen: dict[str, set[int]] = {}
    for name, cpu in pairs.collect().iter_rows():
        seen.setdefault(name, set()).add(cpu)
    declared = declared_vcpus(meta, set(seen))
    return {
        name: len(seen.get(name, set()) | set(range(declared.get(name, 0))))
        for name in sorted(set(meta.vms) | set(seen))
    }


def declared_vcpus(meta: TraceMeta, seen_vms: set[str]) -> dict[str, int]:
    """Per VM, how many vCPUs (0..n-1) the metadata declares beside those the events name: all of a
    trace not ingested from files (a simulation declares its idle vCPUs); of an ingested one only
    for a VM whose events name none (its count is the highest index + 1, which would invent
    vCPU 0 of a host trace whose exits show vCPUs 1-3)."""
    ingested = bool((meta.extra or {}).get("inputs"))
    return {
        name: info.n_vcpus
        for name, info in meta.vms.items()
        if info.n_vcpus and not (ingested and name in seen_vms)
    }
