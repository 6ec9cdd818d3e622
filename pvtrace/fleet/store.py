"""FLEET_DIR, the results dataset: one part folder per trace, one failure file per failed trace.

    FLEET_DIR/fleet.json                  what was run last (inputs, options, version)
    FLEET_DIR/traces/<id>/trace.parquet   one row: totals, fidelity, labels, span, --json summary
    FLEET_DIR/traces/<id>/locks.parquet   waste_by_lock of that trace, tagged trace_id, trace
    FLEET_DIR/traces/<id>/vms.parquet     waste_by_vm, tagged
    FLEET_DIR/traces/<id>/incidents.parquet  the worst LHP and LWP incidents, tagged
    FLEET_DIR/failures/<id>.parquet       one row: trace, files, stage, one-line error

A part folder appears whole (it is renamed into place once complete), so a listing of
traces/ is the set of finished traces, and any glob over it reads each trace once.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pvtrace import __version__
from pvtrace.errors import UsageError
from pvtrace.outputs import atomic_file

TABLES = ("trace", "locks", "vms", "incidents")


def parts_dir(root: Path) -> Path:
    return root / "traces"


def part_dir(root: Path, trace_id: str) -> Path:
    return parts_dir(root) / trace_id


def failures_dir(root: Path) -> Path:
    return root / "failures"


def ids_in(folder: Path, suffix: str) -> set[str]:
    """The ids named by the entries of folder (`<id><suffix>`), leaving out hidden temporaries."""
    if not folder.is_dir():
        return set()
    return {
        p.name.removesuffix(suffix)
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.name.endswith(suffix)
    }


def done_ids(root: Path) -> set[str]:
    """Traces with a published part (a name listing: no file is read)."""
    return ids_in(parts_dir(root), "")


def failed_ids(root: Path) -> set[str]:
    return ids_in(failures_dir(root), ".parquet")


def check_root(root: Path, marker: str = "fleet.json", what: str = "fleet") -> None:
    """Refuse a results folder that is a file, or a folder with other things in it (no `marker`,
    the file that makes it one of ours): before any work, and again when it is prepared."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / marker).is_file():
        raise UsageError(f"{root}: not empty and not a {what} folder (no {marker}); choose another -o")


def check_options(root: Path, options: dict) -> None:
    """Refuse to add results of other analysis options to a fleet folder that holds some: a trace's
    id includes its options, so they would sit beside the old ones and every trace count twice."""
    marker = root / "fleet.json"
    if not marker.is_file() or not (done_ids(root) or failed_ids(root)):
        return
    try:
        before = json.loads(marker.read_text(encoding="utf-8")).get("options") or {}
    except (OSError, ValueError):
        return
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in sorted(options.items()) if before.get(k) != v]
    if changed:
        raise UsageError(
            f"{root}: holds results analyzed with other options ({', '.join(changed)}); one fleet folder "
            "holds one analysis of its traces: give another -o, or delete it to start again"
        )


def prepare(root: Path, run_info: dict) -> None:
    """Create FLEET_DIR (or reuse one of ours); refuse a folder that is something else."""
    check_root(root)
    check_options(root, run_info.get("options") or {})
    parts_dir(root).mkdir(parents=True, exist_ok=True)
    failures_dir(root).mkdir(parents=True, exist_ok=True)
    with atomic_file(root / "fleet.json", force=True) as tmp:
        tmp.write_text(
            json.dumps({"pvtrace_version": __version__, **run_info}, indent=1) + "\n", encoding="utf-8"
        )


def scan(root: Path, table: str) -> pl.LazyFrame | None:
    """One table over every finished trace (None when there is none); label columns a trace
    lacks read as null."""
    if table == "failures":
        pattern = failures_dir(root) / "*.parquet"
    else:
        pattern = parts_dir(root) / "*" / f"{table}.parquet"
    if not any(Path(root).glob(str(pattern.relative_to(root)))):
        return None
    return pl.scan_parquet(pattern, missing_columns="insert", extra_columns="ignore")


def read(root: Path, table: str) -> pl.DataFrame:
    """scan() collected; an empty frame when nothing is there."""
    lf = scan(root, table)
    if lf is None:
        return pl.DataFrame()
    if table in ("trace", "failures"):
        # columns of every part (label sets may differ between traces)
        files = sorted(
            failures_dir(root).glob("*.parquet")
            if table == "failures"
            else parts_dir(root).glob(f"*/{table}.parquet")
        )
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    return lf.collect()


def is_fleet(root: Path) -> bool:
    return (root / "fleet.json").is_file()
