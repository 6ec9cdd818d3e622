"""What a fleet analyzes: traces from files, folders, globs or a manifest, each with a stable id.

A trace's id hashes what decides its result: pvtrace's version, the analysis options, its
labels and, per input file, the absolute path, size and modification time (no file is read,
so listing a fleet costs no I/O beyond a stat). A rerun with the same id is already done.
Inputs and manifest paths may be fsspec URLs (pvtrace.fleet.remote).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pvtrace import __version__
from pvtrace.errors import UsageError
from pvtrace.fleet import remote
from pvtrace.ingest.sides import named_as_guest_of, trace_base
from pvtrace.ingest.vcpu_map import find_vcpu_map

# Files in a trace folder that are not traces: sidecars, tables, reports, our own temporaries.
_NOT_TRACES = (".json", ".csv", ".md", ".toml", ".html", ".partial", ".log")
MANIFEST_PATH = "path"
MANIFEST_GROUP = "trace"


@dataclass(frozen=True)
class TraceInput:
    """One trace of the fleet: its files (several for one capture), a name and its labels."""

    name: str
    files: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    trace_id: str = ""

    def with_id(self, options: dict) -> TraceInput:
        return TraceInput(self.name, self.files, self.labels, trace_id(self, options))


def trace_id(t: TraceInput, options: dict) -> str:
    """sha256 of version, options, labels and each file's (path, size, mtime), its vCPU map side
    file included; 16 hex digits."""
    h = hashlib.sha256()
    h.update(
        json.dumps({"version": __version__, "options": options, "labels": t.labels}, sort_keys=True).encode()
    )
    local = [f for f in t.files if not remote.is_url(f)]
    sidecar = find_vcpu_map([Path(f) for f in local]) if local else None  # read by ingest with the trace
    for f in (*t.files, *([str(sidecar)] if sidecar else [])):
        if remote.is_url(f):
            h.update(f"\0{f}\0{remote.stamp(f)}".encode())
        else:
            st = Path(f).stat()
            h.update(f"\0{f}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _is_manifest(path: Path | str) -> bool:
    suffix = Path(str(path)).suffix.lower()
    if suffix == ".csv":
        return True
    if suffix == ".parquet":
        try:
            source = pa.BufferReader(remote.open_bytes(path)) if isinstance(path, str) else path
            names = pq.read_schema(source).names
        except (OSError, ValueError):
            return False
        return MANIFEST_PATH in names and "ts" not in names
    return False


def _file_name(name: str, base: Path | str) -> str:
    """A manifest's path: a URL as it is (file:// as its local path), else relative to the manifest."""
    if remote.is_url(name):
        local = remote.local_path(name)
        return name if local is None else str(local.resolve())
    if isinstance(base, str):
        return remote.join(base, name)
    return str((base.parent / name).resolve())


def read_manifest(path: Path | str) -> list[TraceInput]:
    """A manifest (a local path, or the URL of one): a `path` column (relative to the manifest, or
    URLs), an optional `trace` column grouping the files of one capture, and any other columns as
    labels (kept as text)."""
    try:
        source = io.BytesIO(remote.open_bytes(path)) if isinstance(path, str) else path
        if Path(str(path)).suffix.lower() == ".csv":
            df = pl.read_csv(source, infer_schema=False, glob=False)
        else:
            df = pl.read_parquet(source, glob=False).with_columns(pl.all().cast(pl.String))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise UsageError(f"{path}: cannot read the manifest: {str(exc).splitlines()[0]}") from None
    if MANIFEST_PATH not in df.columns:
        raise UsageError(f"{path}: a manifest needs a '{MANIFEST_PATH}' column (has {', '.join(df.columns)})")
    if df[MANIFEST_PATH].null_count():
        line = int(df[MANIFEST_PATH].is_null().arg_true()[0]) + 2
        raise UsageError(f"{path}:{line}: empty path")
    df = df.with_columns(
        pl.col(MANIFEST_PATH).map_elements(lambda p: _file_name(p, path), return_dtype=pl.String)
    )
    group = MANIFEST_GROUP if MANIFEST_GROUP in df.columns else MANIFEST_PATH
    label_cols = [c for c in df.columns if c not in (MANIFEST_PATH, MANIFEST_GROUP)]
    out = []
    for key, rows in df.group_by(group, maintain_order=True):
        files = tuple(rows[MANIFEST_PATH].to_list())
        labels = {c: v for c in label_cols if (v := rows[c][0]) is not None}
        name = str(key[0]) if group == MANIFEST_GROUP else Path(files[0]).name
        out.append(TraceInput(name=name, files=files, labels=labels))
    for t in out:
        for f in t.files:
            if not remote.is_url(f) and not Path(f).is_file():
                raise UsageError(f"{path}: trace {t.name}: no such file {f}")
    return out


def _folder_traces(folder: Path) -> list[Path]:
    """Trace files under folder, leaving out hidden files, side files and pvtrace's own result
    folders (a fleet or sweep folder inside the input folder is not a trace)."""
    results = [p.parent for name in ("fleet.json", "sweep.json") for p in folder.rglob(name)]
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not p.name.lower().endswith(_NOT_TRACES)
        and not any(p.is_relative_to(r) for r in results)
    )


def _url_traces(url: str) -> list[TraceInput]:
    """A URL's traces: a manifest named directly, else each file one trace."""
    fs, path = remote.filesystem(url)
    if fs.isfile(path) and _is_manifest(url):
        return read_manifest(url)
    files = remote.expand(url, _NOT_TRACES)
    return [TraceInput(name=f.rsplit("/", 1)[-1], files=(f,)) for f in files]


def expand_inputs(inputs: list[str], options: dict) -> list[TraceInput]:
    """Files, folders (every trace file inside), globs and manifests -> traces with ids, in order,
    without duplicates (the same file named twice is one trace)."""
    traces: list[TraceInput] = []
    for raw in inputs:
        local = remote.local_path(raw)
        if local is None:
            traces += _url_traces(raw)
            continue
        p = local
        raw = str(local)
        if p.is_dir():
            traces += [
                TraceInput(name=str(f.relative_to(p)), files=(str(f.resolve()),)) for f in _folder_traces(p)
            ]
        elif p.is_file():
            if _is_manifest(p):
                traces += read_manifest(p)
            else:
                traces.append(TraceInput(name=p.name, files=(str(p.resolve()),)))
        elif glob.has_magic(raw):
            hits = sorted(Path(h) for h in glob.glob(raw, recursive=True) if Path(h).is_file())
            if not hits:
                raise UsageError(f"{raw}: the pattern matches no file")
            traces += [TraceInput(name=h.name, files=(str(h.resolve()),)) for h in hits]
        else:
            raise UsageError(f"{raw}: no such file or folder")
    seen: dict[str, TraceInput] = {}
    for t in traces:
        t = t.with_id(options)
        seen.setdefault(t.trace_id, t)
    if not seen:
        raise UsageError("no traces found in " + ", ".join(inputs))
    return list(seen.values())


def split_captures(traces: list[TraceInput]) -> list[list[str]]:
    """One-file traces in one folder named like a host trace and its guests' (`h.txt` with
    `h-vm0.txt`, as pvtrace and trace-cmd -A name them): each such group, host first. A fleet
    analyzes every file given as its own trace; these are likely one capture split in three."""
    by_dir: dict[Path, dict[str, str]] = {}
    for t in traces:
        if len(t.files) == 1 and not remote.is_url(t.files[0]):
            f = Path(t.files[0])
            by_dir.setdefault(f.parent, {})[trace_base(f.name)] = t.name
    groups = []
    for bases in by_dir.values():
        for base in sorted(bases, key=len):
            guests = [n for b, n in sorted(bases.items()) if named_as_guest_of(b, base)]
            if guests:
                groups.append([bases[base], *guests])
    return groups
