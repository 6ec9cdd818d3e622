"""What an ingest gathers from its normalized chunks: the merged infos, the events in their final
order with the global seq, and the trace metadata built from both."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pvtrace.ingest.clocks import from_offsets_file
from pvtrace.ingest.inputs import summary_formats
from pvtrace.ingest.records import ParseInfo
from pvtrace.trace import TraceMeta, VmInfo


class Infos:
    """Merges the per-chunk normalize() infos of a whole ingest."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}
        self.counts: dict[str, Counter] = {
            k: Counter()
            for k in ("events_by_tracepoint", "events_by_kind", "unknown_events", "unparsed_payloads")
        }
        self.vms: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []

    def add(self, info: dict[str, Any]) -> None:
        self.last = info
        for key, counter in self.counts.items():
            counter.update(info.get(key, {}))
        for vm, v in info.get("vms", {}).items():
            seen = self.vms.setdefault(vm, dict(v))
            seen["n_vcpus"] = max(seen.get("n_vcpus", 0), v.get("n_vcpus", 0))
            if seen.get("side") != v.get("side"):
                seen["side"] = "both"
        for note in info.get("notes", []):
            if note not in self.notes:
                self.notes.append(note)


class Events:
    """Receives event chunks in emission order, assigns the global seq and the final order."""

    def __init__(self, write: Callable[[pl.DataFrame], None]):
        self._write = write
        self._held: pl.DataFrame | None = None
        self.n_seq = 0
        self.n_rows = 0
        self.n_out_of_order = 0
        self._last_ts: int | None = None
        self.t_min: int | None = None
        self.t_max: int | None = None
        self.pcpu_max: int | None = None
        # first and last event of the host side, and of each guest VM (host_window.py compares them)
        self.spans: dict[str, tuple[int, int]] = {}  # "host", or "guest:<vm>"

    def add(self, events: pl.DataFrame) -> None:
        if events.height == 0:
            return
        # args are views into the raw payload buffers of the whole chunk; strip copies the few kept ones
        # so those buffers can be freed (else a big input's payload text would all stay in memory)
        events = events.with_columns(pl.col("seq") + self.n_seq, pl.col("args").str.strip_chars())
        self.n_seq += events.height
        if self._held is not None:
            # Events still held may belong after some of the new ones (cross-CPU skew at a block edge).
            # Both chunks are in (ts, seq) order, so the held ones split by position, and the merge
            # needs a sort only when a late one is later than a new one. (One chunk either way: the
            # Parquet writer re-encodes the dictionary of each Categorical chunk, 15% bigger files.)
            held = self._held
            n_early = held["ts"].search_sorted(events["ts"].min(), side="left")
            self._emit(held.slice(0, n_early))
            late = held.slice(n_early)
            if late.height:
                events = pl.concat([late, events])
                events = events.rechunk() if events["ts"].is_sorted() else events.sort("ts", "seq")
        self._held = events

    def finish(self) -> None:
        if self._held is not None:
            self._emit(self._held)
            self._held = None

    def _emit(self, events: pl.DataFrame) -> None:
        if events.height == 0:
            return
        lo, hi = events["ts"].min(), events["ts"].max()
        if self._last_ts is not None and lo < self._last_ts:
            self.n_out_of_order += int((events["ts"] < self._last_ts).sum())
        self._last_ts = hi if self._last_ts is None else max(hi, self._last_ts)
        self.t_min = lo if self.t_min is None else min(self.t_min, lo)
        self.t_max = hi if self.t_max is None else max(self.t_max, hi)
        # (grouped on the categorical columns as they are: a few rows, named after)
        by = events.group_by("origin", "vm").agg(
            pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi")
        )
        for origin, vm, lo_s, hi_s in by.iter_rows():
            name = f"guest:{vm}" if origin == "guest" else origin
            if name is None or (origin == "guest" and vm is None) or lo_s is None:
                continue
            old = self.spans.get(name, (lo_s, hi_s))
            self.spans[name] = (min(old[0], lo_s), max(old[1], hi_s))
        pc = events["pcpu"].max()
        if pc is not None:
            self.pcpu_max = pc if self.pcpu_max is None else max(self.pcpu_max, pc)
        self.n_rows += events.height
        self._write(events)


def trace_meta(
    paths: list[Path],
    parse_infos: list[ParseInfo],
    infos: Infos,
    events: Events,
    tables: dict[str, list[dict[str, Any]]],
    map_file: Path | None,
    offsets_file: Path | None = None,
    file_vms: set[str] | None = None,
) -> TraceMeta:
    last = infos.last
    formats = sorted({i.format for i in parse_infos})
    vms = {vm: VmInfo(n_vcpus=v.get("n_vcpus") or None) for vm, v in sorted(infos.vms.items())}
    n_pcpus = events.pcpu_max + 1 if events.pcpu_max is not None else None
    headers = [i.header for i in parse_infos]
    if n_pcpus is None and last.get("side") == "host":
        n_pcpus = next((h["n_cpus_possible"] for h in headers if "n_cpus_possible" in h), None)
    clock = from_offsets_file(dict(last.get("clock", {})), offsets_file, file_vms)
    clock["timestamps"] = {i.path: i.clock for i in parse_infos if i.format not in summary_formats()}
    problems = {i.path: i.problems.to_dict() for i in parse_infos if i.problems.total}
    notes = list(infos.notes)
    if events.n_out_of_order:
        notes.append(f"{events.n_out_of_order} events are out of time order in the output (clock jumps)")
    for i in parse_infos:
        h = i.header
        if h.get("entries_written", 0) > h.get("entries_in_buffer", 0):
            lost = h["entries_written"] - h["entries_in_buffer"]
            notes.append(
                f"{i.path}: the ring buffer was overwritten ({lost} older events lost before the first record)"
            )
    extra: dict[str, Any] = {
        "inputs": [i.to_dict() for i in parse_infos],
        "side": last.get("side"),
        "sides": last.get("sides", {}),
        "guest_vm_names": last.get("guest_vm_names", {}),
        "vcpu_map_file": str(map_file) if map_file else None,
        "notes": notes,
        "n_events": events.n_rows,
        "ts_min": events.t_min,
        "ts_max": events.t_max,
        # each side's span: a host trace that covers less than its guests' cuts the window (host_window.py)
        "host_span": list(events.spans["host"]) if "host" in events.spans else None,
        "guest_spans": {k[6:]: list(v) for k, v in sorted(events.spans.items()) if k.startswith("guest:")},
        **{k: dict(c.most_common()) for k, c in infos.counts.items()},
    }
    if tables:
        extra["summary_tables"] = tables
    return TraceMeta(
        source=[str(p) for p in paths],
        format=formats[0] if len(formats) == 1 else "+".join(formats),
        view=last.get("view", "full") if events.n_rows else "full",
        n_pcpus=n_pcpus,
        vms=vms,
        vcpu_map=list(last.get("vcpu_map", [])),
        clock=clock,
        problems=problems,
        extra=extra,
    )
