"""load(): any input (tracefs / trace-cmd / perf text, compressed, .dat, pvtrace Parquet) -> Trace.

One code path for every size: inputs are parsed in blocks of lines, each block is
normalized with the state carried from the previous one, and the event chunks go to a
sink: memory for load(), a streaming Parquet writer for ingest_to_parquet() (bounded
memory whatever the input size). Summary tables (perf kvm stat, perf lock contention)
carry no events; they travel in meta.extra["summary_tables"].
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from pvtrace.errors import FormatError, PvtraceError, UsageError
from pvtrace.ingest import ftrace as ftrace_fmt
from pvtrace.ingest import perf_script, summary_tables, tracecmd
from pvtrace.ingest.clocks import check_given_offsets, from_offsets_file
from pvtrace.ingest.compressed import is_stream, open_input, stream_damage
from pvtrace.ingest.dat import dat_report
from pvtrace.ingest.normalize import normalize
from pvtrace.ingest.offsets_file import find_offsets_file, read_offsets
from pvtrace.ingest.pipeline import BackgroundSink, prefetch
from pvtrace.ingest.problems import Problems
from pvtrace.ingest.raw import empty_raw
from pvtrace.ingest.records import FormatSpec, ParseInfo, ParseOptions
from pvtrace.ingest.repeats import refuse_repeats
from pvtrace.ingest.sanity import Sanity
from pvtrace.ingest.sides import guest_files_nearby
from pvtrace.ingest.sniff import NEED_MORE, SNIFF_BYTES, Verdict, detect_format
from pvtrace.ingest.stream import iter_raw_chunks
from pvtrace.ingest.vcpu_map import find_vcpu_map, read_vcpu_map
from pvtrace.outputs import plan_output
from pvtrace.schema import EVENT_SCHEMA, empty_events
from pvtrace.trace import EventWriter, Trace, TraceMeta, VmInfo, read_trace

FORMATS = ("auto", "ftrace", "trace-cmd", "perf", "dat", "parquet")
MAX_SNIFF_BYTES = 16 << 20
Progress = Callable[[int], None]


@dataclass
class _Input:
    """An opened input and what the sniffer made of it."""

    path: Path
    stream: BinaryIO
    raw_file: BinaryIO  # the file on disk (its position drives progress for compressed inputs)
    compression: str | None
    head: bytes
    verdict: Verdict


def _open(path: Path, forced: str) -> _Input:
    """Open, decompress and sniff one input (reading more while the sniffer needs more)."""
    if str(path) != "-" and not path.exists():
        raise FormatError("no such file", str(path))
    if path.is_dir():
        raise FormatError("is a directory, not a trace file", str(path))
    stream, compression, raw_file = open_input(path)
    try:
        head, verdict = _sniff(stream, path, forced)
    except FormatError as exc:
        _close_quietly(stream, raw_file)
        damage = stream_damage(stream)
        if damage is not None:  # the sniffer saw only what came before the damage: say so first
            detail = str(exc).removeprefix(f"{path}: ")
            raise FormatError(f"{damage}; what could be read before it: {detail}", str(path)) from None
        raise
    except BaseException:
        _close_quietly(stream, raw_file)  # a half-read archive must not be left to the garbage collector
        raise
    return _Input(path, stream, raw_file, compression, head, verdict)


def _sniff(stream: BinaryIO, path: Path, forced: str) -> tuple[bytes, Verdict]:
    head = b""
    want = SNIFF_BYTES
    name = {"perf": "perf-script"}.get(forced, forced)
    while True:
        more = stream.read(want - len(head))
        head += more
        eof = not more or len(head) < want
        verdict = detect_format(head, eof, str(path), name)
        if verdict.answer != NEED_MORE or eof or want >= MAX_SNIFF_BYTES:
            break
        want *= 4
    if verdict.answer == NEED_MORE:
        if not eof:
            raise FormatError(f"could not tell the format from the first {len(head) >> 20} MiB", str(path))
        verdict = Verdict(verdict.format, "yes", verdict.reason + " (short file)", verdict.options)
    return head, verdict


def _close_quietly(*files: BinaryIO) -> None:
    for f in files:
        with suppress(OSError, ValueError, EOFError, PvtraceError):
            f.close()


def _spec(fmt: str, options: ParseOptions) -> FormatSpec:
    if fmt == "ftrace":
        return ftrace_fmt.SPEC
    if fmt == "trace-cmd":
        return tracecmd.spec_for(options)
    if fmt == "perf-script":
        return perf_script.SPEC
    raise AssertionError(fmt)


class _Infos:
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


class _Events:
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
        pc = events["pcpu"].max()
        if pc is not None:
            self.pcpu_max = pc if self.pcpu_max is None else max(self.pcpu_max, pc)
        self.n_rows += events.height
        self._write(events)


def _summary_table(inp: _Input, problems: Problems) -> tuple[str, list[dict[str, Any]]]:
    text = (inp.head + inp.stream.read()).decode("utf-8", errors="replace")
    if inp.verdict.format == "perf-kvm-stat":
        table = summary_tables.read_perf_kvm_stat(text, str(inp.path), problems)
    else:
        table = summary_tables.read_perf_lock_contention(text, str(inp.path), problems)
    return inp.verdict.format, table.to_dicts()


def _raw_chunks(inp: _Input, stack: ExitStack, info: ParseInfo) -> Iterator[pl.DataFrame]:
    """Raw frames of a text or .dat input."""
    streamed = is_stream(inp.path)  # stdin or a FIFO: read once, never seeked
    if inp.verdict.format == "dat":
        if inp.compression is None and not streamed:
            inp.stream.seek(0)
            rest: Any = inp.stream
        else:
            rest = _Rejoin(inp.head, inp.stream)
        # a compressed or streamed .dat is first copied to a temporary file (trace-cmd seeks)
        report = stack.enter_context(
            dat_report(inp.path, rest, inp.compression or ("stream" if streamed else None))
        )
        text = report.stream
        head = text.read(SNIFF_BYTES)
        if not head.strip():  # trace-cmd exits 0 and prints nothing for a cut or damaged file
            report.check()
            raise FormatError(
                "trace-cmd report printed no records: the .dat file is truncated or damaged", str(inp.path)
            )
        try:
            verdict = detect_format(head, len(head) < SNIFF_BYTES, str(inp.path), "trace-cmd")
        except FormatError:
            report.check()  # trace-cmd's own complaint says more than an empty report
            raise
        info.format = "dat"
        _count_damage(inp, info.problems)  # the archive was read whole into the file trace-cmd reads
        yield from iter_raw_chunks(
            text, _spec("trace-cmd", verdict.options), verdict.options, info, head=head
        )
        return
    spec = _spec(inp.verdict.format, inp.verdict.options)
    source: Path | BinaryIO = inp.path if inp.compression is None and not streamed else inp.stream
    yield from iter_raw_chunks(source, spec, inp.verdict.options, info, head=inp.head)


def _count_damage(inp: _Input, problems: Problems) -> None:
    """A compressed .dat or summary input that ended early (truncated or corrupt archive): one
    counted problem (text inputs count it as they are read, ingest.stream)."""
    damage = stream_damage(inp.stream)
    if damage is not None:
        problems.add("truncated_stream", None, damage)


class _Rejoin:
    """A stream that first returns bytes already read, then the rest of the original stream."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._rest.read(n)


def recorded_sides(paths: list[Path], sources: list[str | None]) -> dict[str, str]:
    """Side (host or guest) per input source from the `<name>.record.json` that `pvtrace record`
    writes next to its trace: a --host capture with no VM running has no kvm events to tell it
    apart from a guest trace, but its record.json says what it is."""
    out: dict[str, str] = {}
    for path, src in zip(paths, sources if len(sources) == len(paths) else [None] * len(paths), strict=True):
        base = path.with_suffix("") if path.suffix in (".xz", ".gz", ".zst") else path
        doc = base.with_suffix("").with_name(base.with_suffix("").name + ".record.json")
        try:
            mode = json.loads(doc.read_text(encoding="utf-8")).get("mode")
        except (OSError, ValueError, AttributeError):
            continue
        if mode in ("host", "guest"):
            out[src or ""] = mode
    return out


def _source_names(paths: list[Path]) -> list[str]:
    """Per-file source labels when several files are ingested together (file names, unique)."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def ingest(
    paths: list[Path],
    sink: Callable[[pl.DataFrame], None],
    *,
    format: str = "auto",
    strict: bool = False,
    side: str = "auto",
    vm_name: str | None = None,
    vcpu_map_path: Path | None = None,
    guest_offset_ns: int | dict[str, int] | None = None,
    progress: Progress | None = None,
) -> TraceMeta:
    """Parse and normalize every input, handing event chunks to sink; returns the trace metadata."""
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("no input files given")
    refuse_repeats(paths)
    offsets_file = find_offsets_file(paths) if guest_offset_ns is None else None
    if offsets_file is not None:  # saved by generate or record --host next to the host trace
        guest_offset_ns = read_offsets(offsets_file)
    user_map = read_vcpu_map(vcpu_map_path) if vcpu_map_path else None
    map_file = vcpu_map_path
    if user_map is None and (found := find_vcpu_map(paths)) is not None:
        user_map, map_file = read_vcpu_map(found), found

    def normalized(raw: pl.DataFrame, carry: dict[str, Any] | None) -> tuple[pl.DataFrame, dict[str, Any]]:
        recorded = recorded_sides(paths, sources) if side == "auto" else {}
        return normalize(
            raw,
            side=recorded or side,
            vm_name=vm_name,
            vcpu_map=user_map,
            guest_offset_ns=guest_offset_ns,
            carry=carry,
            inputs=[s for s in sources if s],  # every input's label, also files without records
        )

    with ExitStack() as stack:
        inputs = []
        for p in paths:
            inp = _open(p, format)
            stack.callback(_close_quietly, inp.stream, inp.raw_file)
            inputs.append(inp)
        if any(i.verdict.format == "parquet" for i in inputs):
            raise UsageError("a pvtrace Parquet file is read on its own (load it without other inputs)")
        events, infos = _Events(sink), _Infos()
        parse_infos: list[ParseInfo] = []
        tables: dict[str, list[dict[str, Any]]] = {}
        texts = [i for i in inputs if i.verdict.format not in summary_formats()]
        sources: list[str | None] = list(_source_names(paths)) if len(paths) > 1 else [None]
        several: list[pl.DataFrame] = []  # several text inputs are normalized together (one timeline)
        cpus: set[int] = set()
        for inp, source in zip(inputs, sources, strict=True):
            info = ParseInfo(
                path=str(inp.path),
                format=inp.verdict.format,
                compression=inp.compression,
                problems=Problems(str(inp.path)),
            )
            parse_infos.append(info)
            try:
                if inp.verdict.format in summary_formats():
                    name, rows = _summary_table(inp, info.problems)
                    _count_damage(inp, info.problems)
                    tables.setdefault(name, []).extend({"input": str(inp.path), **r} for r in rows)
                    info.problems.check_strict(strict)
                    continue
                carry: dict[str, Any] | None = None
                # the next batch is parsed and checked on another thread while this one is normalized
                batches = _normalize_batches(_raw_chunks(inp, stack, info), strict, info, inp, progress)
                for raw in prefetch(batches):
                    info.problems.check_strict(strict)
                    cpus.update(raw["cpu"].drop_nulls().unique().to_list())
                    if source is not None:
                        raw = raw.with_columns(
                            pl.col("source").cast(pl.String).fill_null(source).cast(pl.Categorical)
                        )
                    if len(texts) > 1:
                        several.append(raw)
                        continue
                    ev, nfo = normalized(raw, carry)
                    carry = nfo["carry"]
                    infos.add(nfo)
                    events.add(ev)
            except pl.exceptions.PolarsError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise FormatError(
                    f"could not be read ({exc.__class__.__name__}: {first})", str(inp.path)
                ) from None
            if info.stats.get("records", 0) == 0 and info.stats.get("lost_lines", 0) == 0:
                infos.notes.append(f"{inp.path}: no records (an empty {info.format} trace)")
        if several:
            ev, nfo = normalized(pl.concat(several, how="vertical_relaxed"), None)
            infos.add(nfo)
            events.add(ev)
        events.finish()
    meta = _meta(paths, parse_infos, infos, events, tables, map_file, offsets_file)
    if offsets_file is None:  # offsets the user gave: each names a VM of the trace
        check_given_offsets(guest_offset_ns, {*meta.vms, *(meta.clock or {}).get("guest_offset_ns", {})})
    meta.extra["cpus_seen"] = len(cpus) if cpus else None
    if meta.extra.get("side") == "host":
        _point_at_guest_files(meta, [p for p in paths if str(p) != "-"])
    return meta


def _point_at_guest_files(meta: TraceMeta, host_paths: list[Path]) -> None:
    """A host-only analysis whose guest traces sit next to its input says which files to add."""
    nearby = guest_files_nearby(host_paths)
    if not nearby:
        return
    meta.extra["guest_files_nearby"] = [str(p) for p in nearby]
    command = " ".join(["pvtrace analyze", *(str(p) for p in [*host_paths, *nearby])])
    meta.extra.setdefault("warnings", []).append(
        f"files named like guest traces of this host sit next to it ({', '.join(p.name for p in nearby)}) "
        f"but were not given: if they are its guests, the lock events are in them; analyze them together: "
        f"{command}"
    )


NORMALIZE_ROWS = 250_000


def _normalize_batches(
    chunks: Iterator[pl.DataFrame], strict: bool, info: ParseInfo, inp: _Input, progress: Progress | None
) -> Iterator[pl.DataFrame]:
    """Raw chunks regrouped to about NORMALIZE_ROWS rows (normalize has a per-call cost) and checked
    (values: ranges, time order per CPU, duplicates; ingest.sanity); strict checks, progress."""
    sane = Sanity(info.problems)
    held: list[pl.DataFrame] = []
    n = 0
    done = 0
    for raw in chunks:
        info.problems.check_strict(strict)
        if progress is not None:
            pos = _position(inp) if inp.compression is not None else info.n_bytes
            progress(max(pos - done, 0))
            done = max(pos, done)
        held.append(raw)
        n += raw.height
        if n >= NORMALIZE_ROWS:
            yield sane.check(pl.concat(held))
            held, n = [], 0
    info.problems.check_strict(strict)
    if held:
        yield sane.check(pl.concat(held))


def read_raw(path: Path | str, format: str = "auto") -> tuple[pl.DataFrame, ParseInfo, Verdict]:
    """One text / .dat input -> its whole raw frame (no normalization), the parse info and the sniff verdict."""
    path = Path(path)
    with ExitStack() as stack:
        inp = _open(path, format)
        stack.callback(_close_quietly, inp.stream, inp.raw_file)
        if inp.verdict.format in ("parquet", *summary_formats()):
            raise UsageError(f"{path}: {inp.verdict.format} input has no raw records")
        info = ParseInfo(
            path=str(path),
            format=inp.verdict.format,
            compression=inp.compression,
            problems=Problems(str(path)),
        )
        chunks = list(_raw_chunks(inp, stack, info))
    return (pl.concat(chunks) if chunks else empty_raw()), info, inp.verdict


def _position(inp: _Input) -> int:
    try:
        return int(inp.raw_file.tell())
    except (OSError, ValueError, AttributeError):
        return 0


def _meta(
    paths: list[Path],
    parse_infos: list[ParseInfo],
    infos: _Infos,
    events: _Events,
    tables: dict[str, list[dict[str, Any]]],
    map_file: Path | None,
    offsets_file: Path | None = None,
) -> TraceMeta:
    last = infos.last
    formats = sorted({i.format for i in parse_infos})
    vms = {vm: VmInfo(n_vcpus=v.get("n_vcpus") or None) for vm, v in sorted(infos.vms.items())}
    n_pcpus = events.pcpu_max + 1 if events.pcpu_max is not None else None
    headers = [i.header for i in parse_infos]
    if n_pcpus is None and last.get("side") == "host":
        n_pcpus = next((h["n_cpus_possible"] for h in headers if "n_cpus_possible" in h), None)
    clock = from_offsets_file(dict(last.get("clock", {})), offsets_file)
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


def summary_formats() -> tuple[str, ...]:
    return ("perf-kvm-stat", "perf-lock-contention")


def load(
    paths: Path | str | list[Path] | list[str],
    *,
    format: str = "auto",
    strict: bool = False,
    side: str = "auto",
    vm_name: str | None = None,
    vcpu_map_path: Path | None = None,
    guest_offset_ns: int | dict[str, int] | None = None,
    progress: Progress | None = None,
) -> Trace:
    """Any supported input(s) -> a Trace (events in EVENT_SCHEMA sorted by (ts, seq), plus metadata)."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if is_one_parquet(paths, format):
        return read_trace(paths[0])
    chunks: list[pl.DataFrame] = []
    meta = ingest(
        paths,
        chunks.append,
        format=format,
        strict=strict,
        side=side,
        vm_name=vm_name,
        vcpu_map_path=vcpu_map_path,
        guest_offset_ns=guest_offset_ns,
        progress=progress,
    )
    events = pl.concat(chunks) if chunks else empty_events()
    if not events["ts"].is_sorted():
        events = events.sort("ts", "seq")
    return Trace(events=events.select(EVENT_SCHEMA.names()), meta=meta)


def is_one_parquet(paths: list[Path], format: str = "auto") -> bool:
    """Whether the inputs are one Parquet file: a pvtrace trace, read as it is (not ingested)."""
    return len(paths) == 1 and (format == "parquet" or (format == "auto" and _is_parquet(paths[0])))


def _is_parquet(path: Path) -> bool:
    if is_stream(path):  # a peek would consume a stream's first bytes; Parquet needs a seekable file
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def ingest_to_parquet(
    paths: list[Path],
    out: Path,
    *,
    force: bool = False,
    format: str = "auto",
    strict: bool = False,
    side: str = "auto",
    vm_name: str | None = None,
    vcpu_map_path: Path | None = None,
    guest_offset_ns: int | dict[str, int] | None = None,
    progress: Progress | None = None,
) -> TraceMeta:
    """Convert inputs to one pvtrace Parquet file, streaming (memory bounded by the block size)."""
    out = Path(out)
    paths = [Path(p) for p in paths]
    plan_output(out, inputs=[*paths, *([vcpu_map_path] if vcpu_map_path else [])], force=force)
    if is_one_parquet(paths, format):
        trace = read_trace(paths[0])
        with EventWriter(out, force=force) as w:
            w.write(trace.events)
            w.close(trace.meta)
        return trace.meta
    with EventWriter(out, force=force) as writer:
        sink = BackgroundSink(writer.write)  # Parquet encoding overlaps the next batch's normalization
        try:
            meta = ingest(
                paths,
                sink,
                format=format,
                strict=strict,
                side=side,
                vm_name=vm_name,
                vcpu_map_path=vcpu_map_path,
                guest_offset_ns=guest_offset_ns,
                progress=progress,
            )
        except BaseException:
            sink.abandon()
            raise
        sink.flush()
        writer.close(meta)
    return meta
