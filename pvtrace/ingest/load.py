"""load(): any input (tracefs / trace-cmd / perf text, compressed, .dat, pvtrace Parquet) -> Trace.

One code path for every size: inputs are parsed in blocks of lines, each block is
normalized with the state carried from the previous one, and the event chunks go to a
sink: memory for load(), a streaming Parquet writer for ingest_to_parquet() (bounded
memory whatever the input size). Summary tables (perf kvm stat, perf lock contention)
carry no events; they travel in meta.extra["summary_tables"].
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import polars as pl

from pvtrace.errors import FormatError, UsageError
from pvtrace.ingest.clocks import check_given_offsets
from pvtrace.ingest.emission import Events, Infos, trace_meta
from pvtrace.ingest.host_events import patch_exit_values
from pvtrace.ingest.inputs import (
    Input,
    close_quietly,
    count_damage,
    is_one_parquet,
    open_sniffed,
    position,
    raw_chunks,
    summary_formats,
    summary_table,
)
from pvtrace.ingest.normalize import normalize
from pvtrace.ingest.offsets_file import find_offsets_file, read_offsets
from pvtrace.ingest.pipeline import BackgroundSink, prefetch
from pvtrace.ingest.problems import Problems
from pvtrace.ingest.raw import empty_raw
from pvtrace.ingest.records import ParseInfo
from pvtrace.ingest.repeats import refuse_copies, refuse_repeats
from pvtrace.ingest.sanity import Sanity
from pvtrace.ingest.sides import guest_files_nearby, host_files_nearby
from pvtrace.ingest.sniff import Verdict
from pvtrace.ingest.vcpu_map import find_vcpu_map, read_vcpu_map
from pvtrace.outputs import plan_output
from pvtrace.schema import EVENT_SCHEMA, empty_events
from pvtrace.trace import EventWriter, Trace, TraceMeta, read_trace

FORMATS = ("auto", "ftrace", "trace-cmd", "perf", "dat", "parquet")
Progress = Callable[[int], None]


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
    user_offsets = guest_offset_ns
    # saved by generate or record --host next to the host trace: its offsets stand for every VM the
    # user's --guest-offset VM=N leave out (one number for every guest leaves none)
    offsets_file = find_offsets_file(paths) if not isinstance(guest_offset_ns, int) else None
    file_vms: set[str] = set()
    if offsets_file is not None:
        from_file = read_offsets(offsets_file)
        file_vms = set(from_file) - set(guest_offset_ns or {})
        guest_offset_ns = {**from_file, **(guest_offset_ns or {})}
        if not file_vms:  # every VM's offset given: the file is not used
            offsets_file = None
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
            inp = open_sniffed(p, format)
            stack.callback(close_quietly, inp.stream, inp.raw_file)
            inputs.append(inp)
        refuse_copies(inputs)
        if any(i.verdict.format == "parquet" for i in inputs):
            raise UsageError("a pvtrace Parquet file is read on its own (load it without other inputs)")
        events, infos = Events(sink), Infos()
        parse_infos: list[ParseInfo] = []
        empty: list[str] = []  # inputs with no record
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
                    name, rows = summary_table(inp, info.problems)
                    count_damage(inp, info.problems)
                    tables.setdefault(name, []).extend({"input": str(inp.path), **r} for r in rows)
                    info.problems.check_strict(strict)
                    continue
                carry: dict[str, Any] | None = None
                held: pl.DataFrame | None = None  # a chunk's events wait for the next one's first lines
                # the next batch is parsed and checked on another thread while this one is normalized
                batches = _normalize_batches(raw_chunks(inp, stack, info), strict, info, inp, progress)
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
                    _name_unreadable(raw, nfo.pop("unparsed_rows", None), {None: info.problems}, strict)
                    carry = nfo["carry"]
                    closed = nfo.pop("exits_closed")
                    infos.add(nfo)
                    if held is not None:  # its exits whose kvm_hypercall this chunk opened with
                        events.add(patch_exit_values(held, closed))
                    held = ev
                if held is not None:
                    events.add(held)
            except pl.exceptions.PolarsError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise FormatError(
                    f"could not be read ({exc.__class__.__name__}: {first})", str(inp.path)
                ) from None
            if info.stats.get("records", 0) == 0 and info.stats.get("lost_lines", 0) == 0:
                infos.notes.append(f"{inp.path}: no records (an empty {info.format} trace)")
                empty.append(str(inp.path))
        if several:
            raw = pl.concat(several, how="vertical_relaxed")
            ev, nfo = normalized(raw, None)
            by_source = {src: i.problems for src, i in zip(sources, parse_infos, strict=True)}
            _name_unreadable(raw, nfo.pop("unparsed_rows", None), by_source, strict)
            nfo.pop("exits_closed")  # one chunk: nothing before it
            infos.add(nfo)
            events.add(ev)
        events.finish()
    meta = trace_meta(paths, parse_infos, infos, events, tables, map_file, offsets_file, file_vms)
    if len(paths) > 1:  # beside other inputs an empty one is easily missed (a header only)
        meta.extra.setdefault("warnings", []).extend(
            f"{path}: no trace records in it (a header only?): it adds nothing to the analysis"
            for path in empty
        )
    clock = meta.clock or {}  # offsets the user gave: each names a VM of the trace
    check_given_offsets(
        user_offsets, {*meta.vms, *clock.get("guest_offset_ns", {}), *clock.get("vms_tied", {})}
    )
    meta.extra["cpus_seen"] = len(cpus) if cpus else None
    if vm_name is not None and meta.extra.get("side") == "host":  # it names a guest file's VM
        meta.extra.setdefault("warnings", []).append(
            f"--vm-name {vm_name}: this trace has no guest side (the host names its VMs); not used"
        )
    guest_names = meta.extra.get("guest_vm_names") or {}
    if vm_name is not None and len(guest_names) > 1:  # it names the one guest input's VM only
        named = ", ".join(f"{src} -> {vm}" for src, vm in sorted(guest_names.items()))
        meta.extra.setdefault("warnings", []).append(
            f"--vm-name {vm_name}: not used with several guest inputs, whose VMs are named by their files "
            f"({named}); name a guest file after its host file's, <host>-<vm>.txt, to choose its VM's name"
        )
    if meta.extra.get("side") in ("host", "mixed"):  # (mixed: some guest files given, maybe not all)
        sides = meta.extra.get("sides") or {}
        side_of = {k: v.get("side") for k, v in sides.items()}
        hosts = [
            p
            for p in paths
            if str(p) != "-" and "guest" not in (side_of.get(str(p)), side_of.get(Path(p).name))
        ]
        _point_at_guest_files(meta, hosts, [p for p in paths if str(p) != "-"])
    if meta.extra.get("side") == "guest":
        _point_at_host_files(meta, [Path(p) for p in paths if str(p) != "-"])
    kinds = meta.extra.get("events_by_kind") or {}
    if meta.extra.get("side") == "host" and meta.vms and not any(k in kinds for k in STATE_EVENT_KINDS):
        n = sum(v.n_vcpus or 0 for v in meta.vms.values())
        meta.extra.setdefault("warnings", []).append(
            f"the host trace names {n} vCPU thread(s) but has none of the events that give their states "
            "(sched:sched_switch, kvm:kvm_entry, kvm:kvm_exit): no vCPU state is known; record them with "
            "sudo pvtrace record --host"
        )
    if meta.extra.get("side") == "host" and not meta.vms:
        # `record --host` with no VM running: it said so, analyze said only 'level none'
        meta.extra.setdefault("warnings", []).append(
            "a host trace with no VM in it (no kvm events, no vCPU thread): was a VM running while it "
            "was recorded? Start the VMs first, then record"
        )
    return meta


def _point_at_guest_files(meta: TraceMeta, host_paths: list[Path], given: list[Path]) -> None:
    """An analysis whose host input has guest traces next to it that were not given says which
    files to add."""
    taken = {Path(p).resolve() for p in given}
    nearby = [p for p in guest_files_nearby(host_paths) if p.resolve() not in taken]
    if not nearby:
        return
    meta.extra["guest_files_nearby"] = [str(p) for p in nearby]
    command = " ".join(["pvtrace analyze", *(str(p) for p in [*given, *nearby])])
    meta.extra.setdefault("warnings", []).append(
        f"files named like guest traces of this host sit next to it ({', '.join(p.name for p in nearby)}) "
        f"but were not given: if they are its guests, the lock events are in them; analyze them together: "
        f"{command}"
    )


def _point_at_host_files(meta: TraceMeta, given: list[Path]) -> None:
    """A guest-only analysis whose inputs have their host trace next to them says which file to add
    (and the host's other guests): without it no vCPU state is known (no LHP, LWP or waste)."""
    nearby = host_files_nearby(given)
    if not nearby:
        return
    taken = {p.resolve() for p in given}
    others = [p for p in guest_files_nearby(nearby) if p.resolve() not in taken]
    command = " ".join(["pvtrace analyze", *(str(p) for p in [*nearby, *given, *others])])
    whose = "this guest" if len(given) == 1 else "these guests"
    meta.extra.setdefault("warnings", []).append(
        f"a file named like the host trace of {whose} sits next to it ({', '.join(p.name for p in nearby)}) "
        f"but was not given: if it is the host's, it has the vCPU states that LHP, LWP and spin waste need; "
        f"analyze them together: {command}"
    )


def _name_unreadable(
    raw: pl.DataFrame, rows: pl.Series | None, problems: dict[str | None, Problems], strict: bool
) -> None:
    """Known events whose fields could not be read, counted and sampled (line, text) as problems of
    their input (`problems` by source label; None: the one input); --strict makes them fatal."""
    if rows is None or rows.len() == 0:
        return
    bad = raw[rows].select(
        pl.col("source").cast(pl.String)
        if "source" in raw.columns
        else pl.lit(None, pl.String).alias("source"),
        "line",
        pl.concat_str([pl.col("event").cast(pl.String), pl.lit(": "), pl.col("payload").fill_null("")]).alias(
            "text"
        ),
    )
    for (source,), group in bad.group_by("source"):
        target = problems.get(source) or problems.get(None) or next(iter(problems.values()))
        target.add_rows("unreadable_payload", group.select("line", "text"))
        target.check_strict(strict)


# Canonical kinds that say where a vCPU is (running, preempted, in the guest or out of it).
STATE_EVENT_KINDS = ("vcpu_run", "vcpu_preempt", "vm_entry", "vm_exit")
NORMALIZE_ROWS = 250_000


def _normalize_batches(
    chunks: Iterator[pl.DataFrame], strict: bool, info: ParseInfo, inp: Input, progress: Progress | None
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
            pos = position(inp) if inp.compression is not None else info.n_bytes
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
        inp = open_sniffed(path, format)
        stack.callback(close_quietly, inp.stream, inp.raw_file)
        if inp.verdict.format in ("parquet", *summary_formats()):
            raise UsageError(f"{path}: {inp.verdict.format} input has no raw records")
        info = ParseInfo(
            path=str(path),
            format=inp.verdict.format,
            compression=inp.compression,
            problems=Problems(str(path)),
        )
        chunks = list(raw_chunks(inp, stack, info))
    return (pl.concat(chunks) if chunks else empty_raw()), info, inp.verdict


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
